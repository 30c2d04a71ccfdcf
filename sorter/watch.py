"""`stickersort watch DIR`: one scan, then file-system events keep the database and OUT in step.

Files are classified once their size and mtime have stood still for `settle` seconds, so a
download or a slow copy is read once, whole. Everything runs in the calling thread except
watchdog's observer, which only queues events; `stop` ends the run between two files, so the
database and the links are never left half-done.

Events can be lost: the kernel's queue overflows under a burst of changes, and a tree may have
more folders than inotify may watch. After an overflow the tree is rescanned (by stat, reading
only what changed); past the watch limit, the watch polls instead, and says so.

`run_watch` is the whole command, from plain arguments: a preview (`watch --live`) may run beside it.
"""
import ctypes
import errno
import logging
import os
import queue
import secrets
import sys
import threading
import time
import warnings
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import media
from .paths import is_out, key_path, path_key, shown, within
from .scan import PERMISSION_DENIED, Scanner, Summary, file_hash, readable_again, unwalked, walk
from .vote import said, threshold

POLL_S = 5.0  # past the watch limit: seconds between two looks at the whole tree
RESCAN_GAP_S = 2.0  # while the kernel's queue keeps overflowing: at most one rescan this often
SETTINGS_CHECK_S = 1.0  # how often the watch looks for a scan's new settings for DIR (_check_settings)
PAIR_WAIT_S = 0.05  # how long a move waits for the move back that would make it an exchange
WATCH_LIMIT = "/proc/sys/fs/inotify/max_user_watches"
OVERFLOW = "overflow"  # in the event queue: events were lost before this point

# A folder moved out of DIR and back at once may get a watch descriptor inotify still holds: the
# events come right, but watchdog warns on stderr, which is the user's, not its own.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)


class _Queue(FileSystemEventHandler):
    def __init__(self, events):
        self.events = events

    def on_any_event(self, event):
        self.events.put(event)


class _Overflows(logging.Handler):
    """watchdog (7.1 on) tells of an overflow of the kernel's event queue only by a warning in its
    log: each one becomes an OVERFLOW in the event queue. While it is attached, watchdog's other
    warnings are not printed raw either."""
    LOGGER = "watchdog.observers"

    def __init__(self, events):
        super().__init__(logging.WARNING)
        self.events = events
        logging.getLogger(self.LOGGER).addHandler(self)

    def emit(self, record):
        if "overflow" in record.getMessage().lower():
            self.events.put(OVERFLOW)

    def close(self):
        logging.getLogger(self.LOGGER).removeHandler(self)
        super().close()


def _watches_exhausted(path):
    """Whether this user's inotify watches are all taken, so that some folders went unwatched or
    a new one would be (watchdog says nothing when it cannot watch a folder below the root):
    asked of the kernel by taking one more watch and giving it back."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return False
    try:
        in_attrib = 0x4
        return libc.inotify_add_watch(fd, os.fsencode(path), in_attrib) < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


def _watch_limit():
    try:
        with open(WATCH_LIMIT) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _filing(name, value):
    """A setting as it files: a --min-confidence not given is the model's default."""
    return threshold(value) if name == "min_confidence" else value


def _as_option(name, value):
    """A setting as the scan that chose it was given it: `--out DIR`, `--no-follow-links`."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name.replace('_', '-')}"
    if value is None:  # --min-confidence not given
        return f"the default --{name.replace('_', '-')} ({threshold(value)})"
    return f"--{name.replace('_', '-')} {shown(value)}"


def describe(event):
    """An event as `watch` prints it without --json."""
    path = shown(event["path"])
    if event["event"] == "moved":
        return f"{shown(event['from'])}: moved to {path}"
    if event["event"] == "removed":
        return f"{path}: deleted"
    if event["event"] in ("added", "changed"):
        return f"{path}: {said(event['label'], event['guess'], event['confidence'], event['user_label'])}"
    return f"error: {path}: {shown(event['error'])}"


class WatchError(Exception):
    """The watched folder itself moved or went; one line for the user."""


def _a_move(event):
    return event not in (None, OVERFLOW) and event.event_type == "moved" and not event.is_directory


def _moved_or_gone(folder, place):
    """Whether nothing, or another folder, is at folder's path now (place: its device and inode
    when the watch began). A folder deleted and made again can take back its inode: the watch
    hears of that deletion as an event instead (Watcher.root_gone)."""
    try:
        st = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # cannot tell now (a permission changed, a network drive's hiccup): not taken for gone
    return (st.st_dev, st.st_ino) != place


class Watcher:
    def __init__(self, options, root, settle=1.0, echo=None, report=None):
        """echo: a callable for messages to the user; report: one for each event, a dict with
        `event` (added, changed, removed, moved, error) and `path` (default: its line, echoed)."""
        self.options = options
        self.root = Path(os.path.realpath(root))
        self.settle = settle
        self.echo = echo or (lambda message: None)
        self.report = report or (lambda event: (line := describe(event)) and self.echo(line))
        self.replays = report is not None  # the first scan's files as events (report_state)
        self.watching = False  # the first scan done, events followed
        self.skip = [os.path.realpath(p) for p in (options.out, options.db)]
        self.events = queue.Queue()
        self.pending = {}  # path -> ((size, mtime_ns), unchanged since)
        self.gone = {}  # key of a deleted file's record -> when it went
        self.parked = set()  # keys of gone records moved aside while another file has their name (_park)
        self.settings_checked, self.settings_since = 0.0, ""
        self.lost = False  # events were lost (the kernel's queue overflowed): rescan
        self.rescanned = -RESCAN_GAP_S
        self.scanner = self.observer = None
        self.place, self.root_gone = None, False  # where DIR is; whether it was deleted under the watch
        self.summary = Summary(path_key(self.root), path_key(options.out), path_key(options.db))

    def run(self, stop, progress=None, on_scanned=None):
        """Scan once, then follow events until `stop` is set."""
        # Made here: its SQLite connection belongs to the thread that runs the watch.
        self.scanner = Scanner(self.options, echo=self.echo)
        st = os.stat(self.root)
        self.place = st.st_dev, st.st_ino
        overflows = _Overflows(self.events)
        # Watching starts before the scan, so nothing written during the scan is missed.
        self.observer = self._observe()
        try:
            summary = self.scanner.scan(self.root, progress=progress, stop=stop)
            if stop.is_set():
                return  # during the first scan: not watching yet (self.watching)
            # As of its own scan: settings from before (a parent's, which `forget DIR` leaves) are not new.
            self.settings_since = (self.scanner.store.settings_for(path_key(self.root)) or {}).get("scanned_at", "")
            if on_scanned:
                on_scanned(summary)
            self.watching = True
            while not stop.is_set():
                if self.root_gone or _moved_or_gone(self.root, self.place):  # its events would name paths no longer there
                    raise WatchError(f"{shown(self.root)} was moved or deleted: the watch stopped, its records kept "
                                     f"(watch or scan it where it is now; `stickersort prune` forgets what is gone)")
                self._check_settings()
                self._take(timeout=min(0.2, self.settle / 2))
                self._rescan_if_lost()
                self._classify_settled(stop)
                self._forget_gone(grace=2 * self.settle + 1)
            self._forget_gone(grace=0)  # leave no record of a file that is gone
        except media.Interrupted:  # stop, while a file was being read: it waits for the next run
            pass
        finally:
            self.observer.stop()
            self.observer.join()
            overflows.close()

    def _observe(self):
        """A started observer: inotify's, or, where the user's inotify watches cannot cover every
        folder, one that polls the tree every POLL_S seconds (said in one line)."""
        observer = Observer()
        observer.schedule(_Queue(self.events), str(self.root), recursive=True)
        try:
            observer.start()
            if not _watches_exhausted(self.root):
                return observer
            observer.stop()
            observer.join()
        except OSError as e:  # older watchdogs: no watch left even for DIR itself
            if e.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
        return self._poll()

    def _poll(self):
        self.echo(f"watch: {shown(self.root)} has more folders than inotify may watch (fs.inotify.max_user_watches = "
                  f"{_watch_limit()}): polling every {POLL_S:g} s instead")
        observer = PollingObserver(timeout=POLL_S)
        observer.schedule(_Queue(self.events), str(self.root), recursive=True)
        observer.start()
        return observer

    def _check_settings(self, each_file=False):
        """A scan of DIR, of a folder above it or of one under it given another --out, --link-mode
        or --min-confidence while the watch runs: filing on by its own, the watch would undo them
        file by file, so it stops (a WatchError) for the user to start it again. So it does when
        DIR's records are forgotten: it would file only the files that change from then on.
        Looked at every SETTINGS_CHECK_S while idle, and before each file filed (each_file): a
        second's worth of files filed by the old settings was dozens of them."""
        now = time.monotonic()
        if now - self.settings_checked < SETTINGS_CHECK_S and not each_file:
            return
        self.settings_checked = now
        store, root = self.scanner.store, path_key(self.root)
        cover = store.settings_for(root)  # a scan above DIR replaces DIR's row with a newer one; forget, with none
        if cover is None or cover["scanned_at"] < self.settings_since:
            raise WatchError(f"{shown(self.root)} was forgotten (`stickersort forget`) while the watch ran: the watch "
                             f"stopped, to file none of it by halves (watch or scan it again to file it anew)")
        mine = {"out": path_key(self.options.out), "link_mode": self.options.link_mode,
                "min_confidence": self.options.min_confidence, "follow_links": self.options.follow_links}
        for last in [cover, *store.settings_within(root)]:
            last = {**last, "follow_links": bool(last.get("follow_links"))}  # null: from before it was kept
            changed = [_as_option(k, last[k]) for k in mine if _filing(k, last[k]) != _filing(k, mine[k])]
            if changed and last["scanned_at"] >= self.settings_since:
                under = last["path"] != root and within(last["path"], [root])  # a folder in DIR, not DIR or above
                again = (f"a watch of {shown(self.root)} would file that folder by its own settings again" if under
                         else "watch again to follow them")
                raise WatchError(f"{shown(last['path'])} was scanned with {', '.join(changed)} while the watch ran: "
                                 f"the watch stopped, its records kept ({again})")

    def _take(self, timeout):
        """Handle every queued event, waiting up to `timeout` for the first. A move straight back
        (a to b, then b to a) is an exchange, handled whole (_exchange)."""
        try:
            events = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return
        while True:
            try:  # an exchange's second move may be a moment behind its first
                events.append(self.events.get(timeout=PAIR_WAIT_S) if any(map(_a_move, events))
                              else self.events.get_nowait())
            except queue.Empty:
                break
        # Their folder's "modified" between the two moves says nothing the moves do not.
        events = [e for e in events if e == OVERFLOW or not (e.is_directory and e.event_type == "modified")]
        i = 0
        while i < len(events):
            event, then = events[i], events[i + 1] if i + 1 < len(events) else None
            if _a_move(event) and _a_move(then) and (then.src_path, then.dest_path) == (event.dest_path, event.src_path) \
                    and self._exchange(os.fsdecode(event.src_path), os.fsdecode(event.dest_path)):
                i += 2
                continue
            self._handle(event)
            i += 1

    def _handle(self, event):
        if event == OVERFLOW:
            self.lost = True
            return
        if event.event_type == "created" and event.is_directory and not isinstance(self.observer, PollingObserver):
            self._check_room()
        src = os.fsdecode(event.src_path)
        if event.event_type == "deleted" and src == str(self.root):
            self.root_gone = True
        if event.event_type == "moved":
            self._moved(src, os.fsdecode(event.dest_path), event.is_directory)
        elif event.event_type == "deleted":
            self._deleted(src, event.is_directory)
        elif event.event_type == "attrib" and not event.is_directory:
            # A chmod may let a file denied reading be read (scan.readable_again). Only such a file:
            # every hard link made in OUT is an attrib event on its original too.
            if self._denied(src):
                self.pending.setdefault(src, None)
        elif event.event_type in ("created", "modified", "closed") and not event.is_directory:
            if self._wanted(src):
                self.pending.setdefault(src, None)
            elif not self._in_an_out(src):  # an OUT's entries are none of the watch's business
                self._deleted(src, False)  # a recorded sticker swapped for a link: gone, as a scan sees it

    def _denied(self, path):
        record = self.scanner.store.get(path_key(path))
        return bool(record) and record["error"] == PERMISSION_DENIED

    def _check_room(self):
        """A new folder may have taken the last inotify watch, or found none: then poll instead,
        and rescan for what happened before polling began."""
        if _watches_exhausted(self.root):
            self.observer.stop()
            self.observer.join()
            self.observer = self._poll()
            self.lost = True

    def _rescan_if_lost(self):
        if self.lost and time.monotonic() - self.rescanned >= RESCAN_GAP_S:
            self.lost, self.rescanned = False, time.monotonic()
            self.echo(f"watch: the kernel's event queue overflowed and events were lost: rescanning {shown(self.root)}")
            self._rescan()

    def _rescan(self):
        """What lost events may have hidden, found by stat alone: a sticker its record does not
        match (new, changed or moved here) waits to settle like any new file; a record whose file
        is not there is gone (and paired by content with a file moved elsewhere, as usual)."""
        recorded = self.scanner.store.signatures_under(path_key(self.root))
        unreadable, outs, on_disk = [], [], set()
        for path in walk(self.root, self.skip, self.options.follow_links, unreadable, outs):
            key = path_key(path)
            on_disk.add(key)
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone again: its record, if any, is handled below next time
            if recorded.get(key) != (st.st_size, st.st_mtime_ns):
                self.pending.setdefault(os.fspath(path), None)
        # Gone only where the walk could look: a file in a folder it could not read is still there.
        hidden = unwalked(unreadable, outs)
        now = time.monotonic()
        for key in sorted(recorded.keys() - on_disk):  # reported gone in path order, the same on every run
            if not key.startswith(hidden):
                self.gone.setdefault(key, now)

    def _wanted(self, path):
        real = os.path.realpath(path)
        if not media.is_media(path) or within(real, self.skip) or self._in_an_out(path):
            return False
        return self.options.follow_links or not os.path.islink(path)

    def _in_an_out(self, path):
        """Whether path lies in a folder under DIR marked as an OUT (the walk skips those too)."""
        folder = Path(path).parent
        while folder != self.root and self.root in folder.parents:
            if is_out(folder):
                return True
            folder = folder.parent
        return False

    def _there(self, path):
        """Still a file a scan would read: there, no folder (`rm x.png; mkdir x.png`), and not a
        link unless links are followed."""
        return os.path.lexists(path) and not os.path.isdir(path) and (
            self.options.follow_links or not os.path.islink(path))

    def _moved(self, src, dest, is_directory):
        if is_directory:
            return  # watchdog reports each file inside as moved too
        old, new = path_key(src), path_key(dest)
        self.pending.pop(src, None)
        store = self.scanner.store
        if not self._wanted(dest):
            if self.options.follow_links and os.path.isdir(dest):
                return self._moved_link(old, dest)
            self._deleted(src, False)
            self._deleted(dest, False)  # a link renamed over a recorded sticker (ln -sf)
            return
        if store.get(old):
            if new in self.gone:  # renamed over a sticker that left a moment ago: a swap, perhaps
                self._park(new)
            elif store.get(new):  # renamed over another sticker: that one is gone
                self.scanner.forget(new)
                self.report({"event": "removed", "path": new})
            self._move_record(old, dest)
        # Classified as usual once settled: unchanged, so only its link follows it.
        self.pending[dest] = None

    def _moved_link(self, old, dest):
        """A followed link to a folder renamed within DIR: its files' records, labels and all, go
        with it, as a folder's do (watchdog reports no file inside it moved)."""
        for key in list(self.scanner.store.signatures_under(old)):
            path = dest + key_path(key)[len(key_path(old)):]  # as paths: a key escapes undecodable bytes
            self._move_record(key, path)
            self.pending[path] = None

    def _exchange(self, a, b):
        """Two stickers that traded names at once (renameat2's RENAME_EXCHANGE, `mv --exchange`),
        reported as a move and the move back: each keeps its record, label and all, under its new
        name. False (nothing done) unless both are recorded stickers the watch follows."""
        old, new = path_key(a), path_key(b)
        store = self.scanner.store
        if not (self._wanted(a) and self._wanted(b) and store.get(old) and store.get(new)):
            return False
        store.swap(old, new, path_key(self.root), lambda key: path_key(Path(key_path(key)).name))
        if media.is_video(a) != media.is_video(b):
            store.unsettle(old)
            store.unsettle(new)
        for path in (a, b):
            self.pending[path] = None  # links follow their files once settled
            self.report(self._filed("changed", path_key(path)))
        return True

    def _deleted(self, path, is_directory):
        """A file, or a whole folder (removed, or moved out of DIR: then its files go unreported),
        is gone. So is a link the scan followed (--follow-links) into a folder: its removal is
        a file's event, its records those of a folder."""
        self.pending.pop(path, None)
        key = path_key(path)
        store = self.scanner.store
        gone = [key] if not is_directory and store.get(key) else list(store.signatures_under(key))
        for recorded in gone:
            self.gone.setdefault(recorded, time.monotonic())

    def _forget_gone(self, grace):
        # Kept for `grace` seconds first: a new file with the same content may yet show that it
        # was moved (watchdog reports a move into a folder made a moment before, or a copy and
        # delete, as a new file and a deleted one).
        now = time.monotonic()
        for key, since in list(self.gone.items()):
            if now - since >= grace:
                del self.gone[key]
                # Else it is back (and pending), or its record has moved on.
                if not self._there(key_path(key)) and self.scanner.store.get(key):
                    self.scanner.forget(key)
                    if key not in self.parked:  # a parked one was said removed when parked
                        self.report({"event": "removed", "path": key})
                self.parked.discard(key)

    def _adopt(self, path):
        """A new file with a gone file's content is that file moved: it takes over the record."""
        try:
            digest = file_hash(path)
        except (OSError, media.MediaError):  # unreadable, gone, or no regular file
            return  # scan_file, next, says why
        same = [r["path"] for r in self.scanner.store.records_of_content(digest) if r["path"] in self.gone]
        # Of copies of one file, the one of the same name is likelier the one moved: it keeps its
        # own record (a label the user gave it), not a deleted copy's.
        old = min(same, key=lambda k: Path(k).name != Path(path).name, default=None)
        if old:
            del self.gone[old]
            self._move_record(old, path)

    def _move_record(self, old, path):
        """The record (faces, links) of `old` now belongs to the file at path; its link follows
        when the file is next placed."""
        new = path_key(path)
        self.gone.pop(old, None)
        self.scanner.store.move(old, new, path_key(self.root), path_key(Path(path).name))
        if media.is_video(key_path(old)) != media.is_video(path):  # as a scan reads it: by its new ending
            self.scanner.store.unsettle(new)
        if old not in self.parked:
            self.report({"event": "moved", "path": new, "from": old})
        else:  # said removed where it was: back, under another name
            self.parked.discard(old)
            self.report(self._filed("added", new))

    def _park(self, key):
        """The record of a file gone a moment ago, whose name another file now takes (two files
        swapped through a name that is no sticker's, `mv a t; mv b a; mv t b`): moved aside, to a
        path no file has, for its content to turn up within the grace with its label the user's."""
        name = Path(key_path(key)).name
        parked = path_key(self.root / f".stickersort-moved-over-{secrets.token_hex(8)}" / name)
        self.scanner.store.move(key, parked, path_key(self.root), path_key(name))
        self.gone[parked] = self.gone.pop(key)
        self.parked.add(parked)
        self.report({"event": "removed", "path": key})  # as far as its name goes

    def _classify_settled(self, stop):
        now = time.monotonic()
        for path, seen in list(self.pending.items()):
            if stop.is_set():
                return
            try:
                st = _stat(path)
                signature = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                del self.pending[path]  # its deleted event does the rest
                continue
            except OSError as e:
                if e.errno != errno.ELOOP:
                    continue  # no search permission, say: for now, looked at again on the next round
                signature = ("cannot stat", e.errno)  # a link loop stays one: an error record, as a scan's
            if seen is None or seen[0] != signature:
                self.pending[path] = (signature, now)
            elif now - seen[1] >= self.settle:
                del self.pending[path]
                self._classify(path, signature)

    def _classify(self, path, signature):
        if self._in_an_out(path):  # marked as an OUT since its event (an OUT copied in, marker last)
            return
        key = path_key(path)
        old = self.scanner.store.get(key)
        if old and old["error"] and signature == (old["size"], old["mtime_ns"]) and not readable_again(old, path):
            return  # woken by its own reading's events: its error was said when it was read
        self._check_settings(each_file=True)
        if self.gone and not old:
            self._adopt(path)
        existed = self.scanner.store.get(key) is not None
        classified, errors = self.summary.classified, self.summary.errors
        self.scanner.scan_file(Path(path), self.root, self.summary)
        row = self.scanner.store.get(key)
        if row and self.summary.classified > classified:
            self.report(self._filed("changed" if existed else "added", key))
        elif row and row["error"] and self.summary.errors > errors:
            self.report({"event": "error", "path": key, "error": row["error"]})

    def report_state(self, summary):
        """After the first scan, what it leaves as events: `error` for each file it could not
        read, and for a `report` of the caller's (--json) first `added` for every file recorded
        under DIR, so that a reader keeping a table by path needs nothing else."""
        errors = {e["path"] for e in summary.error_files}
        for key in self.scanner.store.paths_within(path_key(self.root)) if self.replays else ():
            if key not in errors:
                self.report(self._filed("added", key))
        for error in summary.error_files:
            self.report({"event": "error", **error})

    def _filed(self, event, key):
        row = self.scanner.store.get(key)
        return {"event": event, "path": key, "label": row["label"], "guess": row["guess"],
                "confidence": row["confidence"] if row["guess"] else None, "user_label": row.get("user_label")}


def _stat(path):
    """path's stat, or a link's own where it leads nowhere (links followed, it is recorded as
    broken, as a scan records it); FileNotFoundError once the name itself is gone."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return os.lstat(path)


def run_watch(options, root, stop, settle=1.0, echo=None, progress=None, preview=None, report=None):
    """Scan root, then follow it until `stop` is set (sorter/interrupt.py: Ctrl-C or SIGTERM; the
    watch ends between two files). preview: a callable taking the stop event, run in this thread
    while the watch runs in another (windows want the main thread), e.g. live.run_live; report: as
    for Watcher. Returns the summary of what was done since the first scan, or None when stopped
    before that scan ended."""
    echo = echo or (lambda message: None)
    watcher = Watcher(options, root, settle, echo, report)

    def scanned(summary):
        watcher.report_state(summary)
        # Links too: another --min-confidence than the last scan's moves them without reading a file.
        links = ", ".join(f"{n} link{'s' * (n != 1)} {what}" for what in ("created", "moved", "removed")
                          if (n := summary.links.get(what)))
        echo(f"scanned {shown(watcher.root)}: {summary.files} file{'s' * (summary.files != 1)}, {summary.classified} classified, "
             f"{summary.errors} errors, {summary.vanished} vanished{', ' * bool(links)}{links}; watching (Ctrl-C stops)")

    if preview:
        beside_preview(watcher, stop, scanned, lambda: preview(stop), echo)
    else:
        watcher.run(stop, progress, scanned)
    return watcher.summary if watcher.watching else None


def beside_preview(watcher, stop, scanned, preview, echo):
    """The watch in a thread, the preview here (windows want the main thread); ends on Ctrl-C."""
    failed = []

    def run():
        try:
            watcher.run(stop, on_scanned=scanned)
        except BaseException as e:  # handed to the main thread, which reports it
            failed.append(e)
        finally:
            stop.set()

    thread = threading.Thread(target=run, name="watch")
    thread.start()
    try:
        preview()
    except BaseException:
        stop.set()
        raise
    finally:
        if not stop.is_set():
            echo("the preview has ended; still watching (Ctrl-C stops)")
        thread.join()
    if failed:
        raise failed[0]
