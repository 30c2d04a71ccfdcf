"""Real `stickersort` processes sharing one database and OUT: three scans of one folder at once,
and a scan beside a running watch while files arrive. No crash, no duplicate row or entry."""
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import tree_hash, wait_for
from hostile import sticker_folder
from invariants import check_db, check_out, has_schema, query
from media_makers import hopper
from procs import stickersort

DEADLINE_S = 180  # no run may hang the suite


def start(*args):
    return subprocess.Popen(stickersort(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    try:
        return proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_three_scans_of_one_folder_at_once(tmp_path, mode):
    three_scans(tmp_path, mode)


def test_watch_and_scan_together(tmp_path):
    watch_and_scan(tmp_path)


@pytest.mark.slow
def test_concurrent_runs_many_times(tmp_path):
    """The long run: STICKERSORT_ROUNDS (default 10) rounds of each."""
    rounds = int(os.environ.get("STICKERSORT_ROUNDS", "10"))
    for i in range(rounds):
        three_scans(tmp_path / f"three{i}", ["symlink", "copy", "hardlink"][i % 3])
        watch_and_scan(tmp_path / f"watch{i}")
    print(f"{rounds} x 3 scans at once, {rounds} x a watch and a scan")


def three_scans(tmp_path, mode):
    src = sticker_folder(tmp_path / "memes")
    out, db = tmp_path / "out", tmp_path / "s.db"
    mine = out / "noface" / "mine.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    before = tree_hash(src)
    procs = [start("scan", src, "--out", out, "--db", db, "--link-mode", mode, "--json", "-q") for _ in range(3)]
    results = [(proc, *finish(proc)) for proc in procs]
    for proc, stdout, stderr in results:
        assert proc.returncode == 1, stderr  # done; the unreadable files have error records
        assert "Traceback" not in stderr and "locked" not in stderr
    summaries = [json.loads(stdout) for _, stdout, _ in results]
    labelled = query(db, "select path from files where label is not null")
    assert len(query(db, "select path from files")) == 17 and len(labelled) == 14
    # Each entry was made once, by one of the three; the others found it made.
    assert sum(s["links"]["created"] for s in summaries) == 14
    assert all(s["links"]["created"] + s["links"]["kept"] == 14 for s in summaries)
    check_db(db)
    check_out(str(out), db, mine=[str(mine)])
    assert tree_hash(src) == before and mine.read_bytes() == b"mine"


def watch_and_scan(tmp_path):
    src = sticker_folder(tmp_path / "memes")
    out, db = tmp_path / "out", tmp_path / "s.db"
    watch = start("watch", src, "--out", out, "--db", db, "--settle", "0.2", "-q")
    try:
        # The database appears a moment before its tables; has_schema() sees both or neither.
        wait_for(lambda: db.exists() and has_schema(db) and len(query(db, "select path from files")) == 17,
                 "the watch's first scan", DEADLINE_S)
        # A scan that pauses itself at its third file, past its walk; new files land then, and
        # the watch files them. Resumed, the scan must not take them for vanished files.
        scan = subprocess.Popen(stickersort(["scan", src, "--out", out, "--db", db, "--rescan", "--json", "-q"],
                                            at_call=("SIGSTOP", "_start", 3)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status = os.waitpid(scan.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        for i in range(3):
            hopper(240 + 20 * i).save(src / f".new{i}.part", "PNG")
            (src / f".new{i}.part").rename(src / f"new{i}.png")  # how a download lands
        wait_for(lambda: len(query(db, "select path from files")) == 20, "the watch to file the new files", DEADLINE_S)
        scan.send_signal(signal.SIGCONT)
        stdout, stderr = finish(scan)
        assert scan.returncode == 1 and "Traceback" not in stderr, stderr
        summary = json.loads(stdout)
        assert summary["files"] == 17 and summary["vanished"] == 0
        assert len(query(db, "select path from files")) == 20
        before = tree_hash(src)
        time.sleep(0.5)  # anything still queued in the watch settles
    finally:
        watch.send_signal(signal.SIGINT)
        _, stderr = finish(watch)
    assert watch.returncode == 130 and "Traceback" not in stderr, stderr
    check_db(db)
    check_out(str(out), db)
    assert len(query(db, "select path from files where label is not null")) == 17
    assert tree_hash(src) == before


@pytest.mark.parametrize("held", ["database", "links"])
def test_a_write_that_waits_for_another_programs_lock_says_so(tmp_path, held):
    """A label held up by another process's write lock on the database, or by its turn at the
    links (a scan stopped with Ctrl-Z keeps it), says on stderr that it waits (else a silent
    hang), and goes on once the lock is let go."""
    src = sticker_folder(tmp_path / "memes")
    out, db, err = tmp_path / "out", tmp_path / "s.db", tmp_path / "stderr.txt"
    subprocess.run(stickersort(["scan", src, "--out", out, "--db", db, "-q"]), capture_output=True, check=False)
    sticker = query(db, "select path from files where label is not null")[0]["path"]
    with _held(db, held):
        with err.open("w") as stderr:
            label = subprocess.Popen(stickersort(["label", sticker, "surprise", "--db", db]),
                                     stdout=subprocess.PIPE, stderr=stderr, text=True)
        wait_for(lambda: label.poll() is not None or "waiting for" in err.read_text(), "the note", 30)
        assert label.poll() is None  # still waiting, not failed
    stdout, _ = finish(label)
    assert label.returncode == 0, err.read_text()
    assert err.read_text() == {
        "database": f"waiting for {db}: another process is writing to it (up to 60 s)\n",
        "links": f"waiting for {db}.lock: another stickersort is filing links\n"}[held]
    assert "surprise" in stdout and (out / "surprise" / Path(sticker).name).is_symlink()
    assert query(db, "select user_label from files where path = ?", [sticker])[0]["user_label"] == "surprise"


@contextmanager
def _held(db, what):
    if what == "database":
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("COMMIT")
            holder.close()
    else:
        fd = os.open(f"{db}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
