"""The SQLite record of what was scanned and linked, through sqlite-utils (plain sqlite3 when read-only).

Tables (documented in docs/database.md): files (one row per sticker), faces (one row per face
found in a sampled frame), links (every link/copy stickersort made, so it only ever removes its own).
WAL mode, a busy timeout and write transactions that take the lock first let scans and a
`watch` share one database. The file is marked as stickersort's (PRAGMA application_id) with its
schema's version (PRAGMA user_version): another program's file, a damaged one or a newer schema is
refused before anything is written.
"""
import functools
import os
import sqlite3
import sys
import tempfile
import urllib.parse
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..model.labels import EMOTIONS, NOFACE, UNSURE
from .paths import within
from .say import say


def _import_sqlite_utils():
    """sqlite-utils imports pandas whenever it is installed (the [ray] extra brings it), only to
    map its Timestamp type, which no record has: half a second or more added to every `query`
    and `stats`. Hidden from that one import; anything may import pandas later as usual."""
    hidden = "pandas" not in sys.modules
    if hidden:
        sys.modules["pandas"] = None  # import pandas -> ImportError
    try:
        import sqlite_utils
    finally:
        if hidden:
            del sys.modules["pandas"]
    return sqlite_utils


class _Reading:
    """What a read-only Store uses of sqlite-utils' Database, on a plain connection: importing
    sqlite-utils (numpy and dateutil with it) was half of `query`'s and `stats`' time."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=()):
        return self.conn.execute(sql, args)

    def query(self, sql, args=()):
        return _dicts(self.conn.execute(sql, args))


LOCK_WAIT_S = 60  # how long a write waits for another process's write lock
LOCK_NOTE_S = 2  # and after how long it says that it waits


@functools.lru_cache(maxsize=None)
def _insert_sql(table, columns):
    return (f"insert into [{table}] ({', '.join(f'[{c}]' for c in columns)}) "
            f"values ({', '.join('?' * len(columns))})")


@functools.lru_cache(maxsize=None)
def _upsert_sql(table, columns, pk):
    updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in columns if c != pk)
    return _insert_sql(table, columns) + f" on conflict([{pk}]) do " + (f"update set {updates}" if updates else "nothing")


def _dicts(cursor):
    """A cursor's rows as dicts, column name to value."""
    keys = [d[0] for d in cursor.description]
    return (dict(zip(keys, row)) for row in cursor)


# What query and stats call the files that could not be read (their label is null, their error says why).
ERROR = "error"
LABELS = (*EMOTIONS, UNSURE, NOFACE, ERROR)

FILES = {
    "path": str, "root": str, "name": str, "hash": str, "size": int, "mtime_ns": int,
    "kind": str, "width": int, "height": int, "frames_total": int, "frames_sampled": int,
    "frames_with_faces": int, "faces": int, "label": str, "guess": str, "confidence": float,
    "margin": float, "scores": str, "model_id": str, "scanned_at": str, "error": str,
    "user_label": str, "note": str,
}
# Columns added since the first databases were made, added to an older one when it is opened:
# `guess` (unsure files), `user_label` (`stickersort label`: the user's label, which no scan overrides).
# `note`: what a file was read despite (a truncated animation keeps its whole frames).
ADDED = ("guess", "user_label", "note")
FACES = {"id": int, "file": str, "frame": int, "time": float, "x": int, "y": int, "w": int,
         "h": int, "detector_score": float, "label": str, "probs": str}
LINKS = {"link": str, "file": str, "label": str, "mode": str, "target": str, "inode": int,
         "created_at": str, "mtime_ns": int, "size": int}
# What each folder's last scan was told, for the next scan of it (or of a folder under it) that
# is not told otherwise: `--out`, `--link-mode`, `--min-confidence`, `--follow-links` (sorter/cli.py).
FOLDERS = {"path": str, "out": str, "link_mode": str, "min_confidence": float, "scanned_at": str,
           "follow_links": int}
TABLES = {"files", "faces", "links"}  # a database from before the marking (version 0) has these
# Marks a database as stickersort's ("stks"): another program's SQLite file is refused, untouched.
APPLICATION_ID = int.from_bytes(b"stks", "big")


def _add_missing_columns(db):
    for column in ADDED:
        if column not in db["files"].columns_dict:
            db["files"].add_column(column, FILES[column])


# The schema's version (PRAGMA user_version). A new database is made at SCHEMA_VERSION from the
# tables above; an older one is brought up by the steps after its version, UPGRADES[v - 1] taking
# it from v - 1 to v, in one transaction with the new version. Steps are idempotent. Version 0: a
# database from before the marking (our three tables, no application_id), adopted when opened.
def _add_copy_times(db):
    for column in ("mtime_ns", "size"):
        if column not in db["links"].columns_dict:
            db["links"].add_column(column, int)


def _add_folders(db):
    if "folders" not in db.table_names():
        db["folders"].create(FOLDERS, pk="path")


def _add_follow_links(db):
    if "follow_links" not in db["folders"].columns_dict:
        db["folders"].add_column("follow_links", int)


def _threshold_may_be_the_default(db):
    """Nothing to change: the version alone tells an older stickersort, which would take a null
    folders.min_confidence for a number, that this database is newer than it knows."""


UPGRADES = (
    _add_missing_columns,  # 1: marked; the ADDED columns
    _add_copy_times,  # 2: links.mtime_ns and size, a copy's as made (one edited in place is the user's)
    _add_folders,  # 3: folders, each scanned folder's settings
    _add_follow_links,  # 4: folders.follow_links (null in a row from before: not followed)
    _threshold_may_be_the_default,  # 5: folders.min_confidence null: the default of the scan's day
)
SCHEMA_VERSION = len(UPGRADES)


class StoreError(Exception):
    pass


_EMPTY = "{path} is empty: no stickersort records in it (run `stickersort scan` first)"


def snapshot(path, into):
    """The database at path, whole, copied to `into` (SQLite's backup API, from the connection
    that checked it: a consistent copy even while a scan writes), for a dry run that must write
    nothing of its own. Checked as a scan checks it (another program's file, damaged, too new:
    StoreError naming path); an empty file gives an empty copy, as a scan would begin one."""
    if os.path.getsize(path) == 0:
        return
    store = Store(path, readonly=True, upgrade=False)
    try:
        store._check_intact()
        with closing(sqlite3.connect(into)) as copy:
            store.db.conn.backup(copy)
    except sqlite3.Error as e:
        raise StoreError(f"cannot read database {path}: {e}") from None
    finally:
        store.close()


def _check_a_file(path):
    """A --db that exists is a file (a FIFO's open would wait for a writer for ever)."""
    if path.is_dir():
        raise StoreError(f"--db {path} is a directory; give the database file")
    if path.exists() and not path.is_file():
        raise StoreError(f"--db {path} is not a regular file (a pipe or device); give the database file")


def dry_run_copy(path):
    """A dry run's own copy of the database at path (none yet: a new one), so that it writes
    nothing of its own, not even a schema's upgrade: (the temporary folder holding it, to keep
    while the copy is in use; the copy's path). StoreError as snapshot() gives it."""
    _check_a_file(Path(path))
    scratch = tempfile.TemporaryDirectory(prefix="stickersort-dry-run-")
    copy = Path(scratch.name) / "dry-run.db"
    if os.path.isfile(path):
        snapshot(path, copy)
    return scratch, copy


def settings_for(folder, path):
    """Store.settings_for of the database at path, as a dict ({} when there is none yet, or none
    can be read: the scan's own open then refuses the database, saying why)."""
    return _look(path, lambda store: store.settings_for(folder) or {}, {})


def following_within(folder, path):
    """The folders under folder (not folder itself) whose last scan followed links, by the
    database at path."""
    rows = _look(path, lambda store: store.settings_within(folder), [])
    return [r["path"] for r in rows if r.get("follow_links") and r["path"] != folder]


def _look(path, read, none):
    """read(store) of the database at path, opened read-only; `none` where there is no database
    yet or it cannot be read (the scan's own open then refuses it, saying why)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return none
    try:
        store = Store(path, readonly=True, upgrade=False)  # a dry run's look writes nothing
        try:
            return read(store)
        finally:
            store.close()
    except StoreError:
        return none


def _keys_under(folder):
    """The bounds of the keys under folder, for `path >= ? and path < ?`: a range, so that an index
    serves it ('0' is the character after '/')."""
    prefix = folder.rstrip("/")
    return [prefix + "/", prefix + "0"]


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _reading(method):
    """An SQLite error while reading (a damaged page) as a one-line StoreError."""
    @functools.wraps(method)
    def read(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read database {self.path}: {e}") from None
    return read


class Store:
    def __init__(self, path, create=True, readonly=False, upgrade=True, wait=LOCK_WAIT_S):
        """create: make the database if it is missing (scan, watch); else it must exist. readonly:
        open it read-only (SQLite mode=ro: query, stats, show), which works on a file nobody may
        write. A file that is another program's, damaged, of a newer schema, or for a writer not
        writable, is refused with a one-line StoreError before anything is written. upgrade: False
        reads an older schema's database as it is, even when it could be brought up. wait: seconds
        a statement waits for another process's lock."""
        self.path = Path(path)
        self.wait = wait
        self.db = None
        self.upgrade = upgrade
        _check_a_file(self.path)
        if (readonly or not create) and not self.path.exists():
            raise StoreError(f"no database at {self.path} (run `stickersort scan` first, or pass --db)")
        try:
            if readonly:
                self._open_readonly()
            else:
                self._open_writable(create)
        except BaseException as e:
            self.close()
            if isinstance(e, (sqlite3.Error, OSError)):
                raise StoreError(_failure(self.path, e)) from None
            raise

    def close(self):
        if self.db is not None:
            self.db.conn.close()
            self.db = None

    def _connect(self, target, uri=False, readonly=False):
        conn = sqlite3.connect(target, timeout=self.wait, isolation_level=None, uri=uri)
        self.db = _Reading(conn) if readonly else _import_sqlite_utils().Database(conn)
        self.db.execute(f"PRAGMA busy_timeout = {self.wait * 1000}")

    def _open_writable(self, create):
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"database {self.path} is read-only, and this command writes to it "
                             f"(make it writable, or pass another --db)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect(str(self.path))
        # A look before the first write: another program's file stays as it was, and an empty
        # one is no library to label in or forget from (a scan begins one).
        if self._version() is None and not create:
            raise StoreError(_EMPTY.format(path=self.path))
        self._check_intact()
        self.db.enable_wal()
        # WAL + NORMAL cannot corrupt the database; a power cut may only lose the last
        # commits, which the next scan redoes. FULL would fsync every row.
        self.db.execute("PRAGMA synchronous = NORMAL")
        with self._writing():  # all or nothing, one process at a time; looked at again under the lock
            version = self._version()
            if version is None:
                self._schema()
            for step in () if version is None else UPGRADES[version:]:
                step(self.db)
            # Written on every open: also proves the file and its folder writable (a read-only
            # mount) before a scan starts.
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _open_readonly(self):
        self._connect_readonly()
        version = self._version()
        if version is None:
            raise StoreError(_EMPTY.format(path=self.path))
        if version < SCHEMA_VERSION and self.upgrade and os.access(self.path, os.W_OK):
            # An older stickersort's database, upgraded once by a short writing open; one that
            # cannot be written (the file, or its folder for the -wal) is read as it is.
            self.close()
            try:
                Store(self.path, create=False).close()
            except StoreError:
                pass
            self._connect_readonly()
            version = self._version()
        if version < SCHEMA_VERSION:
            self._read_as_current()

    def _read_as_current(self):
        """An older schema read as it is: the columns it lacks read as null, through temporary
        views of its tables' names, which SQLite looks up before the file's own; the file is not
        written."""
        for table, columns in (("files", FILES), ("links", LINKS)):
            have = {r[1] for r in self.db.execute(f"PRAGMA main.table_info([{table}])")}
            missing = ", ".join(f"null as [{c}]" for c in columns if c not in have)
            if missing:
                self.db.execute(f"create temp view [{table}] as select *, {missing} from main.[{table}]")

    def _connect_readonly(self):
        uri = f"file:{urllib.parse.quote(os.fsencode(os.path.abspath(self.path)))}?mode=ro"
        self._connect(uri, uri=True, readonly=True)
        try:
            self.db.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.OperationalError:
            if os.access(self.path.parent, os.W_OK):
                raise
            # A WAL database without its -shm in a folder nobody may write: SQLite cannot make
            # one, and nobody can be writing the database there either.
            self.close()
            self._connect(uri + "&immutable=1", uri=True, readonly=True)

    def _version(self):
        """The open database's schema version, None for an empty file; StoreError for another
        program's file or a newer schema. A database lacking a column it should have (edited
        by hand) counts as version 0: every (idempotent) step runs again."""
        with self._one_state():
            return self._version_seen()

    @contextmanager
    def _one_state(self):
        """Reads that see one state of the file. Outside a transaction each statement sees its
        own: another scan's first commit falling between them (the tables there, their mark not
        yet seen) read as another program's file."""
        if self.db.conn.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.conn.in_transaction:  # SQLite ends it itself on some errors
                self.db.execute("ROLLBACK")

    def _version_seen(self):
        app = self.db.execute("PRAGMA application_id").fetchone()[0]
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        names = [r[0] for r in self.db.execute("select name from sqlite_master where type = 'table'")
                 if not r[0].startswith("sqlite_")]
        if app == APPLICATION_ID and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this stickersort knows "
                             f"({SCHEMA_VERSION}): upgrade stickersort, or pass another --db")
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(files)")}
        if app == APPLICATION_ID or (app == version == 0 and set(names) == TABLES and _OLD_COLUMNS <= columns):
            if any(c not in columns for c in ADDED):
                return 0
            copy_times = {"mtime_ns", "size"} <= {r[1] for r in self.db.execute("PRAGMA table_info(links)")}
            if not copy_times and version >= 2:
                return 1
            return version if "folders" in names or version < 3 else 2
        if app == version == 0 and not self.db.execute("select count(*) from sqlite_master").fetchone()[0]:
            return None
        whose = f"application id {app:#x}" if app else f"tables {', '.join(sorted(names)) or 'none'}"
        raise StoreError(f"{self.path} is not a stickersort database ({whose}); nothing was changed: "
                         f"pass another --db")

    def _check_intact(self):
        problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            problem = problem.splitlines()[-1]  # after a "*** in database main ***" line
            raise StoreError(f"database {self.path} is damaged ({problem}); nothing was written: restore "
                             f"it from a backup, or pass another --db")

    def _schema(self):
        self.db["files"].create(FILES, pk="path")
        self.db["faces"].create(FACES, pk="id", foreign_keys=[("file", "files", "path")])
        self.db["links"].create(LINKS, pk="link")
        self.db["files"].create_index(["label"])
        self.db["files"].create_index(["hash"])
        self.db["files"].create_index(["root"])
        self.db["faces"].create_index(["file"])
        self.db["links"].create_index(["file"])
        _add_folders(self.db)

    @contextmanager
    def _writing(self):
        """One transaction that holds the write lock from its start. A plain BEGIN (sqlite-utils'
        atomic()) reads first, and in WAL mode a reader that another process wrote past cannot
        upgrade: it fails at once with "database is locked", busy timeout or not. Statements
        inside that use atomic() become savepoints. An SQLite error (a full disk, a read-only
        file) undoes the transaction and is a one-line StoreError."""
        try:
            self._begin()
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.conn.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot write database {self.path}: {e}") from None

    def _begin(self):
        """BEGIN IMMEDIATE within the store's wait, saying so on stderr when another process holds
        the write lock for more than a moment: a wait of up to a minute is otherwise a silent hang."""
        note = min(LOCK_NOTE_S, self.wait)
        try:
            if self._began_within(note):
                return
            if self.wait > note:
                say(f"waiting for {self.path}: another process is writing to it (up to {self.wait} s)")
                if self._began_within(self.wait - note):
                    return
            raise StoreError(f"database {self.path} stayed locked by another process for over {self.wait} s; "
                             f"nothing was written (is a stopped stickersort or another program holding it?)")
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {self.wait * 1000}")

    def _began_within(self, seconds):
        """BEGIN IMMEDIATE, waiting up to seconds for another process's write lock: whether it began."""
        self.db.execute(f"PRAGMA busy_timeout = {seconds * 1000}")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            return False

    def _rows(self, sql, args):
        """Rows as dicts, straight from the connection: sqlite-utils' query() wraps each read in
        a savepoint, three statements where a rescan wants one per file."""
        return list(_dicts(self.db.conn.execute(sql, args)))

    @_reading
    def get(self, path):
        rows = self._rows("select * from files where path = ?", [path])
        return rows[0] if rows else None

    def labels_of(self, paths, chunk=500):
        """How many of these files each label has (errors as "error"), in a few queries."""
        paths, counts = list(paths), {}
        for i in range(0, len(paths), chunk):
            part = paths[i:i + chunk]
            for label, n in self.db.conn.execute(
                    f"select coalesce(label, 'error'), count(*) from files where path in "
                    f"({','.join('?' * len(part))}) group by 1", part):
                counts[label] = counts.get(label, 0) + n
        return counts

    def files_within(self, folder):
        """Every file recorded under folder, whatever folder it was scanned from, with its link row
        when it has exactly one (else the link's columns are null): what a rescan needs to tell an
        unchanged file in place (Scanner._read_ahead), in one query, row by row (sqlite3.Row: read
        by column name)."""
        cursor = self.db.conn.execute(
            "select f.path, f.root, f.hash, f.size, f.mtime_ns, f.model_id, f.error, f.label, f.guess, f.confidence, "
            "f.user_label, l.link, l.mode, l.target, l.inode from files f left join links l on l.file = f.path "
            "and (select count(*) from links where file = f.path) = 1 where f.path >= ? and f.path < ?",
            _keys_under(folder))
        cursor.row_factory = sqlite3.Row
        return cursor

    def signatures_under(self, folder):
        """Each file recorded under folder, whatever folder's scan recorded it: path -> (size,
        mtime_ns), what a rescan by stat compares."""
        return {r["path"]: (r["size"], r["mtime_ns"]) for r in self.db.query(
            "select path, size, mtime_ns from files where path >= ? and path < ?", _keys_under(folder))}

    def save(self, record, faces):
        """One file's record and its faces, replaced together or not at all."""
        # Not `with conn:`: the connection autocommits (isolation_level=None), so that opens no
        # transaction, and a kill or a second writer could split these statements.
        with self._writing():
            self.db.execute("delete from faces where file = ?", [record["path"]])
            self.upsert("files", record, "path")
            if faces:
                self.insert_all("faces", [{**f, "file": record["path"]} for f in faces])

    # sqlite-utils' upsert and insert_all as single statements: its own ask the schema a dozen
    # times a call, which was most of a record's time.
    def upsert(self, table, row, pk):
        """The row inserted, or the columns it names updated where its key is taken."""
        self.db.execute(_upsert_sql(table, tuple(row), pk), list(row.values()))

    def insert_all(self, table, rows):
        columns = tuple(rows[0])
        self.db.conn.executemany(_insert_sql(table, columns), [[r[c] for c in columns] for r in rows])

    def touch(self, path, mtime_ns):
        self.db["files"].update(path, {"mtime_ns": mtime_ns})

    def unsettle(self, path):
        """A record to be read again though its file is unchanged (renamed to another reader's
        ending, hopper.png -> hopper.mp4): without a size, scans and the watch take it as changed."""
        self.db["files"].update(path, {"size": None})

    def relabel(self, path, label, guess):
        """An unchanged file filed again from its stored vote (a new --min-confidence)."""
        self.db.execute("update files set label = ?, guess = ? where path = ?", [label, guess, path])

    def move(self, old, new, root, name):
        """A file renamed on disk keeps its record (watch)."""
        with self._writing():
            self._move(old, new, root, name)

    def swap(self, a, b, root, name_of):
        """Two files that traded places (renameat2's RENAME_EXCHANGE) trade records (watch).
        name_of(key): the name column for a key."""
        between = a + "\0"  # no path holds a NUL: a key no record has
        with self._writing():
            self._move(a, between, root, name_of(b))
            self._move(b, a, root, name_of(a))
            self._move(between, b, root, name_of(b))

    def _move(self, old, new, root, name):
        self.db.execute("update faces set file = ? where file = ?", [new, old])
        self.db.execute("update files set path = ?, root = ?, name = ? where path = ?", [new, root, name, old])
        self.db.execute("update links set file = ? where file = ?", [new, old])

    def set_label(self, path, label, user_label):
        """A file's label and the user's own (`stickersort label`: both the same, and no scan
        overrides it; None: the model's)."""
        with self._writing():  # the lock waited for within the store's wait, else a StoreError
            self.db.execute("update files set user_label = ?, label = ? where path = ?", [user_label, label, path])

    def paths_and_roots(self):
        """Every recorded file's path and the folder it was scanned from, by path."""
        return list(self.db.query("select path, root from files order by path"))

    def paths_within(self, path):
        """The recorded files at path or under it."""
        folder = path.rstrip("/") + "/"
        return [r["path"] for r in self.db.query("select path from files where path = ? or substr(path, 1, ?) = ? "
                                                 "order by path", [path, len(folder), folder])]

    def records_of_content(self, digest):
        """The recorded files of this content: path, size and mtime_ns."""
        return self._rows("select path, size, mtime_ns from files where hash = ? order by path", [digest])

    @_reading
    def same_content(self):
        """Readable files whose content another recorded file shares, by hash then path."""
        return list(self.db.query("select hash, path, size, mtime_ns, label from files where error is null and hash in "
                                  "(select hash from files where error is null group by hash having count(*) > 1) "
                                  "order by hash, path"))

    @_reading
    def faces_of(self, path):
        return list(self.db.query("select * from faces where file = ? order by frame, id", [path]))

    def forget(self, path):
        with self._writing():
            self.db.execute("delete from faces where file = ?", [path])
            self.db.execute("delete from files where path = ?", [path])

    def remember(self, folder, out, link_mode, min_confidence, follow_links):
        """A scan's settings for folder, for its next scan (settings_for), and for the folders
        under it, whose own are dropped: their files were filed by this scan."""
        with self._writing():
            self._forget_folders(folder, itself=False)
            self.db.execute(_upsert_sql("folders", tuple(FOLDERS), "path"),
                            [folder, out, link_mode, min_confidence, now(), int(follow_links)])

    @_reading
    def settings_for(self, folder):
        """The settings the last scan of folder, or else of the nearest folder above it, was run
        with (FOLDERS), or None: the next scan's defaults."""
        rows = [r for r in self._folder_rows() if within(folder, [r["path"]])]
        return max(rows, key=lambda r: len(r["path"]), default=None)

    def follows_links(self, folder):
        """Whether the scan that recorded the files in folder (a key) followed links: each may be
        one, or lie beyond one."""
        return bool((self.settings_for(folder) or {}).get("follow_links"))

    @_reading
    def settings_within(self, folder):
        """The FOLDERS rows of folder and of the folders under it."""
        return [r for r in self._folder_rows() if within(r["path"], [folder])]

    def _folder_rows(self):
        if "folders" not in {r[0] for r in self.db.execute("select name from sqlite_master")}:
            return []  # an older schema, read as it is
        return list(self.db.query("select * from folders"))

    def forget_folders(self, path):
        """Drops the settings of path and the folders under it."""
        with self._writing():
            self._forget_folders(path)

    def _forget_folders(self, path, itself=True):
        folder = path.rstrip("/") + "/"
        self.db.execute("delete from folders where (path = ? and ?) or substr(path, 1, ?) = ?",
                        [path, itself, len(folder), folder])

    @_reading
    def links_of(self, path):
        return self._rows("select * from links where file = ?", [path])

    @_reading
    def link_at(self, link):
        rows = list(self.db.query("select * from links where link = ?", [link]))
        return rows[0] if rows else None

    def add_link(self, row):
        with self._writing():
            self.upsert("links", {**row, "created_at": now()}, "link")

    def drop_link(self, link):
        self.db.execute("delete from links where link = ?", [link])

    @_reading
    def query(self, label=None, min_confidence=0.0, limit=None, root=None, include_unsure=False):
        """Filed stickers, best first; with include_unsure, an expression's unsure files (those
        whose best guess it is) follow its confident ones. Label ERROR: the files that could not
        be read, each with why. A noface file has no confidence (null): nothing was scored."""
        where, args = ["error is not null" if label == ERROR else "error is null"], []
        if label and label != ERROR:
            where.append(_matching(include_unsure)); args += [label] * (2 if include_unsure else 1)
        if min_confidence and label != ERROR:  # an unreadable file has no confidence to pass
            # A label the user gave is as sure as labels get, whatever the model scored.
            where.append("(confidence >= ? or user_label is not null)"); args.append(min_confidence)
        if root:  # it (a file), or every file under it, whichever folder's scan recorded it
            where.append("(path = ? or (path >= ? and path < ?))")
            args += [root, *_keys_under(root)]
        order = _BEST_FIRST if label and include_unsure else "confidence desc, path"
        sql = (f"select path, label, user_label, guess, {_UNLESS_NOFACE.format('confidence')}, "
               f"{_UNLESS_NOFACE.format('margin')}, faces, kind, scanned_at, error from files "
               f"where {' and '.join(where)} order by {order}")
        if limit:
            sql += f" limit {int(limit)}"
        return list(self.db.query(sql, args))

    @_reading
    def stats(self):
        """Files per label, every one of LABELS listed, zeros included."""
        counts = dict.fromkeys(LABELS, 0)
        for row in self.db.query(f"select coalesce(label, '{ERROR}') as label, count(*) as n from files group by 1"):
            counts[row["label"]] = row["n"]
        return counts

    @_reading
    def shelved(self, labels):
        """Every readable, labelled file, label by label in `labels`' order, best first on each."""
        order = " ".join(f"when '{label}' then {i}" for i, label in enumerate(labels))
        return list(self.db.query(
            f"select path, name, hash, kind, label, user_label, guess, confidence from files "
            f"where error is null and label is not null order by case label {order} end, confidence desc, path"))

    @_reading
    def readable_with_hash(self, digest):
        """The readable files recorded with this content hash, by path."""
        return list(self.db.query("select path, root, name, kind, size, mtime_ns, hash from files "
                                  "where hash = ? and error is null order by path", [digest]))

    @_reading
    def top(self, label, limit):
        """The best stickers for an expression, for `live`, the unsure ones whose best guess it
        is after the confident ones; their content hash is their id there."""
        return list(self.db.query(f"select hash, path, name, kind, label, guess, confidence, user_label from files "
                                  f"where {_matching(True)} and error is null order by {_BEST_FIRST} "
                                  f"limit ?", [label, label, int(limit)]))


# Columns every stickersort database has had: with the three tables, what marks an unmarked one as ours.
_OLD_COLUMNS = {"path", "root", "hash", "label", "confidence", "error"}


def _failure(path, e):
    """One line for an SQLite or OS error met while opening."""
    if type(e) is sqlite3.DatabaseError:  # not an OperationalError: the file itself is bad
        return f"{path} is damaged or not an SQLite database ({e}); nothing was written: pass another --db"
    return f"cannot open database {path}: {e}"


# No score where nothing was scored: a file the model found no face in, whatever label the user
# gave it (its confidence is the vote's 0). A face file the user filed as noface keeps its score.
_UNLESS_NOFACE = (f"case when (user_label is null and label = '{NOFACE}') or (user_label is not null and "
                  f"guess is null) then null else {{0}} end as {{0}}")


def _matching(include_unsure):
    """SQL for the files with a label (one `?`), and with include_unsure also the unsure files
    whose best guess it is (a second `?`, the same label)."""
    if not include_unsure:
        return "label = ?"
    return f"(label = ? or (label = '{UNSURE}' and guess = ?))"


# Confident files first, then the unsure ones, each by score: an unsure file is a weaker match
# than any confident one, whatever its score.
_BEST_FIRST = f"label = '{UNSURE}', confidence desc, path"
