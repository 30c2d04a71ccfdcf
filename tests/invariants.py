"""What must hold of a database and an OUT folder after any run, finished, killed or concurrent."""
import os
import sqlite3
from pathlib import Path

from stickersort.sorter.paths import OWNER_FILE, key_path, path_key

TMP_SUFFIX = ".stickersort-tmp"  # copy mode's file in flight


def query(db, sql, args=()):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def check_db(db):
    """Opens, passes integrity_check, and holds only whole records: a label or an error, and as
    many face rows as the record counts (no orphans, no duplicates)."""
    assert query(db, "pragma integrity_check") == [{"integrity_check": "ok"}]
    if not has_schema(db):
        return
    assert query(db, "select path from files where (label is null) = (error is null)") == []
    assert query(db, "select f.path, f.faces, count(x.id) as n from files f left join faces x "
                     "on x.file = f.path group by f.path having n != coalesce(f.faces, 0)") == []
    assert query(db, "select id from faces where file not in (select path from files)") == []
    assert query(db, "select file from links where file not in (select path from files)") == []


def has_schema(db):
    """All the tables, or (killed before the schema was made) none of them."""
    tables = {r["name"] for r in query(db, "select name from sqlite_master where type = 'table'")}
    assert tables in ({"files", "faces", "links", "folders"}, set()), tables
    return bool(tables)


def entries(out):
    """Every file and link under OUT (folders and OUT's marker aside), as str paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            if path == os.path.join(out, OWNER_FILE):
                continue
            if name in filenames or os.path.islink(path):
                found.append(path)
    return sorted(found)


def check_out(out, db, mine=(), complete=True):
    """No entry in OUT that the links table does not name as ours (the user's own files aside),
    and every recorded entry that exists is what was made. `complete` (after a finished run):
    also no record of a missing entry, no file in flight, and exactly one entry per labelled file,
    in its label's folder."""
    links = {r["link"]: r for r in query(db, "select * from links")} if has_schema(db) else {}
    made = [e for e in entries(out) if e not in mine]
    in_flight = [e for e in made if e.endswith(TMP_SUFFIX)]
    assert sorted(e for e in made if e not in in_flight and path_key(e) not in links) == []
    for link in made:
        row = links.get(path_key(link))
        if row is None:
            continue
        if row["mode"] == "symlink":
            target = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
            assert path_key(os.readlink(link)) == row["target"] and path_key(target) == row["file"], link
        elif row["mode"] == "tmp":  # a copy in flight: recorded by its random name before it was made
            assert link.endswith(TMP_SUFFIX) and not os.path.islink(link), link
        else:
            assert os.lstat(link).st_ino == row["inode"] and not os.path.islink(link), link
    if not complete:
        return
    assert in_flight == [] and [e for e in made if not os.path.exists(e)] == []  # nothing dangling
    assert sorted(k for k in links if not os.path.lexists(key_path(k))) == []
    labelled = query(db, "select path, label from files where label is not null")
    per_file = {}
    for row in links.values():
        per_file.setdefault(row["file"], []).append(row)
    for f in labelled:
        placed = per_file.get(f["path"], [])
        assert [Path(r["link"]).parent.name for r in placed] == [f["label"]], (f, placed)
    assert set(per_file) <= {f["path"] for f in labelled}
