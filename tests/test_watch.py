"""`stickersort watch`: the real command in its own process, a real watchdog observer on a temp
folder, real files written, moved and deleted, the database and the links checked after each step."""
import io
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from media_makers import blank, face_gif, hopper

SETTLE = 1.5  # seconds a file must stand still; the slow writer below pauses 0.1 s


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
        self.wait_line("watching")

    def wait_line(self, text):
        def seen():
            while not self.lines.empty():
                self.log.append(self.lines.get())
            assert self.proc.poll() is None, "".join(self.log)
            return next((line for line in self.log if text in line), None)
        return wait_for(seen, f"{text!r} from watch")

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

    assert watch.stop() == 0
    check_consistent(watch)


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
    assert watch.stop() == 0
    assert "stopped:" in "".join(watch.log) and "Traceback" not in "".join(watch.log)
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
    w = Watch(tmp_path, "--live", "--source", str(clip), "--loop", "--web", "127.0.0.1:0")
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
        assert w.stop() == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
