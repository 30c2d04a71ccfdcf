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
MAKING = {"symlink": ["symlink"], "hardlink": ["link"], "copy": ["_copy", "_link_whole"]}
# _remove before forget: a run killed at forget (a vanished file's, at the scan's end) has done
# every move before it, and the vanished file's hard link or copy is kept as the last copy.
AFTER_EDIT = ["unlink", "drop_link", "_remove", "forget"]


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


def scan_cli(src, out, db, mode, *extra, kill_at=None, kill_after=None, sig="SIGKILL", again=False):
    """A real scan, sent `sig` at the call kill_at = (function, n) or after kill_after seconds
    (and, with again, a second time 0.1 s later: a second Ctrl-C)."""
    cmd = stickersort(["scan", src, "--out", out, "--db", db, "--link-mode", mode, "-q", "--json", *extra],
                      at_call=(sig, *kill_at) if kill_at else None)
    return run_signalled(cmd, getattr(signal, sig), kill_after, again)


def run_signalled(cmd, sig, after=None, again=False):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if after is not None:
            try:
                proc.wait(after)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                if again:
                    time.sleep(0.1)
                    proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def done(src, db, errors=True):
    """Files whose record matches the file as it is now: what a rerun must not redo (errors False:
    less the error records, which a summary counts as errors, not as unchanged)."""
    rows = {r["path"]: r for r in query(db, "select path, size, mtime_ns, error from files")}
    n = 0
    for dirpath, _, names in os.walk(os.path.realpath(src)):
        for name in names:
            st, row = os.stat(os.path.join(dirpath, name)), rows.get(os.path.join(dirpath, name))
            n += bool(row and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
                      and (errors or row["error"] is None))
    return n


def a_library(template, work):
    """A fresh copy of the template folder to scan, its OUT holding the user's own file, and a
    database path: (src, out, db, mine)."""
    src = work / "memes"
    shutil.copytree(template[0], src, symlinks=True)
    out, db = work / "out", work / "s.db"
    mine = out / "noface" / "mine.png"  # the user's own file in OUT
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    return src, out, db, mine


def kill_trials(template, work, mode, rng):
    """Scans of one folder into one OUT, each killed and then checked: 4 at random program points
    (a later one may find no work left and finish), one at a random moment on the clock, then a
    scan to the end; the user's edit (a file deleted, a face replaced by a blank so its entry
    must move), one at each AFTER_EDIT point, one on the clock, a scan to the end. Returns the
    number of runs that died."""
    src, out, db, mine = a_library(template, work)
    points = [(rng.choice(["upsert", "insert_all", "add_link", *MAKING[mode]]), rng.randint(1, 3))
              for _ in range(4)]
    killed = killed_runs(src, out, db, mode, rng, points, template[2], mine, sure=points[:1])
    finish(src, out, db, mode, template[1], mine, files=17)
    (src / "plain0.png").unlink()
    shutil.copy(src / "plain1.png", src / "face1.jpg")
    points = [(p, 1) for p in AFTER_EDIT]
    # A hard link or copy whose original is gone is the user's only copy: it stays, theirs.
    last_copy = [] if mode == "symlink" else [out / "noface" / "plain0.png"]
    killed += killed_runs(src, out, db, mode, rng, points, template[2], mine, sure=points, theirs=last_copy)
    finish(src, out, db, mode, template[1], mine, files=16, theirs=last_copy)
    assert (out / "noface" / "plain0.png").exists() == bool(last_copy)
    return killed


def killed_runs(src, out, db, mode, rng, points, seconds, mine, sure, theirs=()):
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
        check_out(str(out), db, mine=[str(mine), *map(str, theirs)], complete=False)
        assert tree_hash(src) == before and mine.read_bytes() == b"mine"
    return killed


def finish(src, out, db, mode, labels, mine, files, theirs=()):
    """A scan to the end: it redoes nothing done, and leaves every sticker filed once, rightly."""
    before, finished = tree_hash(src), done(src, db, errors=False)
    proc = scan_cli(src, out, db, mode)
    assert proc.returncode == 1, proc.stderr  # the unreadable files, each with its error record
    summary = json.loads(proc.stdout)
    assert summary["files"] == files and summary["unchanged"] == finished, proc.stdout
    assert len(query(db, "select path from files")) == files
    check_db(db)
    check_out(str(out), db, mine=[str(mine), *map(str, theirs)])
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


# Ctrl-C: the first asks for a stop at the next safe point (between two files, between two frames),
# so every run ends whole, not merely recoverable: status 130, one line, every invariant of a
# finished run (check_out complete); a second Ctrl-C stops at once, as recoverable as a kill.
STEPS = ["upsert", "insert_all", "add_link"]  # inside a file's recording, in the main thread


def interrupted(proc):
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert "interrupted" in proc.stderr and "Aborted" not in proc.stderr and "Traceback" not in proc.stderr, proc.args[4:]


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_ctrl_c_in_scan_exits_130_and_leaves_everything_whole(template, tmp_path, mode):
    rng = random.Random(f"int-{mode}")
    src, out, db, mine = a_library(template, tmp_path)
    before = tree_hash(src)
    # Each point comes in every run while files are left to do: each run files one or two more.
    for point in [(p, 1) for p in (*STEPS, *MAKING[mode])]:
        done_before = done(src, db) if db.exists() else 0
        proc = scan_cli(src, out, db, mode, kill_at=point, sig="SIGINT")
        interrupted(proc)
        check_db(db)
        check_out(str(out), db, mine=[str(mine)])
        assert done(src, db) >= done_before + 1, point  # the file under way was finished
    proc = scan_cli(src, out, db, mode, kill_after=rng.uniform(0.2, template[2]), sig="SIGINT")
    # 1: it had finished (the unreadable files); -SIGINT: it came in Python's start-up, before any
    # of stickersort ran (a shell shows $? = 130 all the same).
    assert proc.returncode in (1, 130, -signal.SIGINT), proc.stderr
    check_db(db)
    check_out(str(out), db, mine=[str(mine)])
    # A second Ctrl-C stops at once: 130 still, and nothing a kill would not leave.
    proc = scan_cli(src, out, db, mode, "--rescan", kill_after=rng.uniform(0.2, template[2]), sig="SIGINT",
                    again=True)
    # -SIGINT: one came in Python's start-up, or the second as it was exiting.
    assert proc.returncode in (1, 130, -signal.SIGINT) and "Traceback" not in proc.stderr, proc.stderr
    check_db(db)
    check_out(str(out), db, mine=[str(mine)], complete=False)
    finish(src, out, db, mode, template[1], mine, files=17)
    assert tree_hash(src) == before


def test_ctrl_c_in_watch_mid_scan_exits_130_and_leaves_everything_whole(template, tmp_path):
    src, out, db, mine = a_library(template, tmp_path)
    cmd = stickersort(["watch", src, "--out", out, "--db", db, "-q"], at_call=("SIGINT", "upsert", 3))
    proc = run_signalled(cmd, signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    check_db(db)
    check_out(str(out), db, mine=[str(mine)])
    assert 1 <= done(src, db) < 17  # stopped within its first scan
    finish(src, out, db, "symlink", template[1], mine, files=17)


def test_ctrl_c_in_live_exits_130_after_the_frame_under_way(tmp_path):
    from media_makers import face_mp4
    clip = face_mp4(tmp_path / "clip.mp4")
    cmd = stickersort(["live", "--source", clip, "--loop", "--json"], at_call=("SIGINT", "_step", 5))
    proc = run_signalled(cmd, signal.SIGINT)
    interrupted(proc)
    assert json.loads(proc.stdout)["frames"] == 5  # the frame under way was shown, no more
