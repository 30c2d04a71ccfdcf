"""Frame -> faces -> crops -> probabilities, and a clip's faces -> one vote: the expression path
that scan, live and both evaluations share, so what is measured is what users get."""
from dataclasses import dataclass

import numpy as np

from ..model import faces as faces_module  # looked up at call time: the bench times `crop`
from ..model.labels import EMOTIONS
from .vote import face_weight, vote

# A file's faces count only if they are credible: found in enough of its sampled time. Drawn,
# CGI and animal faces and caption cards flicker in and out of detection; real faces stay.
# Chosen on stickers-dev (`stickersort evaluate --stickers`), see the model card.
MIN_FACE_TIME = 0.5  # share of the sampled time with a face, for files of several frames


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


def frame_faces(detector, rgb):
    """The faces of one RGB frame and their 48x48 crops, framed as FER2013 frames its faces."""
    faces = detector.detect(rgb)
    return faces, crops_of(detector, rgb, faces)


def crops_of(detector, rgb, faces):
    """48x48 crops of faces this detector found in rgb, framed as FER2013 frames its faces."""
    frame = faces_module.FER_FRAMES.get(detector.name, faces_module.FER_FRAMES["blazeface"])
    return [faces_module.crop(rgb, f, frame) for f in faces]


def read_clip(clip, detector, classifier):
    """Every sampled frame's faces with their probabilities (one classifier batch), and the vote."""
    seen, crops = [], []
    for frame in clip.frames:
        h, w = frame.rgb.shape[:2]
        scale = clip.width / w  # boxes in the original file's pixels
        faces, frame_crops = frame_faces(detector, frame.rgb)
        crops += frame_crops
        seen += [FaceSeen(frame.index, round(frame.time, 3),
                          tuple(round(v * scale) for v in f.box), f.score,
                          face_weight(f.w * f.h / (w * h), f.score, frame.weight)) for f in faces]
    if not credible(clip, seen):
        seen, crops = [], []
    probs = classifier.predict(np.stack(crops)) if crops else np.zeros((0, len(EMOTIONS)))
    for face, p in zip(seen, probs):
        face.probs = p
    return seen, vote(probs, [f.weight for f in seen])


def credible(clip, seen, min_time=MIN_FACE_TIME):
    """Faces in at least min_time of the clip's sampled time (a still: any face)."""
    if not seen or len(clip.frames) < 2:
        return bool(seen)
    with_faces = {f.frame for f in seen}
    total = sum(frame.weight for frame in clip.frames)
    shown = sum(frame.weight for frame in clip.frames if frame.index in with_faces)
    return shown >= min_time * total
