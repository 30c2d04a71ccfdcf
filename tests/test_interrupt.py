"""kill -9 of a real `stickersort scan` at chosen and at random moments: after every kill the
database is whole and OUT holds nothing unrecorded; the next scan finishes the work without
redoing what was done, and leaves exactly one entry per sticker."""
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from conftest import tree_hash
from hostile import BAD, sticker_folder
from invariants import check_db, check_out, query
from procs import stickersort

DEADLINE_S = 120  # no run may hang the suite

# Kill points, each the start of a call in the real code. While files are still to do: SQLite
# writes (upsert, insert_all: inside a file's transaction) and the making of an entry. After the
# user's edit, in this order, each the first of its kind and each sure to come: removing a moved
# file's old entry (unlink, then drop_link) and forgetting a deleted file (forget, then _remove).
MAKING = {"symlink": ["symlink"], "hardlink": ["link"], "copy": ["copy2", "replace"]}
AFTER_EDIT = ["unlink", "drop_link", "forget", "_remove"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """hostile.sticker_folder, and each sticker's label from one uninterrupted scan."""
    src = sticker_folder(tmp_path_factory.mktemp("template") / "memes")
    work = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    proc = scan_cli(src, work / "out", work / "s.db", "symlink")
    assert proc.returncode == 1, proc.stderr
    labels = {r["hash"]: r["label"] for r in query(work / "s.db", "select hash, label from files where label is not null")}
    return src, labels, time.monotonic() - started


def scan_cli(src, out, db, mode, *extra, kill_at=None, kill_after=None):
    cmd = stickersort(["scan", src, "--out", out, "--db", db, "--link-mode", mode, "-q", "--json", *extra],
                      at_call=("SIGKILL", *kill_at) if kill_at else None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def done(src, db):
    """Files whose record matches the file as it is now: what a rerun must not redo."""
    rows = {r["path"]: r for r in query(db, "select path, size, mtime_ns from files")}
    n = 0
    for dirpath, _, names in os.walk(os.path.realpath(src)):
        for name in names:
            st, row = os.stat(os.path.join(dirpath, name)), rows.get(os.path.join(dirpath, name))
            n += bool(row and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns))
    return n


def kill_trials(template, work, mode, rng):
    """Scans of one folder into one OUT, each killed and then checked: 4 at random program points
    (a later one may find no work left and finish), one at a random moment on the clock, then a
    scan to the end; the user's edit (a file deleted, a face replaced by a blank so its entry
    must move), one at each AFTER_EDIT point, one on the clock, a scan to the end. Returns the
    number of runs that died."""
    src = work / "memes"
    shutil.copytree(template[0], src, symlinks=True)
    out, db = work / "out", work / "s.db"
    mine = out / "noface" / "mine.png"  # the user's own file in OUT
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    points = [(rng.choice(["upsert", "insert_all", "add_link", *MAKING[mode]]), rng.randint(1, 3))
              for _ in range(4)]
    killed = killed_runs(src, out, db, mode, rng, points, template[2], mine, sure=points[:1])
    finish(src, out, db, mode, template[1], mine, files=17)
    (src / "plain0.png").unlink()
    shutil.copy(src / "plain1.png", src / "face1.jpg")
    points = [(p, 1) for p in AFTER_EDIT]
    killed += killed_runs(src, out, db, mode, rng, points, template[2], mine, sure=points)
    finish(src, out, db, mode, template[1], mine, files=16)
    assert not (out / "noface" / "plain0.png").exists()
    return killed


def killed_runs(src, out, db, mode, rng, points, seconds, mine, sure):
    """A run killed at each point, then one at a moment on the clock; the checks after each."""
    before, killed = tree_hash(src), 0
    for point in points + [None]:
        if point:
            proc = scan_cli(src, out, db, mode, kill_at=point)
            assert proc.returncode == -signal.SIGKILL or point not in sure, f"{point} never came: {proc.stderr}"
        else:  # anywhere from start-up to the end
            proc = scan_cli(src, out, db, mode, kill_after=rng.uniform(0.2, seconds))
        assert proc.returncode in (0, 1, -signal.SIGKILL), proc.stderr
        killed += proc.returncode == -signal.SIGKILL
        check_db(db)
        check_out(str(out), db, mine=[str(mine)], complete=False)
        assert tree_hash(src) == before and mine.read_bytes() == b"mine"
    return killed


def finish(src, out, db, mode, labels, mine, files):
    """A scan to the end: it redoes nothing done, and leaves every sticker filed once, rightly."""
    before, finished = tree_hash(src), done(src, db)
    proc = scan_cli(src, out, db, mode)
    assert proc.returncode == 1, proc.stderr  # the unreadable files, each with its error record
    summary = json.loads(proc.stdout)
    assert summary["files"] == files and summary["unchanged"] == finished, proc.stdout
    assert len(query(db, "select path from files")) == files
    check_db(db)
    check_out(str(out), db, mine=[str(mine)])
    for row in query(db, "select path, hash, label from files"):
        assert row["label"] == labels.get(row["hash"]) or os.path.basename(row["path"]) in BAD, row
    assert tree_hash(src) == before and mine.read_bytes() == b"mine"


@pytest.mark.parametrize("mode", ["symlink", "copy", "hardlink"])
def test_kill_9_at_any_moment_loses_nothing(template, tmp_path, mode):
    assert kill_trials(template, tmp_path, mode, random.Random(mode)) >= 5


@pytest.mark.slow
def test_kill_9_many_times(template, tmp_path):
    """The long run: STICKERSORT_KILLS rounds (default 10) of each link mode, fresh seeds."""
    seed = int(os.environ.get("STICKERSORT_KILL_SEED", "1"))
    kills = trials = 0
    for round_ in range(int(os.environ.get("STICKERSORT_KILLS", "10"))):
        for mode in ("symlink", "copy", "hardlink"):
            kills += kill_trials(template, tmp_path / f"{mode}{round_}", mode, random.Random(f"{mode}-{seed}-{round_}"))
            trials += 4 + 1 + len(AFTER_EDIT) + 1
    print(f"{kills} kills survived in {trials} trials")
