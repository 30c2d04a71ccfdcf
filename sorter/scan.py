"""`stickersort scan`: file -> frames -> faces -> probabilities -> vote -> record -> link."""
import hashlib
import json
import os
import shlex
import stat
import sys
import threading
import time
from collections import deque
from contextlib import suppress
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..model.inference import ModelError
from ..model.labels import EMOTIONS, NOFACE
from . import media
from .links import LAST_COPY, Entries, Linker
from .paths import OWNER_FILE, PathError, bare, is_out, key_path, path_key, scanned_as, within
from .pipeline import no_timer, read_file
from .store import Store, dry_run_copy, now
from .twins import Twins
from .vote import filed_label, said

# What an error record keeps of an earlier reading of its path: nothing (a guess of a file
# now unreadable would answer for bytes that are gone).
UNREAD = dict.fromkeys(("kind", "width", "height", "frames_total", "frames_sampled", "frames_with_faces", "faces",
                        "guess", "confidence", "margin", "scores"))
PERMISSION_DENIED = "permission denied"  # an error record's, read again once it may be read


@dataclass
class Options:
    out: Path
    db: Path
    frames: int = 8
    link_mode: str = "symlink"
    dry_run: bool = False
    rescan: bool = False
    detector: str = "blazeface"
    model: Path = None
    follow_links: bool = False
    # A face file whose vote wins with less goes to OUT/unsure/, its best guess kept (None: the
    # shipped model's default, vote.threshold).
    min_confidence: float | None = None
    # Files decoded and searched at once. Decoders, detector and classifier release the GIL;
    # records and links stay in the scanning thread, in walk order.
    jobs: int = min(4, os.cpu_count() or 1)
    # Where files are read: "local" (threads here) or "ray" (a Ray Data job, sorter/engine_ray.py,
    # on the cluster at `address`, or on a local Ray); records and links are made here either way.
    engine: str = "local"
    address: str | None = None


@dataclass
class Summary:
    root: str
    out: str
    db: str
    files: int = 0
    classified: int = 0
    unchanged: int = 0
    errors: int = 0
    vanished: int = 0
    duplicates: int = 0  # of the classified: a twin's reading reused, nothing decoded
    labels: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    error_files: list = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def files_per_s(self):
        return round(self.files / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self):
        return {**self.__dict__, "files_per_s": self.files_per_s, "seconds": round(self.seconds, 3)}


@dataclass
class ScanFile:
    """A file the scan is at: its path (a str from the walk), its key in the database, the DIR
    scanned, its stat."""
    path: str | Path
    key: str
    root: Path
    st: os.stat_result | None = None


class Unchanged(NamedTuple):
    """What an unchanged file shows when nothing is to be done (Scanner._kept): its record's size
    and mtime, and its one entry, OUT/<label>/<name> (a copy's or hard link's inode)."""
    size: int
    mtime_ns: int
    label: str
    name: str
    inode: int | None


@dataclass
class Read:
    """What reading a file gave: its content hash, its record and its face rows; twin: reused
    from a file of the same content (sorter/twins.py)."""
    digest: str
    record: dict
    faces: list
    twin: bool = False


@dataclass
class Outcome:
    """What becomes of one file, for Scanner._record: a reading under way (`job`, settled into
    `read`), an unchanged record (`old`), an error record (`error`) or nothing (`vanished`)."""
    file: ScanFile
    job: Future | None = None
    read: Read | None = None
    old: dict | None = None
    error: str | None = None
    vanished: bool = False


def readable_again(record, path):
    """Whether an error record of a file unchanged since is worth reading again: it was denied,
    and may be read now (a chmod changes neither size nor mtime)."""
    return record["error"] == PERMISSION_DENIED and os.access(path, os.R_OK)


def file_hash(path, cancel=None):
    """sha256 of a regular file (opened without blocking: see media.open_regular)."""
    h = hashlib.sha256()
    with media.open_regular(path, media.Budget(cancel, seconds=float("inf"))) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _inline(fn, *args):
    """submit() without a pool: the work done now, its outcome held like a thread's."""
    job = Future()
    try:
        job.set_result(fn(*args))
    except Exception as e:  # raised again by job.result(), where the scan handles it
        job.set_exception(e)
    return job


def walk(root, skip=(), follow_links=False, unreadable=None, outs=None):
    """Media files under root (paths as str), sorted, never entering `skip` (OUT), a folder twice
    (symlink loops) nor, below root, a file system that holds no files (/proc, /sys: no blocks). A
    folder it cannot list (no permission, path too long) goes into the list `unreadable` as (path,
    reason), and one marked as some database's OUT (paths.is_out: its entries are links and
    copies) into the list `outs`: the files of either are not known to be gone."""
    skip = tuple(os.path.realpath(s) for s in skip)
    unreadable = [] if unreadable is None else unreadable
    outs = [] if outs is None else outs
    seen = _above(root) if follow_links else set()
    stack = [(str(root), None)]
    while stack:
        folder, parent_dev = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen or (parent_dev not in (None, st.st_dev)
                                                  and os.statvfs(folder).f_blocks == 0):
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except FileNotFoundError:
            continue  # removed since its parent was listed: its files are gone
        except OSError as e:
            unreadable.append((folder, f"cannot read folder: {e.strerror or e}"))
            continue
        # In a folder that is where its path says, a file that is no link is where its path says:
        # one realpath for the folder instead of one per file.
        exact = not follow_links and os.path.realpath(folder) == folder
        subfolders = []
        for entry in entries:
            if _is_folder(entry, follow_links):
                if within(os.path.realpath(entry.path), skip):
                    continue
                if is_out(entry.path):
                    outs.append(entry.path)
                else:
                    subfolders.append((entry.path, st.st_dev))
            elif _is_media_name(entry.name) and (follow_links or not entry.is_symlink()) \
                    and not within(entry.path if exact else os.path.realpath(entry.path), skip):
                yield entry.path
        stack.extend(reversed(subfolders))


def _above(root):
    """The (device, inode) of every folder above root: a link followed up to one of them would
    walk root again under another name, as the walk of that folder would not."""
    ids, folder = set(), os.path.realpath(root)
    while (parent := os.path.dirname(folder)) != folder:
        folder = parent
        with suppress(OSError):
            st = os.stat(folder)
            ids.add((st.st_dev, st.st_ino))
    return ids


def unwalked(unreadable, outs):
    """The key prefixes of the folders a walk did not look into (walk's `unreadable` and `outs`):
    the recorded files under them are not known to be gone."""
    return tuple(path_key(folder).rstrip(os.sep) + os.sep for folder in [f for f, _ in unreadable] + outs)


def _is_media_name(name):
    """media.is_media(name) without making a Path of every name: the same suffix, taken as
    PurePath.suffix takes it."""
    i = name.rfind(".")
    return 0 < i < len(name) - 1 and name[i:].lower() in media.SUFFIXES


def _is_folder(entry, follow_links):
    try:
        return entry.is_dir(follow_symlinks=follow_links)
    except OSError:  # cannot tell (no search permission): a file, for _start to say why
        return False


class Scanner:
    def __init__(self, options, echo=None, classifier=None, detector=None, timer=None):
        """classifier/detector: already loaded models to share (watch, live, benchmarks); timer:
        the pipeline's stage timer (sorter/pipeline.py), which also gets hash, record and link."""
        self.timer = timer or no_timer
        self.options = options
        self.echo = echo or (lambda message: None)
        db = options.db
        if options.dry_run:
            self._scratch, db = dry_run_copy(options.db)
        self.store = Store(db)
        self.linker = Linker(options.out, self.store, options.link_mode, options.dry_run,
                             report=self._report_link)
        self._classifier, self._detector = classifier, detector
        self.twins = Twins(db)
        self.cancel = threading.Event()  # set when a scan is abandoned: its readers stop at once
        self.would = {}
        self._labels_left, self._claimed = {}, {}  # scan()'s: _labels_of
        self._read_ahead()

    def _report_link(self, action, link, source):
        if self.options.dry_run:
            self.echo(f"would {action}: {link} -> {source}")
        elif action == LAST_COPY:
            self.echo(f"{link}: kept, the only copy of {source} now (no longer stickersort's)")

    @property
    def classifier(self):
        if self._classifier is None:
            from ..model.inference import Classifier
            self._classifier = Classifier(self.options.model)
        return self._classifier

    @property
    def detector(self):
        if self._detector is None:
            from ..model.faces import make_detector
            self._detector = make_detector(self.options.detector)
        return self._detector

    @property
    def model_id(self):
        return f"{self.classifier.id}:{self.options.detector}"

    def scan(self, root, progress=None, stop=None):
        """Every media file under root, or root alone when it is a file (its folder is its root).
        progress: wraps the iterable of paths (str) the scan goes through. stop: an Event
        (sorter/interrupt.py) that ends the scan between two files, calls off the readings under
        way, and raises media.Interrupted; what was recorded stays, whole."""
        self.cancel = stop if stop is not None else threading.Event()
        root = only = scanned_as(root)
        if not root.is_dir():
            root = root.parent
        summary = Summary(path_key(root), path_key(self.options.out), path_key(self.options.db),
                          dry_run=self.options.dry_run)
        self.would = {}  # a dry run's files: the record each would get (as `query` rows give it)
        started = time.monotonic()
        skip = [self.options.out, self.options.db]
        # Taken before the walk: a file recorded later (by another scan or a watch, after this
        # walk passed) is not one that vanished.
        known = self._read_ahead(root)
        unreadable, outs = [], []
        paths = list(walk(root, skip, self.options.follow_links, unreadable, outs)) if only == root else [str(only)]
        if not paths and known and bare(root):
            files = f"{len(known)} {'file is' if len(known) == 1 else 'files are'}"
            raise PathError(f"{root} is empty, but {files} recorded from it (a drive not mounted?): "
                            f"nothing forgotten; `stickersort forget {shlex.quote(str(root))}` drops them")
        if not self.options.dry_run and only == root:  # the next scan's defaults (sorter/cli.py)
            self._go_on()  # stopped before it began: nothing made
            self.linker.claim()  # made, if no file was linked: else the next scan would take it for gone
            self.store.remember(path_key(root), path_key(self.options.out), self.options.link_mode,
                                self.options.min_confidence, self.options.follow_links)
        self._unreadable(unreadable, summary)
        for folder in outs:
            self.echo(f"{path_key(folder)}: an OUT (it holds {OWNER_FILE}): not scanned, its files' records kept")
        # Gone only where the walk could look: a file in a folder it could not read is still there.
        hidden = unwalked(unreadable, outs) + (self._away(root) if only == root else ())
        if only != root:  # the folder's other files are not this scan's business
            known &= {path_key(only)}
        self._labels_left = self._labels_of(known, paths, hidden)
        seen = set()
        pool = self._readers()
        ahead = getattr(pool, "ahead", 2 * self.options.jobs)
        try:
            # A few files ahead of the one being recorded keep every worker busy; no more,
            # since each holds its frames until its turn.
            pending = deque()
            for path in (progress(paths) if progress else paths):
                self._go_on()
                key = path_key(path)
                seen.add(key)
                outcome = self._start(path, root, summary, pool.submit if pool else _inline, key)
                if outcome is not None:
                    pending.append(outcome)
                if len(pending) > ahead:
                    self._record(pending.popleft(), summary)
            while pending:
                self._go_on()
                self._record(pending.popleft(), summary)
        except BaseException:  # Ctrl-C: the readers stop at their next chunk, not at their file's end
            self.cancel.set()
            raise
        finally:
            self._read_ahead()
            self._labels_left, self._claimed = {}, {}  # this walk's: a watch pairs by its own rule
            if pool:
                pool.shutdown(cancel_futures=True)
        for key in known - seen:
            if not key.startswith(hidden):
                self.forget(key)
                summary.vanished += 1
        summary.seconds = time.monotonic() - started
        summary.links = dict(self.linker.counts)
        summary.labels = self.store.labels_of(seen - self.would.keys())
        for row in self.would.values():  # a dry run's labels, which it did not record
            if row.get("gone"):
                continue
            label = row["label"] or "error"
            summary.labels[label] = summary.labels.get(label, 0) + 1
        return summary

    def _away(self, root):
        """The key prefixes of the folders under root that a scan was run on and that are there but
        empty whole now, or a link to nothing (a drive not mounted, as for root itself): their
        files are not known to be gone, and are said to be kept. A folder not there at all was
        deleted or renamed: its files vanished (a rename's take their labels along)."""
        away = [r for r in self._roots - {path_key(root)}
                if within(r, [path_key(root)]) and os.path.lexists(key_path(r)) and bare(key_path(r))]
        for folder in sorted(away):
            self.echo(f"{folder}: scanned before, now empty whole (a drive not mounted?): its files' records kept; "
                      f"`stickersort forget {shlex.quote(key_path(folder))}` drops them")
        return tuple(r.rstrip(os.sep) + os.sep for r in away)

    def _read_ahead(self, root=None):
        """Reads, before the walk, what _kept needs for the files recorded under root, in one
        query: how each unchanged file is when nothing is to be done (Unchanged); OUT's entries
        are listed once per label folder when first needed, and each folder checked once.
        Returns the files recorded under root, whatever folder's scan recorded them (a scan of
        root files the folders under it: those that may have vanished). Dropped when the scan
        ends (root None): watch's events, one by one, go the per-file way."""
        self._entries, self._folders, self._unchanged_as = Entries(self.linker), {}, {}
        self._labelled = {}  # key -> (hash, the user's label), of the files recorded under root
        known, self._roots = set(), set()  # _roots: the folders under root that scans were run on
        if root is None:
            return known
        for row in self.store.files_within(path_key(root)):
            known.add(row["path"])
            self._roots.add(row["root"])
            if row["user_label"] and row["hash"]:
                self._labelled[row["path"]] = (row["hash"], row["user_label"])
            unchanged = self._when_unchanged(row)
            if unchanged:
                self._unchanged_as[row["path"]] = unchanged
        return known

    def _when_unchanged(self, row):
        """How a file of this record shows when unchanged, if then nothing is to be done: no error,
        this model's, filing it again changes nothing (_refiled's test) and its one link is an
        entry place() would keep (Entries.name); else None."""
        if self.options.rescan or row["error"] or row["link"] is None or row["model_id"] != self.model_id:
            return None
        label, guess = self._filed(row)
        name = (label, guess) == (row["label"], row["guess"]) and self._entries.name(row, label, key_path(row["path"]))
        return Unchanged(row["size"], row["mtime_ns"], sys.intern(label), name, row["inode"]) if name else None

    def _go_on(self):
        if self.cancel.is_set():
            raise media.Interrupted()

    def _readers(self):
        """What reads the files that must be read: a thread pool, this thread alone (None), or a
        Ray Data job, which also says how many files may wait for their turn (`ahead`)."""
        if self.options.engine == "ray":
            from .engine_ray import RayReaders
            return RayReaders(self)
        return ThreadPoolExecutor(self.options.jobs) if self.options.jobs > 1 else None

    def _unreadable(self, folders, summary):
        """Folders the walk could not list: errors (exit status 1), their files' records kept."""
        for folder, reason in folders:
            summary.errors += 1
            summary.error_files.append({"path": path_key(folder), "error": f"{reason} (its files' records are kept)"})

    def forget(self, key):
        """A file that vanished: drop its links and record (never touching anything else)."""
        self.linker.unlink_all(key)  # in a dry run, only says what it would do
        if self.options.dry_run:
            self.echo(f"would forget: {key}")
            self.would[key] = {"path": key, "label": None, "gone": True}
        else:
            self.store.forget(key)

    def scan_file(self, path, root, summary):
        """One file, start to finish (what watch does for each event)."""
        outcome = self._start(path, root, summary, _inline)
        if outcome is not None:
            self._record(outcome, summary)

    def _start(self, path, root, summary, submit, key=None):
        """Checks one file against its record and hands the reading to `submit`; returns its
        Outcome, for _record to record and link in walk order, or None when there is nothing to
        do (_kept)."""
        file = ScanFile(path, key or path_key(path), root)
        summary.files += 1
        try:
            file.st = os.stat(path) if self.options.follow_links else os.lstat(path)
        except FileNotFoundError:  # deleted after the walk listed it, or a followed link to nothing
            if self.options.follow_links and os.path.islink(path):
                return Outcome(file, error="a broken link: its target does not exist")
            return Outcome(file, vanished=True)
        except OSError as e:  # a symlink loop, a name too long, no search permission...
            return Outcome(file, error=f"cannot stat: {e.strerror or e}")
        if self._kept(str(path), file.key, file.st):
            summary.unchanged += 1
            return None
        if not self._in_place(file):
            return Outcome(file, vanished=True)
        if not stat.S_ISREG(file.st.st_mode):
            return Outcome(file, error="not a regular file")
        old = self.store.get(file.key)
        if self._unchanged(file, old):
            return Outcome(file, old=old)
        self._load_models()
        return Outcome(file, job=submit(self._read, file))

    def _load_models(self):
        """Here, before the first read goes to a worker: loading there would race."""
        return self.model_id, self.detector

    def _record(self, outcome, summary):
        """Records one file's outcome, whatever it is, and links it: in walk order, in this thread."""
        if outcome.job is not None:
            outcome = self._settle(outcome)
        file = outcome.file
        if outcome.vanished:
            summary.files -= 1  # deleted or moved between the walk and the read: not counted
            self._vanished(file.key, summary)
        elif outcome.error is not None:
            summary.errors += 1
            summary.error_files.append({"path": file.key, "error": outcome.error})  # said once, by the summary
            if self.options.dry_run:
                self.would[file.key] = {"path": file.key, "label": None, "error": outcome.error}
            else:
                self.linker.unlink_all(file.key)
                with self.timer("record"):
                    self.store.save(self._base(file, "") | UNREAD | {
                        "label": None, "error": outcome.error, "scanned_at": now()}, [])
        elif outcome.old is not None:
            old = outcome.old
            if old["error"]:  # counted once, as an error, as on the scan that found it
                summary.errors += 1
                summary.error_files.append({"path": file.key, "error": old["error"]})
            else:
                summary.unchanged += 1
                label = self._refiled(file.key, old)
                if self.options.dry_run:
                    self.would[file.key] = _as_listed({**old, "label": label})
                self._place(file, label, old["hash"], summary)
        else:
            read = outcome.read
            summary.classified += 1
            if read.record.get("note"):
                self.echo(f"{file.key}: {read.record['note']}")
            self._keep_user_label(read.record)
            if self.options.dry_run:
                self.would[file.key] = _as_listed(read.record)
                self.echo(f"{file.key}: {said(read.record['label'], read.record['guess'], read.record['confidence'])}")
            else:
                with self.timer("record"):
                    self.store.save(read.record, read.faces)
            # A dry run's later twins read again: memory stays bounded.
            self.twins.done(read.digest, media.is_video(file.path))
            summary.duplicates += read.twin
            self._place(file, read.record["label"], read.digest, summary)

    def _place(self, file, label, digest, summary):
        """Links a recorded file. One deleted since it was read, which a hard link or copy needs,
        counts as vanished."""
        with self.timer("link"):
            try:
                self.linker.place(file.path, file.key, label, digest)
            except FileNotFoundError:
                if os.path.lexists(file.path):
                    raise
                self._vanished(file.key, summary)

    def _vanished(self, key, summary):
        """A file gone since the walk listed it leaves no record or link, unless the user labelled
        it: moved, say, into a folder the walk had passed. That record stays for the next scan,
        which walks the new name and hands it the label (_labels_of), or forgets it."""
        summary.vanished += 1
        old = self.store.get(key)
        kept = bool(old and old["user_label"])
        self.echo(f"{key}: vanished during the scan" + ("; its label is kept for where it turns up" if kept else ""))
        if old and not kept:
            self.forget(key)

    def _kept(self, path, key, st):
        """Whether a file needs nothing at all, told from what scan() read ahead: its size and
        mtime are its record's (_unchanged's test), its folder is still where the walk found it
        (_in_place's, once per folder: a file to be read still gets its own, before and after)
        and its entry is still exactly what was made (Entries.kept). What was read ahead may be
        out of date by now (another scan, a watch), so this only ever says "nothing to do";
        anything else goes the per-file way, which reads record and links afresh."""
        unchanged = self._unchanged_as.get(key)
        return (unchanged is not None and stat.S_ISREG(st.st_mode) and unchanged.size == st.st_size
                and unchanged.mtime_ns == st.st_mtime_ns and self._folder_in_place(path)
                and self._entries.kept(path, unchanged.label, unchanged.name, unchanged.inode))

    def _folder_in_place(self, path):
        """_in_place's realpath for the file's folder, once per folder and scan."""
        if self.options.follow_links:
            return True
        folder = os.path.dirname(path)
        if folder not in self._folders:
            self._folders[folder] = os.path.realpath(folder) == folder
        return self._folders[folder]

    def _in_place(self, file, st=None):
        """Is the file still one the walk would list? Not following links, a file that has become
        a link, or lies in a folder that has (swapped in since the walk), would lead out of DIR:
        it is not read, or what was read of it is not recorded."""
        if self.options.follow_links:
            return True
        return not stat.S_ISLNK((st or file.st).st_mode) and os.path.realpath(file.path) == str(file.path)

    def _settle(self, outcome):
        """The outcome of a reading: what it read, or why it could not."""
        try:
            read = outcome.job.result()
            if not self._in_place(outcome.file, os.lstat(outcome.file.path)):
                return Outcome(outcome.file, vanished=True)
            return Outcome(outcome.file, read=read)
        except (media.MediaError, ModelError) as e:
            return Outcome(outcome.file, error=str(e))
        except FileNotFoundError:
            return Outcome(outcome.file, vanished=True)
        except PermissionError:
            return Outcome(outcome.file, error=PERMISSION_DENIED)
        except OSError as e:
            return Outcome(outcome.file, error=f"cannot read: {e.strerror or e}")

    def _keep_user_label(self, record):
        """A label the user gave (`stickersort label`) outlasts any reading: the record keeps the
        vote, and the label and link stay the user's. It follows the file's content to a new name
        within DIR (_labels_of)."""
        old = self.store.get(record["path"])
        user = old and old["user_label"]
        if not user and (left := self._labels_left.get(record["hash"])):
            # Of several gone files of this content, the one of the same name; else the first by
            # path, unless a new file of the walk bears a gone labelled name: that one is it.
            name = os.path.basename(record["path"])
            key = next((k for k in left if os.path.basename(k) == name), None)
            if key is None and not self._claimed.get(record["hash"]):
                key = next(iter(left))
            if key is not None:
                user = left.pop(key)
        if user:
            record.update(label=user, user_label=user)

    def _labels_of(self, known, paths, hidden):
        """The user's labels of the files of `known` the walk (`paths`) did not find, outside the
        folders it did not look into (`hidden`): renamed or moved within DIR since the last scan,
        or deleted. By content, each {key: label} by path: a new file of that content takes one.
        From what _read_ahead kept of the labelled records: none, no work."""
        labelled = {k: v for k, v in self._labelled.items() if k in known and not k.startswith(hidden)}
        labels = {}
        walked = set(map(path_key, paths)) if labelled else set()
        for key in sorted(labelled.keys() - walked):
            digest, label = labelled[key]
            labels.setdefault(digest, {})[key] = label
        # The gone labelled files' names that a new file of the walk bears: that file is the one
        # moved (a folder renamed), and its label is not for a copy of another name.
        new_names = {os.path.basename(k) for k in walked - known} if labels else set()
        self._claimed = {digest: {os.path.basename(k) for k in keys} & new_names for digest, keys in labels.items()}
        return labels

    def _refiled(self, key, old):
        """An unchanged file's label under this scan's min_confidence, from its stored vote, so a
        new threshold costs no decoding or classifying; the user's label, if they gave one."""
        label, guess = self._filed(old)
        if (label, guess) != (old["label"], old["guess"]) and not old["user_label"] and not self.options.dry_run:
            self.store.relabel(key, label, guess)  # the record first, then the link, as always
        return label

    def _filed(self, old):
        """A record's (label, guess) under this scan's min_confidence; the user's label, if they
        gave one. A record from before `guess` existed gets one here (its label was then always
        the vote's winner)."""
        if old["user_label"]:
            return old["user_label"], old["guess"]
        guess = old["guess"] or (old["label"] if old["label"] in EMOTIONS else None)
        label = filed_label(guess, old["confidence"], self.options.min_confidence) if guess else old["label"]
        return label, guess

    def _read(self, file):
        with self.timer("hash"):
            digest = file_hash(file.path, self.cancel)
        record, faces, twin = self.twins.read_once(digest, self.model_id, lambda: self.classify(file, digest),
                                                   recorded=not self.options.rescan, video=media.is_video(file.path))
        return Read(digest, *(self._twin_of(file, digest, record, faces) if twin else (record, faces)), twin)

    def _twin_of(self, file, digest, record, faces):
        """A twin's reading as this file's record and face rows: the same vote, filed under this
        scan's min_confidence, never the twin's user label."""
        label = filed_label(record["guess"], record["confidence"], self.options.min_confidence) \
            if record["guess"] else NOFACE
        record = {k: v for k, v in record.items() if k != "user_label"} | self._base(file, digest) | {
            "label": label, "scanned_at": now()}
        return record, [{k: v for k, v in f.items() if k not in ("id", "file")} for f in faces]

    def _unchanged(self, file, old):
        if old is None or self.options.rescan:
            return False
        if old["size"] != file.st.st_size:
            return False
        if old["error"]:
            return old["mtime_ns"] == file.st.st_mtime_ns and not readable_again(old, file.path)
        if old["model_id"] != self.model_id:
            return False
        if old["mtime_ns"] == file.st.st_mtime_ns:
            return True
        # Same size, new mtime: a touch or a copy-over. Trust the content hash.
        try:
            same = file_hash(file.path) == old["hash"]
        except (OSError, media.MediaError):  # unreadable or gone since its stat: the reading says which
            return False
        if same:
            if not self.options.dry_run:
                self.store.touch(old["path"], file.st.st_mtime_ns)
            return True
        return False

    def _base(self, file, digest):
        st = file.st
        return {"path": file.key, "root": path_key(file.root), "name": path_key(Path(file.path).name),
                "hash": digest, "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None}

    def classify(self, file, digest):
        """Read, find faces, classify them in one batch and vote: the record and face rows."""
        clip, seen, result = read_file(file.path, self.options.frames, self.detector, self.classifier, self.timer,
                                       cancel=self.cancel)
        return self.record_of(file, digest, clip, seen, result)

    def record_of(self, file, digest, clip, seen, result):
        """The record and face rows of what the pipeline read (here, or on a Ray worker)."""
        faces = [{"frame": f.frame, "time": f.time, "x": f.box[0], "y": f.box[1], "w": f.box[2],
                  "h": f.box[3], "detector_score": round(f.score, 4), "label": f.label,
                  "probs": json.dumps([round(float(v), 4) for v in f.probs])} for f in seen]
        record = self._base(file, digest) | {
            "kind": clip.kind, "width": clip.width, "height": clip.height,
            "frames_total": clip.frames_total, "frames_sampled": len(clip.frames),
            "frames_with_faces": len({f["frame"] for f in faces}), "faces": len(faces),
            "label": filed_label(result.label, result.confidence, self.options.min_confidence),
            "guess": result.label if result.label in EMOTIONS else None,
            "confidence": result.confidence, "margin": result.margin,
            "scores": json.dumps(result.scores), "model_id": self.model_id,
            "scanned_at": now(), "error": None, "note": clip.note}
        return record, faces


def _as_listed(record):
    """A record as `query` lists it (store._UNLESS_NOFACE): no confidence where nothing was scored."""
    unscored = (record["label"] == NOFACE) if not record.get("user_label") else record["guess"] is None
    return {**record, "confidence": None} if unscored else record
