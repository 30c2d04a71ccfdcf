"""The SQLite record of what was scanned and linked, through sqlite-utils.

Tables (documented in docs/database.md): files (one row per sticker), faces (one row per face
found in a sampled frame), links (every link/copy stickersort made, so it only ever removes its own).
WAL mode, a busy timeout and write transactions that take the lock first let scans and a
`watch` share one database.
"""
import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from ..model.labels import UNSURE

FILES = {
    "path": str, "root": str, "name": str, "hash": str, "size": int, "mtime_ns": int,
    "kind": str, "width": int, "height": int, "frames_total": int, "frames_sampled": int,
    "frames_with_faces": int, "faces": int, "label": str, "guess": str, "confidence": float,
    "margin": float, "scores": str, "model_id": str, "scanned_at": str, "error": str,
}
FACES = {"id": int, "file": str, "frame": int, "time": float, "x": int, "y": int, "w": int,
         "h": int, "detector_score": float, "label": str, "probs": str}
LINKS = {"link": str, "file": str, "label": str, "mode": str, "target": str, "inode": int,
         "created_at": str}


class StoreError(Exception):
    pass


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, path, create=True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no database at {self.path} (run `stickersort scan` first, or pass --db)")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 60000")
            if create:
                self.db.enable_wal()
                # WAL + NORMAL cannot corrupt the database; a power cut may only lose the last
                # commits, which the next scan redoes. FULL would fsync every row.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self._schema()
            self._upgrade()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None

    def _schema(self):
        with self._writing():  # all or nothing, and one process at a time for a new database
            if "files" in self.db.table_names():
                return
            self.db["files"].create(FILES, pk="path", if_not_exists=True)
            self.db["faces"].create(FACES, pk="id", foreign_keys=[("file", "files", "path")],
                                    if_not_exists=True)
            self.db["links"].create(LINKS, pk="link", if_not_exists=True)
            self.db["files"].create_index(["label"], if_not_exists=True)
            self.db["files"].create_index(["hash"], if_not_exists=True)
            self.db["files"].create_index(["root"], if_not_exists=True)
            self.db["faces"].create_index(["file"], if_not_exists=True)
            self.db["links"].create_index(["file"], if_not_exists=True)

    def _upgrade(self):
        """Columns added since a database was made, so an older one keeps working: `guess`
        (unsure files). Checked again under the write lock: another process may be at it too."""
        if "files" not in self.db.table_names() or "guess" in self.db["files"].columns_dict:
            return
        with self._writing():
            if "guess" not in self.db["files"].columns_dict:
                self.db["files"].add_column("guess", str)

    @contextmanager
    def _writing(self):
        """One transaction that holds the write lock from its start. A plain BEGIN (sqlite-utils'
        atomic()) reads first, and in WAL mode a reader that another process wrote past cannot
        upgrade: it fails at once with "database is locked", busy timeout or not. Statements
        inside that use atomic() become savepoints."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, path):
        rows = list(self.db.query("select * from files where path = ?", [path]))
        return rows[0] if rows else None

    def paths_under(self, root):
        return [r["path"] for r in self.db.query("select path from files where root = ?", [root])]

    def save(self, record, faces):
        """One file's record and its faces, replaced together or not at all."""
        # Not `with conn:`: the connection autocommits (isolation_level=None), so that opens no
        # transaction, and a kill or a second writer could split these statements.
        with self._writing():
            self.db.execute("delete from faces where file = ?", [record["path"]])
            self.db["files"].upsert(record, pk="path")
            if faces:
                self.db["faces"].insert_all([{**f, "file": record["path"]} for f in faces])

    def touch(self, path, mtime_ns):
        self.db["files"].update(path, {"mtime_ns": mtime_ns})

    def relabel(self, path, label, guess):
        """An unchanged file filed again from its stored vote (a new --min-confidence)."""
        self.db.execute("update files set label = ?, guess = ? where path = ?", [label, guess, path])

    def move(self, old, new, root, name):
        """A file renamed on disk keeps its record (watch)."""
        with self._writing():
            self.db.execute("update faces set file = ? where file = ?", [new, old])
            self.db.execute("update files set path = ?, root = ?, name = ? where path = ?",
                            [new, root, name, old])
            self.db.execute("update links set file = ? where file = ?", [new, old])

    def forget(self, path):
        with self._writing():
            self.db.execute("delete from faces where file = ?", [path])
            self.db.execute("delete from files where path = ?", [path])

    def links_of(self, path):
        return list(self.db.query("select * from links where file = ?", [path]))

    def link_at(self, link):
        rows = list(self.db.query("select * from links where link = ?", [link]))
        return rows[0] if rows else None

    def add_link(self, row):
        with self._writing():
            self.db["links"].upsert({**row, "created_at": now()}, pk="link")

    def drop_link(self, link):
        self.db.execute("delete from links where link = ?", [link])

    def query(self, label=None, min_confidence=0.0, limit=None, root=None, include_unsure=False):
        """Filed stickers, best first; with include_unsure, an expression's unsure files (those
        whose best guess it is) follow its confident ones."""
        where, args = ["error is null"], []
        if label:
            where.append(_matching(include_unsure)); args += [label] * (2 if include_unsure else 1)
        if min_confidence:
            where.append("confidence >= ?"); args.append(min_confidence)
        if root:
            where.append("root = ?"); args.append(root)
        order = _BEST_FIRST if label and include_unsure else "confidence desc, path"
        sql = (f"select path, label, guess, confidence, margin, faces, kind, scanned_at from files "
               f"where {' and '.join(where)} order by {order}")
        if limit:
            sql += f" limit {int(limit)}"
        return list(self.db.query(sql, args))

    def stats(self):
        rows = self.db.query("select coalesce(label, 'error') as label, count(*) as n from files "
                             "group by 1 order by n desc, label")
        return {r["label"]: r["n"] for r in rows}

    def top(self, label, limit):
        """The best stickers for an expression, for `live`, the unsure ones whose best guess it
        is after the confident ones; their content hash is their id there."""
        return list(self.db.query(f"select hash, path, name, kind, label, guess, confidence from files "
                                  f"where {_matching(True)} and error is null order by {_BEST_FIRST} "
                                  f"limit ?", [label, label, int(limit)]))

    def by_hash(self, digest):
        rows = list(self.db.query("select path, kind from files where hash = ? and error is null "
                                  "limit 1", [digest]))
        return rows[0] if rows else None


def _matching(include_unsure):
    """SQL for the files with a label (one `?`), and with include_unsure also the unsure files
    whose best guess it is (a second `?`, the same label)."""
    if not include_unsure:
        return "label = ?"
    return f"(label = ? or (label = '{UNSURE}' and guess = ?))"


# Confident files first, then the unsure ones, each by score: an unsure file is a weaker match
# than any confident one, whatever its score.
_BEST_FIRST = f"label = '{UNSURE}', confidence desc, path"


def scores_json(scores):
    return json.dumps(scores, sort_keys=False)
