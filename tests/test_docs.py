"""The README documents every command and option of the CLI, and it and the model card stay short
(issue 25: at most 200 lines each; the long record lives in docs/)."""
from pathlib import Path

import click

from stickersort.sorter.cli import cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_the_readme_names_every_command_and_option():
    missing = []
    for name, command in cli.commands.items():
        if f"stickersort {name}" not in README:
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                if not any(f"`{opt}" in README or f" {opt}" in README for opt in param.opts):
                    missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_the_readme_and_the_model_card_stay_short_and_link_the_long_record():
    card = (REPO / "model" / "MODEL_CARD.md").read_text()
    assert len(README.splitlines()) <= 200
    assert len(card.splitlines()) <= 200
    for page in ("docs/model-history.md", "docs/scanning.md", "docs/database.md", "bench/COMPARISON.md"):
        assert (REPO / page).exists() and page in README + card.replace("../", "")
