"""Red team, file system (issue 28 items 1, 3, 4, 6, 9 and 11's files; issue 26 item 4): a
neighbour who can write into DIR or OUT, and an unlucky user. Each test plays one attack through
the real CLI on real files and checks that nothing outside the library is read, written or
forgotten, and that the scan says what it could not do."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tree_hash
from invariants import check_db, check_out, query
from media_makers import blank, hopper
from procs import stickersort
from stickersort.sorter.paths import OWNER_FILE, key_path, path_key
from stickersort.sorter.scan import file_hash
from test_scan import _without_root_file_access

DEADLINE_S = 300


def run(*args, at_call=None, as_user=False):
    """`stickersort ARGS` in a child; as_user: root's power over file modes dropped (Linux)."""
    if as_user and os.geteuid() == 0 and not sys.platform.startswith("linux"):
        pytest.skip("root reads any folder; dropping that needs Linux capabilities")
    proc = subprocess.run(stickersort([str(a) for a in args], at_call=at_call), capture_output=True, text=True,
                          timeout=DEADLINE_S, preexec_fn=_without_root_file_access if as_user and os.geteuid() == 0
                          else None)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def scan(src, out, db, *extra, **kw):
    """A scan with --json: (process, summary or None)."""
    proc = run("scan", src, "--out", out, "--db", db, "--json", "-q", *extra, **kw)
    return proc, (json.loads(proc.stdout) if proc.stdout.startswith("{") else None)


def paused(args, point, meanwhile):
    """`stickersort ARGS`, stopped at the first call of `point`, meanwhile() done, resumed."""
    proc = subprocess.Popen(stickersort([str(a) for a in args], at_call=("SIGSTOP", point, 1)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"{point} never came"
        meanwhile()
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
    assert "Traceback" not in stderr, stderr
    return proc.returncode, stdout, stderr


def stickers(folder, **files):
    """folder with blank stickers (noface, quick to read) of distinct colours; name -> path."""
    made = {}
    for i, name in enumerate(files or {"x.png": None}):
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (files.get(name) or blank(color=(20 * i, 90, 200))).save(path)
        made[name] = path
    return made


def hashes(db):
    return {r["hash"] for r in query(db, "select hash from files where hash != ''")}


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# ---- 1: copy mode's temporary ------------------------------------------------------------------

def test_copy_mode_never_writes_through_a_planted_temporary(tmp_path):
    """Before: a symlink at OUT/<label>/.<name>.stickersort-tmp had the copy written into the file
    it points at, outside OUT; a user's own file of that name was overwritten."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"x.png": None, "y.png": None})
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not yours")
    (out / "noface").mkdir(parents=True)
    planted, users = out / "noface" / ".x.png.stickersort-tmp", out / "noface" / ".y.png.stickersort-tmp"
    os.symlink(victim, planted)
    users.write_bytes(b"the user's own")
    proc, summary = scan(src, out, db, "--link-mode", "copy")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == b"not yours" and users.read_bytes() == b"the user's own"
    assert os.readlink(planted) == str(victim)
    for name in ("x.png", "y.png"):
        copy = out / "noface" / name
        assert not copy.is_symlink() and copy.read_bytes() == (src / name).read_bytes()
    check_db(db)
    check_out(str(out), db, mine=[str(planted), str(users)])


def test_a_killed_copy_leaves_no_temporary_behind(tmp_path):
    """Before: a copy killed between writing its temporary and renaming it left an unrecorded
    file in OUT. Now the temporary is recorded before it is made, and the next scan removes it."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    proc, _ = scan(src, out, db, "--link-mode", "copy", at_call=("SIGKILL", "_link_whole", 1))
    assert proc.returncode == -signal.SIGKILL
    [temporary] = [p for p in out.rglob("*") if p.name.endswith(".stickersort-tmp")]
    assert [r["link"] for r in query(db, "select link from links where mode = 'tmp'")] == [path_key(temporary)]
    check_out(str(out), db, complete=False)
    proc, summary = scan(src, out, db, "--link-mode", "copy")
    assert proc.returncode == 0 and summary["unchanged"] == 1, proc.stderr
    assert not temporary.exists() and query(db, "select link from links where mode = 'tmp'") == []
    check_db(db)
    check_out(str(out), db)


# ---- 3: a folder the walk cannot read ----------------------------------------------------------

def test_a_folder_unreadable_for_a_moment_keeps_its_records(tmp_path):
    """Before: scan, chmod 000 a subfolder, rescan: "1 vanished, 1 removed", exit 0, the file still
    on disk."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"top.png": None, "sub/x.png": None})
    assert scan(src, out, db)[0].returncode == 0
    before = query(db, "select path, label, hash from files order by path")
    os.chmod(src / "sub", 0)
    try:
        proc, summary = scan(src, out, db, as_user=True)
    finally:
        os.chmod(src / "sub", 0o755)
    assert proc.returncode == 1, proc.stderr
    assert summary["vanished"] == 0 and summary["links"]["removed"] == 0
    assert summary["error_files"] == [{"path": path_key(src / "sub"), "error": "cannot read folder: Permission denied (its files' records are kept)"}]
    assert query(db, "select path, label, hash from files order by path") == before
    assert (out / "noface" / "x.png").resolve() == (src / "sub" / "x.png")
    proc, summary = scan(src, out, db)
    assert proc.returncode == 0 and summary["unchanged"] == 2 and summary["vanished"] == 0
    check_out(str(out), db)


def test_a_recorded_file_touched_and_made_unreadable_is_an_error_and_the_scan_goes_on(tmp_path):
    """Before: its new mtime sent the scan to compare its content hash, which ended the scan with
    exit 70 (PermissionError) before the files after it were read."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"a.png": None})
    assert scan(src, out, db)[0].returncode == 0
    os.utime(src / "a.png", ns=(1, 1))  # same size, new mtime: a touch
    os.chmod(src / "a.png", 0)
    stickers(src, **{"b.png": blank(color=(250, 10, 10))})
    try:
        proc, summary = scan(src, out, db, as_user=True)
    finally:
        os.chmod(src / "a.png", 0o644)
    assert proc.returncode == 1, proc.stderr
    assert summary["error_files"] == [{"path": path_key(src / "a.png"), "error": "permission denied"}]
    assert query(db, "select label from files where path = ?", (path_key(src / "b.png"),)) == [{"label": "noface"}]
    check_out(str(out), db)


@pytest.mark.parametrize("command", ["scan", "watch"])
def test_hard_links_into_another_file_system_are_refused_before_anything_is_read(tmp_path, command):
    """Before: the first file was read and recorded, then its link failed: exit 2, "nothing done",
    with a record and no link."""
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or not os.access(elsewhere, os.W_OK) or \
            os.stat(elsewhere).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    src, db = tmp_path / "memes", tmp_path / "s.db"
    stickers(src)
    out = elsewhere / f"stickersort-test-{os.getpid()}-{tmp_path.name}" / "out"
    try:
        proc = run(command, src, "--out", out, "--db", db, "--link-mode", "hardlink")
        assert not out.parent.exists()
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    assert proc.returncode == 2 and "another file system" in proc.stderr and "--link-mode copy" in proc.stderr
    assert one_line(proc.stderr) and not db.exists()


def test_show_label_and_forget_take_a_recorded_file_the_user_cannot_read(tmp_path):
    """Before: each refused it (exit 2, "Path ... is not readable"), though each reads only its
    record: a file `query error` lists as "permission denied" could be neither shown nor forgotten."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src)
    assert scan(src, out, db)[0].returncode == 0
    os.chmod(made["x.png"], 0)
    try:
        shown = run("show", made["x.png"], "--db", db, as_user=True)
        labelled = run("label", made["x.png"], "sad", "--db", db, as_user=True)
        forgotten = run("forget", made["x.png"], "--db", db, as_user=True)
    finally:
        os.chmod(made["x.png"], 0o644)
    assert shown.returncode == 0 and "noface" in shown.stdout, shown.stderr
    assert labelled.returncode == 0 and "sad (yours)" in labelled.stdout, labelled.stderr
    assert forgotten.returncode == 0 and "forgot 1 file," in forgotten.stdout, forgotten.stderr
    assert query(db, "select path from files") == [] and not list(out.rglob("x.png"))


def test_a_touched_file_deleted_while_its_content_is_compared_is_gone(tmp_path):
    """The same comparison, the file deleted under it: before, exit 70 (FileNotFoundError)."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None, "b.png": None})
    assert scan(src, out, db)[0].returncode == 0
    os.utime(made["a.png"], ns=(1, 1))
    code, stdout, _ = paused(["scan", src, "--out", out, "--db", db, "--json", "-q"], "file_hash",
                             lambda: os.remove(made["a.png"]))
    assert code == 0 and json.loads(stdout)["vanished"] == 1
    assert query(db, "select path from files") == [{"path": path_key(made["b.png"])}]
    check_out(str(out), db)


def test_prune_takes_a_file_it_cannot_see_for_one_that_is_there(tmp_path):
    """Before: with a subfolder chmod 000, `prune` forgot its files and the user's label with them."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"top.png": None, "sub/x.png": None})
    assert scan(src, out, db)[0].returncode == 0
    assert run("label", src / "sub" / "x.png", "sad", "--db", db).returncode == 0
    before = query(db, "select path, label, user_label from files order by path")
    os.chmod(src / "sub", 0)
    try:
        proc = run("prune", "--db", db, as_user=True)
    finally:
        os.chmod(src / "sub", 0o755)
    assert proc.returncode == 0 and "nothing to prune" in proc.stderr + proc.stdout
    assert query(db, "select path, label, user_label from files order by path") == before
    assert (out / "sad" / "x.png").resolve() == src / "sub" / "x.png"


def test_a_path_over_the_limit_is_reported_not_skipped(tmp_path):
    """Before: a sticker at a path over 4,096 bytes was skipped without a word, exit 0."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    fd = os.open(src, os.O_RDONLY)
    for i in range(18):  # 18 names of 250 bytes: the deepest folder's path is over 4,096 bytes
        name = f"{i:02d}" + "d" * 248
        os.mkdir(name, dir_fd=fd)
        fd, parent = os.open(name, os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    with open(os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        blank().save(f, "PNG")
    os.close(fd)
    proc, summary = scan(src, out, db)
    assert proc.returncode == 1, proc.stderr
    assert summary["files"] == 1 and summary["classified"] == 1
    [error] = summary["error_files"]
    assert error["error"] == "cannot read folder: File name too long (its files' records are kept)" and len(error["path"]) > 4000


# ---- 4: one key per path -----------------------------------------------------------------------

def test_two_names_that_used_to_share_a_key_get_two_records(tmp_path):
    """Before: a name with the byte 0xFF and a name with the four characters \\xff got one key:
    "2 files, 2 classified", 1 record."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    byte, text = os.fsencode(src) + b"/\xff.png", os.fsencode(src) + b"/\\xff.png"
    blank(color=(10, 10, 10)).save(os.fsdecode(byte), "PNG")
    blank(color=(200, 10, 10)).save(os.fsdecode(text), "PNG")
    proc, summary = scan(src, out, db)
    assert proc.returncode == 0 and summary["files"] == summary["classified"] == 2, proc.stderr
    rows = query(db, "select path, hash from files")
    assert len(rows) == 2 and len({r["hash"] for r in rows}) == 2
    assert sorted(os.fsencode(key_path(r["path"])) for r in rows) == sorted([byte, text])
    assert path_key(src / "café ok.png") == f"{src}/café ok.png"  # an ordinary name keeps its key
    # OUT shows a name as it is where it can (was "\x5cxff.png"); the byte's gets the same, tagged.
    names = sorted(p.name for p in out.rglob("*.png"))
    assert len(names) == 2 and "\\xff.png" in names and not any("x5c" in name for name in names)
    proc, summary = scan(src, out, db)
    assert summary["unchanged"] == 2 and summary["vanished"] == 0 and summary["links"]["created"] == 0
    check_out(str(out), db)


def test_a_dry_run_names_a_file_of_bytes_that_are_not_utf8_one_way(tmp_path):
    """Before: `would link: OUT/noface/bad\\xff.png -> DIR/bad\\udcff.png`, the source in Python's own escape."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    blank().save(os.fsdecode(os.fsencode(src) + b"/bad\xff.png"), "PNG")
    proc = run("scan", src, "--out", out, "--db", db, "--dry-run", "-v")
    assert proc.returncode == 0 and "udc" not in proc.stderr, proc.stderr
    assert f"would link: {out}/noface/bad\\xff.png -> {src}/bad\\xff.png" in proc.stderr, proc.stderr


@pytest.mark.parametrize("cut", range(4))
def test_a_long_name_of_bytes_that_are_not_utf8_is_shortened_between_escapes(tmp_path, cut):
    """Before: shortened for OUT, such a name could end in a piece of an escape: `...\\xff\\x.png`."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    name = b"a" * (210 + cut) + b"\xff" * 5 + b".png"  # as 4 characters each, the \xff run is cut
    blank().save(os.fsdecode(os.fsencode(src) + b"/" + name), "PNG")
    proc, summary = scan(src, out, db)
    assert proc.returncode == 0, proc.stderr
    [entry] = [p.name for p in (out / "noface").iterdir()]
    stem = entry.removesuffix(".png")
    assert stem.startswith("a" * 200) and (stem.rstrip("a") == "" or stem.endswith("\\xff")), entry
    check_out(str(out), db)


# ---- 6: entries that cannot be stat'ed, loops, /proc ---------------------------------------------

def test_a_folder_that_can_be_listed_but_not_entered(tmp_path):
    """Before: the scan ended (exit 70) on a folder with read but not execute permission."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"top.png": None, "locked/x.png": None, "locked/deeper/y.png": None})
    assert scan(src, out, db)[0].returncode == 0
    os.chmod(src / "locked", 0o444)
    try:
        proc, summary = scan(src, out, db, as_user=True)
    finally:
        os.chmod(src / "locked", 0o755)
    assert proc.returncode == 1, proc.stderr
    errors = {Path(e["path"]).relative_to(src).as_posix(): e["error"] for e in summary["error_files"]}
    assert errors == {"locked/deeper": "cannot read folder: Permission denied (its files' records are kept)",
                      "locked/x.png": "cannot stat: Permission denied"}
    assert summary["vanished"] == 0
    assert query(db, "select label from files where path = ?", [path_key(src / "locked" / "deeper" / "y.png")])


def test_symlink_loops_under_follow_links(tmp_path):
    """Before: a symlink loop under --follow-links could end the scan (exit 70)."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    (src / "d").mkdir()
    os.symlink("b", src / "a")
    os.symlink("a", src / "b")  # a -> b -> a: stat() gives ELOOP
    os.symlink("..", src / "d" / "up")  # a loop through a real folder
    os.symlink("loop.gif", src / "loop.gif")
    proc, summary = scan(src, out, db, "--follow-links")
    assert proc.returncode == 1, proc.stderr
    assert summary["files"] == 2 and summary["classified"] == 1
    [error] = summary["error_files"]
    assert error["path"].endswith("loop.gif") and error["error"].startswith("cannot stat")


@pytest.mark.parametrize("copies", [False, True], ids=["symlinks", "copies"])
def test_follow_links_never_enters_out_through_a_link_to_one_of_its_folders(tmp_path, copies):
    """Before: a link in DIR to OUT's noface/ (a shortcut to a shelf) was followed, OUT's own
    entries were filed as stickers, and each rescan added a layer: 2, 3, 4 files."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    mode = ("--link-mode", "copy") if copies else ()
    assert scan(src, out, db, *mode)[0].returncode == 0
    os.symlink(out / "noface", src / "shelf")
    for _ in range(2):
        proc, summary = scan(src, out, db, "--follow-links", *mode)
        assert proc.returncode == 0 and summary["files"] == 1 and summary["unchanged"] == 1, proc.stderr
    assert [p.name for p in (out / "noface").iterdir()] == ["x.png"]
    check_out(str(out), db)


def test_a_broken_link_under_follow_links_is_an_error_not_a_vanished_file(tmp_path):
    """Before: a link to nothing was counted "vanished during the scan", as if deleted mid-scan."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    os.symlink(tmp_path / "nowhere.png", src / "broken.png")
    proc, summary = scan(src, out, db, "--follow-links")
    assert proc.returncode == 1 and summary["vanished"] == 0 and "vanished" not in proc.stderr
    [error] = summary["error_files"]
    assert error["path"].endswith("broken.png") and "broken link" in error["error"]


def test_follow_links_into_proc_and_sys(tmp_path):
    """Before: --follow-links with a link to / (here: to /proc, where it died) ended with exit 70
    (PermissionError on /proc/1/cwd) and nothing recorded. File systems without blocks are not
    entered. (A link to / itself walks the whole machine: 77 s here, too long for a test.)"""
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    os.symlink("/proc", src / "proc")
    os.symlink("/sys", src / "sys")
    proc, summary = scan(src, out, db, "--follow-links")
    assert proc.returncode == 0, proc.stderr
    assert summary["files"] == 1 and summary["classified"] == 1


# ---- 9: OUT through a symlinked folder -----------------------------------------------------------

def test_out_reached_through_a_symlinked_folder(tmp_path):
    """Before: every link dangled (its target computed from the unresolved path), and each rescan
    renamed them, still dangling. macOS's /tmp -> /private/tmp, or a symlinked home."""
    src, db = tmp_path / "memes", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None, "sub/b.png": None})
    (tmp_path / "disk" / "real").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "real", tmp_path / "home")
    out = tmp_path / "home" / "sorted"
    proc, summary = scan(src, out, db)
    assert proc.returncode == 0, proc.stderr
    entries = sorted(p for p in out.rglob("*") if p.is_symlink())
    assert [p.resolve() for p in entries] == sorted(made.values())
    proc, again = scan(src, out, db)
    assert again["links"] == {"created": 0, "moved": 0, "removed": 0, "kept": 2, "last_copies": 0}
    assert sorted(p for p in out.rglob("*") if p.is_symlink()) == entries
    check_out(os.path.realpath(out), db)


# ---- 11: swaps, names, things in the way ---------------------------------------------------------

@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_symlink_swapped_in_mid_scan_is_not_read_into_the_library(tmp_path, swap):
    """Before: a file (or its folder) replaced by a symlink after the walk listed it had the
    content it leads to, outside DIR, recorded. The scan is paused where the swap does most harm:
    a file just before it is read (its stat taken, -j 1 so that it is read in the main thread),
    a folder before the file's stat."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"sub/x.png": None})
    outside = tmp_path / "outside"
    stickers(outside, **{"x.png": hopper(200)})
    secret = file_hash(outside / "x.png")

    def swap_in():
        if swap == "file":
            (src / "sub" / "x.png").unlink()
            os.symlink(outside / "x.png", src / "sub" / "x.png")
        else:
            (src / "sub" / "x.png").unlink()
            (src / "sub").rmdir()
            os.symlink(outside, src / "sub")

    code, stdout, stderr = paused(["scan", src, "--out", out, "--db", db, "--json", "-q", "-j", "1"],
                                  "file_hash" if swap == "file" else "_start", swap_in)
    assert code == 0, stderr
    assert secret not in hashes(db) and query(db, "select path from files") == []
    assert json.loads(stdout)["vanished"] == 1
    check_out(str(out), db)


def test_a_folder_swapped_for_a_link_before_an_unchanged_rescan_reaches_it(tmp_path):
    """An unchanged file is not looked at on its own (Scanner._kept), but its folder is: swapped
    for a link to a copy outside (same bytes, same mtimes), its files are gone from DIR, not kept."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"sub/x.png": None, "sub/y.png": None})
    outside = tmp_path / "outside"
    outside.mkdir()
    for path in made.values():
        (outside / path.name).write_bytes(path.read_bytes())
        os.utime(outside / path.name, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    assert scan(src, out, db)[0].returncode == 0

    def swap_in():
        for path in made.values():
            path.unlink()
        (src / "sub").rmdir()
        os.symlink(outside, src / "sub")

    code, stdout, stderr = paused(["scan", src, "--out", out, "--db", db, "--json", "-q"], "_start", swap_in)
    assert code == 0, stderr
    assert json.loads(stdout)["vanished"] == 2 and query(db, "select path from files") == []
    check_out(str(out), db)


def test_names_cannot_drive_the_terminal(tmp_path):
    """Before: names reached the terminal raw: one could retitle the window or clear the screen."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    title, clear, flip = "\x1b]0;pwned\x07", "\x1b[2J", "\u202e"
    stickers(src, **{f"{title}good{flip}gnp.png": None})
    (src / f"{clear}bad.gif").write_text("not a gif")
    proc = run("scan", src, "--out", out, "--db", db, "-v")
    query_out = run("query", "--db", db)
    for text in (proc.stdout, proc.stderr, query_out.stdout):
        assert not any(c in text for c in "\x1b\x07\u202e"), text
    assert "\\x1b]0;pwned\\x07good\\u202egnp.png" in proc.stdout + query_out.stdout
    assert f"{src}/\\x1b[2Jbad.gif" in proc.stderr


@pytest.mark.parametrize("intruder", ["file", "link"])
def test_a_users_entry_named_like_a_label_folder(tmp_path, intruder):
    """Before: OUT/noface being a user's file ended the scan with exit 70; a link there would have
    had the entries made in the folder it leads to. Now: exit 2, one line, nothing made."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    if intruder == "file":
        (out / "noface").write_text("my notes")
    else:
        os.symlink(elsewhere, out / "noface")
    before = tree_hash(tmp_path)
    proc = run("scan", src, "--out", out, "--db", db)
    assert proc.returncode == 2
    assert f"{out}/noface is in the way" in one_line(proc.stderr)
    assert tree_hash(tmp_path) == before and not db.exists()


def test_a_label_folder_swapped_for_a_link_mid_scan(tmp_path):
    """A neighbour who makes OUT/noface a link to their folder while the scan runs: no entry is
    made through it (exit 2, one line); their folder stays as it was."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    out.mkdir()

    def swap_in():
        os.symlink(theirs, out / "noface")

    code, _, stderr = paused(["scan", src, "--out", out, "--db", db, "-q", "--link-mode", "copy"], "place", swap_in)
    assert code == 2 and "is in the way" in one_line(stderr)
    assert list(theirs.iterdir()) == []
    check_out(str(out), db, mine=[str(out / "noface")], complete=False)


@pytest.mark.parametrize("locked", ["OUT's folder", "a label folder"])
def test_an_out_it_may_not_write_into(tmp_path, locked):
    """Before: exit 70 with a PermissionError's repr, and one link recorded that was never made.
    Now: exit 2, one line, no record of an entry that is not there."""
    src, out, db = tmp_path / "memes", tmp_path / "parent" / "out", tmp_path / "s.db"
    stickers(src)
    folder = out.parent if locked == "OUT's folder" else out / "noface"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        proc = run("scan", src, "--out", out, "--db", db, as_user=True)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2 and "Permission denied" in one_line(proc.stderr), proc.stderr
    assert not db.exists() or query(db, "select link from links") == []
    assert scan(src, out, db)[0].returncode == 0
    check_out(str(out), db)


def test_label_with_a_users_entry_in_the_way(tmp_path):
    """Before: exit 70 (LinkError), and the record said `sad (yours)` while the link stayed put."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src)
    assert scan(src, out, db)[0].returncode == 0
    (out / "sad").write_text("my notes")
    before = query(db, "select * from files"), tree_hash(src), tree_hash(out)
    proc = run("label", made["x.png"], "sad", "--db", db)
    assert proc.returncode == 2 and f"{out}/sad is in the way" in one_line(proc.stderr)
    assert (query(db, "select * from files"), tree_hash(src), tree_hash(out)) == before


def test_a_lock_file_that_is_a_directory(tmp_path):
    """Before: exit 70 (IsADirectoryError). Now: exit 2, one line, nothing made."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    Path(f"{db}.lock").mkdir()
    proc = run("scan", src, "--out", out, "--db", db)
    assert proc.returncode == 2 and "lock file" in one_line(proc.stderr)
    assert not db.exists() and not out.exists()


# ---- issue 26 item 4: one OUT, one database ---------------------------------------------------------

def test_one_out_one_database(tmp_path):
    """Before: a scan with another --db into the same OUT doubled every link (name-<hash8>)."""
    src, out = tmp_path / "memes", tmp_path / "out"
    stickers(src, **{"a.png": None, "b.png": None})
    assert scan(src, out, tmp_path / "one.db")[0].returncode == 0
    assert (out / OWNER_FILE).read_text() == f"{tmp_path / 'one.db'}\n"
    before = tree_hash(out)
    proc = run("scan", src, "--out", out, "--db", tmp_path / "two.db")
    assert proc.returncode == 2
    assert f"belongs to the database {tmp_path / 'one.db'}: use --db" in one_line(proc.stderr)
    assert tree_hash(out) == before and not (tmp_path / "two.db").exists()
    # The same database, spelt through a link, is the same owner.
    os.symlink(tmp_path / "one.db", tmp_path / "alias.db")
    assert scan(src, out, tmp_path / "alias.db")[0].returncode == 0


def test_a_rescan_with_another_link_mode_converts_the_links(tmp_path):
    """Before: rescanning with --link-mode hardlink left the symlinks as they were."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None, "b.png": None})
    entries = sorted(str(out / "noface" / name) for name in made)
    for mode in ("symlink", "hardlink", "copy", "symlink"):
        proc, summary = scan(src, out, db, "--link-mode", mode)
        assert proc.returncode == 0, proc.stderr
        assert sorted(query(db, "select mode from links"), key=str) == [{"mode": mode}] * 2
        assert sorted(str(p) for p in out.rglob("*.png")) == entries  # the same names
        for name, path in made.items():
            entry = out / "noface" / name
            assert entry.is_symlink() == (mode == "symlink") and entry.read_bytes() == path.read_bytes()
            assert (entry.stat().st_ino == path.stat().st_ino) == (mode != "copy")
        check_out(str(out), db)


@pytest.mark.parametrize("then", ["rescan as symlinks", "forget"])
def test_a_copy_the_user_edited_in_place_is_theirs(tmp_path, then):
    """Before: only the inode was compared, so a copy written to in place was replaced by a
    symlink (or removed by forget), the user's edit lost."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None, "b.png": None})
    original = made["a.png"].read_bytes()
    assert scan(src, out, db, "--link-mode", "copy")[0].returncode == 0
    edited = out / "noface" / "a.png"
    with open(edited, "ab") as f:  # the same inode, new bytes
        f.write(b"the user's note")
    content = edited.read_bytes()
    if then == "forget":
        proc = run("forget", src, "--db", db)
    else:
        proc, _ = scan(src, out, db, "--link-mode", "symlink")
    assert proc.returncode == 0, proc.stderr
    assert not edited.is_symlink() and edited.read_bytes() == content
    assert (out / "noface" / "b.png").is_symlink() == (then != "forget")  # the unedited copy: converted or gone
    assert not (out / "noface" / "b.png").exists() or then != "forget"
    check_out(str(out), db, mine=[str(edited)])
    assert made["a.png"].read_bytes() == original  # the edit went into the copy only


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_a_renamed_sticker_leaves_no_spare_copy(tmp_path, mode):
    """The last-copy rule keeps a copy only when it is the last one: a sticker renamed between
    two scans has its content under its new name, so its old entry goes."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src, **{"a.png": None, "gone.png": None})
    assert scan(src, out, db, "--link-mode", mode)[0].returncode == 0
    os.rename(src / "a.png", src / "b.png")
    os.remove(src / "gone.png")
    proc, summary = scan(src, out, db, "--link-mode", mode)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "noface").iterdir()) == ["b.png", "gone.png"]
    assert summary["links"]["last_copies"] == 1 and summary["links"]["removed"] == 1
    check_out(str(out), db, mine=[str(out / "noface" / "gone.png")])


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
@pytest.mark.parametrize("twin", ["unchanged", "edited"])
def test_a_last_copy_is_told_by_content_not_by_records(tmp_path, mode, twin):
    """Two stickers of one content: with one deleted, its entry is a spare while the other still
    holds the content, and the last copy once the other was edited (its record, not yet rescanned,
    still names the old content)."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"x.png": None})
    shutil.copy(made["x.png"], src / "y.png")
    assert scan(src, out, db, "--link-mode", mode)[0].returncode == 0
    entry = out / "noface" / "x.png"
    content = entry.read_bytes()
    if twin == "edited":
        blank(color=(1, 1, 1)).save(src / "y.png")
    made["x.png"].unlink()
    proc = run("prune", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert entry.exists() == (twin == "edited") and ("only copy" in proc.stderr) == (twin == "edited")
    if twin == "edited":
        assert entry.read_bytes() == content


def test_follow_links_forget_of_a_linked_sticker_keeps_no_spare(tmp_path):
    """A sticker reached through a link (--follow-links) is there as long as the link leads to it."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(tmp_path / "elsewhere", **{"o.png": None})
    src.mkdir()
    (src / "l.png").symlink_to(made["o.png"])
    assert scan(src, out, db, "--link-mode", "copy", "--follow-links")[0].returncode == 0
    assert (out / "noface" / "l.png").is_file()
    proc = run("forget", src / "l.png", "--db", db)
    assert proc.returncode == 0 and "only copy" not in proc.stdout + proc.stderr, proc.stderr
    assert not (out / "noface" / "l.png").exists()


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_a_changed_sticker_gets_a_new_copy_under_the_same_label(tmp_path, mode):
    """Before: the entry was kept because it was ours and in the right folder, so OUT went on
    showing the old content."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None})
    assert scan(src, out, db, "--link-mode", mode)[0].returncode == 0
    made["a.png"].unlink()  # a new file in its place, as an editor's save-as writes one
    blank(color=(250, 10, 10)).save(made["a.png"])
    proc, summary = scan(src, out, db, "--link-mode", mode)
    assert proc.returncode == 0 and summary["classified"] == 1
    assert (out / "noface" / "a.png").read_bytes() == made["a.png"].read_bytes()
    check_out(str(out), db)


def test_a_sticker_deleted_before_its_copy_is_made_counts_as_vanished(tmp_path):
    """Before: FileNotFoundError out of the linker, exit 70 (a LinkError stopping the scan, for a while)."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None})
    code, stdout, stderr = paused(["scan", src, "--out", out, "--db", db, "--link-mode", "copy", "--json", "-q"],
                                  "place", lambda: made["a.png"].unlink())
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["vanished"] == 1 and query(db, "select path from files") == []
    check_out(str(out), db)


def test_a_sticker_deleted_while_its_hard_link_becomes_a_copy_keeps_its_last_copy(tmp_path):
    """Before: place() removed the old hard link (another mode) first, then found the original
    gone: the only copy left was deleted."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    made = stickers(src, **{"a.png": None})
    assert scan(src, out, db, "--link-mode", "hardlink")[0].returncode == 0
    entry = out / "noface" / "a.png"
    content = entry.read_bytes()
    code, stdout, stderr = paused(["scan", src, "--out", out, "--db", db, "--link-mode", "copy", "--json", "-q"],
                                  "place", lambda: made["a.png"].unlink())
    assert code == 0, stderr
    assert json.loads(stdout)["vanished"] == 1 and entry.read_bytes() == content
    check_out(str(out), db, mine=[str(entry)])


def test_no_runtime_chatter_or_telemetry_where_home_is_read_only(tmp_path):
    """Before: ONNX Runtime (1.29 on) warned in terminal colours that it could not save a telemetry
    device id, on every command that classifies, and would send usage telemetry where it could."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    stickers(src)
    hopper().save(src / "face.png")  # a face, so the classifier runs
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": "/proc/nonexistent"}
    proc = subprocess.run([sys.executable, "-m", "stickersort.sorter", "scan", src, "--out", out, "--db", db, "-q"],
                          capture_output=True, text=True, env=env, timeout=DEADLINE_S)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("args", [["label", "x.png", "happy"], ["forget", "x.png"], ["show", "x.png"], ["scan", "."]])
def test_a_relative_path_given_in_a_deleted_folder_is_one_line(tmp_path, args):
    """Before: exit 70, "FileNotFoundError: [Errno 2]", when the shell sat in a folder deleted since."""
    src, db = tmp_path / "memes", tmp_path / "s.db"
    stickers(src, **{"x.png": None})
    assert scan(src, tmp_path / "out", db)[0].returncode == 0
    gone = tmp_path / "gone"
    gone.mkdir()
    proc = subprocess.Popen(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$@"', "sh",
                             *stickersort([*args, "--db", db])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 2 and stderr.splitlines() == [
        "stickersort: error: the current folder is gone (deleted or moved): change to one that exists, or give "
        "absolute paths"], stderr
    assert [r["label"] for r in query(db, "select label from files")] == ["noface"]
