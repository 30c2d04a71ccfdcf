"""sorter/pipeline.py's shortcuts give what the long way gives."""
import numpy as np
from conftest import SAMPLES

from stickersort.model.faces import make_detector
from stickersort.model.inference import Classifier
from stickersort.sorter import media
from stickersort.sorter.pipeline import read_clip


class Counting:
    """The real detector, its calls counted."""

    def __init__(self, detector):
        self.detector, self.name, self.calls = detector, detector.name, 0

    def detect(self, rgb):
        self.calls += 1
        return self.detector.detect(rgb)


def held_pose(path, n=4):
    """An animation whose sampled frames show the same picture, as a held pose does, then another."""
    rgb = media.read(path).frames[0].rgb
    frames = [media.Frame(i, i * 0.1, 0.1, rgb.copy()) for i in range(n)]
    frames.append(media.Frame(n, n * 0.1, 0.1, np.ascontiguousarray(rgb[:, ::-1])))
    return media.Media("animation", rgb.shape[1], rgb.shape[0], n + 1, (n + 1) * 0.1, frames)


def test_a_picture_sampled_again_is_searched_once_with_the_same_result():
    clip, detector, classifier = held_pose(SAMPLES / "hopper.png"), Counting(make_detector()), Classifier()
    seen, vote = read_clip(clip, detector, classifier)
    assert detector.calls == 2  # the held picture once, the mirrored one once
    for frame in clip.frames:  # each frame on its own, the long way
        alone = media.Media("image", clip.width, clip.height, 1, 0.0, [frame])
        faces = read_clip(alone, detector.detector, classifier)[0]
        mine = [f for f in seen if f.frame == frame.index]
        assert [(f.box, f.score) for f in mine] == [(f.box, f.score) for f in faces]
        assert all(np.allclose(a.probs, b.probs, atol=1e-6) for a, b in zip(mine, faces))
    assert len(seen) == 5 and vote.label != "noface"
