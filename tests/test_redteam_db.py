"""Red team, the database: a file that is not stickersort's, is damaged, has a newer schema, or
cannot be written is refused in one line (exit 2) before anything is written; an older
stickersort's database is adopted; query and stats read a database nobody may write."""
import gc
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import refused
from invariants import check_db
from media_makers import blank, hopper
from stickersort.sorter.store import ADDED, APPLICATION_ID, SCHEMA_VERSION


@pytest.fixture
def src(tmp_path):
    src = tmp_path / "memes"
    src.mkdir()
    hopper().save(src / "face.png")
    blank().save(src / "plain.png")
    return src


@pytest.fixture
def scanned(cli, src, tmp_path):
    """A database a scan made, alone in its folder, with everything in the main file."""
    db = tmp_path / "db" / "s.db"
    assert cli("scan", src, "--out", tmp_path / "out", "--db", db, "-q").exit_code == 0
    gc.collect()  # the scan's connections, so that the last one out folds the WAL in
    _sql(db, "pragma wal_checkpoint(truncate)")
    return db


def _sql(db, *statements):
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return [conn.execute(s).fetchall() for s in statements]
    finally:
        conn.close()


def _snapshot(db):
    """The database's bytes and every name beside it (no journal or .lock left behind). A reader
    (SQLite's mode=ro) of a WAL database leaves its -wal and -shm, which only a writer may remove:
    an empty -wal counts as none."""
    gc.collect()  # connections of commands run in this process
    wal = db.parent / f"{db.name}-wal"
    readers_own = {wal.name, f"{db.name}-shm"} if wal.exists() and not wal.stat().st_size else set()
    return db.read_bytes(), sorted(set(os.listdir(db.parent)) - readers_own)


def _every_command(src, out, db):
    return [["scan", src, "--out", out, "--db", db], ["query", "--db", db], ["stats", "--db", db]]


FOREIGN = {
    "its-own-tables": ["create table notes (body text)", "insert into notes values ('keep me')"],
    "its-application-id": ["pragma application_id = 1598903374"],
    "its-own-version": ["create table files (path text)", "pragma user_version = 7"],
    "our-table-names": ["create table files (id integer, body text)", "create table faces (x)",
                        "create table links (y)", "insert into files values (1, 'keep me')"],
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_another_programs_database_is_refused_untouched(cli, src, tmp_path, kind):
    db = tmp_path / "theirs" / "other.db"
    db.parent.mkdir()
    _sql(db, *FOREIGN[kind])
    before = _snapshot(db)
    for args in _every_command(src, tmp_path / "out", db):
        refused(cli(*args), "not a stickersort database", str(db))
        assert _snapshot(db) == before
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_database_is_refused_untouched(cli, src, tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("my notes, not SQLite\n" * 400)
    before = _snapshot(db)
    for args in _every_command(src, tmp_path / "out", db):
        refused(cli(*args), "not an SQLite database")
        assert _snapshot(db) == before


def test_a_damaged_database_is_refused(cli, src, tmp_path, scanned):
    (size,), = _sql(scanned, "pragma page_size")[0]
    with open(scanned, "r+b") as f:  # every page but the first (the schema), overwritten
        f.seek(size)
        f.write(b"\xa5" * (scanned.stat().st_size - size))
    before = _snapshot(scanned)
    scan, query, stats = _every_command(src, tmp_path / "out", scanned)
    refused(cli(*scan), "is damaged", "nothing was written")
    for args in (query, stats):
        refused(cli(*args), str(scanned))
    assert _snapshot(scanned) == before


def test_a_newer_schema_is_refused_untouched(cli, src, tmp_path, scanned):
    _sql(scanned, f"pragma user_version = {SCHEMA_VERSION + 1}")
    before = _snapshot(scanned)
    for args in _every_command(src, tmp_path / "out", scanned):
        refused(cli(*args), f"schema version {SCHEMA_VERSION + 1}", "upgrade stickersort")
        assert _snapshot(scanned) == before


def _without_root_file_access():
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so even root obeys modes."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_a_user(*args):
    """stickersort ARGS in a child that file modes bind, root or not."""
    if os.geteuid() == 0 and not sys.platform.startswith("linux"):
        pytest.skip("root writes any file; dropping that needs Linux capabilities")
    return subprocess.run([sys.executable, "-m", "stickersort.sorter", *map(str, args)], capture_output=True,
                          text=True, preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)


@pytest.mark.parametrize("read_only", ["file", "file-and-folder"])
def test_query_and_stats_read_a_read_only_database_and_scan_refuses_it(cli, src, tmp_path, scanned, read_only):
    paths, labels = _sql(scanned, "select path from files order by path", "select label, count(*) from files group by 1")
    assert not (scanned.parent / "s.db-shm").exists()  # so a reader in a read-only folder cannot make one
    scanned.chmod(0o444)
    if read_only == "file-and-folder":
        scanned.parent.chmod(0o555)
    before = scanned.read_bytes()
    try:
        query = _as_a_user("query", "--db", scanned, "--json")
        assert query.returncode == 0 and sorted((r["path"],) for r in json.loads(query.stdout)) == paths, query.stderr
        stats = _as_a_user("stats", "--db", scanned, "--json")
        assert stats.returncode == 0, stats.stderr
        assert {k: v for k, v in json.loads(stats.stdout).items() if v} == dict(labels)
        scan = _as_a_user("scan", src, "--out", tmp_path / "out", "--db", scanned, "-q")
        assert scan.returncode == 2 and scan.stderr.strip() == (
            f"Error: database {scanned} is read-only, and this command writes to it (make it writable, "
            f"or pass another --db)")
        assert scanned.read_bytes() == before
    finally:
        scanned.parent.chmod(0o755)
        scanned.chmod(0o644)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test: a file system that fills up (Linux, as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                           text=True)
    if tried.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {tried.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(folder, leave=0):
    """A filler file that leaves about `leave` bytes free on folder's file system."""
    st = os.statvfs(folder)
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
            while not leave:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def _full(result, said="database or disk is full"):
    """One line, with a full disk's own status (74): before, 2, which a scan means for nothing done."""
    assert result.exit_code == 74, (result.exit_code, result.output)
    assert result.stderr.count("\n") == 1 and said in result.stderr, result.stderr


def test_a_full_disk_under_out_is_its_own_status_too(cli, src, tmp_path, small_disk):
    _fill(small_disk)
    _full(cli("scan", src, "--out", small_disk / "out", "--db", tmp_path / "s.db", "--link-mode", "copy"),
          "No space left on device")


def test_a_full_disk_is_one_line_and_loses_nothing(cli, src, tmp_path, small_disk):
    db, out = small_disk / "s.db", tmp_path / "out"
    _fill(small_disk)
    _full(cli("scan", src, "--out", out, "--db", db))
    (small_disk / "filler").unlink()

    assert cli("scan", src, "--out", out, "--db", db, "-q").exit_code == 0
    for i in range(40):  # more records than the space left can hold
        blank(color=(i, 2 * i, 3 * i)).save(src / f"new{i}.png")
    _fill(small_disk, leave=48 << 10)
    _full(cli("scan", src, "--out", out, "--db", db, "-q"))
    gc.collect()
    check_db(db)
    recorded = _sql(db, "select count(*) from files")[0][0][0]
    assert 2 < recorded < 42  # stopped part way, with whole records

    (small_disk / "filler").unlink()
    again = json.loads(cli("scan", src, "--out", out, "--db", db, "--json").stdout)
    assert again["files"] == 42 and again["classified"] == 42 - recorded and again["errors"] == 0
    gc.collect()
    check_db(db)
    assert _sql(db, "select count(*) from files")[0][0][0] == 42


@pytest.mark.parametrize("kind", ["folder", "symlink"])
def test_a_lock_file_that_is_not_a_file_is_refused(cli, src, tmp_path, kind):
    db = tmp_path / "s.db"
    lock = tmp_path / "s.db.lock"
    if kind == "folder":
        lock.mkdir()
    else:
        lock.symlink_to(tmp_path / "elsewhere")
    refused(cli("scan", src, "--out", tmp_path / "out", "--db", db), str(lock), "lock file")
    assert not db.exists() and not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()


def _as_made_before_marking(db):
    """The database as the first stickersort made it: no mark, no version, none of the ADDED columns."""
    _sql(db, *[f"alter table files drop column {c}" for c in ADDED], "alter table links drop column mtime_ns",
         "alter table links drop column size", "drop table folders",
         "pragma application_id = 0", "pragma user_version = 0")


def _as_version_1(db):
    """The database as stickersort made it before a copy's size and mtime were kept."""
    _sql(db, "alter table links drop column mtime_ns", "alter table links drop column size", "drop table folders",
         "pragma user_version = 1")


def _as_version_2(db):
    """The database as stickersort made it before it kept each folder's settings."""
    _sql(db, "drop table folders", "pragma user_version = 2")


def _as_version_3(db):
    """The database as stickersort made it before it kept --follow-links with a folder's settings."""
    _sql(db, "alter table folders drop column follow_links", "pragma user_version = 3")


@pytest.mark.parametrize("first", ["query", "scan"])
@pytest.mark.parametrize("made", [_as_made_before_marking, _as_version_2, _as_version_3])
def test_an_older_stickersorts_database_is_adopted(cli, src, tmp_path, scanned, first, made):
    paths = sorted(r["path"] for r in json.loads(cli("query", "--db", scanned, "--json").stdout))
    made(scanned)
    if first == "query":
        result = cli("query", "--db", scanned, "--json")
        assert result.exit_code == 0 and sorted(r["path"] for r in json.loads(result.stdout)) == paths
    else:
        result = cli("scan", src, "--out", tmp_path / "out", "--db", scanned, "--json")
        summary = json.loads(result.stdout)
        assert result.exit_code == 0 and summary["classified"] == 0 and summary["unchanged"] == len(paths)
    gc.collect()
    (app,), (version,) = (rows[0] for rows in _sql(scanned, "pragma application_id", "pragma user_version"))
    assert (app, version) == (APPLICATION_ID, SCHEMA_VERSION)
    columns = {r[1] for r in _sql(scanned, "pragma table_info(files)")[0]}
    assert set(ADDED) <= columns and {"mtime_ns", "size"} <= {r[1] for r in _sql(scanned, "pragma table_info(links)")[0]}
    check_db(scanned)
    folders = _sql(scanned, "select path, out, follow_links from folders")[0]
    if made is _as_version_3:  # its row kept, read as links not followed
        assert folders == [(str(src), str(tmp_path / "out"), 0 if first == "scan" else None)]
    else:
        assert folders == ([(str(src), str(tmp_path / "out"), 0)] if first == "scan" else [])


@pytest.mark.parametrize("made", [_as_made_before_marking, _as_version_1])
def test_an_older_read_only_database_is_read_as_it_is_by_every_reader(cli, src, tmp_path, scanned, made):
    """Before: `show` of a database from before the marking, read-only, ended in KeyError (exit
    70), and `query` in "no such column: user_label"."""
    paths = sorted(r["path"] for r in json.loads(cli("query", "--db", scanned, "--json").stdout))
    made(scanned)
    scanned.chmod(0o444)
    before = scanned.read_bytes()
    try:
        query = _as_a_user("query", "--db", scanned, "--json")
        assert query.returncode == 0 and sorted(r["path"] for r in json.loads(query.stdout)) == paths, query.stderr
        show = _as_a_user("show", src / "face.png", "--db", scanned, "--json")
        assert show.returncode == 0, show.stderr
        info = json.loads(show.stdout)
        assert info["user_label"] is None and info["guess"] and info["links"][0]["mode"] == "symlink"
        for args in (["stats"], ["dupes"], ["query", "happy", "--include-unsure"]):
            result = _as_a_user(*args, "--db", scanned)
            assert result.returncode == 0 and not result.stderr.startswith("stickersort: error"), result.stderr
        assert scanned.read_bytes() == before
    finally:
        scanned.chmod(0o644)
