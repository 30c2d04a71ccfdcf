"""How fast a clip is read (`media.read`: decode, 8 frames sampled by time) when only the frames a
sampled moment may fall on are converted to pixels, against every decoded frame converted (what
the reader did before), in one run.

    python bench/clip_read.py [--seconds S] [--repeats R]

Writes live_fps.py's face clips (OpenCV's mp4v, 25 fps, panning over a photo) at 640x360 and
1280x720, checks that both ways sample the same frames, and prints the best time of
each and their ratio (the target: under 0.9).
"""
import argparse
import tempfile
import time
from pathlib import Path

from live_fps import face_clip

from stickersort.sorter import media

SIZES = [(640, 360), (1280, 720)]


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
            path = face_clip(Path(tmp) / f"{size[0]}.mp4", int(args.seconds * 25), size)
            every, every_frames = best_read(path, args.repeats, media.MAX_FRAMES)
            only, only_frames = best_read(path, args.repeats, ahead)
            assert only_frames == every_frames, "the two ways sampled different frames"
            print(f"{size[0]}x{size[1]}, {args.seconds:g} s: every frame converted {every * 1000:.0f} ms, "
                  f"only near a moment {only * 1000:.0f} ms, ratio {only / every:.2f}")


if __name__ == "__main__":
    main()
