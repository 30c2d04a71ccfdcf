"""Red team, reading: files that would block, overrun or be misread, each built here for real.
A FIFO swapped in after the stat, a FIFO as the live source, a progressive JPEG whose scans cost
minutes, Ctrl-C in the middle of such decoding, photos stored sideways (JPEG and AVIF), an AVIF
animation and one too large to read whole, a 16-bit grayscale PNG, PNGs whose tRNS keys out a
colour, an APNG's default image, a clip whose rate varies (and the frames a clip converts), a GIF
cut short, a model that answers NaN and models that are not ours."""
import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import wait_for
from media_makers import blank, face_gif, hopper, png_bytes, vfr_mkv
from procs import stickersort
from stickersort.sorter import media
from stickersort.sorter.scan import Options, Scanner


def records(db):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return {Path(r["path"]).name: dict(r) for r in conn.execute("select * from files")}


def run_cli(*args, timeout=120):
    return subprocess.run(stickersort(args), capture_output=True, text=True, timeout=timeout)


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def many_scans(path, side, scans):
    """A real progressive JPEG whose last scan is repeated `scans` times: each repeat is a few
    bytes, and libjpeg walks every block of the image for it."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    at, last_scan = 2, None
    while data[at + 1] != 0xD9:  # to the end-of-image marker, segment by segment
        end = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if data[at + 1] == 0xDA:  # a scan runs on to the next marker that is not a restart
            while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
            last_scan = data[at:end]
        at = end
    Path(path).write_bytes(data[:at] + last_scan * scans + data[at:])
    return Path(path)


_READ_BESIDE_A_PIPE = """
import os, sys
from stickersort.sorter import media
hole = os.open(os.devnull, os.O_RDONLY)
r, w = os.pipe()  # the fd after the one the file will get: a pipe nobody writes to
os.close(hole)
try:
    media.read(sys.argv[1])
except media.MediaError as e:
    print(e)
"""


@pytest.mark.parametrize("data", [b"GIF89a", b"\x00\x00\x00\x18ftypmp42"], ids=["gif-magic", "cut-mp4"])
def test_a_clip_ffmpeg_refuses_never_reads_the_next_open_file(tmp_path, data):
    """Before: OpenCV, free to choose a reader, took /proc/self/fd/12 for an image sequence and
    read fd 13, 14, ...: a pipe there (a test run's, a Ray worker's) blocked the scan forever."""
    clip = tmp_path / "input.mov"
    clip.write_bytes(data)
    done = subprocess.run([sys.executable, "-c", _READ_BESIDE_A_PIPE, str(clip)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "cannot open as video", done.stderr
    assert done.stderr == ""  # nor OpenCV's own words for it (a WARN line, or imread's ERROR before)


def test_live_refuses_a_clip_ffmpeg_refuses_at_once(tmp_path):
    """The same in `live`, whose quieted stderr, a pipe here, was the next open file."""
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    done = subprocess.run([sys.executable, "-m", "stickersort.sorter", "live", "--source", str(clip), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().endswith("cannot open it as a video or stream"), done.stderr


def test_a_fifo_swapped_in_after_the_stat_does_not_block_the_readers(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    hopper().save(src / "a.png")
    blank().save(src / "b.png")
    fifo = src / "b.png"

    hashes = []

    def swap(stage):  # the scan's own stage hook: at b.png's hash, after its stat, before its first read
        if stage == "hash":
            hashes.append(stage)
            if len(hashes) == 2:  # one reader (-j 1): a.png is hashed first, then b.png
                fifo.unlink()
                os.mkfifo(fifo)
        return open(os.devnull)  # any context manager

    def scan():  # in a thread of its own, which a blocked reader would keep from ending
        scanner = Scanner(Options(out=tmp_path / "out", db=tmp_path / "s.db", jobs=1), timer=swap)
        done["summary"] = scanner.scan(src)
    done = {}
    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    thread.join(60)
    try:
        assert not thread.is_alive(), "a reader blocked on the FIFO"
    finally:
        if thread.is_alive():  # let a blocked open go, whatever the test's outcome
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    errors = {Path(e["path"]).name: e["error"] for e in done["summary"].error_files}
    assert errors == {"b.png": "not a regular file"}
    assert records(tmp_path / "s.db")["a.png"]["label"] != "noface"
    # And the decoder's own open, on the FIFO itself.
    with pytest.raises(media.MediaError, match="not a regular file"):
        media.read(fifo)


def test_live_refuses_a_fifo_as_its_source(tmp_path):
    fifo = tmp_path / "feed.mp4"
    os.mkfifo(fifo)
    proc = run_cli("live", "--source", fifo, "--json", "--max-frames", "1", timeout=120)
    assert proc.returncode == 2
    assert "not a regular file" in one_line_error(proc)


def test_a_progressive_jpeg_of_many_scans_is_cut_off_at_the_budget(tmp_path, monkeypatch):
    # 600 scans of a 4000x4000 image: about 10 s of decoding here, 80 KB on disk.
    src = tmp_path / "src"
    src.mkdir()
    many_scans(src / "scans.jpg", 4000, 600)
    monkeypatch.setattr(media, "MAX_SECONDS", 1.0)
    started = time.monotonic()
    with pytest.raises(media.MediaError, match="decoding took over 1 s"):
        media.read(src / "scans.jpg")
    assert time.monotonic() - started < 2.5
    summary = Scanner(Options(out=tmp_path / "out", db=tmp_path / "s.db")).scan(src)
    assert summary.errors == 1
    assert records(tmp_path / "s.db")["scans.jpg"]["error"] == "decoding took over 1 s; gave up"


def test_ctrl_c_stops_a_scan_in_the_middle_of_decoding_within_a_second(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    hopper().save(src / "a.png")  # recorded first: the slow files' decoding is under way by then
    for i in range(3):
        many_scans(src / f"scans{i}.jpg", 4000, 600 + i)
    db = tmp_path / "s.db"
    proc = subprocess.Popen(stickersort(["scan", src, "--out", tmp_path / "out", "--db", db, "-q", "--jobs", "2"]),
                            stderr=subprocess.PIPE, text=True)

    def a_recorded():
        try:
            return "a.png" in records(db)
        except sqlite3.Error:
            return False
    wait_for(a_recorded, "the first record", 120)
    time.sleep(1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    latency = time.monotonic() - sent
    assert proc.returncode not in (0, None) and "Traceback" not in stderr, stderr
    # Within a second of the readers' part; the rest is the interpreter unloading its libraries
    # on a machine shared with other tests.
    assert latency < 3, latency
    assert set(records(db)) == {"a.png"}  # nothing recorded for a reading called off


# EXIF orientation -> how the camera stored an upright picture (the EXIF spec's eight cases).
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def save_turned(path, upright, orientation, **kw):
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(STORED[orientation]).save(path, exif=exif, **kw)
    with Image.open(path) as im:  # the table above, checked against Pillow's own reading
        assert ImageOps.exif_transpose(im).size == upright.size
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".avif"])  # AVIF's own turn and mirror boxes, as Pillow reads them
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_turns_the_picture_upright(tmp_path, orientation, suffix):
    upright = hopper(240).crop((0, 0, 240, 180))  # not square: a quarter turn shows in the size
    save_turned(tmp_path / f"photo{suffix}", upright, orientation, quality=95)
    clip = media.read(tmp_path / f"photo{suffix}")
    assert (clip.width, clip.height) == (240, 180)
    diff = np.abs(clip.frames[0].rgb.astype(int) - np.asarray(upright).astype(int)).mean()
    assert diff < 6, diff


def test_rotated_photos_are_filed_by_their_faces(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for orientation in (3, 6, 8):  # as a phone stores a photo held sideways or upside down
        for suffix in (".jpg", ".avif"):
            save_turned(src / f"turned{orientation}{suffix}", hopper(320), orientation, quality=92)
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "-q")
    assert result.exit_code == 0, result.output
    got = {name: (r["faces"], r["label"]) for name, r in records(tmp_path / "s.db").items()}
    assert all(faces == 1 and label != "noface" for faces, label in got.values()), got


def test_an_animated_avif_is_sampled_as_its_webp_twin(tmp_path):
    frames = [hopper(160).rotate(9 * i) for i in range(11)]
    for suffix in (".avif", ".webp"):
        frames[0].save(tmp_path / f"a{suffix}", save_all=True, append_images=frames[1:], quality=90,
                       duration=[400, 30, 30, 30, 200, 30, 30, 30, 30, 600, 30])
    avif, webp = media.read(tmp_path / "a.avif", 5), media.read(tmp_path / "a.webp", 5)
    assert avif.kind == "animation" and avif.duration == pytest.approx(webp.duration)
    assert [(f.index, f.weight) for f in avif.frames] == [(f.index, f.weight) for f in webp.frames]
    for f, g in zip(avif.frames, webp.frames):
        assert np.abs(f.rgb.astype(int) - g.rgb.astype(int)).mean() < 6


@pytest.mark.parametrize("durations", [
    [10] * 20 + [200] * 10,  # picked by index at the rate OpenCV guesses (100 fps), 3 of 4 fell past the end
    [10] * 20 + [2000],  # a last frame held: it stands for most of the clip
    [40] * 10 + [2000] + [40] * 10])  # a frame held mid-clip
def test_a_clip_of_varying_rate_is_sampled_by_its_frames_own_times(tmp_path, durations):
    clip = media.read(vfr_mkv(tmp_path / "screen.mkv", durations), 4)
    picks, starts = media.sample_times(np.array(durations) / 1000, 4)  # as for a GIF of these times
    assert clip.duration == pytest.approx(sum(durations) / 1000)
    assert [(f.index, f.time) for f in clip.frames] == [(i, pytest.approx(starts[i])) for i, _ in picks]
    assert [f.weight for f in clip.frames] == pytest.approx([w for _, w in picks])
    assert [int(f.rgb[0, 0, 0]) for f in clip.frames] == pytest.approx([20 + 7 * i for i, _ in picks], abs=2)


@pytest.mark.parametrize("durations, passes", [
    ([40] * 50, 1),  # steady: each moment's frame foreseen
    ([40] * 10 + [2000] + [40] * 10, 2)])  # a frame held mid-clip, found out as the next one starts
def test_a_clip_converts_only_frames_a_moment_may_fall_on(tmp_path, monkeypatch, durations, passes):
    """Decoded frames are converted to pixels only near a sampled moment; a frame held past that
    sends the clip through again, every frame converted, for the same frames."""
    import cv2
    calls = {"opened": 0, "converted": 0}
    opened = cv2.VideoCapture

    class Counting:  # OpenCV's own capture, its openings and conversions counted
        def __init__(self, *args):
            self.cap = opened(*args)
            calls["opened"] += 1

        def __getattr__(self, name):
            return getattr(self.cap, name)

        def retrieve(self):
            calls["converted"] += 1
            return self.cap.retrieve()

    path = vfr_mkv(tmp_path / "clip.mkv", durations)
    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    clip = media.read(path, 4)
    picks, _ = media.sample_times(np.array(durations) / 1000, 4)
    assert [f.index for f in clip.frames] == [i for i, _ in picks]
    assert calls["opened"] == passes
    if passes == 1:
        assert calls["converted"] <= 4 * (media.CONVERT_AHEAD + 1) < len(durations)


def test_an_apngs_default_image_is_not_sampled_as_a_frame(tmp_path):
    animation = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 255, 0)]]
    Image.new("RGB", (32, 32), (255, 0, 255)).save(tmp_path / "a.png", save_all=True, default_image=True,
                                                   append_images=animation, duration=100)
    clip = media.read(tmp_path / "a.png", 4)
    assert {tuple(f.rgb[0, 0]) for f in clip.frames} == {(255, 0, 0), (0, 255, 0)}
    assert sum(f.weight for f in clip.frames) == pytest.approx(clip.duration)


def test_a_16_bit_grayscale_png_is_read_as_its_8_bit_twin(tmp_path):
    gray = hopper(160).convert("L")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(tmp_path / "deep.png")  # was read as white
    assert (media.read(tmp_path / "deep.png").frames[0].rgb[..., 0] == np.asarray(gray)).all()


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_png_whose_trns_keys_out_a_colour_shows_it_as_white(tmp_path, mode):
    # As PNG optimisers write an RGBA image whose pixels are wholly opaque or wholly clear.
    pixels = np.zeros((64, 64), np.uint16 if mode == "I;16" else np.uint8)
    pixels[16:48, 16:48] = 40000 if mode == "I;16" else 200
    im = Image.fromarray(pixels).convert("RGB") if mode == "RGB" else Image.fromarray(pixels)
    im.save(tmp_path / "keyed.png", transparency=(0, 0, 0) if mode == "RGB" else 0)
    rgb = media.read(tmp_path / "keyed.png").frames[0].rgb
    assert (rgb[0, 0] == 255).all() and (rgb[32, 32] == (200 if mode != "I;16" else 40000 >> 8)).all()


def test_a_16_bit_rgb_pngs_trns_key_is_not_matched_at_8_bits(tmp_path):
    pixels = np.zeros((8, 8, 3), ">u2")
    pixels[2:6, 2:6] = 50 * 257  # 8-bit grey 50; the key, 16-bit 50, is all but black and keys nothing here
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)
    (tmp_path / "deep.png").write_bytes(png_bytes(
        (b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0)), (b"tRNS", struct.pack(">HHH", 50, 50, 50)),
        (b"IDAT", zlib.compress(rows))))
    rgb = media.read(tmp_path / "deep.png").frames[0].rgb
    assert (rgb[3, 3] == 50).all() and (rgb[0, 0] == 0).all()


def test_an_avif_too_large_to_read_whole_is_refused(tmp_path, monkeypatch):
    hopper(160).save(tmp_path / "a.avif")
    monkeypatch.setattr(media, "INDEX_BYTES", 1000)  # AVIF's decoder takes the whole file at once
    with pytest.raises(media.MediaError, match="an AVIF file is read whole, and this one is over"):
        media.read(tmp_path / "a.avif")


@pytest.mark.parametrize("name, kind", [("cut.gif", "GIF"), ("cut.png", "PNG")])
def test_a_file_cut_before_its_first_frame_is_named_by_its_format(tmp_path, name, kind):
    """Before: "not an image file (unknown format)", for a GIF whose first 500 bytes were there."""
    whole = io.BytesIO()
    hopper().save(whole, Image.registered_extensions()[Path(name).suffix])
    (tmp_path / name).write_bytes(whole.getvalue()[:30])
    with pytest.raises(media.MediaError, match=f"^a {kind} file cut short or damaged$"):
        media.read(tmp_path / name)


def test_a_truncated_gif_keeps_its_whole_frames_flagged(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = face_gif(tmp_path / "wave.gif", n=6).read_bytes()
    (src / "cut.gif").write_bytes(data[: len(data) // 2])  # three whole frames, then a partial one
    (src / "cut_in_frame0.gif").write_bytes(data[: len(data) // 8])
    clip = media.read(src / "cut.gif", 8)
    assert clip.frames_total == 3 and [f.index for f in clip.frames] == [0, 1, 2]
    assert clip.note == "truncated: kept the 3 whole frames before the cut"
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db")
    assert result.exit_code == 1  # the one cut inside its first frame has nothing to show
    got = records(tmp_path / "s.db")
    assert got["cut.gif"]["error"] is None and got["cut.gif"]["label"] != "noface"
    assert got["cut.gif"]["note"] == clip.note and got["cut.gif"]["frames_total"] == 3
    assert f"cut.gif: {clip.note}" in result.output
    shown = cli("show", src / "cut.gif", "--db", tmp_path / "s.db")  # and later, where a user looks
    assert f"note       {clip.note}" in shown.output
    assert json.loads(cli("show", src / "cut.gif", "--db", tmp_path / "s.db", "--json").output)["note"] == clip.note
    assert got["cut_in_frame0.gif"]["error"].startswith("cannot decode")


def onnx_model(path, input_shape=("N", 48, 48, 1), weight=np.nan, one_face=False):
    """A real ONNX model: flatten, then a matrix of `weight` to 7 scores. one_face: the flattening
    a reshape to [1, ...], so that only one face a run passes."""
    onnx = pytest.importorskip("onnx", reason="building test models needs onnx (the [train] extra)")
    from onnx import TensorProto, helper, numpy_helper
    size = int(np.prod(input_shape[1:]))
    w = numpy_helper.from_array(np.full((size, 7), weight, np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, size], np.int64), "shape")
    flatten = (helper.make_node("Reshape", ["x", "shape"], ["flat"]) if one_face
               else helper.make_node("Flatten", ["x"], ["flat"]))
    graph = helper.make_graph(
        [flatten, helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])], [w, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return Path(path)


def test_a_model_that_answers_nan_gives_error_records_naming_it(cli, tmp_path):
    model = onnx_model(tmp_path / "nan.onnx")
    src = tmp_path / "src"
    src.mkdir()
    hopper().save(src / "face.png")
    blank().save(src / "plain.png")
    result = cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--model", model, "-q")
    assert result.exit_code == 1, result.output
    got = records(tmp_path / "s.db")
    assert "nan.onnx" in got["face.png"]["error"] and "NaN" in got["face.png"]["error"]
    assert got["face.png"]["confidence"] is None and got["plain.png"]["label"] == "noface"
    assert cli("query", "--db", tmp_path / "s.db").exit_code == 0
    live = run_cli("live", "--source", src / "face.png", "--json", "--model", model)  # was exit 70, "internal error"
    assert live.returncode == 2 and "NaN" in one_line_error(live), live.stderr
    data = tmp_path / "mini.csv"
    data.write_text("emotion,pixels,Usage\n" + "".join(f'{i},"{" ".join(["90"] * 2304)}",PrivateTest\n' for i in range(7)))
    for args in (["--model", model], ["--against", model]):  # was exit 70 too
        evaluated = cli("evaluate", data, *args, "-q")
        assert evaluated.exit_code == 2 and "NaN" in evaluated.stderr and evaluated.stderr.count("\n") == 1, \
            evaluated.stderr
    (src / "labels.csv").write_text("file,label\nface.png,neutral\nplain.png,noface\n")
    stickers = cli("evaluate", "--stickers", src, "--model", model, "-q")  # before: 0/1 right, no word why
    assert stickers.exit_code == 0 and "could not read 1 (scored as errors), e.g. face.png: model nan.onnx" \
        in stickers.stdout, stickers.output


@pytest.mark.parametrize("kind", ["text", "input_64", "input_channels_first", "batch_of_1", "one_face_a_run"])
def test_a_bad_model_is_refused_before_scanning(tmp_path, kind):
    model = tmp_path / f"{kind}.onnx"
    if kind == "text":
        model.write_text("not a model\n")
    elif kind == "one_face_a_run":  # before: its batches failed in evaluate, exit 70 and ONNX Runtime's log
        onnx_model(model, weight=0.0, one_face=True)
    else:  # batch_of_1: before, live failed at its first frame with two faces, exit 70
        onnx_model(model, {"input_64": ("N", 64, 64, 1), "input_channels_first": ("N", 1, 48, 48),
                           "batch_of_1": (1, 48, 48, 1)}[kind], weight=0.0)
    src = tmp_path / "src"
    src.mkdir()
    hopper().save(src / "face.png")
    for args in (["scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db"],
                 ["live", "--source", src / "face.png", "--json", "--max-frames", "1"]):
        proc = run_cli(*args, "--model", model)
        assert proc.returncode == 2, proc.stderr
        assert str(model) in one_line_error(proc)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()
