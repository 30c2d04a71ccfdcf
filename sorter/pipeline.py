"""File -> frames, frame -> faces -> crops -> probabilities, and a clip's faces -> one vote: the
expression path that scan, live, both evaluations and the benchmark (ours and fer's side) share,
so what is measured is what users get.

Every step goes through a `timer`: a callable that takes a stage name ("decode", "detect",
"crop", "classify", "vote") and returns a context manager around that stage's work. The default
times nothing; the benchmark passes one that adds up the seconds per stage (the scan's Scanner
adds "hash", "record" and "link" through the same hook).

A detector is anything with `name` and `detect(rgb) -> [Face]`; one that frames its faces its
own way (the benchmark's fer adapter) also has `crops(rgb, faces) -> [array]`. A classifier is
anything with `predict(crops [N, ...]) -> probabilities [N, 7]`.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..model.faces import FER_FRAMES, crop
from ..model.labels import EMOTIONS
from . import media
from .vote import face_weight, vote

# A file's faces count only if they are credible: found in enough of its sampled time. Drawn,
# CGI and animal faces and caption cards flicker in and out of detection; real faces stay.
# Chosen on stickers-dev (`stickersort evaluate --stickers`), see the model card.
MIN_FACE_TIME = 0.5  # share of the sampled time with a face, for files of several frames


def no_timer(stage):
    """The default timer: times nothing."""
    return nullcontext()


@dataclass
class FaceSeen:
    frame: int
    time: float
    box: tuple  # x, y, w, h in the file's own pixels
    score: float
    weight: float
    probs: np.ndarray = None

    @property
    def label(self):
        return EMOTIONS[int(np.argmax(self.probs))]


def read_file(path, frames, detector, classifier, timer=no_timer, cancel=None):
    """A file's sampled frames, their faces and the vote: (clip, [FaceSeen], Vote). Raises
    media.MediaError for a file that is not a readable sticker, OSError as reading does, and
    media.Interrupted once `cancel` (a threading.Event) is set."""
    with timer("decode"):
        clip = media.read(path, frames, cancel)
    return (clip, *read_clip(clip, detector, classifier, timer))


def read_clip(clip, detector, classifier, timer=no_timer):
    """Every sampled frame's faces with their probabilities (one classifier batch), and the vote."""
    seen, crops, last = [], [], None
    for frame in clip.frames:
        h, w = frame.rgb.shape[:2]
        scale = clip.width / w  # boxes in the original file's pixels
        # A held pose samples the same picture again: its faces and crops are the last ones.
        if last is None or not same_picture(last[0], frame.rgb):
            last = (frame.rgb, *frame_faces(detector, frame.rgb, timer))
        faces, frame_crops = last[1:]
        crops += frame_crops
        seen += [FaceSeen(frame.index, round(frame.time, 3),
                          tuple(round(v * scale) for v in f.box), f.score,
                          face_weight(f.w * f.h / (w * h), f.score, frame.weight)) for f in faces]
    if not credible(clip, seen):
        seen, crops = [], []
    probs = classify(classifier, crops, timer)
    for face, p in zip(seen, probs):
        face.probs = p
    with timer("vote"):
        return seen, vote(probs, [f.weight for f in seen])


def same_picture(a, b):
    return a.shape == b.shape and np.array_equal(a, b)


def frame_faces(detector, rgb, timer=no_timer):
    """The faces of one RGB frame and their 48x48 crops, framed as FER2013 frames its faces. A
    frame with none gets the detector's closer look for small faces, where it has one."""
    with timer("detect"):
        faces = detector.detect(rgb)
        if not faces and hasattr(detector, "detect_closer"):
            faces = detector.detect_closer(rgb)
    return faces, crops_of(detector, rgb, faces, timer)


def crops_of(detector, rgb, faces, timer=no_timer):
    """48x48 crops of faces this detector found in rgb, framed as FER2013 frames its faces (or as
    the detector frames them, when it brings its own `crops`)."""
    if not faces:
        return []
    with timer("crop"):
        if hasattr(detector, "crops"):
            return detector.crops(rgb, faces)
        frame = FER_FRAMES.get(detector.name, FER_FRAMES["blazeface"])
        return [crop(rgb, f, frame) for f in faces]


def classify(classifier, crops, timer=no_timer):
    """Probabilities [N, 7] of N crops, in one batch; no crops, no model call."""
    if not len(crops):
        return np.zeros((0, len(EMOTIONS)))
    with timer("classify"):
        return classifier.predict(np.stack(crops))


def credible(clip, seen, min_time=MIN_FACE_TIME):
    """Faces in at least min_time of the clip's sampled time (a still: any face)."""
    if not seen or len(clip.frames) < 2:
        return bool(seen)
    with_faces = {f.frame for f in seen}
    total = sum(frame.weight for frame in clip.frames)
    shown = sum(frame.weight for frame in clip.frames if frame.index in with_faces)
    return shown >= min_time * total
