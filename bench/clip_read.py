"""How fast a clip is read (`media.read`: decode, 8 frames sampled by time) when only the frames a
sampled moment may fall on are converted to pixels, against every decoded frame converted (what
the reader did before), in one run.

    python bench/clip_read.py [--seconds S] [--repeats R]

Writes steady clips (OpenCV's mp4v, 25 fps) panning over matplotlib's Grace Hopper photo at
640x360 and 1280x720, checks that both ways sample the same frames, and prints the best time of
each and their ratio (the target: under 0.9).
"""
import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from matplotlib import cbook
from PIL import Image

from stickersort.sorter import media

SIZES = [(640, 360), (1280, 720)]


def panning_clip(path, size, frames):
    w, h = size
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        photo = cv2.cvtColor(np.asarray(im.convert("RGB").resize((w + 200, h + 200))), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for i in range(frames):
        x, y = 100 + int(90 * np.sin(i / 20)), 100 + int(90 * np.cos(i / 25))
        writer.write(photo[y:y + h, x:x + w])
    writer.release()
    return path


def best_read(path, repeats, convert_ahead):
    media.CONVERT_AHEAD = convert_ahead
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        clip = media.read(path, 8)
        times.append(time.perf_counter() - started)
    return min(times), [(f.index, f.rgb.tobytes()) for f in clip.frames]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ahead = media.CONVERT_AHEAD
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            path = panning_clip(Path(tmp) / f"{size[0]}.mp4", size, int(args.seconds * 25))
            every, every_frames = best_read(path, args.repeats, media.MAX_FRAMES)
            only, only_frames = best_read(path, args.repeats, ahead)
            assert only_frames == every_frames, "the two ways sampled different frames"
            print(f"{size[0]}x{size[1]}, {args.seconds:g} s: every frame converted {every * 1000:.0f} ms, "
                  f"only near a moment {only * 1000:.0f} ms, ratio {only / every:.2f}")


if __name__ == "__main__":
    main()
