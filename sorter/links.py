"""Emotion folders: OUT/<label>/<name> pointing at the original file.

The rule that keeps a user's files safe: stickersort makes, moves or removes an entry in OUT only
when its links table says it made it and the entry still is what it made (same symlink target, or
same inode, and for a copy the same size and modification time) in the OUT it made (a folder, or
a link to the folder marked as its database's), and it makes one only where nothing was: a free
name, in a label folder that is a folder (never a link to elsewhere), by calls that fail rather
than overwrite or follow a link.
`_folder` and `is_ours` enforce it; everything else goes through them (Entries, an unchanged rescan's
look at OUT in bulk, only ever concludes that there is nothing to do). So:
- every entry is recorded before it is made: a kill at any moment leaves no entry we would not
  know as ours (a record of nothing is dropped by the next place());
- a copy is written under a random temporary name, recorded before it is made, and linked into
  place whole; a kill leaves that recorded temporary, which the next place() removes;
- a hard link or copy that holds the only copy left of a file whose original is gone is never
  removed, only its record (unlink_all, _last_copy), whichever command finds the original gone;
- OUT carries a marker naming its database (paths.OWNER_FILE): one OUT, one database.
Processes sharing a database (two scans, a scan and a watch) take turns through a lock file
beside it, one file at a time.
"""
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from .paths import OWNER_FILE, PathError, key_path, lock_path, names_db, out_owner, path_key
from .say import say

MODES = ("symlink", "hardlink", "copy")
TEMPORARY = "tmp"  # a copy in flight, in the links table's mode column
TMP_SUFFIX = ".stickersort-tmp"
LAST_COPY = "keep (now the only copy)"  # what unlink_all reports for a copy it leaves to the user
MTIME_STEP_NS = 2_000_000_000  # FAT's mtime resolution, the coarsest a copy may land on
TURN_NOTE_S = 2  # how long a wait for the links turn goes unsaid
# A name's share of the file system's 255 bytes, leaving room for "-<hash8>-999".
MAX_NAME_BYTES = 255 - 30
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkError(Exception):
    pass


class Linker:
    def __init__(self, out, store, mode="symlink", dry_run=False, report=None, wait=None):
        """wait: seconds for another process's turn at the links (None: as long as it takes, as a
        scan waits for another; a correction from the browse page gives up sooner)."""
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}")
        # Resolved: a relative link is followed from where its folder really is.
        self.out = Path(os.path.realpath(out))
        self.store = store
        self.mode = mode
        self.dry_run = dry_run
        self.wait = wait
        self.report = report or (lambda action, link, source: None)
        self.counts = {"created": 0, "moved": 0, "removed": 0, "kept": 0, "last_copies": 0}
        self._planned = set()  # a dry run's names, so its plan does not give one twice
        self._freed = set()  # and the names of the entries it would remove, free again
        self._unnamed = Counter()  # and how many names of each hard-linked file it would remove
        self._claimed = False

    def place(self, source, key, label, file_hash=""):
        """Make sure `key`'s file has exactly one entry, under OUT/<label>/, made the way this
        Linker's mode says; returns its path."""
        with self._turn():
            current = []
            for row in self.store.links_of(key):
                ours = is_ours(row, self.store.path)
                if ours:
                    current.append(row)
                elif ours is False:
                    self._disown(row)  # changed by the user: theirs now, leave it (None: ask again later)
            folder = self.out / label
            kept = next((str(_path(row)) for row in current if _path(row).parent == folder
                         and row["mode"] == self.mode and _current(row, source)), None)
            if not kept and self.mode != "symlink":
                _readable(source)  # gone since it was read: said before any entry of its goes
            # An entry of another mode here (a rescan with another --link-mode) goes first, so
            # the new one can take its name.
            replaced = [] if kept else [row for row in current if _path(row).parent == folder]
            removed = [row for row in replaced if self._remove(row)]
            if kept:
                self.counts["kept"] += 1
            link = kept or str(self._make(Path(source), key, folder, file_hash))
            # Older entries go, among them one that a kill left between making and moving.
            stale = [row for row in current if row["link"] != path_key(link) and row not in replaced]
            try:
                removed += [row for row in stale if self._remove(row)]
            except LinkError:  # one cannot go: nor does the new one come, so no file has two
                if not kept:
                    self._remove({"link": path_key(link), "mode": self.mode})
                raise
            if not kept:  # a link the user deleted, made again, is made, not moved
                moved = any(row["mode"] != TEMPORARY for row in removed)
                self.counts["moved" if moved else "created"] += 1
                self.report("move" if moved else "link", link, key)  # a key, as every report names a file
            return link

    def unlink_all(self, key):
        """Removes key's entries that are still ours. A hard link or copy whose original is gone
        holds the only copy of the user's file: it stays where it is, and only its record goes."""
        with self._turn():
            for row in self.store.links_of(key):
                if not is_ours(row, self.store.path):
                    self._disown(row)  # changed by the user, or cannot be told: left to them
                elif self._last_copy(key, row):
                    self._disown(row)
                    self.counts["last_copies"] += 1
                    self.report(LAST_COPY, str(_path(row)), key)
                elif self._remove(row) and row["mode"] != TEMPORARY:
                    self.counts["removed"] += 1
                    self.report("unlink", str(_path(row)), key)

    def _disown(self, row):
        if not self.dry_run:
            self.store.drop_link(row["link"])

    @contextmanager
    def _turn(self):
        """Alone among the processes sharing the database, from reading its links to making them:
        two would otherwise both find a name free, or both find a file unlinked. flock: the kernel
        lets go when a process dies, even by kill -9."""
        if self.dry_run:
            yield
            return
        lock = lock_path(self.store.path)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise LinkError(f"cannot use the lock file {lock}: {e.strerror}; remove it") from None
        try:
            _wait_for_turn(fd, lock, self.wait)
            yield
        finally:
            os.close(fd)

    def _make(self, source, key, folder, file_hash):
        """A new entry for source in folder, recorded first; its path."""
        # The file's own name, in UTF-8 (a byte that is not becomes \xNN): a record can name the entry.
        name = os.fsencode(source.name).decode("utf-8", "backslashreplace")
        if self.dry_run:
            link = _free_name(folder, name, file_hash, lambda p: str(p) in self._planned
                              or (os.path.lexists(p) and str(p) not in self._freed))
            self._planned.add(str(link))
            return link
        with self._folder(folder.name) as fd:
            for _ in range(3):  # a name someone took between the look and the making: another
                link = _free_name(folder, name, file_hash, lambda p: _exists(fd, p.name))
                # Every column given: a row a kill left at this name is replaced whole, not merged.
                row = {"link": path_key(link), "file": key, "label": folder.name, "mode": self.mode,
                       "target": "", "inode": None, "mtime_ns": None, "size": None}
                try:
                    getattr(self, f"_make_{self.mode}")(fd, source, link, row)
                    return link
                except FileExistsError:
                    self.store.drop_link(row["link"])
                except OSError as e:  # not writable, full: no entry can be made, so none is recorded
                    self.store.drop_link(row["link"])
                    if isinstance(e, FileNotFoundError) and not os.path.lexists(source):
                        raise  # the original, gone meanwhile: not OUT's problem
                    raise LinkError(f"cannot make {link}: {e.strerror or e}") from None
        raise LinkError(f"no free name for {name} in {folder}")

    # Each records the entry, then makes it by a call that fails on a taken name (FileExistsError).

    def _make_symlink(self, fd, source, link, row):
        target = _symlink_target(source, link.parent)
        self.store.add_link(row | {"target": path_key(target)})
        os.symlink(target, link.name, dir_fd=fd)

    def _make_hardlink(self, fd, source, link, row):
        self.store.add_link(row | {"inode": os.stat(source).st_ino})
        try:
            os.link(source, link.name, dst_dir_fd=fd)
        except (FileExistsError, FileNotFoundError):
            raise  # _make tells a taken name and a vanished original from OUT's own trouble
        except OSError as e:
            self.store.drop_link(row["link"])
            raise LinkError(f"cannot hard-link {source} into {link.parent}: {e.strerror} "
                            f"(try --link-mode copy)") from None

    def _make_copy(self, fd, source, link, row):
        """Written whole under a temporary name first, so OUT never shows half a copy."""
        tmp = link.with_name(f".{secrets.token_hex(8)}{TMP_SUFFIX}")
        self.store.add_link(row | {"link": path_key(tmp), "mode": TEMPORARY})
        try:
            made = _copy(source, fd, tmp.name)
            self.store.add_link(row | {"inode": made.st_ino, "mtime_ns": made.st_mtime_ns, "size": made.st_size})
            _link_whole(fd, tmp.name, link.name)
        finally:
            _unlink(fd, tmp.name)
            self.store.drop_link(path_key(tmp))

    @contextmanager
    def _folder(self, label):
        """OUT/<label> as an open folder, made if need be (OUT too, with its marker): the only
        way in for anything made. Never a link: one put there would lead the entries elsewhere."""
        if self._claimed and not os.path.lexists(self.out):  # deleted under a long watch
            if not os.path.isdir(self.out.parent):  # an unmounted drive: not made again on the disk beneath
                raise LinkError(f"{self.out} is gone, and the folder it was in too")
            self._claimed = False  # made and marked again, as at first
        self.claim()
        out = _opened(self.out)
        try:
            try:
                os.mkdir(label, dir_fd=out)
            except FileExistsError:
                pass
            except OSError as e:
                raise LinkError(f"cannot make the folder {self.out / label}: {e.strerror}") from None
            try:
                fd = os.open(label, _FOLDER, dir_fd=out)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise LinkError(f"cannot open the folder {self.out / label}: {e.strerror}") from None
                # No "choose another --out": `label` has none, and scan and watch refuse such an OUT first.
                raise LinkError(f"{self.out / label} is in the way of the {label} folder (not a folder of its "
                                f"own); move it") from None
        finally:
            os.close(out)
        try:
            yield fd
        finally:
            os.close(fd)

    def claim(self):
        """OUT made, and marked as this database's (refused when it is another's)."""
        if self._claimed:
            return
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError as e:
            raise LinkError(f"cannot make {self.out}: {e.strerror or e}") from None
        db = os.path.realpath(self.store.path)
        try:
            fd = os.open(self.out / OWNER_FILE, _NEW_FILE, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(os.fsencode(db) + b"\n")
        except FileExistsError:
            try:
                owner = out_owner(self.out)
            except PathError as e:
                raise LinkError(str(e)) from None
            if not names_db(owner, db):
                raise LinkError(f"{self.out} belongs to the database {owner}: use --db {owner}, or choose "
                                f"another --out") from None
        except OSError as e:
            raise LinkError(f"cannot mark {self.out} as this database's: {e.strerror or e}") from None
        self._claimed = True

    def _last_copy(self, key, row):
        """Whether row's entry, a hard link or copy, holds the only copy left of key's recorded
        content: neither the original nor another recorded file of that content (a rename's new
        name, say) still holds it, and no other name of a hard link's file is left. In doubt,
        yes: a spare copy costs space, a removed last copy loses the file."""
        if row["mode"] not in ("hardlink", "copy"):
            return False
        try:
            entry = os.lstat(_path(row))
        except FileNotFoundError:
            return False  # nothing there to keep
        except OSError:
            return True
        if row["mode"] == "hardlink" and entry.st_nlink - self._unnamed[entry.st_dev, entry.st_ino] > 1:
            return False
        record = self.store.get(key)
        if record is None or not record["hash"]:
            return True
        return not any(_holds(key_path(r["path"]), r, entry) for r in self.store.records_of_content(record["hash"]))

    def _remove(self, row):
        """Only ever called for an entry is_ours() has just vouched for. Whether there was one to
        remove (a user may have deleted it: then only its record goes)."""
        link = _path(row)
        if self.dry_run:
            self._freed.add(str(link))  # its name free for the plan, as it would be
            try:
                st = os.lstat(link)
            except OSError:
                return False
            if row["mode"] == "hardlink":  # one name fewer for _last_copy to count, as there would be
                self._unnamed[st.st_dev, st.st_ino] += 1
            return True
        removed = False
        try:
            fd = _label_folder(str(link.parent), self.store.path)
        except OSError:
            fd = None  # its folder is gone (nothing to remove), or no longer ours
        if fd is not None:
            try:
                removed = _unlink(fd, link.name)
            except OSError as e:  # an immutable or read-only label folder: kept, and so its record
                raise LinkError(f"cannot remove {link}: {e.strerror or e}") from None
            finally:
                os.close(fd)
        self.store.drop_link(row["link"])
        try:
            os.rmdir(link.parent)  # only succeeds when the label folder is empty
        except OSError:
            pass
        return removed


class Entries:
    """An unchanged rescan's look at OUT: is a file's one entry still what we made (is_ours' test,
    less a copy's size and mtime: an edited copy is left alone here, and place() would see it)
    and, for a symlink, leading to the file, so that place() would keep it as it is? Told from one
    listing per label folder, read once (a DirEntry gives type and inode without a syscall), plus
    a symlink's target (one readlink): no folder opened per file. It
    only ever answers "nothing to do"; any doubt is a no, and place() then looks again, under
    the lock."""

    def __init__(self, linker):
        self.linker = linker
        self._folders = {}  # label -> (its folder, name -> DirEntry)
        self._ways = {}  # (source folder, label) -> the relative way from the label folder to it

    def name(self, row, label, source):
        """The name of the entry a links row names, if it is one place() would keep for the file
        at `source` filed under label (this mode, in OUT/<label>/, a symlink's target the one
        _make_symlink gives); else None."""
        where, _, name = key_path(row["link"]).rpartition(os.sep)
        if row["mode"] != self.linker.mode or where != self._listing(label)[0]:
            return None
        if row["mode"] == "symlink" and key_path(row["target"]) != self._target(source, label):
            return None
        return name

    def kept(self, source, label, name, inode):
        """Whether OUT/<label>/<name>, which name() gave, is still what was made: for a symlink,
        one whose target leads to `source`; else the recorded inode, not a symlink. Counted kept
        when so."""
        folder, listing = self._listing(label)
        entry = listing.get(name)
        if entry is None:
            return False
        if self.linker.mode == "symlink":
            try:
                ours = entry.is_symlink() and os.readlink(f"{folder}{os.sep}{name}") == self._target(source, label)
            except OSError:
                ours = False
        else:
            ours = entry.inode() == inode and not entry.is_symlink()
        if ours:
            self.linker.counts["kept"] += 1
        return ours

    def _listing(self, label):
        """OUT/<label> and its entries; none when it is missing or not a folder of its own."""
        if label not in self._folders:
            folder, listing = os.path.join(self.linker.out, label), {}
            try:
                fd = _label_folder(folder, self.linker.store.path)  # never a link to elsewhere, as in is_ours
            except OSError:
                pass
            else:
                try:
                    with os.scandir(fd) as entries:
                        listing = {entry.name: entry for entry in entries}
                finally:
                    os.close(fd)
            self._folders[label] = folder, listing
        return self._folders[label]

    def _target(self, source, label):
        """The target _make_symlink gives source's link under label, os.path.relpath(source, its
        folder), worked out once per source folder."""
        where, _, name = source.rpartition(os.sep)
        way = self._ways.get((where, label))
        if way is None:
            way = self._ways[where, label] = os.path.relpath(where, self._listing(label)[0])
        return f"{way}{os.sep}{name}"  # os.path.join's result: `way` never ends in a separator


def is_ours(row, db):
    """Is the entry still exactly what we made (for the database at db)? Anything else now belongs
    to the user. None: it cannot be told now (a folder it may not look into): never touched;
    place() keeps its record to ask again, unlink_all (its file forgotten) gives it up."""
    folder, name = os.path.split(key_path(row["link"]))  # not a Path: a rescan asks for every file
    try:
        fd = _label_folder(folder, db)
    except FileNotFoundError:
        return True  # gone already, folder and all: only the record is left to drop
    except OSError as e:
        # Its folder, or OUT, no longer a folder (a link to elsewhere): not ours. Else: cannot tell.
        return False if e.errno in (errno.ELOOP, errno.ENOTDIR) else None
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if row["mode"] == "symlink":
            return stat.S_ISLNK(st.st_mode) and path_key(os.readlink(name, dir_fd=fd)) == row["target"]
    except FileNotFoundError:
        return True  # gone already: only the record is left to drop
    except OSError:
        return None
    finally:
        os.close(fd)
    if row["mode"] == TEMPORARY:
        return stat.S_ISREG(st.st_mode)  # its random name was recorded before it was made
    return st.st_ino == row["inode"] and not stat.S_ISLNK(st.st_mode) and not _edited(st, row)


def _label_folder(folder, db):
    """OUT/<label> opened as a folder, not a link. A record names OUT by its real path, so a link
    put there since leads elsewhere (ELOOP, or ENOTDIR with O_DIRECTORY), to what is not ours,
    unless to the folder marked as db's OUT: the user moved OUT and linked it back."""
    out = os.path.dirname(folder)
    try:
        fd = os.open(out, _FOLDER)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR) or not _marked_for(out, db):
            raise
        fd = os.open(out, _FOLDER & ~os.O_NOFOLLOW)
    try:
        return os.open(os.path.basename(folder), _FOLDER, dir_fd=fd)
    finally:
        os.close(fd)


def _marked_for(out, db):
    """Whether OUT's marker names the database at db."""
    try:
        return names_db(out_owner(out), db)
    except PathError:
        return False


def check_mode(mode, root, out):
    """A hard link cannot leave its file system: an OUT on another than DIR is refused before a
    file is read, not at the first link with one file recorded (a folder in DIR mounted from
    elsewhere is still found out there)."""
    if mode != "hardlink":
        return
    there = Path(out)
    while not there.exists():
        there = there.parent
    if os.stat(there).st_dev != os.stat(root).st_dev:
        raise LinkError(f"cannot hard-link into {out}: it is on another file system than {root} "
                        f"(try --link-mode copy)")


def _path(row):
    """Where a links row's entry is (the row names it by its key)."""
    return Path(key_path(row["link"]))


def _free_name(folder, name, file_hash, taken):
    """folder/name, or, when taken, folder/<stem>-<hash8>[-i]<suffix>."""
    name = _shortened(name)
    candidate = folder / name
    if not taken(candidate):
        return candidate
    stem, suffix = os.path.splitext(name)
    tag = (file_hash or hashlib.sha256(name.encode()).hexdigest())[:8]
    for i in range(1000):
        candidate = folder / f"{stem}-{tag}{'-' + str(i) if i else ''}{suffix}"
        if not taken(candidate):
            return candidate
    raise LinkError(f"no free name for {name} in {folder}")


def _opened(folder):
    try:
        return os.open(folder, _FOLDER)
    except OSError as e:
        raise LinkError(f"cannot open {folder}: {e.strerror}") from None


def _symlink_target(source, folder):
    """What a symlink in folder says, to lead to source: the way there from folder, as every link
    stickersort makes says it (Entries._target works out the same, once per source folder)."""
    return os.path.relpath(source, folder)


def _current(row, source):
    """Whether an entry of ours shows the source as it is now: a symlink leads to it (by its own
    path: another file since put at the path it leads to is not it); a hard link is its very file;
    a copy has its size and mtime (a changed original needs a new copy)."""
    if row["mode"] == "symlink":
        link = _path(row)
        return key_path(row["target"]) == _symlink_target(source, link.parent) and os.path.exists(link)
    try:
        now, entry = os.stat(source), os.lstat(_path(row))
    except OSError:
        return False
    if row["mode"] == "hardlink":
        return (now.st_dev, now.st_ino) == (entry.st_dev, entry.st_ino)
    return now.st_size == entry.st_size and _same_time(now.st_mtime_ns, entry.st_mtime_ns)


def _readable(source):
    """FileNotFoundError for a source gone (the scan counts it vanished), LinkError for one it may
    not read."""
    try:
        os.stat(source)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise LinkError(f"cannot read {source}: {e.strerror}") from None


def _edited(st, row):
    """Whether a copy was written to since it was made (a row from before copies kept their size
    and mtime: not known, so no)."""
    if row.get("mtime_ns") is None:
        return False
    resized = row.get("size") is not None and st.st_size != row["size"]
    return resized or not _same_time(st.st_mtime_ns, row["mtime_ns"])


def _same_time(a, b):
    """Modification times equal as a file system keeps them: FAT in 2 s steps, exFAT in 10 ms
    (where copies go when symlinks cannot). An edit sets today's time, far beyond this."""
    return abs(a - b) < MTIME_STEP_NS


def _holds(path, record, entry):
    """Whether path still leads to a record's content (its size and mtime, followed through a
    link as a scan with --follow-links reads it) in a file other than entry; False in doubt."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return as_recorded(st, record) and (st.st_dev, st.st_ino) != (entry.st_dev, entry.st_ino)


def as_recorded(st, record):
    """Whether a file's stat is its record's: a regular file of the recorded size and mtime, as a
    scan tells it unchanged."""
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (record["size"], record["mtime_ns"])


def _exists(fd, name):
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _unlink(fd, name):
    """Whether there was an entry to remove."""
    try:
        os.unlink(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return False


def _copy(source, fd, name):
    """source's bytes, mode and times into a new file `name` in folder fd; its stat."""
    src = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO in its place never blocks
    with os.fdopen(src, "rb") as fin:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise LinkError(f"{source} is no longer a regular file; scan again")
        with os.fdopen(os.open(name, _NEW_FILE, 0o600, dir_fd=fd), "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fchmod(fout.fileno(), stat.S_IMODE(st.st_mode))
            os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
            return os.fstat(fout.fileno())


def _link_whole(fd, tmp, name):
    """tmp given its final name, never over an existing one (FileExistsError)."""
    try:
        os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # A file system without hard links (FAT): a rename, after the look, under our lock.
        if _exists(fd, name):
            raise FileExistsError(errno.EEXIST, "File exists", name) from None
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)


def _shortened(name):
    """name cut to MAX_NAME_BYTES of UTF-8, keeping its suffix (a 255-byte name would not fit)."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, suffix = os.path.splitext(name)
    stem = stem.encode()[:MAX_NAME_BYTES - len(suffix.encode())].decode("utf-8", "ignore")
    return re.sub(r"\\(x[0-9a-f]?)?$", "", stem) + suffix  # no \xNN escape cut in half


def _wait_for_turn(fd, lock, wait=None, note_after=TURN_NOTE_S):
    """flock, saying so on stderr when another process keeps the turn for more than a moment: one
    stopped with Ctrl-Z keeps it, and the wait is otherwise a silent hang. wait: give up after so
    many seconds (LinkError); None: never."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the usual case: no thread for the note
        return
    except BlockingIOError:
        pass
    note = threading.Timer(note_after, lambda: say(f"waiting for {lock}: another stickersort is filing links"))
    note.daemon = True
    note.start()
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LinkError(f"another stickersort has kept {lock} for over {wait:g} s (one stopped with "
                                    f"Ctrl-Z?); nothing changed") from None
                time.sleep(0.05)
    finally:
        note.cancel()
