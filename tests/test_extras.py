"""The base install runs without the [train] and [plot] extras: runtime modules never import
them, and the commands that need them say in one line which extra to install."""
import importlib.util
import shlex
import subprocess
import sys

from conftest import ROOT
from stickersort.sorter import cli as cli_module

RUNTIME = ("sorter.cli", "sorter.scan", "sorter.live", "sorter.web", "sorter.watch", "sorter.sticker_eval",
           "model.faces", "model.inference", "training.evaluate", "training.cards")


def test_runtime_modules_import_no_training_package():
    code = ("import sys\n" + "".join(f"import stickersort.{m}\n" for m in RUNTIME) +
            f"print(sorted(m for m in {tuple(cli_module.EXTRAS)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_train_without_the_extra_names_it(monkeypatch, cli, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    for args in (("train", tmp_path / "fer.csv"), ("soup", tmp_path / "fer.csv", "--model", __file__)):
        result = cli(*args)
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            f"Error: stickersort {args[0]} needs tensorflow, not in the base install: "
            f"pip install -e {shlex.quote(f'{ROOT}[train]')}"]  # from the checkout: it is not on PyPI
