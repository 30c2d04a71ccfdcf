"""Read a sticker file into a few RGB frames sampled evenly by time.

Bounds that keep hostile files cheap: MAX_PIXELS per frame (checked from the header, before any
decoding), MAX_FRAMES frames walked per file, MAX_SECONDS of decoding per file (looked at between
chunks of input and between frames, so an overrun is cut off), and frames downscaled to MAX_SIDE
before anything else sees them. Files are opened without blocking and read only if regular: a FIFO
or device swapped in after the walk's stat would otherwise hang the reader.
"""
import io
import math
import os
import re
import stat
import struct
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageFile

from . import frame_times

MAX_PIXELS = 40_000_000
MAX_FRAMES = 3000
MAX_SECONDS = 20.0
MAX_SIDE = 640
DEFAULT_FRAME_MS = 100  # what browsers show for GIF frames that declare 0 or 10 ms
HOLD_BYTES = 48 << 20  # decoded frames of one animation kept for sampling
# Files read whole: GIF and WebP for their frame times (frame_times.py), AVIF because its decoder
# takes the file in one piece. An AVIF file over this is refused rather than read into memory.
INDEX_BYTES = 64 << 20
# Each scan of a progressive JPEG walks the whole image, and a scan can be a dozen bytes, so a
# few KB can hold minutes of work: libjpeg gets such a file's input in chunks of
# JPEG_CHUNK_WORK / pixels bytes (between these bounds), a fraction of a second of work between
# two looks at the clock. (A sequential JPEG's data grows with the blocks it decodes.)
JPEG_CHUNK_WORK = 1 << 31
JPEG_CHUNK_BYTES = (64, 1 << 16)
# Frames over BIG_PIXELS are decoded one file at a time, always in the same thread: memory a
# thread frees stays with that thread's allocator arena, so huge frames decoded in turn by
# several threads would each keep their own copy of that memory.
BIG_PIXELS = 2_000_000
_big_reader = ThreadPoolExecutor(1, thread_name_prefix="big-frames")

IMAGE_SUFFIXES = {".gif", ".webp", ".avif", ".png", ".apng", ".jpg", ".jpeg", ".jfif", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi"}
SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
# Content decides the decoder, not the name, but only among sticker formats: Pillow would
# otherwise hand a renamed EPS to Ghostscript, or a TIFF or PSD to decoders nobody needs here.
PILLOW_FORMATS = ("GIF", "WEBP", "AVIF", "PNG", "JPEG", "BMP")
AVIF_BRANDS = (b"avif", b"avis", b"mif1", b"msf1")  # the ftyp brands Pillow's AVIF reader takes

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# What Pillow raises for a file it cannot decode (or that ends too soon). Its AVIF reader raises
# RuntimeError for a frame libavif cannot decode, and ZeroDivisionError for a timescale of 0.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error,
                 RuntimeError, ArithmeticError)
ImageFile.LOAD_TRUNCATED_IMAGES = False


class MediaError(Exception):
    """A file that cannot be read as a sticker; the message is one line for the user."""


class TooLarge(MediaError):
    """A file past MAX_PIXELS: no reader, OpenCV's included, is to try it."""


class Interrupted(Exception):
    """The reading was called off (Ctrl-C): no verdict on the file."""


class Budget:
    """MAX_SECONDS of decoding for one file (or `seconds`), and `cancel` (a threading.Event, or
    None) by which another thread calls the reading off. Looked at before every chunk of input
    and every frame."""

    def __init__(self, cancel=None, seconds=None):
        self.cancel, self.seconds = cancel, seconds
        self.restart()

    def restart(self):
        self.deadline = time.monotonic() + (MAX_SECONDS if self.seconds is None else self.seconds)

    def check(self):
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()
        if time.monotonic() > self.deadline:
            raise MediaError(f"decoding took over {MAX_SECONDS:.0f} s; gave up")


class _Input(io.BufferedReader):
    """A file that looks at its Budget before each read: Pillow's decoders take their input a
    chunk at a time, so a decode that overruns stops at its next chunk."""

    def __init__(self, raw, budget):
        super().__init__(raw)
        self.budget = budget

    def read(self, size=-1):
        self.budget.check()
        return super().read(size)


def open_regular(path, budget=None):
    """path opened for reading, or MediaError if it is not a regular file. O_NONBLOCK: opening a
    FIFO (or a device) that replaced the file since its stat must not wait for a writer."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MediaError("not a regular file")
        return _Input(io.FileIO(fd, "rb", closefd=True), budget or Budget())
    except BaseException:
        os.close(fd)
        raise


def fd_path(f):
    """A name by which a library that wants a path (OpenCV) opens this very file, not whatever
    its path names by now."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else f.name


def video_capture(f):
    """OpenCV's capture of the open file f, by FFmpeg alone: left to choose, OpenCV tries its
    image-sequence reader on a file FFmpeg refuses, which takes the digits of /proc/self/fd/12
    for a frame number and reads /proc/self/fd/13, 14, ...: whatever this process has open
    there, a pipe that blocks forever among them."""
    return cv2.VideoCapture(fd_path(f), cv2.CAP_FFMPEG)


@dataclass
class Frame:
    index: int  # frame number in the file
    time: float  # start, seconds
    weight: float  # seconds of the animation this sample stands for
    rgb: np.ndarray = field(repr=False)


@dataclass
class Media:
    kind: str  # image | animation | video
    width: int
    height: int
    frames_total: int
    duration: float
    frames: list
    note: str | None = None  # what was read despite a fault (a truncated animation's whole frames)


def is_video(path):
    """Read as a video (by OpenCV) rather than by the image decoders: by its name's ending."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_media(path):
    return Path(path).suffix.lower() in SUFFIXES


# A moment that falls on a frame boundary is the later frame's, whatever float sums did to either.
BOUNDARY_S = 1e-9
CONVERT_AHEAD = 2  # mean frames: see _read_frames


def _moments(total, n):
    """n moments spread evenly over `total` seconds, each standing for total / n of them."""
    return (np.arange(n) + 0.5) * total / n


def sample_times(durations, n):
    """Indices of frames shown at n evenly spaced moments, with the seconds each stands for."""
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    total = float(np.sum(durations))
    picks = np.searchsorted(starts, _moments(total, n) + BOUNDARY_S, side="right") - 1
    weights = {}
    for i in picks:
        weights[int(i)] = weights.get(int(i), 0.0) + total / n
    return sorted(weights.items()), starts


def _fit(rgb):
    h, w = rgb.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _rgb(im):
    """RGB array; transparent parts shown over white, as chat apps show stickers. A frame many
    times MAX_SIDE shrinks by a whole factor first, so at most two full-size copies ever exist."""
    if im.mode.startswith("I"):
        im = _eight_bit(im)
    # A palette's transparent index, or the one grey or RGB colour a PNG's tRNS chunk keys out.
    transparent = im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    mode = "RGBA" if transparent else "RGB"
    im = im if im.mode == mode else im.convert(mode)
    factor = max(im.size) // MAX_SIDE
    if factor > 1:
        im = im.reduce(factor)  # premultiplied for RGBA: no dark fringes from transparent pixels
    if transparent:
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im)
        im = canvas.convert("RGB")
    return np.asarray(im)


def _eight_bit(im):
    """A 16-bit grayscale PNG as 8-bit grey (and alpha where its tRNS keys a value out): convert()
    would clip it to white, not scale it."""
    wide = np.asarray(im)  # uint16, or int32 for mode I: no wider copies of a 40 M pixel frame
    grey = Image.fromarray(np.clip(wide >> 8, 0, 255).astype(np.uint8))
    key = im.info.get("transparency")
    if not isinstance(key, int):
        return grey
    return Image.merge("LA", (grey, Image.fromarray((wide != key).astype(np.uint8) * 255)))


def _too_large(bomb):
    """TooLarge for Pillow's DecompressionBomb error or warning, whose words name its own, doubled
    limit for an error: ours is MAX_PIXELS either way."""
    size = re.search(r"\((\d+) pixels\)", str(bomb))
    return TooLarge(f"image too large: {int(size[1]):,} pixels is over {MAX_PIXELS:,}" if size
                    else f"image too large: over {MAX_PIXELS:,} pixels")


def _check_size(w, h):
    if w < 1 or h < 1:
        raise MediaError(f"empty image ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise TooLarge(f"image too large: {w}x{h} is over {MAX_PIXELS:,} pixels")


def read(path, max_frames=8, cancel=None):
    """The file's sampled frames as Media, or MediaError; Interrupted once `cancel` is set."""
    path = Path(path)
    budget = Budget(cancel)
    with open_regular(path, budget) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise MediaError("empty file (0 bytes)")
        if is_video(path):
            return _read_video(f, max_frames, budget)
        return _read_pillow(f, size, max_frames, budget)


class Player:
    """An animated image's frames in order, decoded as `read` decodes them (its limits, white under
    transparency, an APNG's default image passed over), for `live` to play: OpenCV reads only the
    first frame of an animated WebP, and cannot rewind an APNG. MediaError if it cannot be opened."""

    def __init__(self, path):
        self._budget = Budget()
        self._f = open_regular(path, self._budget)
        try:
            self._im = Image.open(self._f, formats=PILLOW_FORMATS)
            _check_size(*self._im.size)
            self.frames = _frame_count(self._im)
        except BaseException as e:
            self._f.close()
            if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
                raise _too_large(e) from None
            if isinstance(e, DECODE_ERRORS):
                raise MediaError(f"cannot decode: {type(e).__name__}") from None
            raise
        self._first = 1 if self.frames > 1 and self._im.info.get("default_image") else 0
        self._next = self._first

    def read(self):
        """(RGB frame, seconds on screen) of the next frame; None after the last one (or where a
        file cut short ends)."""
        if self._next >= self.frames:
            return None
        self._budget.restart()  # the clock counts one frame's decoding: the player may run for hours
        try:
            _step(self._im, self._next, self._budget)
        except (*DECODE_ERRORS, MediaError):
            self.frames = self._next
            return None
        self._next += 1
        return _fit(_rgb(self._im)), _seconds(self._im.info.get("duration"))

    def rewind(self):
        """Back to the first frame, the file opened again: Pillow cannot seek an APNG back from
        a frame before its last (a file cut short), and would stop at its first frame for good."""
        if self._next != self._first:
            self._f.seek(0)
            self._im = Image.open(self._f, formats=PILLOW_FORMATS)  # not close(): it would close _f
            self.frames = _frame_count(self._im)
        self._next = self._first

    def close(self):
        self._im.close()
        self._f.close()


def _read_pillow(f, size, max_frames, budget):
    try:
        source, declared = _indexed(f, size)
        try:
            return _read_opened(source, max_frames, budget, declared)
        except _Misdeclared:
            source.seek(0)
            return _read_opened(source, max_frames, budget, None)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_large(e) from None
    except Image.UnidentifiedImageError:
        raise MediaError(_unidentified(f)) from None
    except (*DECODE_ERRORS, MemoryError) as e:
        raise MediaError(f"cannot decode: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _read_opened(source, max_frames, budget, declared):
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source, formats=PILLOW_FORMATS) as im:
            if im.format == "PNG" and im.tile and im.tile[0].args == "RGB;16B":
                # Its tRNS key is in 16-bit units, its pixels read at 8 bits: it would key out another colour.
                im.info.pop("transparency", None)
            if im.format == "JPEG" and im.info.get("progressive"):
                pixels = max(1, im.width * im.height)
                im.decodermaxblock = int(np.clip(JPEG_CHUNK_WORK // pixels, *JPEG_CHUNK_BYTES))
            return _in_turn(im.width * im.height, _read_image, im, max_frames, budget, declared)


class _Misdeclared(Exception):
    """A frame the declared times led to does not decode: read the file again, walking every frame."""


def _unidentified(f):
    """Why Pillow took f for no image: it starts as none, or as one of these, cut short or damaged."""
    f.seek(0)
    head = f.read(12)
    kinds = {b"GIF8": "GIF", b"\x89PNG": "PNG"}  # a cut JPEG or WebP is known, and its error says so
    kind = next((k for magic, k in kinds.items() if head.startswith(magic)), None)
    return f"a {kind} file cut short or damaged" if kind else "not an image file (unknown format)"


def _indexed(f, size):
    """What Pillow should read, and the frame times an animation declares (or None). A GIF or WebP
    up to INDEX_BYTES is read whole: its times come from its blocks, and Pillow then reads memory,
    not a file a few bytes at a time. Anything else streams through f, whose reads look at the
    clock (a progressive JPEG's scans are where one frame's decoding can run for minutes)."""
    head = f.read(12)
    f.seek(0)
    if head[4:8] == b"ftyp" and head[8:12] in AVIF_BRANDS and size > INDEX_BYTES:
        raise MediaError(f"too large: an AVIF file is read whole, and this one is over {INDEX_BYTES >> 20} MB")
    if size > INDEX_BYTES or not (
            head[:3] == b"GIF" or (head[:4] == b"RIFF" and head[8:] == b"WEBP")):
        return f, None
    data = f.read()
    return io.BytesIO(data), frame_times.durations_ms(data)


def _in_turn(pixels, decode, *args):
    """decode(*args) in this thread, or, for frames over BIG_PIXELS, in the big-frame thread."""
    if pixels > BIG_PIXELS:
        return _big_reader.submit(decode, *args).result()
    return decode(*args)


def _read_image(im, max_frames, budget, declared=None):
    budget.restart()  # the clock counts decoding, not the wait for the big-frame thread
    w, h = im.size
    _check_size(w, h)
    n = _frame_count(im, declared)
    if n <= 1:
        return _read_still(im, w, h)
    if declared is not None and len(declared[:MAX_FRAMES]) == n:
        # Only the frames up to the last one picked are decoded: a broken frame after it goes
        # unseen, as it would in a player stopped there.
        try:
            return _sampled(im, w, h, n, [_seconds(d) for d in declared[:n]], None, None, max_frames, budget)
        except DECODE_ERRORS:
            raise _Misdeclared() from None  # Pillow's state is spent: _read_pillow starts over
    return _sampled(im, w, h, *_walk(im, n, budget), max_frames, budget)


def _sampled(im, w, h, n, durations, held, note, max_frames, budget):
    """The animation's frames at max_frames moments: from `held` frames, or decoded (again) up to
    the last one picked."""
    picks, starts = sample_times(durations, max_frames)
    wanted = dict(picks)
    chosen = ((i, held[i]) for i in sorted(wanted)) if held is not None else _decode_again(im, wanted, budget)
    frames = [Frame(i, float(starts[i]), wanted[i], _fit(_rgb(frame))) for i, frame in chosen]
    return Media("animation", w, h, n, float(sum(durations)), frames, note)


def _walk(im, n, budget):
    """Every frame decoded, for the times the file does not declare: (n, durations, held, note).
    Frames are held while they fit in HOLD_BYTES, so the picks need no second decoding."""
    durations, held, held_bytes, note = [], {}, 0, None
    for i in range(n):  # a frame's duration is known once it is decoded (WebP)
        try:
            _step(im, i, budget)
        except DECODE_ERRORS:
            if i == 0:
                raise
            # Cut off mid-frame: the whole frames before are shown, as browsers show them.
            n, note = i, f"truncated: kept the {i} whole frame{'s' if i > 1 else ''} before the cut"
            break
        # An APNG's default image is what viewers without APNG show, not a frame of the animation.
        durations.append(0.0 if i == 0 and im.info.get("default_image") else _seconds(im.info.get("duration")))
        held_bytes += im.width * im.height * len(im.getbands())
        if held is not None and held_bytes <= HOLD_BYTES:
            held[i] = im.copy()
        else:
            held = None
    return n, durations, held, note


def _seconds(ms):
    """A frame's time on screen: what browsers show for frames that declare 0 or 10 ms."""
    return (ms if ms and ms > 10 else DEFAULT_FRAME_MS) / 1000


# EXIF orientation -> the transposition that shows the picture upright (as ImageOps.exif_transpose).
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _read_still(im, w, h):
    """A still, upright as its EXIF orientation says (a phone's photo is stored sideways), its
    width and height as shown. A JPEG many times MAX_SIDE is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, draft()): a fraction of the work, and still at least MAX_SIDE."""
    turn = ORIENTATIONS.get(_orientation(im))
    if im.format == "JPEG" and max(w, h) >= 2 * MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        im.draft(None, (max(1, int(w * scale)), max(1, int(h * scale))))
    im.load()
    rgb = _fit(_rgb(im))
    if turn is not None:
        rgb = np.asarray(Image.fromarray(rgb).transpose(turn))
        if turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                    Image.Transpose.ROTATE_270):
            w, h = h, w
    return Media("image", w, h, 1, 0.0, [Frame(0, 0.0, 1.0, rgb)])


def _orientation(im):
    try:
        return im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a mangled EXIF block says nothing about the picture
        return None


def _frame_count(im, declared=None):
    """Frames to walk: as many as the file has, at most MAX_FRAMES; MAX_FRAMES too when counting
    them runs into the end of a file cut short (the walk then stops where the frames do). A GIF's
    declared frames are its frames (both count image blocks, Pillow as it walks them)."""
    if declared is not None and im.format == "GIF":
        return min(len(declared), MAX_FRAMES)
    try:
        n = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
    except DECODE_ERRORS:
        n = MAX_FRAMES
    return min(n, MAX_FRAMES)


def _decode_again(im, wanted, budget):
    for i in range(max(wanted) + 1):
        _step(im, i, budget)
        if i in wanted:
            yield i, im


def _step(im, i, budget):
    """Frame i, right after frame i - 1: every format here decodes frames in order anyway, and one
    step at a time keeps a single frame's work between two looks at the clock (a seek far ahead
    is one long call). load() because WebP reads a frame's duration only when decoding it."""
    budget.check()
    im.seek(i)
    im.load()


def _read_video(f, max_frames, budget):
    cap = _capture(f)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(w, h)
        return _in_turn(w * h, _read_clip, cap, f, w, h, max_frames, budget)
    finally:
        cap.release()


def _capture(f):
    cap = video_capture(f)
    if not cap.isOpened():
        cap.release()
        raise MediaError("cannot open as video")
    return cap


def _read_clip(cap, f, w, h, max_frames, budget):
    budget.restart()
    try:
        return _read_frames(cap, w, h, max_frames, budget)
    except _Missed:  # a frame held longer than foreseen: read again, every frame converted,
        # on the same clock: MAX_SECONDS bounds the file, not each pass
        again = _capture(f)
        try:
            return _read_frames(again, w, h, max_frames, budget, every=True)
        finally:
            again.release()


class _Missed(Exception):
    """A sampled moment fell on a frame that was decoded but not converted."""


def _read_frames(cap, w, h, max_frames, budget, every=False):
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and fps > 0 else 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if n <= 0:
        raise MediaError("video has no frames")
    n = min(n, MAX_FRAMES)
    duration = n / fps  # the container's: OpenCV counts a clip's frames as its duration x its mean rate
    step, span = 1 / fps, duration / max_frames
    pending = deque(_moments(duration, max_frames))
    frames, on_screen, start = [], None, -step
    # Frame by frame, never seeking: a seek decodes from the last keyframe in one call the
    # clock cannot stop, and a file whose index lists no keyframes decodes from the start.
    # Each frame is kept until the next one starts: only then is it known which moments it
    # was on screen at (a phone's clip or a screen recording varies its rate). Converting a
    # decoded frame to pixels (retrieve) costs 0.1-0.8 times as much again as decoding it (VP8,
    # H.264, MPEG-4 clips measured), so only a frame a moment may fall on is converted: one
    # starting within CONVERT_AHEAD mean frames of the next moment. A frame held longer than
    # that, as a screen recording holds one, is found out when the next frame starts (_pick),
    # and the clip is read again (`every`).
    for i in range(MAX_FRAMES):
        budget.check()
        if not pending or not cap.grab():
            break
        start = _started(cap, start, step, duration)
        _pick(frames, on_screen, pending, start, span)
        if every or (pending and pending[0] < start + CONVERT_AHEAD * step):
            ok, bgr = cap.retrieve()
            on_screen = (i, start, bgr) if ok else on_screen
        else:
            on_screen = (i, start, None)
    _pick(frames, on_screen, pending, math.inf, span)
    if not frames:
        raise MediaError("no frame of the video could be decoded")
    return Media("video", w, h, n, duration, frames)


def _started(cap, last, step, duration):
    """When the frame just grabbed starts, in seconds: its own time stamp, or one mean frame after
    the last where the stamp is missing, runs backwards, or lies past the clip's end."""
    stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
    return stamp if last < stamp <= duration else last + step


def _pick(frames, on_screen, pending, until, span):
    """The frame on screen (index, start, BGR) as the sample of every pending moment before
    `until`, when the next frame starts; each moment stands for `span` seconds."""
    if on_screen is None:  # moments before the first frame are the first frame's
        return
    shown = 0
    while pending and pending[0] < until - BOUNDARY_S:
        pending.popleft()
        shown += 1
    if shown:
        i, start, bgr = on_screen
        if bgr is None:
            raise _Missed
        frames.append(Frame(i, start, shown * span, _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
