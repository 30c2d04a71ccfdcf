"""fer's side of the benchmark. Runs inside fer's own virtual environment (run.py sets it up), as
`python bench/fer_peer.py job.json result.json`.

fer is used as its README shows, with three workarounds for today's stack that live here and
nowhere else: FER is imported from fer.fer (the package root no longer exports it); its own
bundled Haar cascade is passed as cascade_file (OpenCV 5 wheels ship none); and the venv keeps a
setuptools that still has pkg_resources, which fer.fer imports.

For stickers, fer gets exactly the frames we get and its faces are voted exactly like ours:
stickersort's media.read and vote are loaded from this repository's source (they need only
numpy, OpenCV and Pillow, which fer needs too).
"""
import importlib
import sys
import time
import types
from pathlib import Path

import numpy as np

from common import Stages, accuracy, best_run, faces_per_s, read_labels, repeats, score_stickers, worker_main


def load_ours(repo):
    """stickersort.sorter.media and .vote from source, without installing stickersort here:
    bare parent packages pointed at the repo's folders (so vote's `..model.labels` resolves)."""
    for name, folder in (("stickersort", None), ("stickersort.sorter", "sorter"),
                         ("stickersort.model", "model")):
        package = types.ModuleType(name)
        package.__path__ = [str(Path(repo) / folder)] if folder else []
        sys.modules.setdefault(name, package)
    return (importlib.import_module("stickersort.sorter.media"),
            importlib.import_module("stickersort.sorter.vote"),
            importlib.import_module("stickersort.model.labels"))


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


def end_to_end(job):
    """Each file: our frame sampling, fer's detect_emotions on every sampled frame, our vote.
    fer's Haar cascade gives no confidence, so each face's detector score is taken as 1."""
    started = time.perf_counter()
    media, vote, labels = load_ours(job["repo"])
    detector = make_fer()
    detector.detect_emotions(np.zeros((64, 64, 3), np.uint8))  # warm, as ours is
    startup = time.perf_counter() - started

    stages = Stages()
    read = stages.wrap("decode", media.read)
    detect_emotions = stages.wrap("detect+classify", detector.detect_emotions)
    detector._classify_emotions = stages.wrap("classify", detector._classify_emotions)
    root, runs = Path(job["stickers"]), []
    for _ in repeats(job):
        stages.seconds = {}
        t = time.perf_counter()
        predicted = {rel: sort_one(root / rel, job["frames"], read, detect_emotions, media, vote, labels)
                     for rel in job["files"]}
        seconds = time.perf_counter() - t
        # Stage names as ours: detect is detect_emotions less the model calls nested in it.
        s = stages.seconds
        s["detect"] = s.pop("detect+classify", 0.0) - s.get("classify", 0.0)
        runs.append((seconds, s))
    result = best_run(runs, len(job["files"]), startup)
    return {**result, "files_per_s_one_reader": result["files_per_s"],  # fer reads one file at a time
            "errors": sum(v is None for v in predicted.values()),
            **score_stickers(predicted, read_labels(job["labels"]))}


def sort_one(path, frames, read, detect_emotions, media, vote, labels):
    """One file's label: None where it cannot be read, as our scan records an error."""
    try:
        clip = read(path, frames)
    except media.MediaError:
        return None
    probs, weights = [], []
    for frame in clip.frames:
        h, w = frame.rgb.shape[:2]
        for face in detect_emotions(np.ascontiguousarray(frame.rgb[..., ::-1])):  # fer wants BGR
            bw, bh = face["box"][2:4]
            probs.append([face["emotions"][e] for e in labels.EMOTIONS])
            weights.append(vote.face_weight(bw * bh / (w * h), 1.0, frame.weight))
    return vote.vote(probs, weights).label


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
