"""`stickersort live`: frames from a camera, a video/GIF file or a stream -> faces -> expressions,
drawn with an FPS figure. One capture loop feeds every viewer: a window or the web page's stream.
`run_live` is the whole command, from plain arguments (the CLI and `watch --live` call it).

Detection runs on every frame: at 640x480 BlazeFace takes a few ms, so skipping frames and
tracking between them would save little (bench/live_fps.py prints the stages).
"""
import os
import queue
import re
import stat
import sys
import threading
import time
import urllib.parse
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as NotYet
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..model.faces import Face, quiet_stderr, make_detector
from ..model.inference import Classifier
from ..model.labels import EMOTIONS, UNSURE
from . import media, pipeline

BOX = (60, 220, 60)  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX
STAGES = ("decode", "detect", "classify", "draw", "encode")
NO_FILE = "no such file (give a camera index, a video or sticker file, or a stream URL)"
HEAR_STOP_S = 0.05  # how often a wait on the capture looks at `stop`
STALLED_S = 25.0  # a read that ends a stream after this long: FFmpeg's 30-s timeout, not the stream's end
RELEASE_WAIT_S = 1.0  # how long release() waits for a read under way to end
_ABANDONED = []  # capture threads still inside OpenCV after release() gave up waiting


class LiveError(Exception):
    """A one-line message for the user."""


def open_source(source, stop=None):
    """A camera index ("0") or device (/dev/video0), a video or GIF file, or a stream URL -> an
    opened Capture (one that `stop` cut short, if it came first). A file must be a regular one:
    OpenCV would wait forever on a FIFO."""
    target = int(source) if source.isascii() and source.isdigit() else _as_path(source)
    if isinstance(target, int) or "://" in target:
        return _capture(source, target, stop)
    if not os.path.exists(target):
        raise LiveError(f"--source {source}: {NO_FILE}")
    if stat.S_ISCHR(os.stat(target).st_mode):  # a camera's device node
        return _capture(source, target, stop)
    if animation := _animation(target):
        return animation
    try:
        with media.open_regular(target) as f:  # without blocking, and OpenCV opens this very file
            # A file cannot stall: read in this thread, by FFmpeg alone (media.video_capture says why).
            return _capture(source, media.fd_path(f), None, cv2.CAP_FFMPEG)
    except media.MediaError:
        raise LiveError(f"--source {source}: not a regular file (a FIFO, folder or socket); give a camera index, "
                        f"a video or sticker file, or a stream URL") from None
    except OSError as e:
        raise LiveError(f"--source {source}: cannot open: {e.strerror or e}") from None


def _as_path(source):
    """A file:// URL as its path, checked and paced as a file is (OpenCV would hang on a FIFO)."""
    if source.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    return source


def _capture(source, target, stop, api=cv2.CAP_ANY):
    capture = Capture(stop)
    with quiet_stderr():  # OpenCV and FFmpeg explain a failed open over several lines
        try:
            capture.open(target, api)
        except (cv2.error, OverflowError):  # a camera index past what OpenCV takes
            pass
    if capture.stopped:
        return capture  # Ctrl-C came first: the run ends before its first frame
    if not capture.isOpened():
        capture.release()
        what = f"no camera at index {target}" if isinstance(target, int) else "cannot open it as a video or stream"
        raise LiveError(f"--source {source}: {what}")
    w, h = (int(capture.get(side) or 0) for side in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
    if w * h > media.MAX_PIXELS:  # as the scan refuses it, from the header, before a frame is decoded
        capture.release()
        raise LiveError(f"--source {source}: frames too large: {w}x{h} is over {media.MAX_PIXELS:,} pixels")
    return capture


def _animation(path):
    """An animated image as an Animation, or None (a still, a video, or no image Pillow reads:
    OpenCV's to try). Read as the scan reads it: at most MAX_FRAMES frames, at most MAX_SIDE px;
    LiveError for an image past MAX_PIXELS, still or not."""
    if not media.is_media(path) or media.is_video(path):
        return None
    try:
        player = media.Player(path)
    except media.TooLarge as e:  # else OpenCV would decode it whole, past the scan's limits
        raise LiveError(f"--source {path}: {e}") from None
    except (media.MediaError, OSError):
        return None
    first = player.read() if player.frames > 1 else None
    if first:
        player.rewind()
        return Animation(player, fps=1 / first[1])
    player.close()
    return None


class Animation:
    """An animated image played by media.Player through the few calls of cv2.VideoCapture's that
    Live makes, at the pace its first frame declares."""

    def __init__(self, player, fps):
        self.player, self.stopped, self._fps = player, False, fps

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return self._fps if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES and value == 0:
            self.player.rewind()
            return True
        return False

    def read(self):
        frame = self.player.read()
        return (True, cv2.cvtColor(frame[0], cv2.COLOR_RGB2BGR)) if frame else (False, None)

    def release(self):
        self.player.close()


class Capture:
    """cv2.VideoCapture; given `stop`, its calls are made in a thread of its own while the caller
    waits for each, hearing `stop` meanwhile. OpenCV's FFmpeg waits up to 30 s on a stream that
    does not answer or stalls, and no signal handler (Ctrl-C) runs until such a call returns. A
    call that `stop` cuts short answers None and is left to end alone; release() comes after it.
    A file, which cannot stall, is read here: the hand-over costs 0.3 ms a frame (bench/live_fps.py)."""

    def __init__(self, stop=None):
        self.stop, self.stopped, self._cap = stop, False, None
        self.stalled = None  # the seconds the read that ended a stalled stream waited
        self._jobs = queue.SimpleQueue() if stop is not None else None
        self._thread = None
        if self._jobs is not None:
            self._thread = threading.Thread(target=self._serve, name="capture", daemon=True)
            self._thread.start()

    def _serve(self):
        while (job := self._jobs.get()) is not None:
            answer, call = job
            try:
                answer.set_result(call())
            except BaseException as e:  # the caller's to handle
                answer.set_exception(e)

    def _call(self, call):
        if self._jobs is None:
            return call()
        answer = Future()
        self._jobs.put((answer, call))
        while True:
            try:
                return answer.result(timeout=HEAR_STOP_S)
            except NotYet:
                if self.stop.is_set():
                    self.stopped = True
                    return None

    def open(self, target, api=cv2.CAP_ANY):
        self._cap = self._call(lambda: cv2.VideoCapture(target, api))

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self._cap is not None and bool(self._call(self._cap.isOpened))

    def get(self, prop):
        return self._call(lambda: self._cap.get(prop)) if self._cap is not None else None

    def set(self, prop, value):
        return self._cap is not None and self._call(lambda: self._cap.set(prop, value))

    def read(self):
        started = time.monotonic()
        answer = self._call(self._cap.read) if self._cap is not None else None
        waited = time.monotonic() - started
        if answer is not None and not answer[0] and waited > STALLED_S:
            self.stalled = waited
        return answer if answer is not None else (False, None)

    def release(self):
        """After the call under way, if one is, waiting for it a moment: a stalled stream's may
        take 30 s, and is then left to end alone (see reads_in_flight)."""
        if self._jobs is None:
            if self._cap is not None:
                self._cap.release()
            return
        if self._cap is not None:
            self._jobs.put((Future(), self._cap.release))
        self._jobs.put(None)
        self._thread.join(RELEASE_WAIT_S)
        if self._thread.is_alive():
            _ABANDONED.append(self._thread)


def reads_in_flight():
    """Whether a released capture's thread is still inside OpenCV. Such a process must leave by
    os._exit: a thread that comes back from C++ while Python shuts down aborts it (SIGABRT,
    "FATAL: exception not rethrown")."""
    return any(thread.is_alive() for thread in _ABANDONED)


def window_problem():
    """Why an OpenCV window cannot open here, or None. Checked before cv2.imshow, which aborts
    the whole process on some builds when there is no display."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if not hasattr(cv2, "imshow") or (gui and gui.group(1) == "NONE"):
        return "this OpenCV build has no window support (opencv-python-headless); use --web to watch in a browser"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to open a window on; use --web to watch in a browser"
    return None


@dataclass
class Seen:
    box: tuple
    label: str
    confidence: float
    probs: np.ndarray = field(repr=False)


class Annotator:
    """The same detector, crop and model as `scan`, one frame at a time."""

    def __init__(self, detector="blazeface", model=None):
        self.detector = make_detector(detector)
        self.classifier = Classifier(model)
        # Load both models now, so the first frame's latency is the pipeline's, not the loading.
        blank = np.zeros((96, 96, 3), np.uint8)
        self.detect(blank)
        self.classify(blank, [Face(0, 0, 48, 48, 1.0)])

    def detect(self, rgb):
        return self.detector.detect(rgb)

    def classify(self, rgb, faces):
        if not faces:
            return []
        probs = pipeline.classify(self.classifier, pipeline.crops_of(self.detector, rgb, faces))
        return [Seen(f.box, EMOTIONS[int(np.argmax(p))], float(np.max(p)), p) for f, p in zip(faces, probs)]


class Mood:
    """The expression on screen, averaged over the last `seconds` so it does not flicker."""

    def __init__(self, seconds=1.0):
        self.seconds = seconds
        self.recent = deque()  # (time, summed probabilities of that frame's faces)

    def add(self, t, seen):
        if seen:
            self.recent.append((t, np.sum([s.probs for s in seen], 0)))
        while self.recent and self.recent[0][0] < t - self.seconds:
            self.recent.popleft()

    @property
    def label(self):
        if not self.recent:
            return None
        return EMOTIONS[int(np.argmax(np.sum([p for _, p in self.recent], 0)))]


def _text(bgr, text, origin, color=(255, 255, 255), scale=0.6):
    cv2.putText(bgr, text, origin, FONT, scale, (0, 0, 0), 4, cv2.LINE_AA)  # outline: readable on any background
    cv2.putText(bgr, text, origin, FONT, scale, color, 1, cv2.LINE_AA)


def draw(bgr, seen, fps, lines=()):
    for s in seen:
        x, y, w, h = s.box
        cv2.rectangle(bgr, (x, y), (x + w, y + h), BOX, 2)
        _text(bgr, f"{s.label} {s.confidence:.2f}", (x, max(18, y - 8)), BOX)
    _text(bgr, f"{fps:.1f} FPS", (8, 24))
    for i, line in enumerate(lines):
        _text(bgr, line, (8, 48 + 22 * i), scale=0.5)


@dataclass
class Stats:
    source: str
    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    seconds: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=100_000))  # bounded: a camera runs for hours
    stages: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def as_dict(self):
        ms = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        n = max(self.frames, 1)
        return {"source": self.source, "frames": self.frames, "faces": self.faces,
                "frames_with_faces": self.frames_with_faces, "seconds": round(self.seconds, 3),
                "fps": round(self.frames / self.seconds, 1) if self.seconds else 0.0,
                "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)}
                | {"max": round(float(ms.max()), 2)},
                "stages_ms": {k: round(v / n * 1000, 2) for k, v in self.stages.items()}}


class Live:
    """The capture loop. Viewers take the latest JPEG through `next_jpeg`; `stop` ends the run."""

    def __init__(self, capture, annotator, source="", loop=False, max_frames=None, realtime=False,
                 encode=False, lines=None, stop=None):
        self.capture, self.annotator = capture, annotator
        self.loop, self.max_frames, self.encode = loop, max_frames, encode
        self._first, self._decoded = None, 0  # a one-frame source's frame, which --loop shows again
        self.lines = lines or (lambda mood: [])
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        # A file decodes faster than real time; a viewer wants it at its own pace.
        self.period = 1 / fps if realtime and fps < 1000 else 0.0
        self.stats = Stats(source)
        self.mood = Mood()
        self.now = {"mood": None, "faces": 0, "fps": 0.0}  # replaced whole: safe to read from any thread
        self.stop = stop or threading.Event()
        self._changed = threading.Condition()
        self._jpeg, self._seq, self._done = None, 0, False
        self._fps = 0.0

    def next_jpeg(self, after):
        """The newest frame later than sequence number `after`, waiting for it: (jpeg, seq), or
        (None, after) once the run is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > after or self._done)
            return (self._jpeg, self._seq) if self._seq > after else (None, after)

    def run(self, show=None):
        """Read, annotate and publish frames until the source ends, max_frames, or stop."""
        started = last = tick = time.perf_counter()
        try:
            while not self.stop.is_set() and self.stats.frames != self.max_frames:
                # A frame period from the last read, its processing included; the first frame at
                # once, and a stop heard during the wait (a GIF frame may ask for minutes).
                if self.period and self.stats.frames and self.stop.wait(tick + self.period - time.perf_counter()):
                    break
                tick = time.perf_counter()
                bgr = self._read()
                if bgr is None:
                    break
                self.stats.stages["decode"] += time.perf_counter() - tick
                self._step(bgr, show)
                now = time.perf_counter()
                interval, last = max(now - last, 1e-6), now
                self._fps = 0.9 * self._fps + 0.1 / interval if self._fps else 1 / interval
        finally:
            self.stats.seconds = time.perf_counter() - started
            self.capture.release()
            with self._changed:
                self._done = True
                self._changed.notify_all()
        return self.stats.as_dict()

    def _read(self):
        ok, bgr = self.capture.read()
        if not ok and self.loop and self.stats.frames:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
            if not ok and self._decoded == 1:  # a still or one-frame clip, which OpenCV cannot rewind
                return self._first.copy()
        if ok:
            self._decoded += 1
            if self._decoded == 1:
                self._first = bgr.copy()
        return bgr if ok else None

    def _step(self, bgr, show):
        times = [time.perf_counter()]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = self.annotator.detect(rgb)
        times.append(time.perf_counter())
        seen = self.annotator.classify(rgb, faces)
        times.append(time.perf_counter())
        self.mood.add(times[0], seen)
        mood = self.mood.label
        draw(bgr, seen, self._fps, self.lines(mood))
        times.append(time.perf_counter())
        if self.encode:
            jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            with self._changed:
                self._jpeg, self._seq = jpeg, self._seq + 1
                self._changed.notify_all()
        times.append(time.perf_counter())
        if show:
            show(bgr)
        for stage, a, b in zip(STAGES[1:], times, times[1:]):
            self.stats.stages[stage] += b - a
        self.stats.latencies.append(times[-1] - times[0])
        self.stats.frames += 1
        self.stats.faces += len(seen)
        self.stats.frames_with_faces += bool(seen)
        self.now = {"mood": mood, "faces": len(seen), "fps": round(self._fps, 1)}


class Window:
    """The preview in an OpenCV window; q, Esc or closing the window ends the run."""
    TITLE = "stickersort live"

    def __init__(self, live):
        self.live = live

    def __call__(self, bgr):
        cv2.imshow(self.TITLE, bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            self.live.stop.set()

    def close(self):
        cv2.destroyAllWindows()


class Matches:
    """The library's best stickers for an expression (from a `scan` database), best first: the
    ones filed under it, then the unsure ones whose best guess it is."""

    def __init__(self, db, limit=6, fresh_for=2.0):
        self.db, self.limit, self.fresh_for = db, limit, fresh_for
        self._cache = (None, [])

    def __call__(self, label):
        if not label:
            return []
        # The window asks every frame; a `watch` in the same process may add stickers meanwhile.
        key = (label, int(time.monotonic() / self.fresh_for))
        if self._cache[0] != key:
            with self._store() as store:
                self._cache = (key, _distinct(store.top(label, self.limit * SAME_CONTENT_SLACK), self.limit))
        return self._cache[1]

    def lines(self, label):
        """Text for the window: the matching stickers' names."""
        rows = self(label)
        return [f"{label}: {len(rows)} stickers"] + [
            f"  {r['name']}{' (unsure)' if r['label'] == UNSURE else ''}" for r in rows] if label else []

    def rows(self, digest):
        """The records of the stickers with this content hash (see serving.recorded)."""
        from .serving import recorded
        with self._store() as store:
            return recorded(store, digest)

    @contextmanager
    def _store(self):
        # A fresh read-only connection each time: viewers ask from their own threads.
        from .store import Store
        store = Store(self.db, readonly=True)
        try:
            yield store
        finally:
            store.close()


# Rows asked for per sticker shown: copies of one file (one content, several paths) show once.
SAME_CONTENT_SLACK = 4


def _distinct(rows, limit):
    """rows, the first of each content hash only, at most limit of them."""
    seen = set()
    return [r for r in rows if not (r["hash"] in seen or seen.add(r["hash"]))][:limit]


def check_preview(source="0", web=None, model=None, window=True, early=False):
    """What can be told of the preview's arguments without opening a camera or stream: raises
    LiveError for a bad address, no window to open, a missing model, a file or camera that is not
    there. `watch --live` asks before its first scan (early), so that such a mistake leaves
    nothing: then a file is opened once and the address listened on once, as the preview will.
    Returns --web's (host, port), or None."""
    from .serving import ServeError, can_listen
    from .web import parse_address

    try:
        address = parse_address(web) if web is not None else None
        if early and address:
            can_listen(*address)
    except ValueError as e:
        raise LiveError(str(e))
    except ServeError as e:
        raise LiveError(f"--web {e}") from None
    if window and web is None and (problem := window_problem()):
        raise LiveError(problem)
    if model is not None and not os.path.isfile(model):
        raise LiveError(f"model file not found: {model}")
    if source.isascii() and source.isdigit():
        # OpenCV reads an index of 100 or more as a backend's plus a camera's (200: V4L2's camera 0).
        if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{int(source) % 100}"):
            raise LiveError(f"--source {source}: no camera at index {source}")
    elif "://" not in source and not os.path.exists(source):
        raise LiveError(f"--source {source}: {NO_FILE}")
    elif early and "://" not in source and not stat.S_ISCHR(os.stat(source).st_mode):
        open_source(source).release()  # a file OpenCV cannot play
    return address


def run_live(source="0", web=None, db=None, detector="blazeface", model=None, loop=False, max_frames=None,
             window=True, stop=None, echo=None):
    """The preview, in this thread, until it ends (the source's end unless loop, max_frames, stop,
    Ctrl-C, or q in the window); returns the run's stats.

    web: "HOST:PORT" serves it as a page instead of a window; db: a `scan` database whose
    stickers for the expression on screen are shown; window: without web, an OpenCV window (else
    frames are only counted, as `live --json` does). Raises LiveError, a one-line message, for a
    bad address, no window to open, a missing model file or a source that cannot be opened."""
    from .web import serve

    echo = echo or (lambda message: None)
    address = check_preview(source, web, model, window)
    stop = stop if stop is not None else threading.Event()
    is_file = os.path.isfile(_as_path(source))
    capture = open_source(source, stop)
    try:
        matches = Matches(db) if db else None
        showing = web is not None or window
        live = Live(capture, Annotator(detector, model), source, loop, max_frames,
                    realtime=showing and is_file, encode=web is not None,
                    lines=matches.lines if matches and web is None else None, stop=stop)
    except BaseException:
        capture.release()
        raise
    show = Window(live) if window and web is None else None
    try:
        serve(live, *address, matches, echo=echo) if address else live.run(show)
    except KeyboardInterrupt:  # how a camera preview normally ends
        live.stop.set()
    finally:
        if show:
            show.close()
    if not live.stats.frames and not live.stop.is_set():
        # Opened, yet nothing came: a damaged file (FFmpeg's own complaint aside), a silent camera.
        raise LiveError(f"--source {source}: opened, but not one frame could be read from it")
    if getattr(capture, "stalled", None) and not live.stop.is_set():  # not the end of a stream: its silence
        raise LiveError(f"--source {source}: stopped sending frames (nothing for {capture.stalled:.0f} s) after "
                        f"{live.stats.frames} frames")
    if address and not live.stop.is_set() and live.stats.frames != max_frames:  # else the page just goes dead
        n = live.stats.frames
        again = " (--loop plays a file again)" if is_file else ""
        echo(f"the source ended after {n} frame{'s' if n != 1 else ''}; the preview stops{again}")
    return live.stats.as_dict()
