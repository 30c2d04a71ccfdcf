"""Read a sticker file into a few RGB frames sampled evenly by time.

Bounds that keep hostile files cheap: MAX_PIXELS per frame (checked from the header, before any
decoding), MAX_FRAMES frames walked per file, MAX_SECONDS of decoding per file, and frames
downscaled to MAX_SIDE before anything else sees them.
"""
import struct
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile

MAX_PIXELS = 40_000_000
MAX_FRAMES = 3000
MAX_SECONDS = 20.0
MAX_SIDE = 640
DEFAULT_FRAME_MS = 100  # what browsers show for GIF frames that declare 0 or 10 ms
HOLD_BYTES = 48 << 20  # decoded frames of one animation kept for sampling
# Frames over BIG_PIXELS are decoded one file at a time, always in the same thread: memory a
# thread frees stays with that thread's allocator arena, so huge frames decoded in turn by
# several threads would each keep their own copy of that memory.
BIG_PIXELS = 2_000_000
_big_reader = ThreadPoolExecutor(1, thread_name_prefix="big-frames")

IMAGE_SUFFIXES = {".gif", ".webp", ".png", ".apng", ".jpg", ".jpeg", ".jfif", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi"}
SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
# Content decides the decoder, not the name, but only among sticker formats: Pillow would
# otherwise hand a renamed EPS to Ghostscript, or a TIFF or PSD to decoders nobody needs here.
PILLOW_FORMATS = ("GIF", "WEBP", "PNG", "JPEG", "BMP")

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


class MediaError(Exception):
    """A file that cannot be read as a sticker; the message is one line for the user."""


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


def is_media(path):
    return Path(path).suffix.lower() in SUFFIXES


def sample_times(durations, n):
    """Indices of frames shown at n evenly spaced moments, with the seconds each stands for."""
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    total = float(np.sum(durations))
    moments = (np.arange(n) + 0.5) * total / n
    # The epsilon keeps float sums from moving a moment that falls on a boundary a frame early.
    picks = np.searchsorted(starts, moments + 1e-9, side="right") - 1
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
    transparent = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
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


def _check_size(w, h):
    if w < 1 or h < 1:
        raise MediaError(f"empty image ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise MediaError(f"image too large: {w}x{h} is over {MAX_PIXELS:,} pixels")


def read(path, max_frames=8):
    path = Path(path)
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video(path, max_frames)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PILLOW_FORMATS) as im:
                return _in_turn(im.width * im.height, _read_image, im, max_frames)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"image too large: {e}") from None
    except Image.UnidentifiedImageError:
        raise MediaError("not an image file (unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError,
            struct.error) as e:
        raise MediaError(f"cannot decode: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _in_turn(pixels, decode, *args):
    """decode(*args) in this thread, or, for frames over BIG_PIXELS, in the big-frame thread."""
    if pixels > BIG_PIXELS:
        return _big_reader.submit(decode, *args).result()
    return decode(*args)


def _read_image(im, max_frames):
    w, h = im.size
    _check_size(w, h)
    n = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
    if n <= 1:
        im.load()
        frame = Frame(0, 0.0, 1.0, _fit(_rgb(im)))
        return Media("image", w, h, 1, 0.0, [frame])
    started = time.monotonic()
    n = min(n, MAX_FRAMES)
    durations, held, held_bytes = [], {}, 0
    for i in range(n):  # a frame's duration is known once it is decoded (WebP)
        _step(im, i, started)
        d = im.info.get("duration") or 0
        durations.append((d if d > 10 else DEFAULT_FRAME_MS) / 1000)
        # Every frame held, so the picks need no second decoding; past HOLD_BYTES, none is,
        # and a second pass decodes again up to the last pick.
        held_bytes += im.width * im.height * len(im.getbands())
        if held is not None and held_bytes <= HOLD_BYTES:
            held[i] = im.copy()
        else:
            held = None
    picks, starts = sample_times(durations, max_frames)
    wanted = dict(picks)
    chosen = ((i, held[i]) for i in sorted(wanted)) if held is not None else _decode_again(im, wanted, started)
    frames = [Frame(i, float(starts[i]), wanted[i], _fit(_rgb(frame))) for i, frame in chosen]
    return Media("animation", w, h, n, float(sum(durations)), frames)


def _decode_again(im, wanted, started):
    for i in range(max(wanted) + 1):
        _step(im, i, started)
        if i in wanted:
            yield i, im


def _step(im, i, started):
    """Frame i, right after frame i - 1: every format here decodes frames in order anyway, and one
    step at a time keeps a single frame's work between two looks at the clock (a seek far ahead
    is one long call). load() because WebP reads a frame's duration only when decoding it."""
    _check_clock(started)
    im.seek(i)
    im.load()


def _check_clock(started):
    if time.monotonic() - started > MAX_SECONDS:
        raise MediaError(f"decoding took over {MAX_SECONDS:.0f} s; gave up")


def _read_video(path, max_frames):
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError("cannot open as video")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(w, h)
        return _in_turn(w * h, _read_frames, cap, w, h, max_frames)
    finally:
        cap.release()


def _read_frames(cap, w, h, max_frames):
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if n <= 0:
        raise MediaError("video has no frames")
    n = min(n, MAX_FRAMES)
    picks, starts = sample_times([1 / fps] * n, max_frames)
    wanted = dict(picks)
    frames = []
    started = time.monotonic()
    # Frame by frame, never seeking: a seek decodes from the last keyframe in one call the
    # clock cannot stop, and a file whose index lists no keyframes decodes from the start.
    for i in range(max(wanted) + 1):
        _check_clock(started)
        if not cap.grab():
            break
        if i in wanted:
            ok, bgr = cap.retrieve()
            if ok:
                frames.append(Frame(i, float(starts[i]), wanted[i], _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    if not frames:
        raise MediaError("no frame of the video could be decoded")
    return Media("video", w, h, n, n / fps, frames)
