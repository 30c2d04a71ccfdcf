"""Hostile files through `media.read` and through a whole `scan`: MediaError or a sane clip, never
anything else; every file ends with a record; memory stays within the bound the reader's limits
set. The long version: `pytest -m slow tests/test_fuzz.py` and bench/fuzz_long.py."""
import io
import json
import math
import os
import shutil

import pytest
from PIL import Image
from hypothesis import HealthCheck, event, given, settings, strategies as st

import hostile
from conftest import tree_hash
from invariants import check_db, check_out, query
from procs import run_measured
from stickersort.sorter import media

# Peak RSS of a scan process: the interpreter with OpenCV, LiteRT and ONNX Runtime loaded (~150
# MiB, and slack), plus what the reader's own limits allow one frame to cost: at most MAX_PIXELS
# pixels, at ~19 bytes a pixel at the worst (an animated AVIF: libavif's YUV planes and RGBA
# frame, Pillow's frame, one RGBA copy). Measured at 40 M pixels: 770 MiB for the reader alone,
# 690 MiB for an animated WebP.
RSS_BOUND_MIB = 300 + 20 * media.MAX_PIXELS // 2**20
FUZZ = dict(deadline=None, database=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_read(path, max_frames=8):
    """media.read gives a clip within every limit, or a one-line MediaError; nothing else."""
    try:
        clip = media.read(path, max_frames)
    except media.MediaError as e:
        assert str(e) and "\n" not in str(e)
        return None
    assert clip.kind in ("image", "animation", "video")
    assert 0 < clip.width * clip.height <= media.MAX_PIXELS and 1 <= clip.frames_total <= media.MAX_FRAMES
    assert 1 <= len(clip.frames) <= max_frames and math.isfinite(clip.duration)
    indices = [f.index for f in clip.frames]
    assert indices == sorted(set(indices)) and indices[-1] < clip.frames_total
    for f in clip.frames:
        assert f.rgb.dtype.name == "uint8" and f.rgb.ndim == 3 and f.rgb.shape[2] == 3
        assert 1 <= min(f.rgb.shape[:2]) and max(f.rgb.shape[:2]) <= media.MAX_SIDE
        assert f.weight > 0 and math.isfinite(f.weight) and f.time >= 0
    if clip.kind == "animation":
        assert sum(f.weight for f in clip.frames) == pytest.approx(clip.duration)
    return clip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def mutated(pool):
    """A file of the pool (drawn lazily: building the pool at import would slow every test
    run), mutated, its PNG checksums mended or not, and sometimes given another suffix."""
    op = st.tuples(st.sampled_from(hostile.OPS), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1))

    def build(base, ops, mend, suffix):
        data = hostile.mutate(base[1], ops)
        return suffix or base[0], hostile.fix_png_crcs(data) if mend else data
    return st.builds(build, st.deferred(lambda: st.sampled_from(sorted(pool().values()))),
                     st.lists(op, max_size=8), st.booleans(), st.none() | st.sampled_from(hostile.SUFFIXES))


INPUTS = mutated(hostile.seeds) | mutated(hostile.structured) | st.tuples(
    st.sampled_from(hostile.SUFFIXES), st.builds(bytes.__add__, st.sampled_from(hostile.MAGIC), st.binary(max_size=4096)))


def read_one(folder, file):
    suffix, data = file
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    clip = check_read(path)
    event(clip.kind if clip else "MediaError")  # the spread, in --hypothesis-show-statistics


@settings(max_examples=300, **FUZZ)
@given(file=INPUTS)
def test_reader_survives_fuzzed_files(folder, file):
    read_one(folder, file)


@pytest.mark.slow
@settings(max_examples=10_000, **FUZZ)
@given(file=INPUTS)
def test_reader_survives_fuzzed_files_long(folder, file):
    read_one(folder, file)


@pytest.mark.parametrize("name", sorted(hostile.structured()))
def test_hand_built_hostile_files(tmp_path, name):
    suffix, data = hostile.structured()[name]
    (tmp_path / f"f{suffix}").write_bytes(data)
    clip = check_read(tmp_path / f"f{suffix}")
    if "huge" in name or "grows" in name or "outside" in name:
        assert clip is None
    if name == "gif_5000_frames":
        assert clip.frames_total == media.MAX_FRAMES
    if name == "gif_zero_duration":  # 0 ms frames show for 100 ms, as in browsers
        assert clip.duration == pytest.approx(40 * media.DEFAULT_FRAME_MS / 1000)
    if name in ("eps_named_png", "tiff_named_png", "ico_named_png"):
        assert clip is None  # only sticker formats are decoded, whatever the name says


def test_decoding_gives_up_on_the_clock(tmp_path, monkeypatch):
    # A 9 M pixel screen with 3,000 one-pixel frames: each step composes a whole screen.
    path = tmp_path / "slow.gif"
    path.write_bytes(hostile.gif((3000, 3000), [(0, 0, 1, 1, 5, None, 0)] * 3000))
    monkeypatch.setattr(media, "MAX_SECONDS", 0.2)
    with pytest.raises(media.MediaError, match="decoding took over"):
        media.read(path)


def test_animated_webp_is_sampled_by_its_own_durations(tmp_path):
    from PIL import Image
    frames = [Image.new("RGB", (64, 64), (60 * i, 0, 0)) for i in range(4)]
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], duration=[1000, 50, 50, 50])
    clip = media.read(tmp_path / "a.webp", 4)
    assert clip.duration == pytest.approx(1.15)
    assert [f.index for f in clip.frames] == [0, 1] and clip.frames[0].weight == pytest.approx(1.15 * 3 / 4)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_the_three_ways_of_sampling_pick_the_same_frames(tmp_path, monkeypatch, suffix):
    # Frames are picked from the times an animation's blocks declare, decoded once; where those
    # cannot be read, from a walk that holds every frame, or, past HOLD_BYTES, decodes again.
    # All three must pick and compose exactly the same frames.
    from media_makers import hopper
    frames = [hopper(160).rotate(9 * i) for i in range(11)]
    frames[0].save(tmp_path / f"a{suffix}", save_all=True, append_images=frames[1:],
                   duration=[400, 30, 30, 30, 200, 30, 30, 30, 30, 600, 30])
    declared = media.read(tmp_path / f"a{suffix}", 5)
    monkeypatch.setattr(media, "INDEX_BYTES", 0)
    held = media.read(tmp_path / f"a{suffix}", 5)
    monkeypatch.setattr(media, "HOLD_BYTES", 0)
    again = media.read(tmp_path / f"a{suffix}", 5)
    for clip in (held, again):
        assert [f.index for f in clip.frames] == [f.index for f in declared.frames] == [0, 2, 6, 9]
        assert [f.weight for f in clip.frames] == [f.weight for f in declared.frames]
        assert all((f.rgb == g.rgb).all() for f, g in zip(clip.frames, declared.frames))


def _pillows_frames(data):
    """Pillow's frame count and the durations of the frames it decodes before any fault."""
    with Image.open(io.BytesIO(data)) as im:
        durations = []
        try:
            for i in range(im.n_frames):
                im.seek(i)
                im.load()
                durations.append(im.info.get("duration") or 0)
        except media.DECODE_ERRORS:
            pass
        return im.n_frames, durations


def test_declared_frame_times_are_pillows_or_none():
    # frame_times reads what Pillow learns by decoding, or gives up (None): on every GIF and WebP
    # seed and hand-built file, and each cut short at 40 places. A GIF's frames are counted alike.
    from stickersort.sorter import frame_times
    pool = {**hostile.seeds(), **hostile.structured()}
    checked = 0
    for name, (suffix, data) in sorted(pool.items()):
        if not data.startswith((b"GIF", b"RIFF")):
            continue
        for cut in sorted({len(data)} | set(range(13, len(data), max(1, len(data) // 40)))):
            declared = frame_times.durations_ms(data[:cut])
            try:
                n, walked = _pillows_frames(data[:cut])
            except (*media.DECODE_ERRORS, Image.DecompressionBombError):
                continue  # not an image to Pillow: refused whatever was declared
            if declared is None:
                continue
            if data.startswith(b"GIF"):
                assert len(declared) == n, (name, cut)
            if len(declared) == n:
                assert [d or 0 for d in declared[:len(walked)]] == walked, (name, cut)
                checked += 1
    assert checked >= 15  # the whole files, and some cut between frames


def scan_measured(src, out, db):
    code, stdout, stderr, rss = run_measured(
        ["-m", "stickersort.sorter", "scan", src, "--out", out, "--db", db, "--json", "-q"], timeout=600)
    assert "Traceback" not in stderr, stderr
    return code, json.loads(stdout), stderr, rss


@pytest.fixture
def fuzzed_folder(tmp_path):
    """50 mutated files, the seeds themselves, and the worst files for memory: a 40 M pixel
    animated WebP (144 bytes on disk) twice and a 40 M pixel animated AVIF; a scan reads files in
    threads, but never two such at once."""
    import random
    from PIL import Image
    src = tmp_path / "chat downloads"
    src.mkdir()
    rng = random.Random(2024)
    for i in range(50):
        suffix, data = hostile.random_input(rng)
        (src / f"{i:02d}{suffix}").write_bytes(data)
    for name, (suffix, data) in hostile.seeds().items():
        (src / f"seed-{name}{suffix}").write_bytes(data)
    w = 16383  # WebP's widest
    h = media.MAX_PIXELS // w
    a, b = Image.new("RGBA", (w, h), (200, 10, 10, 128)), Image.new("RGBA", (w, h), (10, 200, 10, 255))
    a.save(src / "widest.webp", save_all=True, append_images=[b], duration=100, lossless=True, method=0)
    shutil.copy(src / "widest.webp", src / "widest-again.webp")
    size = (8000, media.MAX_PIXELS // 8000)
    a, b = Image.new("RGBA", size, (200, 10, 10, 128)), Image.new("RGBA", size, (10, 200, 10, 255))
    a.save(src / "biggest.avif", save_all=True, append_images=[b], duration=100, speed=10, quality=30)
    return src


def test_scan_of_a_fuzzed_folder(fuzzed_folder, tmp_path):
    out, db = tmp_path / "out", tmp_path / "s.db"
    n = len(os.listdir(fuzzed_folder))
    before = tree_hash(fuzzed_folder)
    code, summary, stderr, rss = scan_measured(fuzzed_folder, out, db)
    assert code in (0, 1), stderr
    rows = query(db, "select path, label, error from files")
    assert summary["files"] == len(rows) == n  # every file ends with a record: a label or an error
    assert all("\n" not in (r["error"] or "") for r in rows)
    assert any(r["label"] not in (None, "noface") for r in rows)  # some still had a face to find
    check_db(db)
    check_out(str(out), db)
    print(f"scan of {n} fuzzed files: peak RSS {rss} MiB (bound {RSS_BOUND_MIB})")
    assert rss <= RSS_BOUND_MIB
    assert tree_hash(fuzzed_folder) == before
    code, again, stderr, _ = scan_measured(fuzzed_folder, out, db)
    errors = sum(1 for r in rows if r["error"])  # counted as errors, not also as unchanged
    assert (again["unchanged"], again["errors"], again["classified"]) == (n - errors, errors, 0), stderr
