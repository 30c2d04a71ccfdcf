"""Emotion folders: OUT/<label>/<name> pointing at the original file.

Rules that keep a user's files safe: every entry made is recorded in the links table; only
recorded entries that still are what we made (same symlink target, or same inode) are ever moved
or removed; an existing name is never overwritten, a unique one is chosen instead.
"""
import hashlib
import os
import shutil
from pathlib import Path

from .paths import path_key

MODES = ("symlink", "hardlink", "copy")


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
        current = [row for row in self.store.links_of(key) if self._ours(row)] if self.store else []
        for row in current:
            if Path(row["link"]).parent == self.out / label and Path(row["link"]).exists():
                self.counts["kept"] += 1
                return row["link"]
        # The link's own name is always valid UTF-8, so the record of it names it exactly.
        link = self._free_name(self.out / label, path_key(Path(source).name), file_hash)
        self._make(Path(source), link, key, label)
        for row in current:
            self._remove(row)
        self.counts["moved" if current else "created"] += 1
        self.report("move" if current else "link", link, source)
        return str(link)

    def unlink_all(self, key):
        for row in self.store.links_of(key):
            if self._ours(row):
                self._remove(row)
                self.counts["removed"] += 1
                self.report("unlink", row["link"], key)
            elif not self.dry_run:
                self.store.drop_link(row["link"])  # changed by the user: theirs now, leave it

    def _free_name(self, folder, name, file_hash):
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
        target = ""
        if self.mode == "symlink":
            target = os.path.relpath(source, link.parent)
            os.symlink(target, link)
            target = path_key(target)
        elif self.mode == "hardlink":
            try:
                os.link(source, link)
            except OSError as e:
                raise LinkError(f"cannot hard-link {source} into {link.parent}: {e.strerror} "
                                f"(try --link-mode copy)") from None
        else:
            tmp = link.with_name(f".{link.name}.stickersort-tmp")
            shutil.copy2(source, tmp)
            os.replace(tmp, link) if not os.path.lexists(link) else os.unlink(tmp)
        self.store.add_link({"link": str(link), "file": key, "label": label, "mode": self.mode,
                             "target": target, "inode": os.lstat(link).st_ino})

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
