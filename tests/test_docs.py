"""Every command is in the README, every option has help, and docs/cli.md (generated from that
help, as sqlite-utils generates its CLI reference) is current; the README and the model card stay
short (issue 25: at most 200 lines each; the long record lives in docs/)."""
import re
import runpy
from pathlib import Path

import click

from stickersort.sorter.cli import cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_the_readme_names_every_command():
    assert [name for name in cli.commands if f"stickersort {name}" not in README] == []


def test_every_option_has_help():
    bare = [f"{name} {param.opts[0]}" for name, command in cli.commands.items() for param in command.params
            if isinstance(param, click.Option) and not param.help and "--help" not in param.opts]
    assert bare == []


def test_the_command_reference_is_current():
    generated = runpy.run_path(str(REPO / "docs" / "cli_reference.py"))["reference"]()
    assert (REPO / "docs" / "cli.md").read_text() == generated, "run: python docs/cli_reference.py > docs/cli.md"


def test_the_readme_and_the_model_card_stay_short_and_link_the_long_record():
    card = (REPO / "model" / "MODEL_CARD.md").read_text()
    assert len(README.splitlines()) <= 200
    assert len(card.splitlines()) <= 200
    pages = ("docs/cli.md", "docs/model-history.md", "docs/scanning.md", "docs/database.md", "docs/library.md",
             "docs/web.md", "docs/scale.md", "bench/COMPARISON.md")
    for page in pages:
        assert (REPO / page).exists() and page in README + card.replace("../", "")


def _anchors(page):
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces as -."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_docs_leads_somewhere():
    """Before: docs/scanning.md sent readers to a README heading that did not exist."""
    broken = []
    for page in [REPO / "README.md", REPO / "model" / "MODEL_CARD.md", *sorted((REPO / "docs").glob("*.md")),
                 *sorted((REPO / "bench").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []
