"""Face detectors side by side: recall, false positives and ms/frame (results: docs/detectors.md).

    python bench/detectors.py [--fer 300] [--json results.json]

Sets: (a) stickers-dev, every frame the scanner samples (8 at most) from each file; (b) FER2013
PublicTest faces upscaled and pasted at random into 480x360 frames, plus empty frames; (c) the
public-domain photos and sample_stickers/, a file counting as found when any frame shows a face.
(a) and (b) need ../shared/datasets beside the repository and are skipped without it.
"""
import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib import cbook
from PIL import Image

from stickersort.model.faces import DETECTORS, make_detector
from stickersort.sorter import media

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SAMPLES = ROOT / "sample_stickers"


@dataclass
class Case:
    name: str
    frames: list  # RGB arrays
    faces: int  # people in each picture
    boxes: tuple = ()  # true face boxes (x, y, w, h) where known; else any face counts


def on_face(face, box):
    """Most of the detected box lies on the true face; tight and loose boxes both count."""
    iw = min(face.x + face.w, box[0] + box[2]) - max(face.x, box[0])
    ih = min(face.y + face.h, box[1] + box[3]) - max(face.y, box[1])
    return max(0, iw) * max(0, ih) >= 0.5 * face.w * face.h


def labelled(folder):
    with open(folder / "labels.csv", newline="") as f:
        return [(folder / row["file"], int(row["faces"])) for row in csv.DictReader(f)]


def stickers_dev():
    folder = SHARED / "stickers-dev"
    return [Case(f"{path.name}#{frame.index}", [frame.rgb], faces)
            for path, faces in labelled(folder) for frame in media.read(path, max_frames=8).frames]


def background(rng, w=480, h=360):
    kind = rng.integers(3)
    if kind == 0:  # a plain card
        return np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return noise if kind == 1 else cv2.GaussianBlur(noise, (0, 0), 6)  # static, or blotches


def fer_frames(n, seed=0):
    """n pasted PublicTest faces with known boxes, and n // 3 empty backgrounds."""
    from stickersort.training.data import load_csv

    faces, _, usage = load_csv(SHARED / "fer2013" / "fer2013.csv.gz")
    faces = faces[usage == "PublicTest"]
    rng = np.random.default_rng(seed)
    cases = []
    for i, face in enumerate(faces[rng.choice(len(faces), n, replace=False)]):
        frame, side = background(rng), int(rng.integers(150, 201))
        x, y = int(rng.integers(0, 480 - side)), int(rng.integers(0, 360 - side))
        frame[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)[..., None]
        cases.append(Case(f"fer{i}", [frame], 1, ((x, y, side, side),)))
    return cases + [Case(f"empty{i}", [background(rng)], 0) for i in range(n // 3)]


def photos():
    """The two public-domain portraits (face boxes drawn by hand), and the sample stickers."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        cases = [Case("grace_hopper.jpg", [np.asarray(im.convert("RGB"))], 1, ((150, 110, 230, 250),))]
    try:
        from skimage.data import astronaut
        cases.append(Case("astronaut", [astronaut()], 1, ((165, 60, 125, 140),)))
    except ImportError:
        print("note: scikit-image is not installed; the astronaut photo is left out", file=sys.stderr)
    return cases + [Case(path.name, [f.rgb for f in media.read(path, max_frames=8).frames], faces)
                    for path, faces in labelled(SAMPLES)]


def measure(detector, cases):
    detector.detect(cases[0].frames[0])  # loading the model is not per-frame cost
    hits = false_faces = false_cases = extra = frames = 0
    seconds = 0.0
    for case in cases:
        found = []
        for rgb in case.frames:
            times = []
            for _ in range(2):  # the faster of two: the background load only ever slows a call
                started = time.perf_counter()
                faces = detector.detect(rgb)
                times.append(time.perf_counter() - started)
            seconds += min(times)
            frames += 1
            extra += max(0, len(faces) - case.faces) if case.faces else 0
            found += faces
        if case.faces:
            hits += any(not case.boxes or any(on_face(f, b) for b in case.boxes) for f in found)
        else:
            false_faces += len(found)
            false_cases += bool(found)
    with_faces = sum(1 for c in cases if c.faces)
    return {"face_cases": with_faces, "recall": round(hits / max(1, with_faces), 3),
            "faceless_cases": len(cases) - with_faces, "false_faces": false_faces,
            "faceless_cases_with_faces": false_cases, "extra_faces": extra, "frames": frames,
            "ms_per_frame": round(1000 * seconds / frames, 2)}


def table(rows):
    head = ("set", "detector", "recall", "faceless: faces (cases)", "extra", "ms/frame")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join((
            r["set"], r["detector"], f"{r['recall']:.3f} of {r['face_cases']}",
            f"{r['false_faces']} ({r['faceless_cases_with_faces']} of {r['faceless_cases']})",
            str(r["extra_faces"]), f"{r['ms_per_frame']:.2f}")))
    return "\n".join(f"| {line} |" for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer", type=int, default=300, help="FER2013 faces to paste (set b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    sets = {}
    if SHARED.is_dir():
        sets["stickers-dev"] = stickers_dev()
        sets["fer2013-pasted"] = fer_frames(args.fer, args.seed)
    else:
        print(f"skip: stickers-dev and FER2013 sets need {SHARED}, which is absent", file=sys.stderr)
    sets["photos+samples"] = photos()
    rows = [{"set": name, "detector": det, **measure(make_detector(det), cases)}
            for name, cases in sets.items() for det in DETECTORS]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
