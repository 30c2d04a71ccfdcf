"""FER2013 faces put on generated sticker cards, to measure and train what the scanner sees.

A card is a background (flat colour, gradient or blurred noise) of about 64 to 512 px with the
48x48 face upscaled somewhere on it, sometimes with a caption or a border. `sticker_look` adds
what sticker files do to faces on top: GIF palettes with dithering, heavy JPEG, blur, a slight
tilt, a cut-out on flat colour. Every card is drawn from its own seed, so a split's cards are the
same in every run. No TensorFlow here: `evaluate --pipeline` uses it too.
"""
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

CARD_SIDES = (64, 512)  # px, drawn log-uniformly
FACE_SHARE = (0.4, 0.85)  # the face's side as a share of the card's shorter side
CAPTIONS = ("NO.", "WHY", "OMG", "ME WHEN", "LOL", "MONDAY", "WAIT WHAT", "NOPE", "BRUH", "OK")
CAPTION_P, BORDER_P = 0.4, 0.25


@dataclass
class Card:
    rgb: np.ndarray
    frame: tuple  # the face's 48x48 frame on the card: x, y, side (px)


def make_card(face, seed, sticker_look=False):
    """One card around a uint8 [48,48] face."""
    rng = np.random.default_rng(seed)
    height, width = _card_size(rng)
    card = _background(rng, height, width)
    side = int(min(height, width) * rng.uniform(*FACE_SHARE))
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    tilt = rng.uniform(-8, 8) if sticker_look and rng.random() < 0.3 else 0.0
    _paste_face(card, face, x, y, side, rng, tilt, cutout=sticker_look and rng.random() < 0.2)
    if rng.random() < BORDER_P:
        _border(card, rng)
    if rng.random() < CAPTION_P:
        _caption(card, rng)
    if sticker_look:
        card = _look(card, rng)
    return Card(card, (x, y, side))


def _card_size(rng):
    longer = int(np.exp(rng.uniform(*np.log(CARD_SIDES))))
    shorter = int(longer * rng.uniform(0.7, 1.0))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def _colour(rng):
    return rng.integers(0, 256, 3).astype(np.uint8)


def _background(rng, height, width):
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(_colour(rng), (height, width, 3)).copy()
    if kind == 1:
        ramp = np.linspace(0, 1, height)[:, None, None]
        top, bottom = _colour(rng).astype(float), _colour(rng).astype(float)
        return np.ascontiguousarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)), np.uint8)
    noise = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3)).astype(np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def _paste_face(card, face, x, y, side, rng, tilt, cutout):
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA)
    rgb = np.repeat(big[..., None], 3, axis=2)
    if tilt:
        turn = cv2.getRotationMatrix2D((side / 2, side / 2), tilt, 1.0)
        rgb = cv2.warpAffine(rgb, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
    if cutout:  # a face cut out along an oval, as meme stickers are
        mask = np.zeros((side, side), np.uint8)
        cv2.ellipse(mask, (side // 2, side // 2), (int(side * 0.42), int(side * 0.5)), 0, 0, 360, 255, -1)
        alpha = cv2.GaussianBlur(mask, (0, 0), max(1, side / 60))[..., None] / 255.0
        region = card[y:y + side, x:x + side]
        card[y:y + side, x:x + side] = (rgb * alpha + region * (1 - alpha)).astype(np.uint8)
    else:
        card[y:y + side, x:x + side] = rgb


def _border(card, rng):
    thick = max(1, int(min(card.shape[:2]) * rng.uniform(0.02, 0.08)))
    cv2.rectangle(card, (0, 0), (card.shape[1] - 1, card.shape[0] - 1), _colour(rng).tolist(), thick)


def _caption(card, rng):
    """White text with a black outline, at the top or bottom, often over the face's edge."""
    height, width = card.shape[:2]
    text = CAPTIONS[rng.integers(len(CAPTIONS))]
    scale = width / 320 * rng.uniform(0.6, 1.4)
    thick = max(1, int(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thick)
    x = max(0, (width - tw) // 2)
    y = int(th * 1.3) if rng.random() < 0.5 else height - int(th * 0.4)
    cv2.putText(card, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), thick * 3, cv2.LINE_AA)
    cv2.putText(card, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)


def _look(card, rng):
    """What sticker files do to a picture, each with its own chance."""
    if rng.random() < 0.3:  # a GIF's 32-256 colour palette, dithered
        colours = int(rng.choice([32, 64, 128, 256]))
        card = np.asarray(Image.fromarray(card).quantize(colours, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB"))
    if rng.random() < 0.3:
        card = cv2.GaussianBlur(card, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.4:  # heavy JPEG, as memes are re-saved
        ok, data = cv2.imencode(".jpg", card, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 60))])
        card = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(card)


def scanner_views(faces, targets, n, seed=0, detector="blazeface"):
    """Training faces as the scan sees them: each face on n sticker-look cards, found by the
    scan's detector and cut by its crop (the best-scoring face; none found, no view). Returns the
    views and their targets, to be trained on beside the faces themselves."""
    found = list(scanner_finds(faces, n, seed, detector))
    if not found:
        return faces[:0], targets[:0]
    return np.stack([view for _, _, _, view in found]), targets[np.array([i for _, i, _, _ in found])]


def scanner_finds(faces, n, seed=0, detector="blazeface"):
    """(k, i, face found, its crop) for the k-th view card of the i-th face, where the scan finds one."""
    from ..model.faces import make_detector
    from ..sorter.pipeline import frame_faces

    detect = make_detector(detector)
    for k in range(n):
        for i, face in enumerate(faces):
            found, crops = frame_faces(detect, view_card(face, seed, k, i))
            if found:
                best = int(np.argmax([f.score for f in found]))
                yield k, i, found[best], crops[best]


def view_card(face, seed, k, i):
    """The k-th sticker-look card of the i-th face in a run of this seed: the same card in every run."""
    return make_card(face, (seed + 1 + k) * 7_000_003 + i, sticker_look=True).rgb


def calibrate_frame(faces, detector="blazeface", seed=0):
    """Where a FER2013 frame lies around this detector's box on cards of these faces: the medians
    of its side over the box's longer side and of its centre's offset in box widths and heights
    (model/faces.py FER_FRAMES), and how many faces were found."""
    from ..model.faces import make_detector

    detect = make_detector(detector)
    rows = []
    for i, face in enumerate(faces):
        card = make_card(face, seed * 1_000_003 + i)
        found = detect.detect(card.rgb)
        if found:
            f, (x, y, side) = max(found, key=lambda f: f.score), card.frame
            rows.append((side / max(f.w, f.h), (x + side / 2 - f.x - f.w / 2) / f.w,
                         (y + side / 2 - f.y - f.h / 2) / f.h))
    scale, dx, dy = np.median(rows, axis=0) if rows else (np.nan,) * 3
    return {"detector": detector, "scale": round(float(scale), 3), "dx": round(float(dx), 3),
            "dy": round(float(dy), 3), "found": len(rows), "faces": len(faces)}
