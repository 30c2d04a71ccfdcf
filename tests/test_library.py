"""After a scan: show, label, forget, prune, dupes, and scan of a single file. Real scans of real
files (sample_stickers/ and tests/media_makers.py's), real SQLite, the shipped model."""
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from conftest import SAMPLES, tree_hash
from invariants import check_db, check_out, query
from media_makers import face_gif, hopper
from stickersort.sorter import contact_sheet
from stickersort.sorter.library import LibraryError, label_file


@pytest.fixture
def lib(tmp_path, cli):
    """sample_stickers/ copied and scanned: (folder, OUT, DB)."""
    src = tmp_path / "samples"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("*.py", "*.md", "*.csv"))
    out, db = tmp_path / "out", tmp_path / "s.db"
    result = cli("scan", src, "--out", out, "--db", db, "-q")
    assert result.exit_code == 0, result.output
    return src, out, db


def record(db, path):
    return query(db, "select * from files where path = ?", [str(path)])[0]


def test_show_says_why_two_faces_got_their_label(cli, lib, tmp_path):
    src, out, db = lib
    info = json.loads(cli("show", src / "two_faces.jpg", "--db", db, "--json").stdout)
    assert len(info["faces"]) == 2 and info["user_label"] is None
    (second, p2), = info["runner_up"].items()
    assert second != info["guess"] and round(info["confidence"] - p2, 4) == info["margin"]
    for face in info["faces"]:
        assert len(face["box"]) == 4 and 0 < face["detector_score"] <= 1
        assert abs(sum(face["probs"].values()) - 1) < 0.01 and face["label"] == max(face["probs"], key=face["probs"].get)
    assert {f["label"] for f in info["faces"]} == {"neutral", "happy"}  # the sample's two faces
    [link] = info["links"]
    assert link["exists"] and Path(link["link"]).parent == out / info["label"]
    text = cli("show", src / "two_faces.jpg", "--db", db).stdout
    assert "runner-up" in text and text.count("box ") == 2 and link["link"] in text
    # Its link in OUT names the same file.
    assert json.loads(cli("show", link["link"], "--db", db, "--json").stdout)["path"] == info["path"]


def test_show_image_draws_every_sampled_frame(cli, lib, tmp_path):
    src, out, db = lib
    png = tmp_path / "nod.png"
    result = cli("show", src / "astronaut_nod.webp", "--db", db, "--image", png)
    assert result.exit_code == 0, result.output
    info = json.loads(cli("show", src / "astronaut_nod.webp", "--db", db, "--json").stdout)
    n = info["frames_sampled"]
    assert n > 4 and len(info["faces"]) >= 4
    tile = contact_sheet.TILE + contact_sheet.GAP  # a 320x320 file: square tiles
    columns, rows = min(contact_sheet.COLUMNS, n), -(-n // contact_sheet.COLUMNS)
    with Image.open(png) as im:
        assert im.size == (contact_sheet.GAP + columns * tile,
                           contact_sheet.HEADER + rows * (tile + contact_sheet.CAPTION))
        boxed = sum(1 for p in im.convert("RGB").getdata() if p == contact_sheet.BOX)
    assert boxed > 400 * len(info["faces"])  # each face's box drawn (its outline alone is ~800 px)


def test_show_image_never_writes_over_or_through_a_name(cli, lib, tmp_path):
    """The picture goes only to a new file: not over the sticker itself, the database, a link
    stickersort made, or a user's link to anything."""
    src, out, db = lib
    sticker = src / "two_faces.jpg"
    [ours] = json.loads(cli("show", sticker, "--db", db, "--json").stdout)["links"]
    theirs = tmp_path / "theirs.png"
    theirs.symlink_to(sticker)
    before = tree_hash(src), db.read_bytes()
    for name in (sticker, db, Path(ours["link"]), theirs, tmp_path / "dangling.png"):
        if name.name == "dangling.png":
            name.symlink_to(tmp_path / "nowhere.png")
        result = cli("show", sticker, "--db", db, "--image", name)
        assert result.exit_code == 2 and len(result.output.splitlines()) == 1, (name, result.output)
        assert "exists" in result.output
    assert (tree_hash(src), db.read_bytes()) == before and not (tmp_path / "nowhere.png").exists()


def test_show_tells_what_changed_since_the_scan_and_draws_only_what_the_scan_saw(cli, lib, tmp_path):
    """Before: the recorded boxes were drawn on whatever picture stood at the path now; a link
    whose file was gone said it existed; a noface file's confidence was 0.0 in show, null in query."""
    src, out, db = lib
    shutil.copy(src / "rocket.png", src / "two_faces.jpg")  # another picture under the scanned name
    result = cli("show", src / "two_faces.jpg", "--db", db, "--image", tmp_path / "sheet.png")
    assert result.exit_code == 2 and "has changed since it was scanned" in result.output, result.output
    assert not (tmp_path / "sheet.png").exists()
    (src / "hopper.png").rename(tmp_path / "away.png")
    info = json.loads(cli("show", src / "hopper.png", "--db", db, "--json").stdout)
    assert not info["exists"] and [link["exists"] for link in info["links"]] == [False]
    text = cli("show", src / "hopper.png", "--db", db).stdout
    assert "(gone: `stickersort prune` forgets it)" in text and "(missing)" in text
    noface = json.loads(cli("show", src / "rocket.png", "--db", db, "--json").stdout)
    assert noface["confidence"] is None and noface["margin"] is None
    assert "1 face\n" in cli("show", src / "astronaut.jpg", "--db", db).stdout


def test_show_and_dupes_on_a_damaged_database_are_one_line(cli, lib):
    """Before: exit 70, "DatabaseError: database disk image is malformed", where query said it in one line."""
    src, out, db = lib
    with sqlite3.connect(db) as conn:
        conn.execute("pragma wal_checkpoint(truncate)")
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 4096 * 4)
    for args in (["show", src / "hopper.png"], ["dupes"]):
        result = cli(*args, "--db", db)
        assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
        assert "cannot read database" in result.output or "damaged" in result.output, result.output


def test_show_draws_only_a_png(cli, lib, tmp_path):
    src, out, db = lib
    result = cli("show", src / "two_faces.jpg", "--db", db, "--image", tmp_path / "frames.jpg")
    assert result.exit_code == 2 and "give a new name ending in .png" in result.output, result.output
    assert not (tmp_path / "frames.jpg").exists()  # before: PNG bytes under a .jpg name
    # Nor into a scanned folder, whose next scan would file the picture (before: written there).
    result = cli("show", src / "two_faces.jpg", "--db", db, "--image", src / "why.png")
    assert result.exit_code == 2 and "which is scanned" in result.output, result.output
    assert not (src / "why.png").exists()


def test_show_refuses_what_it_does_not_know(cli, lib, tmp_path):
    src, out, db = lib
    stranger = tmp_path / "stranger.png"
    hopper().save(stranger)
    result = cli("show", stranger, "--db", db)
    assert result.exit_code == 2 and "no record of" in result.output and len(result.output.splitlines()) == 1
    assert cli("show", stranger, "--db", tmp_path / "none.db").exit_code == 2


def test_scan_takes_a_single_file(cli, tmp_path):
    folder = tmp_path / "memes"
    folder.mkdir()
    hopper().save(folder / "a.png")
    hopper(240).save(folder / "b.png")
    (folder / "notes.txt").write_text("not a sticker")
    out, db = tmp_path / "out", tmp_path / "s.db"
    assert cli("scan", folder / "a.png", "--out", out, "--db", db, "-q").exit_code == 0
    assert [r["path"] for r in query(db, "select path, root from files")] == [str(folder / "a.png")]
    assert record(db, folder / "a.png")["root"] == str(folder)
    cli("scan", folder, "--out", out, "--db", db, "-q")
    result = cli("scan", folder / "b.png", "--out", out, "--db", db, "--json", "-q")
    summary = json.loads(result.stdout)
    assert summary["files"] == 1 and summary["unchanged"] == 1 and summary["vanished"] == 0
    assert len(query(db, "select path from files")) == 2  # a.png, not scanned now, is kept
    check_out(out, db)
    # Without --out, OUT is the folder's last one; for a folder never scanned, beside the file's folder.
    cli("scan", folder / "a.png", "--db", db, "-q")
    assert not (tmp_path / "memes-by-emotion").exists()
    cli("scan", folder / "a.png", "--db", tmp_path / "new.db", "-q")
    assert (tmp_path / "memes-by-emotion").is_dir()
    result = cli("scan", folder / "notes.txt", "--db", db)
    assert result.exit_code == 2 and "not a sticker file" in result.output
    assert cli("scan", folder / "gone.gif", "--db", db).exit_code == 2


def test_a_users_label_outlasts_rescans_and_other_models(cli, lib):
    src, out, db = lib
    before = tree_hash(src)
    two = src / "two_faces.jpg"
    guess = record(db, two)["guess"]
    result = cli("label", two, "sad", "--db", db)
    assert result.exit_code == 0 and "sad (yours)" in result.output
    assert os.path.islink(out / "sad" / "two_faces.jpg") and not (out / guess / "two_faces.jpg").exists()
    for extra in ((), ("--rescan",), ("--min-confidence", "0.99"), ("--detector", "haar")):
        cli("scan", src, "--out", out, "--db", db, "-q", *extra)
        row = record(db, two)
        assert (row["label"], row["user_label"]) == ("sad", "sad"), extra
        if "haar" not in extra:  # the model's own vote stays in the record
            assert row["guess"] == guess, extra
        check_db(db)
        check_out(out, db)
    assert tree_hash(src) == before
    listed = json.loads(cli("query", "sad", "--db", db, "--json").stdout)
    assert [(r["path"], r["user_label"]) for r in listed] == [(str(two), "sad")]
    row, line = record(db, two), cli("query", "sad", "--db", db).stdout.strip()
    if row["guess"] != "sad":  # the score beside a user's label is the model's, for its own guess
        assert line.startswith("sad          -  ") and line.endswith(f"(yours; model: {row['guess']} {row['confidence']:.2f})")
    assert "sad (yours)" in cli("show", two, "--db", db).stdout
    cli("label", src / "rocket.png", "happy", "--db", db)  # no face was found: nothing was scored
    [rocket] = [r for r in json.loads(cli("query", "happy", "--db", db, "--json").stdout) if r["path"].endswith("rocket.png")]
    assert rocket["confidence"] is None and rocket["guess"] is None
    assert cli("query", "happy", "--db", db).stdout.count("(yours; model: noface)") == 1
    cli("label", two, "noface", "--db", db)  # a face file filed as faceless keeps the model's score
    [mine] = [r for r in json.loads(cli("query", "noface", "--db", db, "--json").stdout) if r["path"] == str(two)]
    assert mine["confidence"] == row["confidence"] and mine["user_label"] == "noface"
    sure = cli("query", "happy", "--min-confidence", "0.99", "--db", db, "--json").stdout
    assert [r["path"] for r in json.loads(sure) if r["user_label"]] == [rocket["path"]]  # a user's label passes


def test_label_through_its_link_and_errors(cli, lib, tmp_path):
    src, out, db = lib
    link = next((out / "noface").iterdir())
    record_ = label_file(db, link, "happy")  # the call browse's correction button makes
    assert record_["user_label"] == "happy" and record_["link"] == str(out / "happy" / link.name)
    assert os.path.islink(record_["link"]) and not os.path.lexists(link)
    for path, emotion, words in ((src / "hopper.png", "grumpy", "unknown label"),
                                 (tmp_path / "nowhere.png", "happy", "no record of")):
        with pytest.raises(LibraryError, match=words):
            label_file(db, path, emotion)
        result = cli("label", path, emotion, "--db", db)
        assert result.exit_code == 2 and words in result.output and len(result.output.splitlines()) == 1
    check_out(out, db)


def test_forget_removes_only_the_links_it_made(cli, tmp_path):
    src = tmp_path / "memes"
    (src / "keep").mkdir(parents=True)
    (src / "drop").mkdir()
    hopper().save(src / "keep" / "a.png")
    hopper().save(src / "drop" / "b.png", quality=95)
    face_gif(src / "drop" / "c.gif")
    out, db = tmp_path / "out", tmp_path / "s.db"
    cli("scan", src, "--out", out, "--db", db, "-q")
    before = tree_hash(src)
    label = record(db, src / "drop" / "c.gif")["label"]
    mine = out / label / "c.gif"  # the user puts a file of their own where our link was
    mine.unlink()
    mine.write_text("the user's")
    dry = cli("forget", src / "drop", "--db", db, "--dry-run")
    assert dry.exit_code == 0 and "would forget 2 files" in dry.output
    assert len(query(db, "select path from files")) == 3
    result = cli("forget", src / "drop", "--db", db)
    assert result.exit_code == 0 and "forgot 2 files, removed 1 link" in result.output
    assert [r["path"] for r in query(db, "select path from files")] == [str(src / "keep" / "a.png")]
    assert mine.read_text() == "the user's" and tree_hash(src) == before
    check_db(db)
    check_out(out, db, mine=[str(mine)])
    nothing = cli("forget", src / "drop", "--db", db)
    assert nothing.exit_code == 0 and "no records" in nothing.output


@pytest.mark.parametrize("mode", ["symlink", "hardlink"])
def test_prune_forgets_a_deleted_folder(cli, tmp_path, mode):
    library = tmp_path / "library"
    src = library / "samples"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("*.py", "*.md", "*.csv"))
    hopper().save(library / "kept.png")
    out, db = tmp_path / "out", tmp_path / "s.db"
    cli("scan", library, "--out", out, "--db", db, "-q", "--link-mode", mode)
    n = len(query(db, "select path from files")) - 1
    shutil.rmtree(src)
    dry = cli("prune", "--db", db, "--dry-run")
    assert f"would forget {n} files" in dry.output and len(query(db, "select path from files")) == n + 1
    result = cli("prune", "--db", db)
    assert result.exit_code == 0 and f"forgot {n} files" in result.output
    assert [r["path"] for r in query(db, "select path from files")] == [str(library / "kept.png")]
    assert [r["file"] for r in query(db, "select file from links")] == [str(library / "kept.png")]
    (library / "notes.txt").touch()  # the folder is there, not bare
    (library / "kept.png").unlink()
    assert "forgot 1 file, " in cli("prune", "--db", db).output
    left = list(out.glob("*/*"))  # OUT/<label>/<name>: OUT's own marker file aside
    if mode == "symlink":
        assert left == []  # nothing dangling
    else:  # a hard link whose original is gone is the last copy: kept, the user's now
        assert len(left) == n + 1 and all(p.stat().st_nlink == 1 for p in left)
    check_db(db)
    assert "nothing to prune" in cli("prune", "--db", db).output


def _labelled_library(cli, tmp_path):
    """Two stickers scanned from drive/memes, one labelled by the user: (folder, OUT, DB)."""
    src = tmp_path / "drive" / "memes"
    src.mkdir(parents=True)
    for name in ("two_faces.jpg", "hopper.png"):
        shutil.copy(SAMPLES / name, src / name)
    out, db = tmp_path / "out", tmp_path / "s.db"
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert cli("label", src / "two_faces.jpg", "sad", "--db", db).exit_code == 0
    return src, out, db


def _labels(db):
    return {Path(r["path"]).name: (r["label"], r["user_label"]) for r in query(db, "select * from files")}


@pytest.mark.parametrize("away", ["gone", "empty"])
def test_prune_leaves_alone_a_scanned_folder_gone_or_empty_whole(cli, tmp_path, away):
    """A drive that is not mounted looks like a folder gone (or a bare mount point). Before:
    prune forgot every record under it, and the labels the user had given with them."""
    src, out, db = _labelled_library(cli, tmp_path)
    before, links = _labels(db), sorted(out.rglob("*"))
    src.rename(tmp_path / "away")
    if away == "empty":
        src.mkdir()
    for dry in ([], ["--dry-run"]):
        result = cli("prune", "--db", db, *dry)
        assert result.exit_code == 0 and result.output.splitlines() == [
            f"left alone: 2 recorded files under {src}, which is gone or empty (a drive not mounted?); "
            f"`stickersort forget {src}` drops them"]
    assert _labels(db) == before and sorted(out.rglob("*")) == links
    if away == "empty":
        src.rmdir()
    (tmp_path / "away").rename(src)
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert _labels(db) == before and before["two_faces.jpg"] == ("sad", "sad")
    src.rename(tmp_path / "away")
    assert "forgot 2 files, removed 2 links" in cli("forget", src, "--db", db).output


def test_a_scan_of_a_scanned_folder_found_empty_forgets_nothing(cli, tmp_path):
    """An unmounted drive's bare mount point. Before: every record under it vanished, the
    user's labels with them, exit 0."""
    src, out, db = _labelled_library(cli, tmp_path)
    before, links = _labels(db), sorted(out.rglob("*"))
    src.rename(tmp_path / "away")
    src.mkdir()
    for command in (["scan", "--out", out], ["scan", "--dry-run", "--out", out], ["watch", "--out", out]):
        result = cli(command[0], src, "--db", db, *command[1:])
        assert result.exit_code == 2, result.output
        assert result.output.splitlines()[-1] == (
            f"Error: {src} is empty, but 2 files are recorded from it (a drive not mounted?): nothing forgotten; "
            f"`stickersort forget {src}` drops them")
    assert _labels(db) == before and sorted(out.rglob("*")) == links
    check_db(db)


def test_a_folder_made_another_databases_out_keeps_its_records(cli, tmp_path):
    """Scans skip a folder marked as an OUT (its entries are links and copies). Before that was
    made safe, a folder of originals another database had used as its OUT was skipped and its
    files' records forgotten as vanished, the user's labels with them."""
    src, out, db = _labelled_library(cli, tmp_path)
    keep = src / "keep"
    keep.mkdir()
    (src / "two_faces.jpg").rename(keep / "two_faces.jpg")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    before = _labels(db)
    assert before["two_faces.jpg"] == ("sad", "sad")
    assert cli("scan", tmp_path / "drive", "--out", keep, "--db", tmp_path / "other.db", "-q").exit_code == 0
    result = cli("scan", src, "--out", out, "--db", db)
    assert result.exit_code == 0 and f"{keep}: an OUT (it holds .stickersort-db): not scanned, its files' records kept" \
        in result.stderr
    assert _labels(db) == before
    check_out(out, db)


def test_a_label_follows_its_file_renamed_between_scans(cli, tmp_path):
    """Before: the renamed file was read as new and its old record forgotten, the label with it."""
    src, out, db = _labelled_library(cli, tmp_path)
    (src / "moved").mkdir()
    (src / "two_faces.jpg").rename(src / "moved" / "renamed.jpg")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert _labels(db) == {"renamed.jpg": ("sad", "sad"), "hopper.png": ("neutral", None)}
    assert [p.name for p in (out / "sad").iterdir()] == ["renamed.jpg"]
    check_db(db)
    check_out(out, db)
    # Two copies of one content, labelled apart and both moved: each label follows its name.
    shutil.copy(src / "hopper.png", src / "copy.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert cli("label", src / "copy.png", "happy", "--db", db).exit_code == 0
    assert cli("label", src / "hopper.png", "angry", "--db", db).exit_code == 0
    for name in ("copy.png", "hopper.png"):
        (src / name).rename(src / "moved" / name)
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert _labels(db) == {"renamed.jpg": ("sad", "sad"), "copy.png": ("happy", "happy"), "hopper.png": ("angry", "angry")}


def _names_and_labels(db):
    return {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r["user_label"]
            for r in query(db, "select * from files")}


def test_a_label_stays_with_its_copy_when_a_folder_of_copies_is_renamed(cli, tmp_path):
    """Copies of one meme, one labelled, their folders renamed. Before: the label went to the
    first new file of that content, and the labelled one went back to the model's label."""
    src = tmp_path / "memes"
    for folder, name in (("x", "a.png"), ("y", "a.png"), ("z", "b.png")):
        (src / folder).mkdir(parents=True)
        shutil.copy(SAMPLES / "hopper.png", src / folder / name)
    out, db = tmp_path / "out", tmp_path / "s.db"
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert cli("label", src / "z" / "b.png", "happy", "--db", db).exit_code == 0
    for folder in ("x", "y", "z"):
        (src / folder).rename(src / f"{folder}2")
    dry = json.loads(cli("scan", src, "--out", out, "--db", db, "--dry-run", "--json", "-q").stdout)
    assert dry["labels"] == {"neutral": 2, "happy": 1}
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert _names_and_labels(db) == {"x2/a.png": None, "y2/a.png": None, "z2/b.png": "happy"}
    check_db(db)
    check_out(out, db)
    # A copy deleted, the labelled one renamed to its name: the label goes with it.
    (src / "x2" / "a.png").unlink()
    (src / "z2" / "b.png").rename(src / "z2" / "a.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    assert _names_and_labels(db) == {"y2/a.png": None, "z2/a.png": "happy"}


def test_label_does_not_make_a_missing_out_again(cli, tmp_path):
    """OUT moved by hand, or on a drive not mounted. Before: label made the whole old path again,
    marker and all, and linked there."""
    src, out, db = _labelled_library(cli, tmp_path)
    out.rename(tmp_path / "moved")
    result = cli("label", src / "hopper.png", "happy", "--db", db)
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert f"{out}, where its link was, is gone" in result.output
    assert not out.exists() and _labels(db)["hopper.png"] == ("neutral", None)


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_forget_takes_a_files_entry_in_out_in_every_link_mode(cli, tmp_path, mode):
    """As show and label do. Before: only a symlink was taken (its target resolved); a hard link
    or copy had "no records at or under" it."""
    src = tmp_path / "memes"
    src.mkdir()
    shutil.copy(SAMPLES / "hopper.png", src / "hopper.png")
    shutil.copy(SAMPLES / "astronaut.jpg", src / "astronaut.jpg")
    out, db = tmp_path / "out", tmp_path / "s.db"
    assert cli("scan", src, "--out", out, "--db", db, "--link-mode", mode, "-q").exit_code == 0
    [entry] = out.glob("*/hopper.png")
    result = cli("forget", entry, "--db", db)
    assert result.exit_code == 0 and "forgot 1 file, removed 1 link" in result.output, result.output
    assert [Path(r["path"]).name for r in query(db, "select path from files")] == ["astronaut.jpg"]
    assert not entry.exists() and (src / "hopper.png").is_file()


@pytest.mark.parametrize("command", [["label", "x.png", "sad"], ["forget", "."], ["prune"]])
def test_library_commands_refuse_an_empty_database(cli, tmp_path, command, monkeypatch):
    """Before: label, forget and prune made an empty file a database (label then said there was
    no record); their dry runs refused it."""
    monkeypatch.chdir(tmp_path)
    hopper().save(tmp_path / "x.png")
    db = tmp_path / "e.db"
    db.touch()
    result = cli(*command, "--db", db)
    assert result.exit_code == 2 and result.output == f"Error: {db} is empty: no stickersort records in it (run `stickersort scan` first)\n"
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["e.db", "x.png"]


@pytest.mark.parametrize("command", [["forget", "."], ["prune"]])
def test_a_dry_forget_writes_nothing_to_the_database(cli, lib, command, monkeypatch):
    """Before: forget/prune --dry-run opened the database to write, which upgraded an older
    schema and marked the file; like scan --dry-run, they now read a snapshot."""
    src, out, db = lib
    (src / "hopper.png").unlink()  # something for prune to find
    with sqlite3.connect(db) as conn:
        conn.execute("pragma user_version = 1")
        conn.execute("pragma wal_checkpoint(truncate)")
    before, links = db.read_bytes(), sorted(p for p in out.rglob("*"))
    monkeypatch.chdir(src)
    result = cli(*command, "--db", db, "--dry-run")
    assert result.exit_code == 0 and "would forget" in result.output and "would remove" in result.output
    assert db.read_bytes() == before and sorted(p for p in out.rglob("*")) == links
    assert query(db, "pragma user_version") == [{"user_version": 1}]  # what a WAL write would hold
    assert cli(*command, "--db", db.parent / "nothing.db", "--dry-run").exit_code == 2


@pytest.mark.parametrize("finder", ["scan", "forget", "prune"])
def test_a_copy_whose_original_is_gone_is_kept_by_every_command(cli, tmp_path, finder):
    """Before: prune kept it, but a rescan or `forget` removed the user's only copy."""
    src, out, db = tmp_path / "memes", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    hopper().save(src / "a.png")
    face_gif(src / "c.gif")
    cli("scan", src, "--out", out, "--db", db, "-q", "--link-mode", "copy")
    copy = out / record(db, src / "a.png")["label"] / "a.png"
    content = copy.read_bytes()
    (src / "a.png").unlink()
    command = {"scan": ("scan", src, "--out", out, "--link-mode", "copy"), "forget": ("forget", src / "a.png"),
               "prune": ("prune",)}[finder]
    dry = cli(*command, "--db", db, "--dry-run")
    assert dry.exit_code == 0 and "only copy" in dry.output and "unlink" not in dry.output, dry.output
    result = cli(*command, "--db", db)
    assert result.exit_code == 0 and "only cop" in result.output, result.output
    assert copy.read_bytes() == content and query(db, "select * from links where link = ?", [str(copy)]) == []
    assert query(db, "select path from files") == [{"path": str(src / "c.gif")}]
    check_db(db)
    check_out(out, db, mine=[str(copy)])


def test_forget_refuses_an_empty_path(cli, lib, tmp_path, monkeypatch):
    src, out, db = lib
    monkeypatch.chdir(src)
    n = len(query(db, "select path from files"))
    result = cli("forget", "", "--db", db)
    assert result.exit_code == 2 and "empty PATH" in result.output and len(result.output.splitlines()) == 1
    assert len(query(db, "select path from files")) == n


@pytest.mark.parametrize("command", ["scan", "watch"])
def test_scan_and_watch_refuse_an_empty_directory(cli, tmp_path, monkeypatch, command):
    """Before: `scan ""` (a script's unset $DIR) scanned the current folder, and `--out ""` filed
    into it."""
    hopper().save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    result = cli(command, "", "--db", tmp_path / "s.db", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "empty DIRECTORY" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.db").exists()
    result = cli(command, tmp_path, "--db", tmp_path / "s.db", "--out", "")
    assert result.exit_code == 2 and "empty --out" in result.output and len(result.output.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("gif_name", ["a_clip.gif", "z_clip.gif"])
def test_a_twin_read_by_another_reader_reads_for_itself(cli, tmp_path, gif_name):
    """An MP4 named .gif, which the image decoders refuse, beside the same bytes named .mp4.
    Before: an error or a filed video depending on which of the two was read first."""
    from media_makers import face_mp4

    src = tmp_path / "memes"
    src.mkdir()
    face_mp4(src / "b_clip.mp4")
    shutil.copy(src / "b_clip.mp4", src / gif_name)
    out, db = tmp_path / "out", tmp_path / "s.db"
    for _ in range(2):  # and a second scan, with both recorded
        result = cli("scan", src, "--out", out, "--db", db, "-q", "-j", "1", "--rescan")
        assert result.exit_code == 1, result.output
        rows = {Path(r["path"]).name: r for r in query(db, "select * from files")}
        assert rows[gif_name]["error"] == "not an image file (unknown format)"
        assert rows["b_clip.mp4"]["kind"] == "video" and rows["b_clip.mp4"]["error"] is None
    # An error counts once, as an error, on every scan (before: also as unchanged on the next).
    again = json.loads(cli("scan", src, "--out", out, "--db", db, "--json", "-q").stdout)
    assert (again["classified"], again["unchanged"], again["errors"]) == (0, 1, 1)


def test_files_of_the_same_content_are_read_once(cli, tmp_path):
    src = tmp_path / "memes"
    (src / "again").mkdir(parents=True)
    hopper().save(src / "a.png")
    face_gif(src / "wave.gif")
    for name in ("a.png", "wave.gif"):
        shutil.copy(src / name, src / "again" / name)
        shutil.copy(src / name, src / f"copy-of-{name}")
    out, db = tmp_path / "out", tmp_path / "s.db"
    summary = json.loads(cli("scan", src, "--out", out, "--db", db, "--json", "-q").stdout)
    assert summary["classified"] == 6 and summary["duplicates"] == 4
    rows = query(db, "select * from files order by path")
    for original in ("a.png", "wave.gif"):
        twins = [r for r in rows if r["name"] == original or r["name"] == f"copy-of-{original}"]
        assert len(twins) == 3
        keep = ("label", "guess", "confidence", "margin", "scores", "faces", "frames_sampled", "model_id")
        assert len({tuple(r[k] for k in keep) for r in twins}) == 1
        faces = [query(db, "select frame, x, y, w, h, probs from faces where file = ? order by id", [r["path"]])
                 for r in twins]
        assert faces[0] and faces[0] == faces[1] == faces[2]
    check_db(db)
    check_out(out, db)
    # A copy made later reuses the recorded reading; --rescan reads each content once again.
    shutil.copy(src / "a.png", src / "late.png")
    assert json.loads(cli("scan", src, "--out", out, "--db", db, "--json", "-q").stdout)["duplicates"] == 1
    rescan = json.loads(cli("scan", src, "--out", out, "--db", db, "--json", "-q", "--rescan").stdout)
    assert rescan["classified"] == 7 and rescan["duplicates"] == 5
    groups = json.loads(cli("dupes", "--db", db, "--json").stdout)
    assert sorted(len(g["files"]) for g in groups) == [3, 4]
    waste = [g["size"] * (len(g["files"]) - 1) for g in groups]
    assert waste == sorted(waste, reverse=True)  # the most space taken twice first
    text = cli("dupes", "--db", db).stdout
    assert "4 copies of" in text and str(src / "late.png") in text
    # Before: a deleted copy was still listed as one, a group of one file left standing.
    shutil.copy(src / "late.png", src / "later.png")
    cli("scan", src, "--out", out, "--db", db, "-q")
    for name in ("late.png", "later.png"):
        (src / name).unlink()
    groups = json.loads(cli("dupes", "--db", db, "--json").stdout)
    assert sorted(len(g["files"]) for g in groups) == [3, 3]
    assert not any(f["path"].endswith(("late.png", "later.png")) for g in groups for f in g["files"])


@pytest.mark.parametrize("args", [["evaluate", "--stickers", ""], ["evaluate", "DATA", "--figures", ""],
                                  ["evaluate", ""], ["query", "--db", ""], ["label", "a.png", "happy", "--db", ""],
                                  ["evaluate", "DATA", "--model", ""]])
def test_an_empty_path_option_is_refused_not_taken_for_the_current_folder(cli, tmp_path, monkeypatch, args):
    """Before: `evaluate --stickers ""` (a script's unset $DIR) scanned the current folder, and
    `--figures ""` drew into it."""
    hopper().save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    result = cli(*[str(tmp_path / "a.png") if a == "DATA" else a for a in args])
    folder = "--stickers" in args or "--figures" in args  # where `.` may be meant
    said = "an empty name would mean the current folder; name it (`.`)" if folder else "an empty name names no file"
    assert result.exit_code == 2 and said in result.output
    assert len(result.output.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
