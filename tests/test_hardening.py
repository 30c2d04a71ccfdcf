"""Hostile names and paths, a read-only DIR, and the user's own files in OUT, through real scans."""
import json
import os
import shutil
import subprocess
import sys

from conftest import tree_hash
from invariants import check_db, check_out, query
from media_makers import blank, hopper
from test_scan import _without_root_file_access

NAMES = [
    b"new\nline.png", b"-rf.png", b"--help.gif", b"..png", b"...gif", b"a..b.jpg",
    b"x" * 251 + b".png",  # 255 bytes, the most a name may have
    "\u00e9".encode() * 125 + b".png",  # 254 bytes of two-byte characters
    b"bad \xff\xfe utf-8.png", b"\xff" * 200 + b".png",  # not UTF-8; the second's key is 4x longer
    b"Case.png", b"case.png", b"CASE.PNG",  # differ only by case
    b" space.webp", b"tab\there.png", b"quote\"'.png", b"star*?.png",
]


def make(folder, names):
    folder = os.fsencode(folder)
    face, plain = hopper(200), blank()
    for i, name in enumerate(names):
        path = os.path.join(folder, name)
        (face if i % 2 else plain).save(os.fsdecode(path),
                                        "WEBP" if name.endswith(b".webp") else ("PNG" if i % 3 else "JPEG"))


def scan(src, out, db, *extra, preexec_fn=None, prefix=()):
    proc = subprocess.run([*prefix, sys.executable, "-m", "stickersort.sorter", "scan", str(src), "--out", str(out),
                           "--db", str(db), "--json", "-q", *extra], capture_output=True, text=True,
                          preexec_fn=preexec_fn, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, (json.loads(proc.stdout) if proc.stdout.startswith("{") else None)


def test_hostile_names_outside_links_and_the_users_own_files(tmp_path):
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    make(src, NAMES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hopper(220).save(elsewhere / "outside.png")
    os.symlink(elsewhere / "outside.png", src / "link-to-outside.png")
    os.symlink(elsewhere, src / "dir-outside")
    blank(color=(9, 9, 9)).save(src / "plain.png")
    # The user's own things in OUT: a file, a note, and a link of their own with the very name
    # stickersort would give plain.png.
    mine = {out / "happy" / "mine.gif": b"GIF89a mine", out / "noface" / "notes.txt": b"notes"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    theirs = out / "noface" / "plain.png"
    os.symlink(src / "plain.png", theirs)
    keep = [str(p) for p in mine] + [str(theirs)]
    before, outside = tree_hash(src), tree_hash(elsewhere)

    def check(summary, files):
        assert summary["files"] == files and summary["errors"] == 0, summary
        check_db(db)
        check_out(str(out), db, mine=keep)
        assert all(p.read_bytes() == data for p, data in mine.items())
        assert os.readlink(theirs) == str(src / "plain.png")
        assert tree_hash(src) == before and tree_hash(elsewhere) == outside
        assert all(len(os.fsencode(name)) <= 255 for _, _, names in os.walk(out) for name in names)

    proc, summary = scan(src, out, db)
    assert proc.returncode == 0, proc.stderr
    check(summary, len(NAMES) + 1)  # links that lead out of DIR are not followed
    names = {os.path.basename(r["path"]) for r in query(db, "select path from files")}
    assert {"new\nline.png", "-rf.png", "..png", "Case.png", "case.png", "CASE.PNG"} <= names
    assert "bad \\xff\\xfe utf-8.png" in names and "\\xff" * 200 + ".png" in names
    _, summary = scan(src, out, db, "--rescan")
    check(summary, len(NAMES) + 1)
    _, summary = scan(src, out, db, "--follow-links")  # asked to: both ways out are followed
    check(summary, len(NAMES) + 3)
    assert {"link-to-outside.png", "outside.png"} <= {os.path.basename(r["path"]) for r in query(db, "select path from files")}
    os.unlink(os.path.join(os.fsencode(src), b"new\nline.png"))
    (src / "plain.png").unlink()
    before = tree_hash(src)
    _, summary = scan(src, out, db, "--no-follow-links")  # else kept from the scan before
    check(summary, len(NAMES) - 1)
    assert summary["vanished"] == 4  # the deleted two, and the two no longer followed
    assert not os.path.exists(theirs)  # their link now dangles, but stays theirs
    assert os.path.islink(theirs)


def test_read_only_dir(tmp_path):
    """DIR on a read-only mount (a bind mount in a private mount namespace, where allowed), else
    files 0444 and folders 0555 with root's override of modes dropped; DB and OUT elsewhere."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    (src / "sub").mkdir(parents=True)
    make(src, [b"a.png", b"b.png", b"sub/c.gif"])
    before = tree_hash(src)
    # Inside the namespace the shell proves DIR read-only (touch fails) before the scan runs.
    mount = ["unshare", "--mount", "sh", "-c",
             'mount --bind -o ro "$0" "$0" && ! touch "$0/probe" 2>/dev/null && exec "$@"', str(src)]
    probe = subprocess.run([*mount, "true"], capture_output=True) if shutil.which("unshare") else None
    if probe is not None and probe.returncode == 0:
        proc, summary = scan(src, out, db, prefix=mount)
    else:
        for dirpath, dirnames, filenames in os.walk(src):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
        for dirpath, _, _ in os.walk(src, topdown=False):
            os.chmod(dirpath, 0o555)
        try:
            proc, summary = scan(src, out, db, preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)
        finally:
            for dirpath, _, _ in os.walk(src):
                os.chmod(dirpath, 0o755)
    assert proc.returncode == 0, proc.stderr
    assert summary["files"] == 3 and summary["classified"] == 3
    check_db(db)
    check_out(str(out), db)
    assert tree_hash(src) == before and not (src / "probe").exists()

