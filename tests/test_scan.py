"""`stickersort scan` on real files, real SQLite and the shipped model."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, tree_hash
from invariants import check_out
from media_makers import blank, bomb_png, face_gif, hopper, png_header_only, shaped
from stickersort.model.faces import make_detector
from stickersort.sorter import media
from stickersort.sorter.paths import OWNER_FILE


def scan(cli, src, tmp_path, *extra):
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--json", "-q", *extra)
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, summary


def rows(tmp_path, sql="select * from files"):
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(sql)]


def links(out):
    """OUT's entries, its marker (the database that owns it) aside."""
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*")
                  if (p.is_symlink() or p.is_file()) and p.name != OWNER_FILE)


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "memes"
    (d / "sub").mkdir(parents=True)
    hopper().save(d / "hopper.png")
    hopper().save(d / "sub" / "hopper.jpg", quality=90)
    face_gif(d / "sub" / "wave.gif")
    blank().save(d / "nothing.png")
    (d / "notes.txt").write_text("not a sticker, not scanned")
    return d


def test_scan_records_votes_and_links(cli, src, tmp_path):
    before = tree_hash(src)
    result, summary = scan(cli, src, tmp_path)
    assert result.exit_code == 0, result.output
    assert summary["files"] == 4 and summary["classified"] == 4 and summary["errors"] == 0
    files = {Path(r["path"]).name: r for r in rows(tmp_path)}
    assert set(files) == {"hopper.png", "hopper.jpg", "wave.gif", "nothing.png"}
    assert files["nothing.png"]["label"] == "noface" and files["nothing.png"]["faces"] == 0
    gif = files["wave.gif"]
    assert gif["kind"] == "animation" and gif["frames_total"] == 6 and gif["frames_sampled"] == 6
    assert gif["frames_with_faces"] >= 4
    for r in (files["hopper.png"], gif):
        scores = json.loads(r["scores"])
        assert r["label"] in scores and abs(sum(scores.values()) - 1) < 0.01
        assert r["confidence"] == max(scores.values()) and 0 <= r["margin"] <= r["confidence"]
        assert len(r["hash"]) == 64 and r["model_id"] and r["error"] is None
    faces = rows(tmp_path, "select * from faces")
    assert len(faces) == sum(r["faces"] for r in files.values())
    assert all(len(json.loads(f["probs"])) == 7 and f["w"] > 50 for f in faces)
    out = tmp_path / "out"
    made = links(out)
    assert len(made) == 4 and "noface/nothing.png" in made
    for link in out.rglob("*"):
        if link.is_symlink():
            assert not os.path.isabs(os.readlink(link)) and link.resolve().exists()
    assert tree_hash(src) == before


def test_rescan_is_incremental_and_follows_changes(cli, src, tmp_path):
    scan(cli, src, tmp_path)
    _, again = scan(cli, src, tmp_path)
    assert again["classified"] == 0 and again["unchanged"] == 4
    assert again["links"] == {"created": 0, "moved": 0, "removed": 0, "kept": 4, "last_copies": 0}
    os.utime(src / "hopper.png")  # new mtime, same bytes: hashed, not decoded
    _, touched = scan(cli, src, tmp_path)
    assert touched["classified"] == 0
    blank().save(src / "hopper.png")  # the content changes: reclassified, link moves
    (src / "nothing.png").unlink()  # vanished: record and link go
    _, changed = scan(cli, src, tmp_path)
    assert changed["classified"] == 1 and changed["vanished"] == 1
    assert changed["links"]["moved"] == 1 and changed["links"]["removed"] == 1
    assert "noface/hopper.png" in links(tmp_path / "out")
    assert "noface/nothing.png" not in links(tmp_path / "out")
    _, forced = scan(cli, src, tmp_path, "--rescan")
    assert forced["classified"] == 3


def test_dry_run_writes_nothing(cli, src, tmp_path):
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--dry-run")
    assert result.exit_code == 0
    assert "would link" in result.stderr and "noface" in result.stderr
    assert ": noface (" not in result.stderr  # no score where none was given (was "noface (0.00)")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memes"] and Path(src).name == "memes"  # no database
    # What it would do is said the way a scan says what it did.
    assert "would be 4 created" in result.stdout and "labels: none" not in result.stdout
    done = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--json")
    dry = json.loads(cli("scan", src, "--out", tmp_path / "o2", "--db", tmp_path / "s2.db", "--dry-run", "--json").stdout)
    assert dry["labels"] == json.loads(done.stdout)["labels"] and dry["dry_run"]
    # An existing database, even of an older schema, is read, not written (not even upgraded).
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("pragma user_version = 1")
        conn.execute("pragma wal_checkpoint(truncate)")
    before = (tmp_path / "s.db").read_bytes()
    again = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--dry-run", "--rescan")
    assert again.exit_code == 0 and (tmp_path / "s.db").read_bytes() == before
    (tmp_path / "empty.db").write_bytes(b"")  # as a real scan would, a dry run takes it for a new one
    empty = cli("scan", src, "--out", tmp_path / "o3", "--db", tmp_path / "empty.db", "--dry-run")
    assert empty.exit_code == 0 and (tmp_path / "empty.db").read_bytes() == b""


def test_past_twenty_errors_the_summary_says_where_the_rest_are(cli, tmp_path):
    src = tmp_path / "memes"
    src.mkdir()
    for i in range(23):
        (src / f"bad{i:02}.png").write_bytes(b"junk")
    for extra, rest in ((["--dry-run"], "scan without --dry-run to record them"), ([], "`stickersort query error` lists them")):
        result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", *extra)
        assert result.exit_code == 1 and result.stderr.count("error: ") == 20, result.stderr
        assert f"... and 3 more errors ({rest})" in result.stderr
    assert len(cli("query", "error", "--db", tmp_path / "s.db").stdout.splitlines()) == 23


def test_same_name_twice_and_users_own_files_survive(cli, tmp_path):
    src = tmp_path / "memes"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        blank(color=(10, 20, 30) if sub == "a" else (200, 10, 10)).save(src / sub / "same.png")
    mine = tmp_path / "out" / "noface" / "mine.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    scan(cli, src, tmp_path)
    names = links(tmp_path / "out")
    assert "noface/same.png" in names and len([n for n in names if n.startswith("noface/same")]) == 2
    shutil.rmtree(src / "b")
    scan(cli, src, tmp_path, "--rescan")
    assert mine.read_bytes() == b"the user's own file"
    # An entry we made but the user replaced is theirs now: never removed.
    ours = tmp_path / "out" / "noface" / "same.png"
    ours.unlink()
    ours.write_bytes(b"replaced by the user")
    shutil.rmtree(src / "a")
    scan(cli, src, tmp_path)
    assert ours.read_bytes() == b"replaced by the user" and mine.exists()


def test_parallel_reads_record_and_link_as_one_reader_does(cli, src, tmp_path):
    for i in range(6):  # enough files for reads to overlap and finish out of order
        face_gif(src / f"wave{i}.gif", n=2 + i)
        blank(color=(30 * i, 90, 90)).save(src / f"same{i}.png")
    shutil.copy(src / "nothing.png", src / "sub" / "nothing.png")  # two sources, one name
    results = {}
    for jobs in ("1", "3"):
        run = tmp_path / f"j{jobs}"
        run.mkdir()
        result, summary = scan(cli, src, run, "--jobs", jobs)
        assert result.exit_code == 0 and summary["classified"] == 17, result.output
        files = rows(run, "select path, label, confidence, scores, frames_sampled, faces from files order by path")
        faces = rows(run, "select file, frame, x, y, w, h, probs from faces order by file, frame, x")
        targets = {name: os.readlink(run / "out" / name) for name in links(run / "out")}
        results[jobs] = files, faces, targets
    assert results["1"] == results["3"]


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
def test_link_modes(cli, src, tmp_path, mode):
    result, summary = scan(cli, src, tmp_path, "--link-mode", mode)
    assert result.exit_code == 0 and summary["links"]["created"] == 4
    made = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != OWNER_FILE]
    assert len(made) == 4 and not any(p.is_symlink() for p in made)
    copy = next(p for p in made if p.name == "nothing.png")
    assert copy.read_bytes() == (src / "nothing.png").read_bytes()
    assert (copy.stat().st_ino == (src / "nothing.png").stat().st_ino) == (mode == "hardlink")


@pytest.mark.parametrize("mode, theirs_is", [("symlink", "file"), ("symlink", "link"), ("hardlink", "file"),
                                              ("copy", "file")])
def test_an_unchanged_rescan_leaves_an_entry_the_user_replaced(cli, src, tmp_path, mode, theirs_is):
    """An unchanged rescan keeps an entry as it is, without a look of its own, only when its label
    folder's listing shows it still exactly what was made; one the user replaced is theirs: left
    as it is, and the file gets a new entry beside it."""
    scan(cli, src, tmp_path, "--link-mode", mode)
    theirs, made = tmp_path / "out" / "noface" / "nothing.png", tmp_path / "out" / "noface" / "being-made"
    if theirs_is == "file":
        made.write_bytes(b"the user's own")
    else:
        os.symlink(src / "hopper.png", made)
    made.replace(theirs)  # made before ours goes: a new inode, not ours reused
    _, again = scan(cli, src, tmp_path, "--link-mode", mode)
    assert again["unchanged"] == 4 and again["links"] == {"created": 1, "moved": 0, "removed": 0, "kept": 3, "last_copies": 0}
    if theirs_is == "file":
        assert theirs.read_bytes() == b"the user's own"
    else:
        assert os.readlink(theirs) == str(src / "hopper.png")
    [new] = [p for p in links(tmp_path / "out") if p.startswith("noface/nothing-")]
    assert (tmp_path / "out" / new).read_bytes() == (src / "nothing.png").read_bytes()
    check_out(str(tmp_path / "out"), tmp_path / "s.db", mine=[str(theirs)], complete=False)


def test_a_file_that_turns_unreadable_keeps_nothing_of_its_last_reading(cli, tmp_path):
    """Before: its guess, confidence, scores and kind stayed, where database.md says null."""
    src = tmp_path / "memes"
    src.mkdir()
    hopper().save(src / "a.png")
    scan(cli, src, tmp_path)
    assert rows(tmp_path)[0]["guess"]
    (src / "a.png").write_bytes(b"no longer a picture")
    scan(cli, src, tmp_path)
    row = rows(tmp_path)[0]
    assert row["error"] and row["label"] is None and row["faces"] is None
    assert row["guess"] is row["confidence"] is row["scores"] is row["kind"] is None


def test_bad_files_get_error_records_and_the_scan_goes_on(cli, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    hopper().save(src / "good.png")
    (src / "empty.gif").write_bytes(b"")
    data = face_gif(tmp_path / "full.gif").read_bytes()
    (src / "truncated.gif").write_bytes(data[: len(data) // 8])  # cut inside its first frame
    (src / "text.gif").write_text("GIF89a? no, just text\n")
    png_header_only(src / "huge-header.png", 100_000, 100_000)
    bomb_png(src / "bomb.png")
    shaped(src / "dot.png", 1, 1)
    shaped(src / "strip.png", 20000, 20)
    (src / "with space é.png").write_bytes((src / "good.png").read_bytes())
    weird = os.fsencode(src) + b"/caf\xe9 \xff.png"
    with open(weird, "wb") as f:
        f.write((src / "good.png").read_bytes())
    os.symlink(".", src / "loop")
    before = tree_hash(src)
    result, summary = scan(cli, src, tmp_path)
    assert result.exit_code == 1  # done, with some files unreadable
    errors = {Path(e["path"]).name: e["error"] for e in summary["error_files"]}
    assert set(errors) == {"empty.gif", "truncated.gif", "text.gif", "huge-header.png", "bomb.png"}
    assert "empty" in errors["empty.gif"] and "GIF file cut short or damaged" in errors["text.gif"]  # it starts as one
    assert "too large" in errors["huge-header.png"] and "too large" in errors["bomb.png"]
    labels = {Path(r["path"]).name: r["label"] for r in rows(tmp_path)}
    assert labels["dot.png"] == labels["strip.png"] == "noface"
    assert labels["good.png"] == labels["with space é.png"] == labels["caf\\xe9 \\xff.png"] != "noface"
    assert summary["files"] == 10  # the loop was not followed
    assert all("\n" not in e for e in errors.values())
    assert tree_hash(src) == before
    _, again = scan(cli, src, tmp_path, "--follow-links")  # following links: the loop ends
    assert again["files"] == 10 and again["classified"] == 0


def test_a_file_symlink_loop_followed_is_one_error_record(cli, tmp_path):
    src = tmp_path / "memes"
    src.mkdir()
    shutil.copy(Path(__file__).parent.parent / "sample_stickers" / "hopper.png", src / "good.png")
    os.symlink("loop.png", src / "loop.png")  # stat() on it: ELOOP
    result, summary = scan(cli, src, tmp_path, "--follow-links")
    assert result.exit_code == 1, result.output  # done, with one file unreadable
    assert summary["files"] == 2 and summary["classified"] == 1 and summary["errors"] == 1
    [error] = summary["error_files"]
    assert Path(error["path"]).name == "loop.png" and error["error"].startswith("cannot stat")
    labels = {Path(r["path"]).name: (r["label"], r["error"]) for r in rows(tmp_path)}
    assert labels["loop.png"] == (None, error["error"])
    assert labels["good.png"][0] not in (None, "noface") and labels["good.png"][1] is None
    assert [Path(p).name for p in links(tmp_path / "out")] == ["good.png"]


def test_file_deleted_mid_scan(tmp_path):
    from stickersort.sorter.scan import Options, Scanner
    src = tmp_path / "memes"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        blank().save(src / name)

    def delete_b_while_scanning(paths):
        for path in paths:
            if Path(path).name == "a.png":  # the walk's paths are str
                (src / "b.png").unlink()
            yield path

    scanner = Scanner(Options(out=tmp_path / "out", db=tmp_path / "s.db"))
    summary = scanner.scan(src, progress=delete_b_while_scanning)
    assert summary.files == 2 and summary.vanished == 1 and summary.errors == 0
    assert sorted(Path(r["path"]).name for r in rows(tmp_path)) == ["a.png", "c.png"]


def test_a_labelled_file_moved_mid_scan_keeps_its_label(tmp_path):
    """z/x.png, labelled, moved into a/ after the walk had listed a/. Before: the scan dropped its
    record as vanished, and the next filed a/x.png by its reading, the user's label lost."""
    from stickersort.sorter.library import label_file
    from stickersort.sorter.scan import Options, Scanner
    src, db, out = tmp_path / "memes", tmp_path / "s.db", tmp_path / "out"
    (src / "a").mkdir(parents=True)
    (src / "z").mkdir()
    blank().save(src / "a" / "blank.png")
    hopper().save(src / "z" / "x.png")
    Scanner(Options(out=out, db=db)).scan(src)
    label_file(db, src / "z" / "x.png", "sad")

    def move_x_while_scanning(paths):
        for path in paths:
            if Path(path).name == "x.png":
                os.rename(src / "z" / "x.png", src / "a" / "x.png")
            yield path

    summary = Scanner(Options(out=out, db=db, rescan=True)).scan(src, progress=move_x_while_scanning)
    assert summary.vanished == 1
    summary = Scanner(Options(out=out, db=db)).scan(src)
    filed = {Path(r["path"]).name: (r["label"], r["user_label"]) for r in rows(tmp_path)}
    assert filed == {"blank.png": ("noface", None), "x.png": ("sad", "sad")}
    assert [r["path"] for r in rows(tmp_path) if r["user_label"]] == [str(src / "a" / "x.png")]
    check_out(str(out), db)


def _without_root_file_access():
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so even root obeys modes."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_file(tmp_path):
    src = tmp_path / "memes"
    src.mkdir()
    blank().save(src / "ok.png")
    blank().save(src / "secret.png")
    os.chmod(src / "secret.png", 0)
    if os.geteuid() == 0 and not sys.platform.startswith("linux"):
        pytest.skip("root reads any file; dropping that needs Linux capabilities")
    before = tree_hash(src)
    scan = lambda: subprocess.run(
        [sys.executable, "-m", "stickersort.sorter", "scan", str(src), "--out", str(tmp_path / "out"),
         "--db", str(tmp_path / "s.db"), "-q"], capture_output=True, text=True,
        preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)
    proc = scan()
    assert proc.returncode == 1, proc.stderr
    assert "secret.png: permission denied" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "out" / "noface" / "ok.png").is_symlink()
    os.chmod(src / "secret.png", 0o644)
    assert tree_hash(src) == before
    # Before: its size and mtime unchanged by the chmod, it stayed an error until --rescan.
    assert scan().returncode == 0 and (tmp_path / "out" / "noface" / "secret.png").is_symlink()


@pytest.mark.parametrize("case", ["missing", "file", "out-contains-dir", "db-unwritable", "db-dir", "nan", "inf",
                                  "frames-0", "no-dir", "out-under-a-file"])
def test_bad_arguments_fail_in_one_line(cli, src, tmp_path, case):
    """nan and inf: before, --min-confidence nan was taken (as 0: nothing unsure) and --settle inf
    meant nothing was ever read; click's usage errors were a four-line block."""
    args = {
        "nan": ["scan", src, "--out", tmp_path / "o", "--db", tmp_path / "s.db", "--min-confidence", "nan"],
        "inf": ["watch", src, "--out", tmp_path / "o", "--db", tmp_path / "s.db", "--settle", "inf"],
        "frames-0": ["scan", src, "--frames", "0"],
        "no-dir": ["scan"],
        "out-under-a-file": ["scan", src, "--out", src / "notes.txt" / "sorted", "--db", tmp_path / "s.db"],
        "missing": ["scan", tmp_path / "nope"],
        "file": ["scan", src / "notes.txt"],  # a sticker file alone is scanned (tests/test_library.py)
        "out-contains-dir": ["scan", src, "--out", src.parent],
        "db-unwritable": ["scan", src, "--out", tmp_path / "o", "--db", src / "hopper.png" / "x.db"],
        "db-dir": ["scan", src, "--out", tmp_path / "o", "--db", tmp_path],
    }[case]
    before = tree_hash(src)
    result = cli(*args)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and "Traceback" not in message
    assert tree_hash(src) == before and not (tmp_path / "o").exists() and not (tmp_path / "s.db").exists()


def test_out_inside_dir_is_skipped(cli, src, tmp_path):
    result = cli("scan", src, "--out", src / "sorted", "--db", tmp_path / "s.db")
    assert result.exit_code == 0 and "is inside" in result.stderr
    result = cli("scan", src, "--out", src / "sorted", "--db", tmp_path / "s.db", "--json")
    summary = json.loads(result.stdout)
    assert summary["files"] == 4 and summary["classified"] == 0


def test_default_out_and_db_are_discoverable(cli, src, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    result = cli("scan", src, "-q")
    assert result.exit_code == 0
    assert (src.parent / "memes-by-emotion" / "noface" / "nothing.png").is_symlink()
    assert (tmp_path / "xdg" / "stickersort" / "stickersort.db").is_file()
    assert "memes-by-emotion" in result.stdout and "stickersort.db" in result.stdout
    help_text = cli("scan", "--help").stdout
    assert "DIR-by-emotion" in help_text and "STICKERSORT_DB" in help_text


def test_a_dry_run_of_another_link_mode_names_the_entries_the_run_makes(cli, src, tmp_path):
    """Before: it planned each new entry beside the old one it would replace (`hopper-<hash>.png`),
    while the run itself gives it the old one's name."""
    db, out = tmp_path / "s.db", tmp_path / "out"
    assert cli("scan", src, "--db", db, "--out", out, "--link-mode", "copy", "-q").exit_code == 0
    dry = cli("scan", src, "--db", db, "--link-mode", "symlink", "--dry-run")
    planned = sorted(line.split(": ", 1)[1].split(" -> ")[0] for line in dry.stderr.splitlines()
                     if line.startswith("would move: "))
    assert len(planned) == 4 and cli("scan", src, "--db", db, "--link-mode", "symlink", "-q").exit_code == 0
    assert planned == sorted(str(out / e) for e in links(out)) and all((out / e).is_symlink() for e in links(out))


def test_a_folder_keeps_the_settings_it_was_last_scanned_with(cli, src, tmp_path):
    """Before: a scan not given --out, --link-mode or --min-confidence took the defaults, so a
    second `scan DIR` moved every link out of the OUT the user chose (into DIR-by-emotion), turned
    copies back into symlinks and refiled the unsure. Now an option given is kept for the folder
    and for the folders under it, until another is given."""
    db, out = tmp_path / "s.db", tmp_path / "sorted"
    first = cli("scan", src, "--db", db, "--out", out, "--link-mode", "copy", "--min-confidence", "0.99", "--json")
    entries = links(out)
    assert first.exit_code == 0 and all((out / e).is_file() and not (out / e).is_symlink() for e in entries)
    assert json.loads(first.stdout)["labels"] == {"unsure": 3, "noface": 1}
    for again in (["scan", src], ["scan", src / "sub"], ["scan", src / "hopper.png"], ["scan", src, "--dry-run"]):
        summary = json.loads(cli(*again, "--db", db, "--json", "-q").stdout)
        moves = {k: summary["links"][k] for k in ("created", "moved", "removed")}
        assert summary["out"] == str(out) and moves == {"created": 0, "moved": 0, "removed": 0}, again
    assert links(out) == entries and not (tmp_path / "memes-by-emotion").exists()
    assert not (src / "sub-by-emotion").exists()
    # Another option given is kept in turn, the others as they were.
    assert json.loads(cli("scan", src, "--db", db, "--min-confidence", "0", "--json").stdout)["labels"].get("unsure") is None
    later = json.loads(cli("scan", src, "--db", db, "--json").stdout)
    assert later["labels"].get("unsure") is None and later["out"] == str(out)
    assert all(not (out / e).is_symlink() for e in links(out))
    # OUT moved by hand (or on a drive not mounted): not made again where it was.
    out.rename(tmp_path / "moved")
    result = cli("scan", src, "--db", db)
    assert result.exit_code == 2 and result.output.splitlines() == [
        f"Error: {out}, where the last scan of {src} linked its stickers, is gone (moved, or on a drive not "
        f"mounted?): nothing done; give --out, where it is now or a new one"]
    assert not out.exists()
    moved = tmp_path / "moved"
    assert cli("scan", src, "--db", db, "--out", moved, "-q").exit_code == 0
    # A one-file scan's options are that file's alone; a folder's scan replaces its subfolders'.
    assert cli("scan", src / "hopper.png", "--db", db, "--out", tmp_path / "one", "-q").exit_code == 0
    assert cli("scan", src / "sub", "--db", db, "--out", tmp_path / "sub-out", "-q").exit_code == 0
    assert json.loads(cli("scan", src, "--db", db, "--json").stdout)["links"]["moved"] == 3
    assert json.loads(cli("scan", src / "sub", "--db", db, "--json").stdout)["links"]["moved"] == 0
    made = [r["link"] for r in rows(tmp_path, "select link from links")]
    assert len(made) == 4 and all(link.startswith(f"{moved}/") for link in made)
    assert links(tmp_path / "one") == links(tmp_path / "sub-out") == []
    assert cli("forget", src, "--db", db).exit_code == 0
    assert cli("scan", src, "--db", db, "-q").exit_code == 0 and (tmp_path / "memes-by-emotion").is_dir()


def test_a_folder_scanned_following_links_goes_on_following_them(cli, tmp_path):
    """Before: --follow-links was not kept with the folder's settings, so the next plain `scan DIR`
    (or `watch DIR`) took the stickers reached through links for vanished: records, labels and
    links gone. Now it is kept until --no-follow-links is given."""
    src, elsewhere = tmp_path / "memes", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    blank().save(elsewhere / "o.png")
    (src / "l.png").symlink_to(elsewhere / "o.png")
    assert scan(cli, src, tmp_path, "--follow-links")[1]["classified"] == 1
    assert cli("label", src / "l.png", "happy", "--db", tmp_path / "s.db").exit_code == 0
    for again in ([], ["--dry-run"]):
        result, summary = scan(cli, src, tmp_path, *again)
        assert (summary["files"], summary["unchanged"], summary["links"]["removed"]) == (1, 1, 0), result.output
    assert [(r["label"], r["user_label"]) for r in rows(tmp_path)] == [("happy", "happy")]
    assert links(tmp_path / "out") == ["happy/l.png"]
    assert scan(cli, src, tmp_path, "--no-follow-links")[1]["files"] == 0  # told: the link is no sticker
    assert rows(tmp_path) == [] and links(tmp_path / "out") == []
    assert scan(cli, src, tmp_path)[1]["files"] == 0


def test_a_link_scanned_alone_is_the_link_its_folder_files(cli, tmp_path):
    """Before: `scan DIR/link.png` scanned the link's target instead, as a file of the target's
    folder: a new record filed into TARGET-by-emotion, the link's record and label untouched; and
    in a folder whose scans do not follow links it would have counted as vanished."""
    src, elsewhere, db = tmp_path / "memes", tmp_path / "elsewhere", tmp_path / "s.db"
    src.mkdir()
    elsewhere.mkdir()
    blank().save(elsewhere / "o.png")
    (src / "l.png").symlink_to(elsewhere / "o.png")
    (src / "also.png").symlink_to(elsewhere / "o.png")
    assert scan(cli, src, tmp_path, "--follow-links")[1]["classified"] == 2
    assert cli("label", src / "l.png", "happy", "--db", db).exit_code == 0
    result = cli("scan", src / "l.png", "--db", db, "--json", "--rescan")
    assert result.exit_code == 0 and json.loads(result.stdout)["out"] == str(tmp_path / "out"), result.output
    assert sorted((r["path"], r["user_label"]) for r in rows(tmp_path)) == [
        (str(src / "also.png"), None), (str(src / "l.png"), "happy")]
    assert not (tmp_path / "elsewhere-by-emotion").exists()
    # OUT's own link, scanned alone, is no sticker: before, a second record and a link to a link.
    entry = tmp_path / "out" / "happy" / "l.png"
    for given in (entry, entry.parent, tmp_path / "out"):
        assert " an OUT that stickersort made" in cli("scan", given, "--db", db, "--follow-links").output
    assert "contains the file being scanned" in cli("scan", src / "l.png", "--db", db, "--out", src).output
    assert not (tmp_path / "out" / "happy-by-emotion").exists() and not (tmp_path / "out-by-emotion").exists()
    # Where the folder's scans do not follow links, its next scan would drop what a one-file scan
    # of a link filed, label and all: refused, even when told --follow-links for that file.
    assert scan(cli, src, tmp_path, "--no-follow-links")[1]["files"] == 0
    for told in ([], ["--follow-links"]):
        refused = cli("scan", src / "l.png", "--db", db, *told)
        assert refused.exit_code == 2 and "is a symlink, which only a scan of" in refused.output, refused.output
    assert rows(tmp_path) == []


def test_a_path_through_a_link_and_up_is_the_file_the_kernel_opens(tmp_path):
    """Before: `scan lk/../a.png` (lk a link to another folder) took `./a.png`, read by text."""
    from stickersort.sorter.paths import scanned_as
    (tmp_path / "real" / "x").mkdir(parents=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "lk").symlink_to(tmp_path / "real" / "x")
    assert scanned_as(f"{tmp_path}/d/lk/../a.png") == tmp_path / "real" / "a.png"


def test_a_subfolder_scan_following_links_does_not_follow_one_up_to_its_parent(cli, tmp_path):
    """Before: the walk knew only the folders it had seen itself, so `scan DIR/sub` (following
    links, as DIR's scan had told it) walked DIR again through sub/up -> DIR, filing its stickers a
    second time under sub/up/, as `scan DIR` does not."""
    src = tmp_path / "memes"
    (src / "sub").mkdir(parents=True)
    blank().save(src / "a.png")
    blank(color=(200, 30, 30)).save(src / "sub" / "b.png")
    (src / "sub" / "up").symlink_to(src)
    assert scan(cli, src, tmp_path, "--follow-links")[1]["files"] == 2
    result, summary = scan(cli, src / "sub", tmp_path)
    assert summary["files"] == 1 and summary["classified"] == 0, result.output
    assert sorted(r["path"] for r in rows(tmp_path)) == [str(src / "a.png"), str(src / "sub" / "b.png")]


def test_a_folder_scan_not_told_asks_before_dropping_what_a_subfolder_reached_through_links(cli, tmp_path):
    """Before: `scan DIR/sub --follow-links`, then `scan DIR` (which follows no links unless told)
    dropped the stickers sub had reached through links, the labels given to them with them."""
    src, elsewhere, db = tmp_path / "memes", tmp_path / "elsewhere", tmp_path / "s.db"
    (src / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    blank().save(src / "a.png")
    blank(color=(200, 30, 30)).save(elsewhere / "x.png")
    (src / "sub" / "l.png").symlink_to(elsewhere / "x.png")
    assert scan(cli, src / "sub", tmp_path, "--follow-links")[1]["classified"] == 1
    assert cli("label", src / "sub" / "l.png", "happy", "--db", db).exit_code == 0
    refused = cli("scan", src, "--db", db, "--out", tmp_path / "out")
    assert refused.exit_code == 2 and refused.output.splitlines() == [
        f"Error: {src / 'sub'} was last scanned with --follow-links: give --follow-links to keep the stickers it "
        f"reached through links, or --no-follow-links to drop them"]
    assert [r["user_label"] for r in rows(tmp_path)] == ["happy"]
    assert scan(cli, src, tmp_path, "--follow-links")[1]["files"] == 2
    assert sorted(r["user_label"] or "" for r in rows(tmp_path)) == ["", "happy"]


def test_a_file_first_filed_by_a_subfolders_scan_is_forgotten_by_its_folders_when_gone(cli, tmp_path):
    """Before: a sticker first filed by `scan DIR/sub` was recorded as that scan's, and a later
    `scan DIR` counted only its own records as ones that may have vanished: deleted, the sticker
    kept its record and a link to nothing in OUT for good."""
    src = tmp_path / "memes"
    (src / "sub").mkdir(parents=True)
    blank().save(src / "a.png")
    blank(color=(20, 200, 30)).save(src / "sub" / "old.png")
    assert scan(cli, src, tmp_path)[1]["classified"] == 2
    blank(color=(200, 30, 30)).save(src / "sub" / "new.png")
    assert scan(cli, src / "sub", tmp_path)[1]["classified"] == 1
    (src / "sub" / "new.png").unlink()
    result, summary = scan(cli, src, tmp_path)
    assert summary["vanished"] == 1 and summary["links"]["removed"] == 1, result.output
    assert [r["path"] for r in rows(tmp_path)] == [str(src / "a.png"), str(src / "sub" / "old.png")]
    assert links(tmp_path / "out") == ["noface/a.png", "noface/old.png"]
    # A folder a scan was run on, renamed: its files vanished, and their labels go with them.
    blank(color=(200, 30, 30)).save(src / "sub" / "new.png")
    assert scan(cli, src / "sub", tmp_path)[1]["classified"] == 1
    assert cli("label", src / "sub" / "new.png", "happy", "--db", tmp_path / "s.db").exit_code == 0
    (src / "sub").rename(src / "renamed")
    result, summary = scan(cli, src, tmp_path)
    assert summary["vanished"] == 2 and summary["classified"] == 2, result.output
    assert {r["path"]: r["user_label"] for r in rows(tmp_path)} == {
        str(src / "a.png"): None, str(src / "renamed" / "old.png"): None, str(src / "renamed" / "new.png"): "happy"}
    # There, but empty whole, it may be a drive not mounted, as for DIR itself: its files are
    # kept, and said to be.
    assert scan(cli, src / "renamed", tmp_path, "--rescan")[1]["classified"] == 2  # read by it: its records
    for sticker in (src / "renamed").iterdir():
        sticker.unlink()
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--json")
    assert json.loads(result.stdout)["vanished"] == 0, result.output
    assert f"{src / 'renamed'}: scanned before, now empty whole (a drive not mounted?)" in result.stderr
    assert len(rows(tmp_path)) == 3


def test_video_clip_is_sampled_by_time(cli, tmp_path):
    from media_makers import face_mp4
    src = tmp_path / "clips"
    src.mkdir()
    face_mp4(src / "drift.mp4")
    result, summary = scan(cli, src, tmp_path, "--frames", "5")
    assert result.exit_code == 0 and summary["classified"] == 1
    (row,) = rows(tmp_path)
    assert row["kind"] == "video" and row["frames_total"] == 20 and row["frames_sampled"] == 5
    assert row["frames_with_faces"] == 5 and row["label"] != "noface"
    times = [f["time"] for f in rows(tmp_path, "select time from faces order by time")]
    assert times == pytest.approx([0.2, 0.6, 1.0, 1.4, 1.8], abs=0.051)


def test_a_face_too_small_for_the_first_look_is_found_by_the_closer_one(cli, tmp_path):
    # The astronaut in a corner of a big plain picture: an eighth of its side, under what
    # BlazeFace's first look over the whole frame finds.
    face = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))
    picture = np.full((1280, 1280, 3), 200, np.uint8)
    picture[:face.shape[0], :face.shape[1]] = face
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(picture).save(src / "small_face.png")
    frame = media.read(src / "small_face.png").frames[0].rgb
    assert make_detector().detect(frame) == []
    result, summary = scan(cli, src, tmp_path)
    assert result.exit_code == 0 and summary["files"] == 1, result.output
    (record,) = rows(tmp_path)
    assert record["faces"] == 1 and record["label"] != "noface"
    (face_row,) = rows(tmp_path, "select * from faces")
    # In the file's own pixels, where the astronaut's face is (x 108, y 80, 156 px on its own).
    assert 90 < face_row["x"] < 130 and 60 < face_row["y"] < 100 and 130 < face_row["w"] < 180


@pytest.mark.parametrize("holds", ["nothing", "an unreadable file"])
def test_a_folder_that_filed_nothing_scans_again(cli, tmp_path, holds):
    """Before: its first scan remembered an OUT it never made, and the next scan refused, taking
    OUT for moved or a drive not mounted."""
    src = tmp_path / "memes"
    src.mkdir()
    if holds != "nothing":
        (src / "bad.png").write_text("not a png")
    status = 0 if holds == "nothing" else 1
    for args in (["--out", tmp_path / "out"], [], ["--out", tmp_path / "out"]):
        result = cli("scan", src, "--db", tmp_path / "s.db", "-q", *args)
        assert result.exit_code == status, result.output
    assert (tmp_path / "out" / ".stickersort-db").is_file()


def test_a_dry_run_lists_what_its_scan_would_file(cli, tmp_path):
    """Before: `--dry-run -v` listed the database as it was (nothing, on a first scan), below a
    summary of other labels."""
    src, db, out = tmp_path / "memes", tmp_path / "s.db", tmp_path / "out"
    src.mkdir()
    for name in ("hopper.png", "astronaut.jpg", "rocket.png"):
        shutil.copy(SAMPLES / name, src / name)

    def listed(*args):
        result = cli("scan", src, "--db", db, "--out", out, "-v", *args)
        return [line for line in result.stdout.splitlines() if str(src) in line]
    would = listed("--dry-run")
    assert len(would) == 3 and not db.exists()
    assert listed() == would
    raised = listed("--dry-run", "--min-confidence", "0.999")
    assert sum(line.startswith("unsure") for line in raised) >= 1 and len(raised) == 3
    # A file since made unreadable, and one deleted, are listed by neither.
    (src / "astronaut.jpg").write_bytes(b"not a jpeg")
    (src / "rocket.png").unlink()
    after = listed("--dry-run")
    assert len(after) == 1 and after == listed()
