"""Emotion folders: OUT/<label>/<name> pointing at the original file.

Rules that keep a user's files safe: every entry is recorded in the links table before it is
made, so a kill at any moment leaves no entry we would not know as ours; only recorded entries
that still are what we made (same symlink target, or same inode) are ever moved or removed; an
existing name is never overwritten, a unique one is chosen instead. Processes sharing a database
(two scans, a scan and a watch) take turns through a lock file beside it, one file at a time.
"""
import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .paths import path_key

MODES = ("symlink", "hardlink", "copy")
# A name's share of the file system's 255 bytes, leaving room for "-<hash8>-999" and for copy
# mode's ".<name>.stickersort-tmp".
MAX_NAME_BYTES = 255 - 30


class LinkError(Exception):
    pass


class Linker:
    def __init__(self, out, store, mode="symlink", dry_run=False, report=None):
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}")
        self.out = Path(out)
        self.store = store
        self.mode = mode
        self.dry_run = dry_run
        self.report = report or (lambda action, link, source: None)
        self.counts = {"created": 0, "moved": 0, "removed": 0, "kept": 0}

    def place(self, source, key, label, file_hash=""):
        """Make sure `key`'s file has exactly one entry, under OUT/<label>/; returns its path."""
        with self._turn():
            current = [row for row in self.store.links_of(key) if self._ours(row)]
            kept = next((row["link"] for row in current if Path(row["link"]).parent == self.out / label
                         and Path(row["link"]).exists()), None)
            # The link's own name is always valid UTF-8, so the record of it names it exactly.
            link = kept or str(self._free_name(self.out / label, path_key(Path(source).name), file_hash))
            if kept:
                self.counts["kept"] += 1
            else:
                self._make(Path(source), Path(link), key, label)
            # Older entries go, among them one that a kill left between making and moving.
            stale = [row for row in current if row["link"] != link]
            for row in stale:
                self._remove(row)
            if not kept:
                self.counts["moved" if stale else "created"] += 1
                self.report("move" if stale else "link", link, source)
            return link

    def unlink_all(self, key):
        with self._turn():
            for row in self.store.links_of(key):
                if self._ours(row):
                    self._remove(row)
                    self.counts["removed"] += 1
                    self.report("unlink", row["link"], key)
                elif not self.dry_run:
                    self.store.drop_link(row["link"])  # changed by the user: theirs now, leave it

    @contextmanager
    def _turn(self):
        """Alone among the processes sharing the database, from reading its links to making them:
        two would otherwise both find a name free, or both find a file unlinked. flock: the kernel
        lets go when a process dies, even by kill -9."""
        if self.dry_run:
            yield
            return
        with open(f"{self.store.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _free_name(self, folder, name, file_hash):
        name = _shortened(name)
        candidate = folder / name
        if not os.path.lexists(candidate) and not self._claimed(candidate):
            return candidate
        stem, suffix = os.path.splitext(name)
        tag = (file_hash or hashlib.sha256(name.encode()).hexdigest())[:8]
        for i in range(1000):
            candidate = folder / f"{stem}-{tag}{'-' + str(i) if i else ''}{suffix}"
            if not os.path.lexists(candidate) and not self._claimed(candidate):
                return candidate
        raise LinkError(f"no free name for {name} in {folder}")

    def _claimed(self, link):
        # In a dry run nothing is made, so remember planned names to keep the plan honest.
        return self.dry_run and str(link) in getattr(self, "_planned", set())

    def _make(self, source, link, key, label):
        if self.dry_run:
            self.__dict__.setdefault("_planned", set()).add(str(link))
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        # Recorded before it is made, with what it will be: a kill in between leaves a record of
        # nothing, which the next place() drops, never an entry that nobody knows is ours.
        row = {"link": str(link), "file": key, "label": label, "mode": self.mode, "target": "", "inode": None}
        if self.mode == "symlink":
            target = os.path.relpath(source, link.parent)
            self.store.add_link(row | {"target": path_key(target)})
            os.symlink(target, link)
        elif self.mode == "hardlink":
            self.store.add_link(row | {"inode": os.stat(source).st_ino})
            try:
                os.link(source, link)
            except OSError as e:
                self.store.drop_link(str(link))
                raise LinkError(f"cannot hard-link {source} into {link.parent}: {e.strerror} "
                                f"(try --link-mode copy)") from None
        else:
            tmp = link.with_name(f".{link.name}.stickersort-tmp")  # a rerun copies over a leftover
            shutil.copy2(source, tmp)
            self.store.add_link(row | {"inode": os.stat(tmp).st_ino})
            os.replace(tmp, link)

    def _ours(self, row):
        """Is the entry still exactly what we made? Anything else now belongs to the user."""
        link = row["link"]
        try:
            st = os.lstat(link)
        except FileNotFoundError:
            return True  # gone already: only the record is left to drop
        if row["mode"] == "symlink":
            return os.path.islink(link) and path_key(os.readlink(link)) == row["target"]
        return st.st_ino == row["inode"] and not os.path.islink(link)

    def _remove(self, row):
        if self.dry_run:
            return
        if os.path.lexists(row["link"]):
            os.unlink(row["link"])
        self.store.drop_link(row["link"])
        try:
            os.rmdir(Path(row["link"]).parent)  # only succeeds when the label folder is empty
        except OSError:
            pass


def _shortened(name):
    """name cut to MAX_NAME_BYTES of UTF-8, keeping its suffix (a 255-byte name would not fit)."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, suffix = os.path.splitext(name)
    return stem.encode()[:MAX_NAME_BYTES - len(suffix.encode())].decode("utf-8", "ignore") + suffix
