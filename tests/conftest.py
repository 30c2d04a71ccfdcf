import hashlib
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
STICKERS_DEV = SHARED / "stickers-dev"
FER2013 = SHARED / "fer2013" / "fer2013.csv.gz"
FERPLUS = SHARED / "ferplus" / "fer2013new.csv.gz"
SAMPLES = ROOT / "sample_stickers"


def need(path):
    """Skip, saying why, when the shared data sets beside the repository are absent."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data sets beside the repository)")
    return path


@pytest.fixture
def stickers_dev():
    return need(STICKERS_DEV)


@pytest.fixture
def fer2013():
    return need(FER2013)


def refused(result, *words):
    """A CliRunner result refused in one line on stderr, with exit status 2, naming each of words."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr


def tree_hash(root):
    """Digest of every name, link target and file content under root: originals untouched?"""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            h.update(os.fsencode(os.path.relpath(path, root)))
            if os.path.islink(path):
                h.update(b"->" + os.fsencode(os.readlink(path)))
            else:
                try:
                    with open(path, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
                except OSError as e:
                    h.update(f"unreadable:{e.errno}".encode())
    return h.hexdigest()


@pytest.fixture
def cli():
    """Run `stickersort ARGS` in process through click's runner; returns the Result."""
    from stickersort.sorter.cli import cli as group

    def run(*args):
        return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return run


def wait_for(check, what, seconds=60):
    """Poll check() until it returns something truthy; a deadline, not a fixed sleep."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
