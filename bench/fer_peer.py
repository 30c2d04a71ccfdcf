"""fer's side of the benchmark. Runs inside fer's own virtual environment (run.py sets it up), as
`python bench/fer_peer.py job.json result.json`.

fer is used with its defaults, with three workarounds for today's stack that live here and
nowhere else: FER is imported from fer.fer (the package root no longer exports it); its own
bundled Haar cascade is passed as cascade_file (OpenCV 5 wheels ship none); and the venv keeps a
setuptools that still has pkg_resources, which fer.fer imports.

For stickers, fer's side reads each file through stickersort's own pipeline (sorter/pipeline.py,
loaded from this repository's source: it needs only numpy, OpenCV and Pillow, which fer needs
too), fer standing where our detector and classifier stand: the same frames, the same credible
faces and the same vote as ours, and stage times from the same timer hook.
"""
import importlib
import sys
import time
import types
from pathlib import Path

import numpy as np

from common import Stages, accuracy, best_run, faces_per_s, read_labels, repeats, score_stickers, worker_main


def load_ours(repo):
    """stickersort.sorter.pipeline, .media, stickersort.model.faces and .labels from source,
    without installing stickersort here: bare parent packages pointed at the repo's folders (so
    the modules' relative imports resolve)."""
    for name, folder in (("stickersort", None), ("stickersort.sorter", "sorter"),
                         ("stickersort.model", "model")):
        package = types.ModuleType(name)
        package.__path__ = [str(Path(repo) / folder)] if folder else []
        sys.modules.setdefault(name, package)
    return [importlib.import_module(f"stickersort.{name}")
            for name in ("sorter.pipeline", "sorter.media", "model.faces", "model.labels")]


def make_fer():
    import cv2
    import fer
    from fer.fer import FER

    cascade = Path(fer.__file__).parent / "data" / "haarcascade_frontalface_default.xml"
    if cv2.CascadeClassifier(str(cascade)).empty():
        raise SystemExit(f"fer's bundled Haar cascade did not load: {cascade}")
    return FER(cascade_file=str(cascade))  # defaults otherwise: Haar, quantized TFLite model


def fer_input(faces):
    """fer's own preprocessing, from FER.detect_emotions: cv2.resize to the model's 64x64
    (bilinear), then x / 255, minus 0.5, times 2."""
    import cv2

    resized = np.stack([cv2.resize(face, (64, 64)) for face in faces]).astype("float32")
    return (resized / 255.0 - 0.5) * 2.0


class FerAdapter:
    """fer as the pipeline's detector and classifier, doing what FER.detect_emotions does in its
    three steps: `detect` is FER.find_faces (its Haar cascade, which gives no confidence: every
    face scores 1), `crops` cuts and scales each face as detect_emotions does before its model,
    `predict` is FER._classify_emotions, its scores rounded to two places as detect_emotions
    reports them. `check` proves the three give what detect_emotions gives."""
    name = "fer"

    def __init__(self, fer, face_type, emotions):
        from fer.fer import PADDING

        self.fer, self.Face, self.padding = fer, face_type, PADDING
        # fer's own settings (private attributes of FER, defaults (10, 10) and (64, 64)).
        self.offsets = fer._FER__offsets
        self.size = tuple(fer._FER__emotion_target_size)
        labels = fer._get_labels()  # fer's class index -> name; ours may be in another order
        self.order = [next(i for i, name in labels.items() if name == e) for e in emotions]
        self.emotions = emotions

    @staticmethod
    def _gray(rgb):
        import cv2

        # The same pixels as detect_emotions' BGR2GRAY of the BGR frame it is given.
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def detect(self, rgb):
        boxes = self.fer.find_faces(self._gray(rgb), bgr=False)
        return [self.Face(int(x), int(y), int(w), int(h), 1.0) for x, y, w, h in boxes]

    def crops(self, rgb, faces):
        import cv2

        gray, pad = self.fer.pad(self._gray(rgb)), self.padding
        (x_off, y_off), cut = self.offsets, []
        for face in faces:
            x, y, w, h = self.fer.tosquare(face.box)
            x1, x2, y1, y2 = x - x_off + pad, x + w + x_off + pad, y - y_off + pad, y + h + y_off + pad
            cut.append(cv2.resize(gray[max(0, y1):y2, max(0, x1):x2], self.size))
        cut = np.array(cut, dtype="float32")
        return list((cut / 255.0 - 0.5) * 2.0)

    def predict(self, faces):
        probs = np.asarray(self.fer._classify_emotions(faces))
        return np.array([[round(float(row[i]), 2) for i in self.order] for row in probs])

    def check(self, frames):
        """Every face detect_emotions finds in these RGB frames, found and scored alike here;
        the number of faces compared, or SystemExit."""
        compared = 0
        for rgb in frames:
            theirs = self.fer.detect_emotions(np.ascontiguousarray(rgb[..., ::-1]))  # fer wants BGR
            faces = self.detect(rgb)
            ours = self.predict(np.stack(self.crops(rgb, faces))) if faces else np.zeros((0, 7))
            same = ([tuple(int(v) for v in f["box"]) for f in theirs] == [f.box for f in faces] and
                    np.array_equal(ours, np.array([[f["emotions"][e] for e in self.emotions] for f in theirs])
                                   .reshape(-1, len(self.emotions))))
            if not same:
                raise SystemExit("the fer adapter does not find or score faces as FER.detect_emotions does; "
                                 "fer's internals have changed: update FerAdapter")
            compared += len(faces)
        return compared


def end_to_end(job):
    """Each file through our pipeline with fer as detector and classifier: our frame sampling,
    fer's detection, crop and model on every sampled frame, our credible faces and vote."""
    started = time.perf_counter()
    pipeline, media, faces_module, labels = load_ours(job["repo"])
    fer = FerAdapter(make_fer(), faces_module.Face, labels.EMOTIONS)
    fer.fer.detect_emotions(np.zeros((64, 64, 3), np.uint8))  # warm, as ours is
    startup = time.perf_counter() - started

    root = Path(job["stickers"])
    checked = fer.check(frame.rgb for rel in job["files"][:20] for frame in _frames(media, root / rel, job["frames"]))
    stages, runs = Stages(), []
    for _ in repeats(job):
        stages.seconds = {}
        t = time.perf_counter()
        predicted = {rel: sort_one(pipeline, media, root / rel, job["frames"], fer, stages) for rel in job["files"]}
        runs.append((time.perf_counter() - t, stages.seconds))
    result = best_run(runs, len(job["files"]), startup)
    return {**result, "files_per_s_one_reader": result["files_per_s"],  # fer reads one file at a time
            "errors": sum(v is None for v in predicted.values()), "adapter_checked_faces": checked,
            **score_stickers(predicted, read_labels(job["labels"]))}


def _frames(media, path, frames):
    try:
        return media.read(path, frames).frames
    except media.MediaError:
        return []


def sort_one(pipeline, media, path, frames, fer, timer):
    """One file's label (the vote's winner): None where it cannot be read, as our scan records
    an error."""
    try:
        _, _, result = pipeline.read_file(path, frames, fer, fer, timer)
    except media.MediaError:
        return None
    return result.label


def model_figures(job):
    """fer's model alone (its default: the quantized TFLite one) on PrivateTest faces. fer's own
    _classify_emotions is timed, so batch 64 is what fer does with 64 faces: one invoke each."""
    data = np.load(job["faces"])
    faces, labels = fer_input(data["faces"]), data["labels"]
    classify = make_fer()._classify_emotions
    return {
        "privatetest_accuracy": accuracy(classify(faces), labels),
        "privatetest_n": int(len(faces)),
        "faces_per_s_b1": faces_per_s(classify, faces, 1, job["seconds"]),
        "faces_per_s_b64": faces_per_s(classify, faces, 64, job["seconds"]),
    }


if __name__ == "__main__":
    worker_main(end_to_end, model_figures,
                ("fer", "tensorflow-cpu", "opencv-contrib-python", "numpy", "pillow", "setuptools"))
