"""The library commands (show, label, forget, prune, dupes, query) against what a red-team pass
tried on them: an OUT or a file swapped for a link, a lock file that is no file, `..` after a
link, hard links. Real scans of real files, real SQLite, the shipped model."""
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys

import pytest

from conftest import SAMPLES, refused, tree_hash


def _small(cli, tmp_path, mode="symlink", names=("hopper.png", "rocket.png")):
    """A few samples copied and scanned: (folder, OUT, DB)."""
    src, out, db = tmp_path / "in", tmp_path / "out", tmp_path / "s.db"
    src.mkdir()
    for name in names:
        shutil.copy2(SAMPLES / name, src / name)
    result = cli("scan", src, "--out", out, "--db", db, "-q", "--link-mode", mode)
    assert result.exit_code == 0, result.output
    return src, out, db


def _link_of(cli, db, path):
    [link] = json.loads(cli("show", path, "--db", db, "--json").stdout)["links"]
    return link["link"]


def test_label_never_marks_or_fills_a_folder_put_in_outs_place(cli, tmp_path):
    src, out, db = _small(cli, tmp_path)
    out.rename(tmp_path / "out.real")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.symlink_to(elsewhere)
    refused(cli("label", src / "hopper.png", "happy", "--db", db), str(out), "no longer marked", "is gone")
    assert list(elsewhere.iterdir()) == []

    out.unlink()
    out.mkdir()  # a folder of the user's, unmarked, where OUT was
    refused(cli("label", src / "hopper.png", "happy", "--db", db), "no longer marked", "is gone")
    assert list(out.iterdir()) == []
    assert json.loads(cli("show", src / "hopper.png", "--db", db, "--json").stdout)["user_label"] is None


def test_forget_never_removes_through_an_out_led_elsewhere(cli, tmp_path):
    src, out, db = _small(cli, tmp_path)
    link = _link_of(cli, db, src / "hopper.png")
    backup = tmp_path / "backup"
    shutil.copytree(out, backup, symlinks=True)
    (backup / ".stickersort-db").unlink()
    shutil.rmtree(out)
    out.symlink_to(backup)  # the user's backup, its entries looking just like ours
    before = tree_hash(backup)
    result = cli("forget", src / "hopper.png", "--db", db)
    assert result.exit_code == 0 and "unlink" not in result.output and "removed 0 links" in result.output
    assert tree_hash(backup) == before and os.path.lexists(link)


def test_an_out_moved_and_linked_back_is_still_this_databases(cli, tmp_path):
    """Its marker names this database: its entries are still ours, as they were before OUT was
    checked for a link (no entry disowned and made again beside itself)."""
    src, out, db = _small(cli, tmp_path)
    out.rename(tmp_path / "out2")
    out.symlink_to(tmp_path / "out2")
    assert cli("label", src / "hopper.png", "sad", "--db", db).exit_code == 0
    again = json.loads(cli("scan", src, "--db", db, "--json").stdout)
    assert again["links"]["created"] == 0 and sorted(p.name for p in (tmp_path / "out2" / "sad").iterdir()) == ["hopper.png"]
    result = cli("forget", src / "hopper.png", "--db", db)
    assert "removed 1 link" in result.output and not (tmp_path / "out2" / "sad").exists()


def test_forget_and_prune_of_an_entry_already_gone_say_only_what_they_did(cli, tmp_path):
    src, out, db = _small(cli, tmp_path)
    os.unlink(_link_of(cli, db, src / "hopper.png"))
    result = cli("forget", src / "hopper.png", "--db", db)
    assert result.exit_code == 0 and "unlink" not in result.output
    assert result.output.strip().endswith("forgot 1 file, removed 0 links")


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
@pytest.mark.parametrize("swap", ["link", "fifo"])
def test_label_refuses_a_link_or_fifo_put_in_the_files_place(cli, tmp_path, mode, swap):
    """Before: the link in OUT was made through it, a hard link or copy of a file from anywhere."""
    src, out, db = _small(cli, tmp_path, mode)
    secret = tmp_path / "secret.txt"
    secret.write_text("not a sticker")
    (src / "hopper.png").rename(tmp_path / "hopper.orig")
    if swap == "link":
        (src / "hopper.png").symlink_to(secret)
    else:
        os.mkfifo(src / "hopper.png")
    before = tree_hash(out)
    refused(cli("label", src / "hopper.png", "happy", "--db", db), "no longer the file that was scanned")
    assert tree_hash(out) == before and os.stat(secret).st_nlink == 1


@pytest.mark.parametrize("swap", ["folder", "followed", "edited"])
def test_label_refuses_a_folder_led_elsewhere_a_link_retargeted_or_an_edited_file(cli, tmp_path, swap):
    src, out, db = tmp_path / "in", tmp_path / "out", tmp_path / "s.db"
    (src / "sub").mkdir(parents=True)
    shutil.copy2(SAMPLES / "hopper.png", src / "sub" / "hopper.png")
    other = tmp_path / "other"
    other.mkdir()
    (other / "hopper.png").write_text("someone else's")
    follow = ["--follow-links"] if swap == "followed" else []
    if swap == "followed":
        shutil.copy2(SAMPLES / "rocket.png", other / "rocket.png")
        (src / "sub" / "rocket.png").symlink_to(other / "rocket.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q", "--link-mode", "copy", *follow).exit_code == 0
    name = "rocket.png" if swap == "followed" else "hopper.png"
    if swap == "folder":
        (src / "sub").rename(tmp_path / "sub.moved")
        (src / "sub").symlink_to(other)
    elif swap == "followed":
        (src / "sub" / "rocket.png").unlink()
        (src / "sub" / "rocket.png").symlink_to(other / "hopper.png")
    else:
        with open(src / "sub" / "hopper.png", "ab") as f:
            f.write(b"edited")
    before = tree_hash(out)
    refused(cli("label", src / "sub" / name, "happy", "--db", db),
             "changed since its scan" if swap != "folder" else "no longer the file that was scanned")
    assert tree_hash(out) == before


def test_forget_with_a_lock_file_that_is_no_file_changes_nothing(cli, tmp_path):
    """Before: exit 70, and the folder's settings were dropped with its records kept."""
    src, out, db = _small(cli, tmp_path)
    (tmp_path / "s.db.lock").unlink()  # the scan's, a plain file
    (tmp_path / "s.db.lock").symlink_to(tmp_path / "victim")
    before = sqlite3.connect(db).execute("select count(*) from files").fetchone(), tree_hash(out)
    for args in (["forget", src], ["prune"]):
        if args == ["prune"]:
            (src / "rocket.png").unlink()
        refused(cli(*args, "--db", db), "lock file")
        conn = sqlite3.connect(db)
        assert conn.execute("select count(*) from files").fetchone() == before[0]
        assert conn.execute("select path from folders").fetchall() == [(str(src),)]
        conn.close()
        assert tree_hash(out) == before[1] and not (tmp_path / "victim").exists()


def test_a_path_through_a_link_and_up_is_where_the_file_system_leads(cli, tmp_path):
    src, out, db = _small(cli, tmp_path, names=("hopper.png",))
    (src / "x").mkdir()
    (src / "sub").mkdir()
    shutil.copy2(SAMPLES / "rocket.png", src / "x" / "hopper.png")
    (src / "x" / "link").symlink_to("../sub")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    via = f"{src}/x/link/../hopper.png"  # on disk: src/hopper.png
    assert json.loads(cli("show", via, "--db", db, "--json").stdout)["path"] == str(src / "hopper.png")
    result = cli("forget", via, "--db", db, "--dry-run")
    assert f"would forget: {src / 'hopper.png'}\n" in result.output and "x/hopper.png" not in result.output


def test_a_path_up_from_a_followed_linked_folder_still_names_its_record(cli, tmp_path, monkeypatch):
    src, out, db = tmp_path / "in", tmp_path / "out", tmp_path / "s.db"
    (tmp_path / "real").mkdir()
    src.mkdir()
    shutil.copy2(SAMPLES / "hopper.png", tmp_path / "real" / "hopper.png")
    (src / "linked").symlink_to("../real")
    (src / "r.png").symlink_to("../real/hopper.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q", "--follow-links").exit_code == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    info = json.loads(cli("show", "../in/linked/hopper.png", "--db", db, "--json").stdout)
    assert info["path"] == str(src / "linked" / "hopper.png")
    # A link to a file led to nothing (a drive not mounted) is kept, as such a scan keeps it (an
    # error record); the files of a linked folder gone are gone, as to that scan.
    (tmp_path / "real").rename(tmp_path / "real.away")
    pruned = cli("prune", "--db", db, "--dry-run").output
    assert f"would forget: {src / 'linked' / 'hopper.png'}\n" in pruned and "/r.png" not in pruned


def test_an_entry_the_user_led_elsewhere_names_what_it_leads_to(cli, tmp_path):
    src, out, db = _small(cli, tmp_path)
    link = _link_of(cli, db, src / "hopper.png")
    os.unlink(link)
    os.symlink(os.path.relpath(src / "rocket.png", os.path.dirname(link)), link)
    for args in (["show", link, "--json"], ["forget", link, "--dry-run"]):
        result = cli(*args, "--db", db)
        assert str(src / "rocket.png") in result.output and str(src / "hopper.png") not in result.output
    [entry] = json.loads(cli("show", src / "hopper.png", "--db", db, "--json").stdout)["links"]
    assert entry["link"] == link and not entry["exists"]


def test_dupes_counts_a_hard_link_once_and_only_copies_still_unchanged(cli, tmp_path):
    src, out, db = _small(cli, tmp_path, names=("hopper.png", "rocket.png"))
    os.link(src / "hopper.png", src / "hopper2.png")
    shutil.copy2(src / "rocket.png", src / "rocket2.png")
    shutil.copy2(src / "rocket.png", src / "rocket3.png")
    shutil.copy2(src / "rocket.png", src / "rocket4.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    with open(src / "rocket3.png", "ab") as f:
        f.write(b"edited")
    (src / "rocket4.png").unlink()
    (src / "rocket4.png").symlink_to(tmp_path / "nowhere.png")

    [group] = json.loads(cli("dupes", "--db", db, "--json").stdout)
    assert group["copies"] == 2 and [f["path"] for f in group["files"]] == [str(src / "rocket.png"), str(src / "rocket2.png")]
    # prune sees a link to nothing in a file's place as a scan does: gone.
    assert f"would forget: {src / 'rocket4.png'}" in cli("prune", "--db", db, "--dry-run").output
    os.link(src / "rocket.png", src / "rocket5.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    text = cli("dupes", "--db", db).stdout
    assert text.startswith("2 copies of") and ", 3 names:" in text
    assert f"{src / 'rocket5.png'}  (the same file as {src / 'rocket.png'})" in text
    assert "hopper" not in text  # one file, two names: no space taken twice


def test_prune_dry_run_counts_what_prune_keeps_of_hard_links(cli, tmp_path):
    src, out, db = _small(cli, tmp_path, "hardlink")  # rocket.png stays: the folder is not away
    os.link(src / "hopper.png", src / "hop2.png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    (src / "hopper.png").unlink()
    (src / "hop2.png").unlink()
    dry = cli("prune", "--db", db, "--dry-run").output.strip().splitlines()[-1]
    done = cli("prune", "--db", db).output.strip().splitlines()[-1]
    assert dry == "would forget 2 files, would remove 1 link, kept 1 last copy"
    assert done == "forgot 2 files, removed 1 link, kept 1 last copy"


def test_query_error_with_a_confidence_still_lists_the_unreadable(cli, tmp_path):
    src, out, db = _small(cli, tmp_path, names=("hopper.png",))
    (src / "bad.png").write_bytes(b"not a png")
    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 1  # one file unreadable
    result = cli("query", "error", "--min-confidence", "0.5", "--db", db)
    assert result.exit_code == 0 and str(src / "bad.png") in result.stdout


def test_label_twice_says_nothing_changed_and_an_empty_file_is_refused(cli, tmp_path):
    src, out, db = _small(cli, tmp_path, names=("hopper.png",))
    first = cli("label", src / "hopper.png", "sad", "--db", db)
    second = cli("label", src / "hopper.png", "sad", "--db", db)
    assert "(yours), linked at" in first.stdout and "nothing changed" not in first.stdout
    assert "(yours) already" in second.stdout and "nothing changed" in second.stdout
    for args in (["show", ""], ["label", "", "sad"]):
        refused(cli(*args, "--db", db), "empty FILE")


def test_a_link_that_cannot_be_removed_leaves_label_forget_and_prune_undone(cli, tmp_path):
    """Before: the new link was made and the old one stayed (two links, the label given), or a
    traceback's internal error (exit 70) for forget and prune."""
    from test_redteam_files import run
    src, out, db = _small(cli, tmp_path)  # rocket.png stays: the folder is not away
    old = _link_of(cli, db, src / "hopper.png")
    folder = os.path.dirname(old)
    before = cli("show", src / "hopper.png", "--db", db, "--json").stdout
    os.chmod(folder, 0o555)  # a label folder its link cannot leave (run as a user: root obeys it)
    try:
        other = "sad" if os.path.basename(folder) != "sad" else "angry"
        for args in (["label", src / "hopper.png", other], ["forget", src / "hopper.png"]):
            result = run(*args, "--db", db, as_user=True)
            assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("Error: cannot remove")
            assert cli("show", src / "hopper.png", "--db", db, "--json").stdout == before  # the label, its one link
            assert not (out / other).exists() and os.path.lexists(old)
        (src / "hopper.png").unlink()
        result = run("prune", "--db", db, as_user=True)
        assert result.returncode == 2 and "cannot remove" in result.stderr and os.path.lexists(old)
    finally:
        os.chmod(folder, 0o755)
    assert cli("prune", "--db", db).exit_code == 0 and not os.path.lexists(old)


def test_a_link_the_user_deleted_is_made_again_not_moved(cli, tmp_path):
    src, out, db = _small(cli, tmp_path)
    os.unlink(_link_of(cli, db, src / "hopper.png"))
    again = json.loads(cli("scan", src, "--db", db, "--json", "-q").stdout)["links"]
    assert (again["created"], again["moved"], again["kept"]) == (1, 0, 1)


def test_forget_of_a_link_drops_the_links_records_not_its_targets(cli, tmp_path):
    """Before: forget resolved PATH, so naming a link to a file, or a followed linked folder,
    dropped the target's records, the user's label and the target folder's settings."""
    src, out, db = _small(cli, tmp_path)
    (src / "alias.png").symlink_to("hopper.png")  # never recorded: the scan does not follow links
    assert cli("label", src / "hopper.png", "sad", "--db", db).exit_code == 0
    assert "no records at or under" in cli("forget", src / "alias.png", "--db", db).output
    other = tmp_path / "other"
    other.mkdir()
    (other / "linked").symlink_to(src)
    shutil.copy2(SAMPLES / "rocket.png", other / "rocket.png")
    assert cli("scan", other, "--out", tmp_path / "out2", "--db", db, "-q").exit_code == 0  # the link passed over
    assert "(a link, which names itself" in cli("forget", other / "linked", "--db", db).output
    (other / "elsewhere.png").symlink_to(tmp_path / "never-scanned.png")  # its hint would name no record
    said = cli("forget", other / "elsewhere.png", "--db", db).output
    assert said.startswith("no records at or under") and "names itself" not in said
    (other / "elsewhere.png").unlink()
    assert cli("scan", other, "--follow-links", "--db", db, "-q").exit_code == 0
    result = cli("forget", other / "linked", "--db", db)
    assert result.exit_code == 0 and "forgot 3 files" in result.output, result.output  # alias.png too
    shown = json.loads(cli("show", src / "hopper.png", "--db", db, "--json").stdout)
    assert shown["user_label"] == "sad" and shown["links"][0]["link"].startswith(str(out))
    folders = [r[0] for r in sqlite3.connect(db).execute("select path from folders")]
    assert str(src) in folders


def test_a_database_whose_folder_moved_and_was_linked_back_still_owns_its_out(cli, tmp_path):
    """Before: OUT's marker named the old path, so label and scan refused with `use --db` naming
    the very --db given."""
    data = tmp_path / "data"
    data.mkdir()
    src, out, _ = _small(cli, tmp_path)
    db = data / "l.db"
    assert cli("scan", src, "--out", tmp_path / "out3", "--db", db, "-q").exit_code == 0
    data.rename(tmp_path / "data2")
    data.symlink_to(tmp_path / "data2")
    result = cli("label", src / "hopper.png", "sad", "--db", db)
    assert result.exit_code == 0, result.output
    assert json.loads(cli("scan", src, "--db", db, "--json", "-q").stdout)["links"]["kept"] == 2
    assert sorted(p.name for p in (tmp_path / "out3" / "sad").iterdir()) == ["hopper.png"]
    os.link(db, tmp_path / "hard.db")  # another name is another WAL and lock: another database
    assert cli("label", src / "hopper.png", "happy", "--db", tmp_path / "hard.db").exit_code == 2
    assert json.loads(cli("show", src / "hopper.png", "--db", db, "--json").stdout)["user_label"] == "sad"


def _stickersort(args, stdout):
    return subprocess.Popen([sys.executable, "-m", "stickersort.sorter", *map(str, args)], stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("command", [["query", "--json"], ["stats"], ["--help"]])
def test_output_that_cannot_be_written_is_said_never_lost_in_silence(cli, tmp_path, command):
    """Before: a reader gone (`| head`) gave click's 1, a scan's status for unreadable files; a full
    disk, an internal error (70); a closed stdout, nothing printed and status 0."""
    src, out, db = _small(cli, tmp_path)
    command = command if command == ["--help"] else [*command, "--db", str(db)]  # --help: the group's own
    gone = _stickersort(command, subprocess.PIPE)
    gone.stdout.close()  # before it writes: its first write fails
    assert (gone.wait(timeout=60), gone.stderr.read()) == (141, "")
    with open("/dev/full", "w") as full:
        proc = _stickersort(command, full)
        assert (proc.wait(timeout=60), proc.stderr.read()) == (74, "stickersort: error: No space left on device\n")
    line = shlex.join([sys.executable, "-m", "stickersort.sorter", *command])
    closed = subprocess.run(f"{line} >&-", shell=True, capture_output=True, text=True, timeout=60)
    assert closed.returncode == 2 and closed.stderr.startswith("stickersort: error: standard output is closed")
