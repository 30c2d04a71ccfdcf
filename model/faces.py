"""Face finding, and the 48x48 gray crop the expression model takes.

Two detectors behind one interface, compared in docs/detectors.md:
- BlazeFace (MediaPipe's short-range model, shipped beside this module under Apache-2.0: see
  BLAZEFACE-LICENSE.txt) run through LiteRT, without TensorFlow (LiteRT and ONNX Runtime timed
  alike on it; LiteRT kept);
- OpenCV's frontal-face Haar cascade.
"""
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Face:
    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def box(self):
        return (self.x, self.y, self.w, self.h)


def _iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter)


def nms(boxes, scores, threshold=0.3):
    """Indices of boxes kept by greedy non-maximum suppression, best score first."""
    keep = []
    for i in np.argsort(scores)[::-1]:
        if all(_iou(boxes[i], boxes[j]) < threshold for j in keep):
            keep.append(int(i))
    return keep


class PerThread:
    """One instance of a native model per thread: neither a LiteRT interpreter nor an OpenCV
    cascade may run in two threads at once, and a scan detects in several."""

    def __init__(self, load):
        self.load, self.local = load, threading.local()

    def get(self):
        if not hasattr(self.local, "instance"):
            self.local.instance = self.load()
        return self.local.instance


class HaarDetector:
    name = "haar"

    def __init__(self, min_face=0.08):
        self.min_face = min_face  # smallest face, as a share of the shorter image side
        self._cascade = PerThread(self._load)

    @property
    def cascade(self):
        return self._cascade.get()

    @staticmethod
    def _load():
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        return cascade

    def detect(self, rgb):
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(24, int(min(gray.shape) * self.min_face))
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True)
        # levelWeights are unbounded; squash them to (0, 1) so they weigh like probabilities.
        return [Face(int(x), int(y), int(w), int(h), float(1 / (1 + np.exp(-wt))))
                for (x, y, w, h), wt in zip(boxes, np.ravel(weights))]


def _blazeface_file(name):
    return Path(__file__).with_name(name)


def _anchors(size, strides, per_cell):
    """SSD anchor centres (normalized) of MediaPipe's face detection graphs."""
    centres = []
    for stride, n in zip(strides, per_cell):
        cells = size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 2)
        centres.append(np.repeat(grid, n, axis=0))
    return np.concatenate(centres).astype("float32")


_STDERR = threading.Lock()  # reader threads load their interpreters at once: else one saves the
# other's /dev/null as "stderr" and puts it back for good, and every later message is lost


@contextmanager
def quiet_stderr():
    with _STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


# A closer look at frames where BlazeFace (the short-range model) finds no face: it misses faces
# that fill little of the frame (on PrivateTest cards, 10 % of faces a quarter to a third of the card's
# longer side, 2 % of those over 0.55). Zoomed in, it is also fooled more often, by faces nobody
# would file, such as rendered heads in profile in a diagram. So a face found this way must
# face the camera as FER2013's faces do: eyes at least MIN_EYE_SPACING of its box's width apart,
# the 2nd percentile of FER2013 Training faces on cards (0.306 on 2,891 found of 3,000; median 0.433).
CLOSER_TILE = 0.6
MIN_EYE_SPACING = 0.3


class BlazeFaceDetector:
    name = "blazeface"
    FILE, SIZE = "face_detection_short_range.tflite", 128

    # 0.6, measured on stickers-dev: face frames score >= 0.55 (5th percentile 0.66), while
    # faceless cards reach 0.53 and a plain ring on a dark card 0.57.
    def __init__(self, threshold=0.6):
        self.file, self.size = self.FILE, self.SIZE
        self.threshold = threshold
        self.anchors = _anchors(self.size, strides=(8, 16), per_cell=(2, 6))
        self._interpreter = PerThread(self._load)

    @property
    def interpreter(self):
        return self._interpreter.get()

    def _load(self):
        from ai_edge_litert.interpreter import Interpreter

        with quiet_stderr():  # LiteRT announces its CPU delegate on fd 2 on every load
            interpreter = Interpreter(model_path=str(_blazeface_file(self.file)), num_threads=1)
            interpreter.allocate_tensors()
        return interpreter

    def _run(self, square):
        it = self.interpreter
        it.set_tensor(it.get_input_details()[0]["index"], square[None])
        it.invoke()
        outs = sorted(it.get_output_details(), key=lambda d: d["shape"][-1])
        scores = it.get_tensor(outs[0]["index"])[0, :, 0]
        raw = it.get_tensor(outs[-1]["index"])[0, :, :8]  # box, then the eyes' keypoints
        return raw, scores

    def detect(self, rgb):
        return [face for face, _ in self._find(rgb)]

    def detect_closer(self, rgb):
        """Faces too small for `detect`, found in the frame's four corner tiles of CLOSER_TILE of
        its sides, each seen at the model's full input size; only frontal ones (see CLOSER_TILE)."""
        h, w = rgb.shape[:2]
        th, tw = max(1, int(h * CLOSER_TILE)), max(1, int(w * CLOSER_TILE))
        found = [Face(f.x + x0, f.y + y0, f.w, f.h, f.score)
                 for y0 in (0, h - th) for x0 in (0, w - tw)
                 for f, eyes in self._find(rgb[y0:y0 + th, x0:x0 + tw]) if eyes >= MIN_EYE_SPACING]
        return [found[i] for i in nms([f.box for f in found], [f.score for f in found])]

    def _find(self, rgb):
        """[(Face, the eyes' distance over the box's width)] above the threshold."""
        h, w = rgb.shape[:2]
        side = max(h, w)
        # Letterbox to a square so faces keep their shape.
        canvas = np.zeros((side, side, 3), np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = rgb[..., :3]
        square = cv2.resize(canvas, (self.size, self.size), interpolation=cv2.INTER_AREA)
        raw, logits = self._run(square.astype("float32") / 127.5 - 1.0)
        scores = 1 / (1 + np.exp(-np.clip(logits, -50, 50)))
        hits = np.flatnonzero(scores >= self.threshold)
        if not len(hits):
            return []
        cxy = raw[hits, :2] / self.size + self.anchors[hits]
        wh = raw[hits, 2:4] / self.size
        # Keypoints 0 and 1 are the eyes, offsets from the anchor like the box's centre.
        eyes = np.hypot(*(raw[hits, 4:6] - raw[hits, 6:8]).T) / np.maximum(raw[hits, 2], 1e-6)
        boxes = np.concatenate([cxy - wh / 2, wh], 1) * side - [left, top, 0, 0]
        faces = []
        for i in nms(boxes, scores[hits]):
            x, y, bw, bh = boxes[i]
            x0, y0 = max(0, int(x)), max(0, int(y))
            x1, y1 = min(w, int(x + bw)), min(h, int(y + bh))
            if x1 - x0 >= 8 and y1 - y0 >= 8:
                faces.append((Face(x0, y0, x1 - x0, y1 - y0, float(scores[hits][i])), float(eyes[i])))
        return faces


DETECTORS = {"blazeface": BlazeFaceDetector, "haar": HaarDetector}


def make_detector(name="blazeface"):
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name]()


# Where FER2013's 48x48 frame lies around each detector's box: its side as a multiple of the box's
# longer side, and its centre's offset from the box's centre in box widths and heights. Medians
# over Training faces put on generated cards (`stickersort evaluate DATA --split Training --calibrate`):
# BlazeFace's box is most of a FER frame, centred a little below the frame's centre.
FER_FRAMES = {"blazeface": (1.18, 0.0, -0.09), "haar": (1.06, 0.0, 0.0)}


def crop(rgb, face, frame=FER_FRAMES["blazeface"], size=48):
    """The model's input: the square gray region a FER2013 face would fill around this box
    (frame: side scale, x and y offsets, as in FER_FRAMES), padded by edge replication where it
    leaves the image."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    scale, dx, dy = frame
    cx, cy = face.x + face.w * (0.5 + dx), face.y + face.h * (0.5 + dy)
    half = max(face.w, face.h) * scale / 2
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    pad = max(0, -x0, -y0, x1 - gray.shape[1], y1 - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    region = gray[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if region.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interp)
