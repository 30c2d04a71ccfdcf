"""`stickersort watch`: the real command in its own process, a real watchdog observer on a temp
folder, real files written, moved and deleted, the database and the links checked after each step."""
import io
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from conftest import SAMPLES, wait_for
from invariants import check_out
from procs import stickersort
from stickersort.model.labels import EMOTIONS
from stickersort.sorter.watch import describe
from media_makers import blank, face_gif, hopper

SETTLE = 1.5  # seconds a file must stand still; the slow writer below pauses 0.1 s
STARTUP_S = 180  # a bound on start-up (imports, models, the first scan) on a busy machine


class Watch:
    def __init__(self, tmp_path, *extra):
        self.dir, self.out, self.db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stickersort.sorter", "watch", str(self.dir), "--out", str(self.out),
             "--db", str(self.db), "--settle", str(SETTLE), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()
        self.wait_line("watching", seconds=STARTUP_S)

    def wait_line(self, text, seconds=60):
        def seen():
            while not self.lines.empty():
                self.log.append(self.lines.get())
            assert self.proc.poll() is None, "".join(self.log)
            return next((line for line in self.log if text in line), None)
        return wait_for(seen, f"{text!r} from watch", seconds)

    def rows(self):
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        return {Path(r["path"]).relative_to(self.dir).as_posix(): dict(r) for r in conn.execute("select * from files")}

    def links(self):
        """OUT's entries: 'label/name' -> the file it points at, relative to DIR."""
        return {p.relative_to(self.out).as_posix(): p.resolve().relative_to(self.dir).as_posix()
                for p in self.out.rglob("*") if p.is_symlink()}

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return code


@pytest.fixture
def watch(tmp_path):
    (tmp_path / "memes").mkdir()
    hopper().save(tmp_path / "memes" / "hopper.png")
    w = Watch(tmp_path)
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
        w.proc.wait()


def slow_write(path, data, chunks=10, pause=0.1, check=None):
    with open(path, "wb") as f:
        for i in range(chunks):
            f.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
            f.flush()
            time.sleep(pause)
            if check:
                check()


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_watch_follows_creates_writes_moves_and_deletes(watch, tmp_path):
    label = watch.rows()["hopper.png"]["label"]
    assert watch.links() == {f"{label}/hopper.png": "hopper.png"}  # the first scan

    # Written slowly: never read while the size still changes, classified once it stops.
    data = png_bytes(hopper(280))

    def not_read_yet():
        assert "slow.png" not in watch.rows(), "read while still being written"
    slow_write(watch.dir / "slow.png", data, check=not_read_yet)
    row = wait_for(lambda: watch.rows().get("slow.png"), "slow.png's record")
    assert row["size"] == len(data) and row["error"] is None and row["faces"] >= 1
    wait_for(lambda: "slow.png" in watch.links().values(), "slow.png's link")

    # Moved and renamed: the same record (marked here to tell it from a new one), the link follows.
    with sqlite3.connect(watch.db) as conn:
        conn.execute("update files set scanned_at = 'marked' where path like '%/hopper.png'")
    (watch.dir / "sub").mkdir()
    os.rename(watch.dir / "hopper.png", watch.dir / "sub" / "grace.png")
    wait_for(lambda: "sub/grace.png" in watch.links().values(), "the link to follow the move")
    rows = watch.rows()
    assert "hopper.png" not in rows and rows["sub/grace.png"]["scanned_at"] == "marked"
    assert sorted(watch.links().values()) == ["slow.png", "sub/grace.png"]

    # A whole folder renamed: its files' records and links follow too.
    os.rename(watch.dir / "sub", watch.dir / "faces")
    wait_for(lambda: "faces/grace.png" in watch.links().values(), "the folder's files to follow")
    assert watch.rows()["faces/grace.png"]["scanned_at"] == "marked"

    # Copied and the original deleted (a move across file systems; watchdog also reports a move
    # into a folder made a moment before this way): paired by content, the record is kept.
    shutil.copy2(watch.dir / "faces" / "grace.png", watch.dir / "faces" / "copied.png")
    os.remove(watch.dir / "faces" / "grace.png")
    wait_for(lambda: set(watch.rows()) == {"slow.png", "faces/copied.png"}, "the copy to take the record over")
    assert watch.rows()["faces/copied.png"]["scanned_at"] == "marked"
    wait_for(lambda: sorted(watch.links().values()) == ["faces/copied.png", "slow.png"], "the link to follow")

    # Changed content: classified again, the link moves to the new label.
    blank().save(watch.dir / "slow.png")
    wait_for(lambda: watch.links().get("noface/slow.png") == "slow.png", "slow.png to move to noface/")
    assert watch.rows()["slow.png"]["label"] == "noface"

    # Deleted, and moved out of DIR: record and link gone; a non-media file is ignored.
    face_gif(watch.dir / "wave.gif")
    (watch.dir / "notes.txt").write_text("not a sticker")
    wait_for(lambda: "wave.gif" in watch.links().values(), "wave.gif's link")
    os.remove(watch.dir / "wave.gif")
    os.rename(watch.dir / "faces", tmp_path / "elsewhere")
    wait_for(lambda: set(watch.rows()) == {"slow.png"}, "the deleted and moved-out files to be forgotten")
    assert watch.links() == {"noface/slow.png": "slow.png"}

    assert watch.stop() == 130
    check_consistent(watch)


@pytest.mark.parametrize("how", ["unlink, then link", "link renamed over it"])
def test_a_sticker_swapped_for_a_link_is_gone_as_scan_sees_it(watch, tmp_path, how):
    """Before: the record and the link stayed, and the link in OUT then opened whatever the
    swapped-in link leads to (a scan, by contrast, took the file for gone)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not the user's sticker")
    label = watch.rows()["hopper.png"]["label"]
    sticker = watch.dir / "hopper.png"
    if how == "unlink, then link":
        sticker.unlink()
        sticker.symlink_to(secret)
    else:
        (watch.dir / ".tmp-link").symlink_to(secret)
        os.rename(watch.dir / ".tmp-link", sticker)
    wait_for(lambda: watch.rows() == {}, "the swapped sticker to be forgotten")
    assert watch.links() == {} and not (watch.out / label / "hopper.png").exists()
    assert watch.stop() == 130
    check_consistent(watch)


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_a_copy_stays_when_its_sticker_is_swapped_for_a_link_to_it(tmp_path, mode):
    """A user who replaces a sticker by a link to its copy in OUT: the copy is now the only one,
    and stays (before the last-copy rule reached watch, it was removed and the link dangled)."""
    (tmp_path / "memes").mkdir()
    hopper().save(tmp_path / "memes" / "hopper.png")
    w = Watch(tmp_path, "--link-mode", mode)
    try:
        entry = w.out / w.rows()["hopper.png"]["label"] / "hopper.png"
        content = entry.read_bytes()
        sticker = w.dir / "hopper.png"
        sticker.unlink()
        sticker.symlink_to(entry)
        wait_for(lambda: w.rows() == {}, "the swapped sticker to be forgotten")
        assert not entry.is_symlink() and entry.read_bytes() == content == sticker.read_bytes()
        assert w.stop() == 130
        check_consistent(w)
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def test_a_name_reused_after_a_rename_gets_its_own_link(watch, tmp_path):
    """Before: the moved file's link kept its old name and so led to the newcomer there, in the
    wrong folder, and no scan put it right (a symlink that led anywhere counted as current)."""
    memes = tmp_path / "memes"
    os.rename(memes / "hopper.png", memes / "old_hopper.png")
    Image.open(SAMPLES / "astronaut.jpg").save(memes / "hopper.png")  # another face, another label
    wait_for(lambda: {"old_hopper.png", "hopper.png"} <= set(watch.rows()) and all(
        r["label"] for r in watch.rows().values()) and len(watch.links()) == 2, "both files filed")
    wait_for(lambda: sorted(watch.links().values()) == ["hopper.png", "old_hopper.png"], "a link to each")
    assert watch.stop() == 130
    check_out(watch.out, watch.db)


def test_a_rename_to_another_readers_ending_is_read_again(watch, tmp_path):
    """Before: hopper.png renamed hopper.mp4 kept its record and link as a move, where a scan
    reads it as a video (an error), so the watch and a scan disagreed, and no scan put it right."""
    os.rename(tmp_path / "memes" / "hopper.png", tmp_path / "memes" / "hopper.mp4")
    wait_for(lambda: (watch.rows().get("hopper.mp4") or {}).get("error"), "hopper.mp4 read as a video")
    wait_for(lambda: not watch.links(), "its link to go")
    assert watch.stop() == 130
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(watch.dir), "--db",
                              str(watch.db), "--out", str(watch.out)], capture_output=True, text=True)
    assert " 0 classified" in scanned.stdout, scanned.stdout


def test_a_clip_misnamed_gif_renamed_mp4_is_read_as_a_video(watch, tmp_path):
    """Before: the error record ("not an image file") moved with it, and no watch or scan read it again."""
    from media_makers import face_mp4
    face_mp4(tmp_path / "clip.mp4")
    shutil.copy(tmp_path / "clip.mp4", watch.dir / "clip.gif")
    wait_for(lambda: (watch.rows().get("clip.gif") or {}).get("error"), "clip.gif's error record")
    os.rename(watch.dir / "clip.gif", watch.dir / "clip.mp4")
    row = wait_for(lambda: (r := watch.rows().get("clip.mp4")) and r["kind"] == "video" and r, "clip.mp4 read as a video")
    assert row["error"] is None and row["label"]
    wait_for(lambda: "clip.mp4" in watch.links().values(), "clip.mp4's link")
    assert watch.stop() == 130
    check_out(watch.out, watch.db)


def test_a_file_replaced_by_a_folder_of_its_name_is_gone(watch, tmp_path):
    """Before: the folder at the name counted as the file still there: record and link kept."""
    os.remove(tmp_path / "memes" / "hopper.png")
    (tmp_path / "memes" / "hopper.png").mkdir()
    wait_for(lambda: not watch.rows() and not watch.links(), "hopper.png's record and link to go")
    assert watch.stop() == 130
    check_out(watch.out, watch.db)


def test_two_files_swapped_through_a_name_that_is_no_stickers_keep_their_records(watch, tmp_path):
    """Before: `mv a t; mv b a; mv t b` forgot a's record the moment b took its name, so the label
    the user had given a's content was lost when it turned up as b."""
    memes = tmp_path / "memes"
    Image.open(SAMPLES / "astronaut.jpg").save(memes / "other.png")
    wait_for(lambda: "other.png" in watch.rows(), "other.png's record")
    labelled = subprocess.run([sys.executable, "-m", "stickersort.sorter", "label", str(memes / "hopper.png"), "angry",
                               "--db", str(watch.db)], capture_output=True, text=True)
    assert labelled.returncode == 0, labelled.stderr
    hashes = {name: row["hash"] for name, row in watch.rows().items()}
    os.rename(memes / "hopper.png", memes / "swap.tmp")
    os.rename(memes / "other.png", memes / "hopper.png")
    os.rename(memes / "swap.tmp", memes / "other.png")
    wait_for(lambda: {name: row["hash"] for name, row in watch.rows().items()} == {
        "hopper.png": hashes["other.png"], "other.png": hashes["hopper.png"]}, "the records to follow their files")
    wait_for(lambda: watch.links().get("angry/other.png") == "other.png", "the user's label to follow its file")
    rows = watch.rows()
    assert rows["other.png"]["user_label"] == "angry" and rows["hopper.png"]["user_label"] is None
    assert watch.stop() == 130
    # Said path by path: hopper.png's record left it, other.png's took it, hopper.png's is back as other.png.
    said = [line.strip().replace(str(memes) + "/", "") for line in watch.log[-4:-1]]
    assert said[:2] == ["hopper.png: deleted", "other.png: moved to hopper.png"], said
    assert said[2].startswith("other.png: angry (yours"), said
    check_consistent(watch)


def test_a_scan_with_other_settings_stops_the_watch_and_its_out_is_no_sticker(watch, tmp_path):
    """Before: the watch filed on by the settings it started with, pulling the scan's links back
    into its own OUT file by file, and recorded the scan's entries in an OUT inside DIR (copies
    here) as new stickers, filing copies of copies."""
    memes = watch.dir
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(memes), "--db", str(watch.db),
                              "--out", str(memes / "sorted"), "--link-mode", "copy", "-q"], capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stderr
    watch.proc.wait(timeout=60)
    time.sleep(0.5)  # its last lines, through the reader thread
    while not watch.lines.empty():
        watch.log.append(watch.lines.get())
    assert watch.proc.returncode == 2 and watch.log[-1].strip() == (
        f"Error: {memes} was scanned with --out {memes / 'sorted'}, --link-mode copy while the watch ran: the watch "
        f"stopped, its records kept (watch again to follow them)")
    again = Watch(tmp_path, "--out", str(memes / "sorted"))  # as the scan left it
    try:
        hopper(200).save(memes / "new.png")
        wait_for(lambda: "new.png" in again.rows(), "the new sticker to be filed")
        time.sleep(2 * SETTLE + 1)
        assert sorted(again.rows()) == ["hopper.png", "new.png"]  # nothing under sorted/
        assert again.stop() == 130
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def test_a_subfolder_scanned_with_other_settings_stops_the_watch_too(tmp_path):
    """Before: the watch refiled the subfolder's files by its own --min-confidence at their next
    change, without a word, undoing the scan's."""
    sub = tmp_path / "memes" / "sub"
    sub.mkdir(parents=True)
    hopper().save(sub / "a.png")
    watch = Watch(tmp_path)
    try:
        from stickersort.model.labels import DEFAULT_MIN_CONFIDENCE
        for given in ([], ["--min-confidence", str(DEFAULT_MIN_CONFIDENCE)]):  # both file as the watch does
            same = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(sub), "--db", str(watch.db),
                                   "-q", *given], capture_output=True, text=True)
            assert same.returncode == 0, same.stderr
            time.sleep(2.5)
            assert watch.proc.poll() is None
        other = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(sub), "--db", str(watch.db),
                                "--min-confidence", "0.9", "-q"], capture_output=True, text=True)
        assert other.returncode == 0, other.stderr
        watch.proc.wait(timeout=60)
        time.sleep(0.5)
        while not watch.lines.empty():
            watch.log.append(watch.lines.get())
        assert watch.proc.returncode == 2 and watch.log[-1].strip() == (
            f"Error: {sub} was scanned with --min-confidence 0.9 while the watch ran: the watch stopped, its "
            f"records kept (a watch of {tmp_path / 'memes'} would file that folder by its own settings again)")
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()


def test_forgetting_dir_under_the_watch_is_no_change_of_its_settings(tmp_path):
    """`forget DIR` drops DIR's settings; a parent's older ones then stand for DIR. Before: the
    watch took them for a scan's new ones and stopped saying so; then it went on, filing only what
    changed from then on. It stops, saying what happened."""
    parent = tmp_path / "lib"
    (parent / "memes").mkdir(parents=True)
    hopper().save(parent / "memes" / "hopper.png")
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(parent), "--db",
                              str(tmp_path / "s.db"), "--out", str(tmp_path / "outA"), "-q"], capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stderr
    w = Watch(parent, "--min-confidence", "0.3")  # its own settings: OUT and threshold other than the parent's
    try:
        forgot = subprocess.run([sys.executable, "-m", "stickersort.sorter", "forget", str(w.dir), "--db", str(w.db)],
                                capture_output=True, text=True)
        assert forgot.returncode == 0, forgot.stderr
        assert w.proc.wait(timeout=60) == 2
        w.stop()
        said = [line for line in w.log if line.startswith("Error")]
        assert len(said) == 1 and "was forgotten" in said[0] and "scanned with" not in said[0], w.log
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def _exchange(a, b):
    """renameat2(a, b, RENAME_EXCHANGE), as `mv --exchange` does: the two names trade files at once."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("needs renameat2 (glibc 2.28)")
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2):  # AT_FDCWD, RENAME_EXCHANGE
        pytest.skip(f"RENAME_EXCHANGE refused here: {os.strerror(ctypes.get_errno())}")


def test_two_labelled_files_exchanged_at_once_keep_their_records(watch, tmp_path):
    """Before: of the two moves an exchange is reported as, the first forgot the other file's
    record (its label with it) and the second dropped the other file unfiled: no record, no link."""
    memes = tmp_path / "memes"
    Image.open(SAMPLES / "astronaut.jpg").save(memes / "other.png")
    wait_for(lambda: "other.png" in watch.rows(), "other.png's record")
    for name, label in (("hopper.png", "angry"), ("other.png", "sad")):
        labelled = subprocess.run([sys.executable, "-m", "stickersort.sorter", "label", str(memes / name), label,
                                   "--db", str(watch.db)], capture_output=True, text=True)
        assert labelled.returncode == 0, labelled.stderr
    hashes = {name: row["hash"] for name, row in watch.rows().items()}
    _exchange(memes / "hopper.png", memes / "other.png")
    wait_for(lambda: {name: (row["hash"], row["user_label"]) for name, row in watch.rows().items()} == {
        "hopper.png": (hashes["other.png"], "sad"), "other.png": (hashes["hopper.png"], "angry")},
        "the records and labels to follow their files")
    wait_for(lambda: watch.links() == {"sad/hopper.png": "hopper.png", "angry/other.png": "other.png"},
             "the links to follow their files")
    assert watch.stop() == 130
    check_consistent(watch)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_named_as_a_sticker_while_a_deleted_file_awaits_its_move_is_an_error_record(watch, tmp_path):
    """Before: the watch, looking for the deleted file's content in the newcomer to pair them as a
    move, ended with exit 70 (MediaError: not a regular file)."""
    os.remove(tmp_path / "memes" / "hopper.png")
    os.mkfifo(tmp_path / "memes" / "pipe.gif")
    row = wait_for(lambda: watch.rows().get("pipe.gif"), "the pipe's record")
    assert row["error"] == "not a regular file"
    wait_for(lambda: "hopper.png" not in watch.rows(), "the deleted file to be forgotten")
    assert watch.stop() == 130
    check_consistent(watch)


def test_out_deleted_under_the_watch_is_made_again(watch, tmp_path):
    """Before: the next file ended the watch with exit 70 (LinkError: cannot open OUT)."""
    shutil.rmtree(watch.out)
    hopper().save(tmp_path / "memes" / "again.png")
    wait_for(lambda: list(watch.links().values()) == ["again.png"], "the new file linked in a new OUT")
    assert watch.stop() == 130
    assert (watch.out / ".stickersort-db").read_text().strip() == str(watch.db)
    check_out(watch.out, watch.db, complete=False)  # hopper's link went with OUT: the next scan makes it


def test_a_label_folder_it_cannot_use_ends_the_watch_in_one_line(watch, tmp_path):
    """Before: exit 70 and the exception's class name, as for a database it could no longer write."""
    shutil.rmtree(watch.out)
    watch.out.mkdir()
    for label in (*EMOTIONS, "noface", "unsure"):
        (watch.out / label).write_text("the user's")
    hopper().save(tmp_path / "memes" / "again.png")
    assert watch.proc.wait(timeout=60) == 2
    watch.stop()
    said = [line for line in watch.log if line.startswith("Error") or "stickersort: error" in line]
    assert len(said) == 1 and "in the way" in said[0] and "LinkError" not in said[0], watch.log


@pytest.mark.parametrize("how", ["moved", "deleted and made again"])
def test_the_watched_folder_moved_or_deleted_stops_the_watch_in_one_line(watch, tmp_path, how):
    """Before: the watch went on blind, saying nothing: files put in the folder made again were never
    filed, and a moved folder's links dangled."""
    memes = tmp_path / "memes"
    if how == "moved":
        os.rename(memes, tmp_path / "elsewhere")
    else:
        shutil.rmtree(memes)
        memes.mkdir()
    assert watch.proc.wait(timeout=60) == 2
    watch.stop()
    said = [line for line in watch.log if line.startswith("Error")]
    assert len(said) == 1 and "was moved or deleted" in said[0], watch.log
    assert list(watch.rows()) == ["hopper.png"]  # its record kept, for a scan or prune to settle


def test_the_watched_folder_forgotten_stops_the_watch_in_one_line(watch, tmp_path):
    """Before: it went on, filing only what changed from then on: the folder half recorded."""
    forgot = subprocess.run([sys.executable, "-m", "stickersort.sorter", "forget", str(watch.dir), "--db", str(watch.db)],
                            capture_output=True, text=True)
    assert forgot.returncode == 0, forgot.stderr
    assert watch.proc.wait(timeout=60) == 2
    watch.stop()
    said = [line for line in watch.log if line.startswith("Error")]
    assert len(said) == 1 and "was forgotten" in said[0], watch.log


def test_a_forget_amid_a_batch_of_new_files_stops_the_watch_before_the_next_file(tmp_path):
    """Before: the watch looked for a forget once a second, and filed on meanwhile: dozens of the
    forgotten folder's files recorded and linked again before it stopped."""
    memes, db = tmp_path / "memes", tmp_path / "s.db"
    memes.mkdir()
    # Paused (SIGSTOP) as it comes to the 5th new file: between two files, holding no lock.
    args = ["watch", memes, "--out", tmp_path / "out", "--db", db, "--settle", SETTLE]
    proc = subprocess.Popen(stickersort(args, at_call=("SIGSTOP", "_classify", 5)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(tmp_path / "out"), "the first scan", STARTUP_S)  # watching from before it
        for i in range(40):  # settled together, filed one after another
            shutil.copy(SAMPLES / "astronaut.jpg", memes / f"a{i:02}.jpg")
            with open(memes / f"a{i:02}.jpg", "ab") as f:
                f.write(b"%02d" % i)  # each its own content
        wait_for(lambda: _state(proc) == "T", "the pause before the 5th file", 120)
        forgot = subprocess.run([sys.executable, "-m", "stickersort.sorter", "forget", str(memes), "--db", str(db)],
                                capture_output=True, text=True, timeout=60)
        assert forgot.returncode == 0 and forgot.stdout.startswith("forgot 4 files"), forgot.stdout + forgot.stderr
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2 and stderr.strip().splitlines()[-1].split(" was ")[1].startswith("forgotten"), stderr
    assert sqlite3.connect(db).execute("select count(*) from files").fetchone()[0] == 0


def _state(proc):
    return open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_a_scan_of_the_folder_above_does_not_stop_the_watch(watch, tmp_path):
    """Its settings row replaces the watched folder's, as forget's removal does not."""
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(tmp_path), "--db", str(watch.db),
                              "--out", str(watch.out)], capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stderr
    hopper(280).save(watch.dir / "late.png")
    wait_for(lambda: "late.png" in watch.rows(), "late.png filed by the watch that goes on")
    assert watch.proc.poll() is None
    assert watch.stop() == 130


def test_an_events_line_puts_a_score_only_beside_the_models_own_vote():
    def line(label, guess, confidence, user_label=None):
        return describe({"event": "changed", "path": "/m/a.png", "label": label, "guess": guess,
                         "confidence": confidence, "user_label": user_label})
    assert line("happy", "happy", 0.91) == "/m/a.png: happy (0.91)"
    assert line("unsure", "happy", 0.41) == "/m/a.png: unsure (happy 0.41)"
    assert line("noface", None, None) == "/m/a.png: noface"
    assert line("sad", "happy", 0.91, "sad") == "/m/a.png: sad (yours; model: happy 0.91)"
    assert line("happy", None, None, "happy") == "/m/a.png: happy (yours; model: noface)"
    assert describe({"event": "error", "path": "/m/b.png", "error": "not an image"}) == "error: /m/b.png: not an image"


def check_consistent(watch):
    conn = sqlite3.connect(watch.db)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    recorded = {Path(link).relative_to(watch.out).as_posix() for (link,) in conn.execute("select link from links")}
    assert recorded == set(watch.links())
    assert conn.execute("select count(*) from faces where file not in (select path from files)").fetchone()[0] == 0


def test_ctrl_c_stops_cleanly_mid_stream_of_files(watch):
    for i in range(6):
        hopper(200 + 10 * i).save(watch.dir / f"h{i}.png")
    wait_for(lambda: len(watch.rows()) >= 3, "some of the new files to be filed")
    assert watch.stop() == 130
    said = "".join(watch.log)  # the line every command gives after a Ctrl-C (was "stopped: ...")
    assert "stickersort: interrupted; " in said and " classified" in said and "Traceback" not in said
    check_consistent(watch)
    # A later scan finds the database sound and files the rest.
    done = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(watch.dir), "--out", str(watch.out),
                           "--db", str(watch.db), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(watch.rows()) == 7


def test_watch_with_the_live_preview_in_the_same_process(tmp_path):
    from test_web import state as live_state, still_clip

    (tmp_path / "memes").mkdir()
    clip = still_clip(tmp_path / "clip.mp4", frames=10)
    with socket.socket() as probe:  # a port of its own, not 0: the watch tries it before its first scan
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    w = Watch(tmp_path, "--live", "--source", str(clip), "--loop", "--web", f"127.0.0.1:{port}")
    try:
        url = w.wait_line("http://").split("http://", 1)[1].split()[0]
        hopper().save(w.dir / "new.png")
        # The record is saved a moment before its link is made: wait for both.
        wait_for(lambda: "new.png" in w.rows() and w.links(), "the watch to file and link new.png")
        label = w.rows()["new.png"]["label"]
        assert w.links() == {f"{label}/new.png": "new.png"}
        # The preview matches against the library the watch keeps: new.png shows the same face.
        state = wait_for(lambda: live_state(f"http://{url.rstrip('/')}")["stickers"], "a match")
        assert [s["name"] for s in state] == ["new.png"] and state[0]["label"] == label
        assert w.stop() == 130
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


@pytest.mark.parametrize("preview, says", [
    (["--web", "nonsense"], "--web nonsense: expected HOST:PORT"),
    (["--source", "{tmp}/none.mp4", "--web", "127.0.0.1:0"], "none.mp4: no such file"),
    (["--source", "97", "--web", "127.0.0.1:0"], "no camera at index 97"),
    (["--source", "297", "--web", "127.0.0.1:0"], "no camera at index 297"),  # V4L2's camera 97: was unchecked
    # These two were found only after the first scan had filed the stickers:
    (["--source", "{samples}/README.md", "--web", "127.0.0.1:0"], "cannot open it as a video"),
    (["--source", "{samples}/astronaut_nod.webp", "--web", "127.0.0.1:{taken}"], "cannot listen there: Address already"),
])
def test_a_mistake_in_the_previews_arguments_is_told_before_the_watch_makes_anything(tmp_path, preview, says):
    """Before: the watch's first scan had made the database, OUT and links by the time the
    preview, in its thread, found the mistake; and then it exited 2, "nothing done"."""

    (tmp_path / "memes").mkdir()
    hopper().save(tmp_path / "memes" / "a.png")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [a.format(taken=taken.getsockname()[1], tmp=tmp_path, samples=SAMPLES) for a in preview]
        done = subprocess.run([sys.executable, "-m", "stickersort.sorter", "watch", str(tmp_path / "memes"), "--db",
                               str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "--live", *args],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memes"]


def test_the_previews_options_without_live_are_refused(tmp_path):
    (tmp_path / "memes").mkdir()
    done = subprocess.run([sys.executable, "-m", "stickersort.sorter", "watch", str(tmp_path / "memes"), "--db",
                           str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "--web", "127.0.0.1:0", "--loop"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().endswith("--web, --loop: the preview's options go with --live")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memes"]


INOTIFY = Path("/proc/sys/fs/inotify")


@contextmanager
def kernel_limit(name, value):
    """/proc/sys/fs/inotify/NAME set to value for the block (as root), then put back; a skip,
    with the reason, where it cannot be written. The kernel reads it when a watcher starts."""
    path = INOTIFY / name
    try:
        old = path.read_text()
        path.write_text(str(value))
    except OSError as e:
        pytest.skip(f"cannot set {path}: {e.strerror} (needs root)")
    try:
        yield int(old)
    finally:
        path.write_text(old)


def sticker(i, size=64):
    """A small, byte-unique face-less sticker: quick to read."""
    return png_bytes(blank(size, color=(i % 256, (i // 256) % 256, 120)))


def test_overflow_rescans_what_the_events_missed(tmp_path):
    """The kernel's queue holds 64 events; the watch is paused while 50 stickers are written among
    3,000 other changes, 200 more into a new folder, one recorded sticker is deleted and its copy
    moved: the queue overflows, and the watch rescans to find every one of them. The moved copy
    keeps its own record, not the deleted one's."""
    memes = tmp_path / "memes"
    memes.mkdir()
    for name in ("gone.png", "moved.png"):
        (memes / name).write_bytes(sticker(5000))
    with kernel_limit("max_queued_events", 64):
        w = Watch(tmp_path)
    try:
        with sqlite3.connect(w.db) as conn:
            conn.execute("update files set scanned_at = 'marked' where path like '%/moved.png'")
        os.kill(w.proc.pid, signal.SIGSTOP)  # reads nothing meanwhile: the kernel's queue fills
        try:
            noise = memes / "notes.txt"
            for i in range(3000):
                noise.write_text(str(i))
                if i % 60 == 0:
                    (memes / f"s{i // 60:02d}.png").write_bytes(sticker(i // 60))
            (memes / "burst").mkdir()
            for i in range(200):
                (memes / "burst" / f"b{i:03d}.png").write_bytes(sticker(1000 + i))
            os.remove(memes / "gone.png")
            os.rename(memes / "moved.png", memes / "burst" / "moved.png")
        finally:
            resumed = time.monotonic()
            os.kill(w.proc.pid, signal.SIGCONT)
        want = {f"s{i:02d}.png" for i in range(50)} | {f"burst/b{i:03d}.png" for i in range(200)} | {"burst/moved.png"}
        rows = wait_for(lambda: (r := w.rows()) and set(r) == want and r, "every sticker recorded", seconds=180)
        print(f"all {len(want)} recorded {time.monotonic() - resumed:.1f} s after the queue overflowed")
        assert rows["burst/moved.png"]["scanned_at"] == "marked"  # the record moved with the file
        assert w.stop() == 130
        assert "overflow" in "".join(w.log)
        check_consistent(w)
        assert len(w.links()) == len(want)
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def inotify_watches_in_use():
    """Every process's inotify watches: what counts against the limit (all of this machine's
    processes run as one user here)."""
    n = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            n += sum(line.startswith("inotify wd:") for line in fdinfo.read_text().splitlines())
        except OSError:
            pass  # a process or descriptor gone meanwhile
    return n


def test_past_the_inotify_watch_limit_it_says_so_and_polls(tmp_path):
    """30 folders and room for 10 more watches: one line says so, and a sticker dropped into a
    folder inotify could not watch is filed all the same."""
    memes = tmp_path / "memes"
    for i in range(30):
        (memes / f"d{i:02d}").mkdir(parents=True)
    (memes / "d00" / "first.png").write_bytes(sticker(1))
    with kernel_limit("max_user_watches", inotify_watches_in_use() + 10):
        started = time.monotonic()
        w = Watch(tmp_path)
        print(f"watching, by polling, {time.monotonic() - started:.1f} s after start")
    try:
        line = w.wait_line("polling")
        assert "inotify" in line and "max_user_watches" in line
        assert sum("polling" in line for line in w.log) == 1
        (memes / "d29" / "late.png").write_bytes(sticker(2))
        dropped = time.monotonic()
        wait_for(lambda: "d29/late.png" in w.rows(), "the sticker in an unwatched folder to be filed")
        print(f"filed by polling {time.monotonic() - dropped:.1f} s after it was written")
        assert w.stop() == 130
        check_consistent(w)
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_tree_that_grows_past_the_inotify_watch_limit_is_polled(tmp_path):
    """Room for every folder at start; then 12 new folders take the last watches: one line says
    so, and a sticker in the last of them is filed."""
    memes = tmp_path / "memes"
    memes.mkdir()
    with kernel_limit("max_user_watches", inotify_watches_in_use() + 6):
        w = Watch(tmp_path)
        try:
            assert not any("polling" in line for line in w.log)
            for i in range(12):
                (memes / f"d{i:02d}").mkdir()
            (memes / "d11" / "late.png").write_bytes(sticker(3))
            w.wait_line("polling")
        finally:
            if w.proc.poll() is None and not any("polling" in line for line in w.log):
                w.proc.kill()
    try:
        wait_for(lambda: "d11/late.png" in w.rows(), "the sticker in a folder made past the limit to be filed")
        assert w.stop() == 130
        check_consistent(w)
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_json_prints_one_line_per_event(tmp_path):
    memes = tmp_path / "memes"
    memes.mkdir()
    (memes / "old.png").write_bytes(b"not a picture")  # there before: the first scan's error is an event too
    face_gif(memes / "first.gif")  # and its file, `added`: the table starts from the events alone
    w = Watch(tmp_path, "--json")

    def events():
        if w.proc.poll() is None:
            w.wait_line("")  # takes in what has come
        return [json.loads(line) for line in w.log if line.startswith("{")]

    def wait_event(kind, path):
        return wait_for(lambda: next((e for e in events() if e["event"] == kind and e["path"] == str(path)), None),
                        f"a {kind} event for {path}")

    try:
        hopper().save(memes / "new.png")
        added = wait_event("added", memes / "new.png")
        assert added["label"] == w.rows()["new.png"]["label"] and 0 < added["confidence"] <= 1
        blank().save(memes / "new.png")
        assert wait_event("changed", memes / "new.png")["label"] == "noface"
        os.rename(memes / "new.png", memes / "renamed.png")
        assert wait_event("moved", memes / "renamed.png")["from"] == str(memes / "new.png")
        (memes / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
        assert wait_event("error", memes / "broken.png")["error"]
        os.remove(memes / "renamed.png")
        wait_event("removed", memes / "renamed.png")
        assert w.stop() == 130
        assert [e["event"] for e in events()] == ["added", "error", "added", "changed", "moved", "error", "removed"]
        first, old = events()[:2]
        assert first["path"] == str(memes / "first.gif") and first["label"] == w.rows()["first.gif"]["label"]
        assert old["path"] == str(memes / "old.png") and old["error"]
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_link_to_nothing_made_while_following_links_is_an_error_event(tmp_path):
    """As a scan records it. Before: no event and no record, until the next scan."""
    (tmp_path / "memes").mkdir()
    w = Watch(tmp_path, "--json", "--follow-links")
    try:
        os.symlink(tmp_path / "nowhere.png", w.dir / "dangling.png")
        row = wait_for(lambda: w.rows().get("dangling.png"), "dangling.png's record")
        assert "broken link" in row["error"]
        w.wait_line('"event": "error"')
        os.symlink("loop.png", w.dir / "loop.png")  # before: stat'ed every round for ever, never recorded
        row = wait_for(lambda: w.rows().get("loop.png"), "loop.png's record")
        assert "cannot stat" in row["error"]
        assert w.stop() == 130
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_followed_link_to_a_folder_renamed_or_removed_takes_its_files_records_along(tmp_path):
    """Before: no event; the files' records stayed, their links dangling, until the next scan."""
    (tmp_path / "memes").mkdir()
    (tmp_path / "elsewhere").mkdir()
    hopper().save(tmp_path / "elsewhere" / "hopper.png")
    os.symlink("../elsewhere", tmp_path / "memes" / "linked")
    w = Watch(tmp_path, "--json", "--follow-links")
    try:
        assert list(w.rows()) == ["linked/hopper.png"]
        labelled = subprocess.run([sys.executable, "-m", "stickersort.sorter", "label", w.dir / "linked" / "hopper.png",
                                   "sad", "--db", w.db], capture_output=True, text=True)
        assert labelled.returncode == 0, labelled.stderr
        os.rename(w.dir / "linked", w.dir / "renamed")  # its label goes along, as a folder's files' do
        w.wait_line('"event": "moved"')
        wait_for(lambda: [(k, r["user_label"]) for k, r in w.rows().items()] == [("renamed/hopper.png", "sad")],
                 "the record under the new name")
        os.unlink(w.dir / "renamed")
        w.wait_line('"event": "removed"')
        assert w.rows() == {} and not w.links()
        assert w.stop() == 130
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert (tmp_path / "elsewhere" / "hopper.png").exists()


def test_a_video_that_cannot_be_read_is_one_error_event_and_no_ffmpeg_lines(tmp_path):
    """Before: each cut-off clip was read twice (woken by its own reading), two error events and
    errors counted twice, and FFmpeg's "moov atom not found" on stderr each time."""
    from test_web import still_clip

    memes = tmp_path / "memes"
    memes.mkdir()
    whole = still_clip(tmp_path / "whole.mp4", frames=10).read_bytes()
    (memes / "before.mp4").write_bytes(whole[:2000])
    w = Watch(tmp_path, "--json")
    try:
        (memes / "after.mp4").write_bytes(whole[:2000])
        wait_for(lambda: (w.rows().get("after.mp4") or {}).get("error"), "after.mp4's error record")
        time.sleep(3 * SETTLE + 1)  # for a second reading, were there one
        assert w.stop() == 130
        errors = [json.loads(line)["path"] for line in w.log if line.startswith('{"event": "error"')]
        assert errors == [str(memes / "before.mp4"), str(memes / "after.mp4")], w.log
        assert "1 errors since the first scan" in w.log[-1] and not any("moov" in line for line in w.log), w.log
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_watch_stopped_during_its_first_scan_says_so(tmp_path):
    """Before: "interrupted; 0 classified, 0 errors since the first scan", with dozens filed."""
    memes = tmp_path / "memes"
    memes.mkdir()
    for i in range(300):  # a first scan of seconds, so that the signal comes in the middle of it
        hopper(200 + i % 80).save(memes / f"h{i:03d}.png")
    db = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-m", "stickersort.sorter", "watch", str(memes), "--db", str(db),
                             "--out", str(tmp_path / "out"), "-q"], stderr=subprocess.PIPE, text=True)

    def filed():
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute("select count(*) from files").fetchone()[0]
        except sqlite3.OperationalError:  # made a moment ago: its tables are still coming
            return 0
    try:
        wait_for(lambda: db.exists() and filed(), "the first file filed", seconds=STARTUP_S)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and 0 < filed() < 300, (filed(), err)
    assert err.splitlines() == ["stickersort: interrupted; during the first scan: every file done so far is recorded "
                                "and linked; watch or scan again to finish"]
    check_out(tmp_path / "out", db)


def test_the_watchs_first_line_counts_what_its_first_scan_removed(tmp_path):
    """Before: "2 files, 0 classified, 0 errors", when the first scan had also removed the records
    (labels too) and links of files gone or no longer walked: here a link, now not followed."""
    memes = tmp_path / "memes"
    memes.mkdir()
    blank().save(tmp_path / "o.png")
    (memes / "l.png").symlink_to(tmp_path / "o.png")
    hopper().save(memes / "hopper.png")
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(memes), "--db",
                              str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "--follow-links", "-q"],
                             capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stderr
    w = Watch(tmp_path, "--no-follow-links")
    try:
        line = w.wait_line("watching")
        assert "1 file, 0 classified, 0 errors, 1 vanished, 1 link removed; watching" in line, line
        assert sorted(w.rows()) == ["hopper.png"]
        assert w.stop() == 130
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_folder_deleted_under_the_watch_takes_the_records_a_scan_of_it_made(tmp_path):
    """Before: the watch looked only at records its own DIR's scans had made, so the stickers of a
    folder scanned on its own (`scan DIR/sub`) kept their records and links after `mv DIR/sub ..`."""
    memes = tmp_path / "memes"
    (memes / "sub").mkdir(parents=True)
    blank().save(memes / "sub" / "x.png")
    scanned = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", str(memes / "sub"), "--db",
                              str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "-q"], capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stderr
    w = Watch(tmp_path)
    try:
        assert sorted(w.rows()) == ["sub/x.png"]
        (memes / "sub").rename(tmp_path / "sub")  # moved out of DIR: one event, for the folder
        wait_for(lambda: not w.rows(), "the folder's records to go")
        assert w.links() == {} and w.stop() == 130
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_a_file_denied_reading_is_read_once_a_chmod_allows_it(tmp_path):
    """A chmod changes neither size nor mtime. Before: the file stayed an error until --rescan."""
    from test_scan import _without_root_file_access
    if os.geteuid() == 0 and not sys.platform.startswith("linux"):
        pytest.skip("root reads any file; dropping that needs Linux capabilities")
    memes, db = tmp_path / "memes", tmp_path / "s.db"
    memes.mkdir()
    hopper().save(memes / "a.png")
    os.chmod(memes / "a.png", 0)
    proc = subprocess.Popen([sys.executable, "-m", "stickersort.sorter", "watch", str(memes), "--out", str(tmp_path / "out"),
                             "--db", str(db), "--settle", str(SETTLE), "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)
    def record():
        try:
            return sqlite3.connect(db).execute("select label, error from files").fetchone()
        except sqlite3.OperationalError:  # not made yet
            return None
    try:
        wait_for(lambda: record() == (None, "permission denied"), "the error record", STARTUP_S)
        os.chmod(memes / "a.png", 0o644)
        wait_for(lambda: (record() or (None, ""))[0] is not None, "a.png read and filed")
        assert record()[1] is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
