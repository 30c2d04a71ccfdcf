"""`stickersort watch DIR`: one scan, then file-system events keep the database and OUT in step.

Files are classified once their size and mtime have stood still for `settle` seconds, so a
download or a slow copy is read once, whole. Everything runs in the calling thread except
watchdog's observer, which only queues events; `stop` ends the run between two files, so the
database and the links are never left half-done.

`run_watch` is the whole command, from plain arguments: Ctrl-C and SIGTERM end it, and a preview
(`watch --live`) may run beside it.
"""
import os
import queue
import signal
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from . import media
from .paths import path_key
from .scan import Scanner, Summary, file_hash


class Stopped(Exception):
    pass


class _Queue(FileSystemEventHandler):
    def __init__(self, events):
        self.events = events

    def on_any_event(self, event):
        self.events.put(event)


class Watcher:
    def __init__(self, options, root, settle=1.0, echo=None):
        self.options = options
        self.root = Path(os.path.realpath(root))
        self.settle = settle
        self.echo = echo or (lambda message: None)
        self.skip = [os.path.realpath(p) for p in (options.out, options.db)]
        self.events = queue.Queue()
        self.pending = {}  # path -> ((size, mtime_ns), unchanged since)
        self.gone = {}  # key of a deleted file's record -> when it went
        self.scanner = None
        self.summary = Summary(path_key(self.root), path_key(options.out), path_key(options.db))

    def run(self, stop, progress=None, on_scanned=None):
        """Scan once, then follow events until `stop` is set."""
        # Made here: its SQLite connection belongs to the thread that runs the watch.
        self.scanner = Scanner(self.options, echo=self.echo)
        observer = Observer()
        # Watching starts before the scan, so nothing written during the scan is missed.
        observer.schedule(_Queue(self.events), str(self.root), recursive=True)
        observer.start()
        try:
            summary = self.scanner.scan(self.root, progress=_until(stop, progress))
            if on_scanned:
                on_scanned(summary)
            while not stop.is_set():
                self._take(timeout=min(0.2, self.settle / 2))
                self._classify_settled(stop)
                self._forget_gone(grace=2 * self.settle + 1)
            self._forget_gone(grace=0)  # leave no record of a file that is gone
        except Stopped:
            pass
        finally:
            observer.stop()
            observer.join()

    def _take(self, timeout):
        """Handle every queued event, waiting up to `timeout` for the first."""
        try:
            self._handle(self.events.get(timeout=timeout))
            while True:
                self._handle(self.events.get_nowait())
        except queue.Empty:
            pass

    def _handle(self, event):
        src = os.fsdecode(event.src_path)
        if event.event_type == "moved":
            self._moved(src, os.fsdecode(event.dest_path), event.is_directory)
        elif event.event_type == "deleted":
            self._deleted(src, event.is_directory)
        elif event.event_type in ("created", "modified", "closed") and not event.is_directory:
            if self._wanted(src):
                self.pending.setdefault(src, None)

    def _wanted(self, path):
        real = os.path.realpath(path)
        if not media.is_media(path) or any(real == s or real.startswith(s + os.sep) for s in self.skip):
            return False
        return self.options.follow_links or not os.path.islink(path)

    def _moved(self, src, dest, is_directory):
        if is_directory:
            return  # watchdog reports each file inside as moved too
        self.pending.pop(src, None)
        old, new = path_key(src), path_key(dest)
        store = self.scanner.store
        if not self._wanted(dest):
            self._deleted(src, False)
            return
        if store.get(old):
            if store.get(new):  # renamed over another sticker: that one is gone
                self.scanner.forget(new)
            self._move_record(old, dest)
        # Classified as usual once settled: unchanged, so only its link follows it.
        self.pending[dest] = None

    def _deleted(self, path, is_directory):
        """A file, or a whole folder (removed, or moved out of DIR: then its files go unreported),
        is gone."""
        self.pending.pop(path, None)
        key = path_key(path)
        if is_directory:
            prefix = key.rstrip(os.sep) + os.sep
            gone = [p for p in self.scanner.store.paths_under(path_key(self.root)) if p.startswith(prefix)]
        else:
            gone = [key] if self.scanner.store.get(key) else []
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
                if not os.path.lexists(key):  # else it is back, and pending
                    self.echo(f"{key}: deleted")
                    self.scanner.forget(key)

    def _adopt(self, path, key):
        """A new file with a gone file's content is that file moved: it takes over the record."""
        try:
            digest = file_hash(path)
        except OSError:
            return  # scan_file, next, says why
        store = self.scanner.store
        old = next((k for k in self.gone if (store.get(k) or {}).get("hash") == digest), None)
        if old:
            del self.gone[old]
            self._move_record(old, path)

    def _move_record(self, old, path):
        """The record (faces, links) of `old` now belongs to the file at path; its link follows
        when the file is next placed."""
        new = path_key(path)
        self.scanner.store.move(old, new, path_key(self.root), path_key(Path(path).name))
        self.echo(f"{old}: moved to {new}")

    def _classify_settled(self, stop):
        now = time.monotonic()
        for path, seen in list(self.pending.items()):
            if stop.is_set():
                return
            try:
                st = os.stat(path)
            except FileNotFoundError:
                del self.pending[path]  # its deleted event does the rest
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if seen is None or seen[0] != signature:
                self.pending[path] = (signature, now)
            elif now - seen[1] >= self.settle:
                del self.pending[path]
                self._classify(path)

    def _classify(self, path):
        key = path_key(path)
        if self.gone and not self.scanner.store.get(key):
            self._adopt(path, key)
        before = self.summary.classified
        self.scanner.scan_file(Path(path), self.root, self.summary)
        row = self.scanner.store.get(key)
        if self.summary.classified > before and row:
            self.echo(f"{key}: {row['label']} ({row['confidence']:.2f})")


def _until(stop, progress=None):
    """A progress wrapper that ends the first scan between two files when `stop` is set."""
    def walk(paths):
        for path in (progress(paths) if progress else paths):
            if stop.is_set():
                raise Stopped
            yield path
    return walk


def run_watch(options, root, settle=1.0, echo=None, progress=None, preview=None):
    """Scan root, then follow it until Ctrl-C or SIGTERM (caught meanwhile, from the main thread:
    the watch ends between two files; a second Ctrl-C stops at once). preview: a callable taking
    the stop event, run in this thread while the watch runs in another (windows want the main
    thread), e.g. live.run_live. Returns the summary of what was done since the first scan."""
    echo = echo or (lambda message: None)
    watcher = Watcher(options, root, settle, echo)
    stop = threading.Event()

    def interrupted(signum, frame):
        stop.set()  # the watch ends between two files
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    def scanned(summary):
        echo(f"scanned {watcher.root}: {summary.files} files, {summary.classified} classified, "
             f"{summary.errors} errors; watching (Ctrl-C stops)")

    handlers = {s: signal.signal(s, interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if preview:
            beside_preview(watcher, stop, scanned, lambda: preview(stop), echo)
        else:
            watcher.run(stop, progress, scanned)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return watcher.summary


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
