"""training/gpu.py's parts that run without a GPU: the pack made here and unpacked there, and the
views the host draws for each epoch."""
import cv2
import numpy as np

from conftest import FER2013, FERPLUS, need


def _faces(n, seed=0):
    """Smooth random pictures, enough like faces for a view's correlation to find its source."""
    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (8, 8)).astype(np.uint8), (48, 48),
                                 interpolation=cv2.INTER_CUBIC) for _ in range(n)])


def _match(view, source):
    """The highest correlation of VIEW with SOURCE shifted by up to 3 px."""
    inner = view[6:-6, 6:-6].ravel()
    return max(np.corrcoef(np.roll(source, (dy, dx), (0, 1))[6:-6, 6:-6].astype(float).ravel(), inner)[0, 1]
               for dy in range(-3, 4) for dx in range(-3, 4))


def test_light_views_are_the_faces_shifted_or_mirrored_and_strong_ones_vary_more():
    from stickersort.training.gpu import augment

    faces = _faces(40)
    light = augment(faces, np.random.default_rng(1), "light")
    strong = augment(faces, np.random.default_rng(1), "strong")
    assert light.shape == strong.shape == (40, 48, 48, 1) and light.dtype == np.float32
    assert 0 <= strong.min() and strong.max() <= 1
    light, strong = light[..., 0] * 255, strong[..., 0] * 255
    straight = [_match(v, f) for v, f in zip(light, faces)]
    mirror = [_match(v, f[:, ::-1]) for v, f in zip(light, faces)]
    assert min(np.maximum(straight, mirror)) > 0.95
    assert 8 < sum(np.greater(mirror, straight)) < 32  # about half
    strong_best = [max(_match(v, f), _match(v, f[:, ::-1])) for v, f in zip(strong, faces)]
    assert np.mean(strong_best) < np.mean(np.maximum(straight, mirror)) - 0.05


def test_the_device_redraws_the_card_views_that_were_found_here(tmp_path):
    from stickersort.model.inference import SHIPPED_MODEL
    from stickersort.training.gpu import pack, unpack

    need(FER2013)
    pack(FER2013, need(FERPLUS), SHIPPED_MODEL, tmp_path / "pack", limit=12)
    unpack(tmp_path / "pack", tmp_path)
    faces, views = np.load(tmp_path / "faces.npy"), np.load(tmp_path / "views.npy")
    packed = np.load(tmp_path / "pack" / "pack.npz")
    assert faces.shape == (36, 48, 48) and list(np.bincount(packed["split"])) == [12, 12, 12]
    assert 12 <= len(views) <= 24  # two cards of each Training face, where the scan finds it
    # The faces travel as WebP at quality 95, so a redrawn view differs from its crop by a little.
    assert np.abs(views.astype(float) - packed["check"]).mean() < 4
    assert (tmp_path / "pack" / "stage8.keras").stat().st_size > 1_000_000
