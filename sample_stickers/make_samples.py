"""Rebuild the sample stickers beside this script, byte for byte, from two public-domain photos that
installed packages ship (matplotlib's Grace Hopper, scikit-image's astronaut Eileen Collins) and
drawings made here. scikit-image is needed only to run this script, never by stickersort.

    python sample_stickers/make_samples.py
"""
import csv
import math
from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

HERE = Path(__file__).resolve().parent
SIZE = 384  # stills; animations are 320 to keep GIFs small
INK, PAPER = (255, 255, 255), (20, 20, 20)

# Square crops around each face (box measured with the BlazeFace detector), with hair and hat.
HOPPER_BOX = (101, 60, 431, 390)  # face ~200 px of the 512x600 photo
ASTRONAUT_BOX = (122, 20, 332, 230)  # face ~95 px of the 512x512 photo


def hopper():
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return im.convert("RGB")


def astronaut():
    return Image.fromarray(skdata.astronaut())


def head(photo, box, side, zoom=1.0):
    """The face crop at side x side; zoom > 1 closes in on the face's centre."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 / zoom
    return photo.resize((side, side), Image.LANCZOS, box=(cx - half, cy - half, cx + half, cy + half))


def font(size):
    return ImageFont.load_default(size=size)


def caption(draw, text, box, size):
    """Meme lettering: white with a black outline, centred in box, shrunk until it fits."""
    x0, y0, x1, y1 = box
    while size > 10 and draw.textlength(text, font=font(size)) > (x1 - x0) * 0.92:
        size -= 2
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font(size), fill=INK, anchor="mm",
              stroke_width=max(2, size // 12), stroke_fill=PAPER)


def card(picture, text, size=SIZE, bg=(240, 200, 80)):
    """A sticker: the picture above a dark caption bar, on a plain card."""
    bar = size // 6
    out = Image.new("RGB", (size, size), bg)
    out.paste(picture, ((size - picture.width) // 2, 0))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, size - bar, size, size), fill=PAPER)
    caption(draw, text, (0, size - bar, size, size), bar * 3 // 5)
    return out


def face_card(photo, box, text, size=SIZE, zoom=1.0, bg=(240, 200, 80)):
    side = size - size // 6
    return card(head(photo, box, side, zoom), text, size, bg)


def mirrored():
    """Reaction stickers are often flipped; the detector must not care."""
    picture = head(hopper(), HOPPER_BOX, SIZE - SIZE // 6).transpose(Image.FLIP_LEFT_RIGHT)
    return card(picture, "NOT A BUG", bg=(150, 220, 150))


def two_faces():
    """Two people in one frame, each face about a quarter of the frame's width."""
    w, h, side = 512, 320, 256
    out = Image.new("RGB", (w, h), (70, 120, 190))
    out.paste(head(hopper(), HOPPER_BOX, side), (0, 0))
    out.paste(head(astronaut(), ASTRONAUT_BOX, side), (w - side, 0))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, side, w, h), fill=PAPER)
    caption(draw, "PAIR PROGRAMMING", (0, side, w, h), 36)
    return out


def cutout():
    """A die-cut sticker: the head in a circle with a white rim, transparent around it."""
    size, side = SIZE, 300
    out = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, side - 1, side - 1), fill=255)
    rim = (size - side) // 2 - 8, 4, (size + side) // 2 + 8, side + 20
    ImageDraw.Draw(out).ellipse(rim, fill=(255, 255, 255, 255))
    out.paste(head(hopper(), HOPPER_BOX, side), ((size - side) // 2, 12), mask)
    caption(ImageDraw.Draw(out), "BUG FOUND", (0, side + 20, size, size), 48)
    return out


def rocket(size=SIZE):
    """A faceless cartoon: a rocket among stars."""
    out = Image.new("RGB", (size, size), (25, 30, 80))
    draw = ImageDraw.Draw(out)
    rng = np.random.default_rng(7)
    for x, y in rng.integers(0, size, (40, 2)):
        draw.rectangle((x, y, x + 2, y + 2), fill=(255, 255, 200))
    cx = size // 2
    draw.polygon([(cx - 40, 250), (cx - 80, 300), (cx - 40, 290)], fill=(220, 60, 60))  # fins
    draw.polygon([(cx + 40, 250), (cx + 80, 300), (cx + 40, 290)], fill=(220, 60, 60))
    draw.polygon([(cx - 25, 290), (cx, 335), (cx + 25, 290)], fill=(255, 170, 40))  # flame
    draw.rounded_rectangle((cx - 40, 110, cx + 40, 295), radius=18, fill=(235, 235, 240))
    draw.polygon([(cx - 40, 120), (cx, 40), (cx + 40, 120)], fill=(220, 60, 60))  # nose
    draw.rectangle((cx - 40, 200, cx + 40, 215), fill=(70, 120, 190))  # stripe, no porthole
    caption(draw, "TO THE MOON", (0, size - 40, size, size), 34)
    return out


def caption_card(size=SIZE):
    out = Image.new("RGB", (size, size), (130, 60, 170))
    draw = ImageDraw.Draw(out)
    caption(draw, "MONDAY", (0, 60, size, 180), 80)
    caption(draw, "AGAIN", (0, 200, size, 320), 80)
    return out


def zoom_frames():
    """Astronaut zooming in, then holding: per-frame durations as a meme editor writes them."""
    zooms = (1.0, 1.08, 1.16, 1.24, 1.32, 1.4)
    frames = [face_card(astronaut(), ASTRONAUT_BOX, "HOUSTON?", 320, z, (60, 150, 210)) for z in zooms]
    return frames, [300, 80, 80, 80, 80, 900]


def reveal_frames():
    """Caption alone first, then the face: only part of the sampled frames hold a face."""
    wait = Image.new("RGB", (320, 320), (240, 200, 80))
    caption(ImageDraw.Draw(wait), "WAIT FOR IT...", (0, 0, 320, 320), 36)
    faces = [face_card(hopper(), HOPPER_BOX, "IT WORKS", 320, z) for z in (1.0, 1.05, 1.1, 1.05)]
    return [wait] + faces, [600, 120, 120, 120, 1000]


def nod_frames():
    """A small nod: tilt and bob, for an animated WebP."""
    frames, base = [], head(astronaut(), ASTRONAUT_BOX, 266)
    for i in range(8):
        angle = 6 * math.sin(i * math.pi / 4)
        tilted = base.rotate(angle, resample=Image.BICUBIC, fillcolor=(250, 120, 160))
        frames.append(card(tilted, "YES. EXACTLY.", 320, (250, 120, 160)))
    return frames, [90] * 7 + [600]


def confetti_frames(size=320, n=8):
    """Falling confetti and a caption: animated, faceless."""
    rng = np.random.default_rng(3)
    pieces = rng.integers(0, size, (60, 2))
    colours = [tuple(int(c) for c in rgb) for rgb in rng.integers(60, 255, (60, 3))]
    frames = []
    for i in range(n):
        out = Image.new("RGB", (size, size), (30, 30, 40))
        draw = ImageDraw.Draw(out)
        for (x, y), colour in zip(pieces, colours):
            y = (y + i * 20) % size
            draw.rectangle((x, y, x + 8, y + 4), fill=colour)
        caption(draw, "YAY!", (0, 100, size, 220), 90)
        frames.append(out)
    return frames, [60, 60, 60, 60, 120, 120, 120, 250]


def spinner_frames(size=320, n=8):
    """A loading spinner: dots, not a ring, around the caption; animated WebP, faceless."""
    frames = []
    for i in range(n):
        out = Image.new("RGB", (size, size), (245, 245, 245))
        draw = ImageDraw.Draw(out)
        for k in range(n):
            a = 2 * math.pi * k / n
            x, y = size / 2 + 90 * math.cos(a), 130 + 90 * math.sin(a)
            shade = 40 + 25 * ((k - i) % n)
            draw.rectangle((x - 9, y - 9, x + 9, y + 9), fill=(shade, shade, shade))
        caption(draw, "LOADING...", (0, 250, size, 310), 40)
        frames.append(out)
    return frames, [100] * n


def save_animation(path, frames, durations):
    extra = {"quality": 70, "method": 6} if path.suffix == ".webp" else {"optimize": True}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, **extra)


# file, faces, what it is, how to make it
STICKERS = [
    ("hopper.png", 1, "still PNG, Grace Hopper, caption bar",
     lambda p: face_card(hopper(), HOPPER_BOX, "ME READING THE SPEC").save(p, optimize=True)),
    ("astronaut.jpg", 1, "still JPEG, Eileen Collins, caption bar",
     lambda p: face_card(astronaut(), ASTRONAUT_BOX, "LAUNCH DAY", bg=(60, 150, 210)).save(p, quality=85)),
    ("hopper.webp", 1, "still WebP, Grace Hopper, mirrored",
     lambda p: mirrored().save(p, quality=80)),
    ("hopper_cutout.png", 1, "still PNG with transparency: die-cut head, transparent corners",
     lambda p: cutout().save(p, optimize=True)),
    ("two_faces.jpg", 2, "still JPEG, both photos side by side: two faces in one frame",
     lambda p: two_faces().save(p, quality=85)),
    ("astronaut_zoom.gif", 1, "animated GIF, 6 frames, zoom in, durations 300/80/80/80/80/900 ms",
     lambda p: save_animation(p, *zoom_frames())),
    ("hopper_reveal.gif", 1, "animated GIF, 5 frames: a caption-only frame (600 ms), then the face",
     lambda p: save_animation(p, *reveal_frames())),
    ("astronaut_nod.webp", 1, "animated WebP, 8 frames, tilting head, 90 ms frames and a 600 ms hold",
     lambda p: save_animation(p, *nod_frames())),
    ("caption.png", 0, "faceless: caption-only card", lambda p: caption_card().save(p, optimize=True)),
    ("rocket.png", 0, "faceless: a drawn cartoon rocket among stars", lambda p: rocket().save(p, optimize=True)),
    ("confetti.gif", 0, "faceless animated GIF, 8 frames of falling confetti, 60-250 ms",
     lambda p: save_animation(p, *confetti_frames())),
    ("loading.webp", 0, "faceless animated WebP, 8-frame spinner",
     lambda p: save_animation(p, *spinner_frames())),
]


def main():
    for name, _, _, make in STICKERS:
        make(HERE / name)
    with open(HERE / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "faces"])
        writer.writerows((name, faces) for name, faces, _, _ in STICKERS)
    for name, faces, what, _ in STICKERS:
        print(f"{(HERE / name).stat().st_size / 1024:7.1f} KiB  {faces}  {name}: {what}")


if __name__ == "__main__":
    main()
