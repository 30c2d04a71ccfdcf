"""`stickersort live` without a screen: real clips of real faces, the shipped model."""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, STICKERS_DEV, need
from media_makers import face_gif, hopper
from procs import stickersort

STARTUP_S = 120  # a bound on the command's start (imports, the model) on a busy machine


def face_clip(path, cards, frames=60, size=(640, 480)):
    """An mp4 (OpenCV's mp4v) of face cards drifting across a gray frame, one card after another."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for i in range(frames):
        card = cards[i * len(cards) // frames].convert("RGB").resize((h // 2, h // 2))
        frame = np.full((h, w, 3), 60, np.uint8)
        x = 20 + i * (w - h // 2 - 40) // frames
        frame[h // 4:h // 4 + h // 2, x:x + h // 2] = cv2.cvtColor(np.asarray(card), cv2.COLOR_RGB2BGR)
        writer.write(frame)
    writer.release()
    return Path(path)


def stickers_dev_cards():
    faces = [p for p in sorted(need(STICKERS_DEV).glob("*.png")) if not p.name.startswith("noface")]
    return [Image.open(p) for p in faces[:3]]


def live_json(cli, *args):
    result = cli("live", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("cards", [lambda: [hopper()], stickers_dev_cards], ids=["grace-hopper", "stickers-dev"])
def test_json_reports_faces_in_a_face_clip(cli, tmp_path, cards):
    clip = face_clip(tmp_path / "clip.mp4", cards())
    stats = live_json(cli, "--source", clip, "--max-frames", 50)
    assert stats["frames"] == 50
    assert stats["faces"] >= stats["frames_with_faces"] >= 25  # most frames: the detector may miss a few
    assert stats["fps"] > 0 and stats["seconds"] > 0
    latency = stats["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert set(stats["stages_ms"]) == {"decode", "detect", "classify", "draw", "encode"}


def test_a_file_source_ends_cleanly_or_loops(cli, tmp_path):
    clip = face_clip(tmp_path / "short.mp4", [hopper()], frames=20)
    assert live_json(cli, "--source", clip, "--max-frames", 50)["frames"] == 20
    assert live_json(cli, "--source", clip, "--loop", "--max-frames", 45)["frames"] == 45
    still = SAMPLES / "astronaut.jpg"  # before: one frame, then the end, --loop or not
    assert live_json(cli, "--source", still, "--loop", "--max-frames", 4)["frames"] == 4


def test_a_gif_is_a_source_too(cli, tmp_path):
    stats = live_json(cli, "--source", face_gif(tmp_path / "wave.gif"))
    assert stats["frames"] == 6 and stats["faces"] >= 4


@pytest.mark.parametrize("kind", ["webp", "png"])
def test_an_animated_webp_or_png_plays_every_frame_and_loops(cli, tmp_path, kind):
    """Before: an animated WebP (as the sample stickers are) was "not one frame could be read",
    and an APNG played once whatever --loop said (OpenCV cannot rewind it)."""
    face = hopper().convert("RGBA").resize((200, 200))
    frames = [face.rotate(angle) for angle in (0, 8, 16, 24, 32)]
    path = tmp_path / f"spin.{kind}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    stats = live_json(cli, "--source", path)
    assert stats["frames"] == 5 and stats["faces"] == 5
    assert live_json(cli, "--source", path, "--loop", "--max-frames", 12)["frames"] == 12


def test_a_file_url_is_a_file_source(cli, tmp_path):
    """Before: a file:// URL skipped the file's checks (a FIFO behind it hung for good)."""
    gif = face_gif(tmp_path / "wave gif.gif")
    assert live_json(cli, "--source", "file://" + str(gif).replace(" ", "%20"))["frames"] == 6
    os.mkfifo(tmp_path / "fifo.mp4")
    result = cli("live", "--source", f"file://{tmp_path}/fifo.mp4", "--json")
    assert result.exit_code == 2 and "not a regular file" in result.output


def test_a_cut_short_animation_plays_its_whole_frames_on_every_pass(tmp_path):
    """Before (the review of the player): Pillow cannot seek an APNG back from a frame before its
    last, so a cut-short APNG played once, then froze on its first frame."""
    from stickersort.sorter.media import Player

    face = hopper().convert("RGBA").resize((120, 120))
    for kind in ("png", "gif"):  # a cut-short WebP is no file Pillow opens: OpenCV's to try
        path = tmp_path / f"spin.{kind}"
        face.save(path, save_all=True, append_images=[face.rotate(a) for a in (8, 16, 24, 32)], duration=100)
        path.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.95)])
        player = Player(path)
        passes = []
        for _ in range(3):
            frames = []
            while (frame := player.read()) is not None:
                frames.append(frame[0])
            passes.append(len(frames))
            player.rewind()
        player.close()
        assert passes[0] >= 2 and passes == [passes[0]] * 3, (kind, passes)


@pytest.mark.parametrize("source, says", [("99", "no camera at index 99"), ("missing.mp4", "no such file"),
                                          ("2147483648", "no camera at index 2147483648"),  # was exit 70, 6 lines
                                          ("notes.txt", "cannot open it as a video"),
                                          ("broken.gif", "not one frame")])  # before: exit 0, 0 frames
def test_an_unusable_source_is_one_line_naming_source(cli, tmp_path, monkeypatch, source, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "broken.gif").write_bytes(b"GIF89a garbage")
    result = cli("live", "--source", source, "--json")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--source" in result.output and says in result.output


def test_an_empty_web_address_is_refused_as_one(cli, tmp_path):
    # Before: taken as no --web at all, and refused for want of a window.
    result = cli("live", "--source", face_clip(tmp_path / "clip.mp4", [hopper()], frames=5), "--web", "")
    assert result.exit_code == 2 and "--web : expected HOST:PORT" in result.output


@pytest.mark.parametrize("address, says", [
    ("::1", "an IPv6 host in brackets"),  # before: host ":", port 1, and "cannot listen there"
    ("127.0.0.1:\u0663\u0664\u0665\u0666", "expected HOST:PORT"),  # before: Arabic-Indic digits taken as 3456
    ("[::1]", "no port; expected e.g. [::1]:8765")])  # before: "an IPv6 host in brackets", as it was
def test_a_web_address_that_is_no_host_and_port_is_refused(cli, tmp_path, address, says):
    result = cli("live", "--source", face_clip(tmp_path / "clip.mp4", [hopper()], frames=5), "--web", address)
    assert result.exit_code == 2 and says in result.output and result.output.count("\n") == 1, result.output


def test_no_display_says_so_and_suggests_web(cli, tmp_path, monkeypatch):
    # The check happens before any cv2.imshow, which can abort the whole process (pytest's too).
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("live", "--source", face_clip(tmp_path / "clip.mp4", [hopper()], frames=5))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--web" in result.output


def test_a_bad_web_address_is_refused(cli, tmp_path):
    result = cli("live", "--source", face_gif(tmp_path / "wave.gif"), "--web", "localhost:port")
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_an_image_too_large_for_the_scan_is_refused_as_a_source(cli, tmp_path):
    """Before: a still went to OpenCV whole, past the scan's limits (1.7 GB for 10,000 px square)."""
    from media_makers import bomb_png
    result = cli("live", "--source", str(bomb_png(tmp_path / "huge.png")), "--json")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "image too large" in result.output


@pytest.mark.parametrize("name", ["huge.bin", "huge.mp4"])
def test_frames_too_large_for_the_scan_are_refused_whatever_the_name(cli, tmp_path, name):
    """The same PNG named as no sticker or as a video. Before: OpenCV's FFmpeg played it, 10,000 px
    square (1.5 GB for a colour one), where the scan refuses such frames from the header."""
    from media_makers import bomb_png
    result = cli("live", "--source", str(bomb_png(tmp_path / name)), "--json")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "frames too large: 10000x10000 is over 40,000,000 pixels" in result.output


def test_a_port_in_use_is_one_line(cli, tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("live", "--source", face_gif(tmp_path / "wave.gif"), "--web", f"127.0.0.1:{port}")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"--web 127.0.0.1:{port}: cannot listen there" in result.output


def test_mood_is_the_last_second_of_faces():
    from stickersort.model.labels import EMOTIONS
    from stickersort.sorter.live import Mood, Seen

    def seen(label, p=0.6):
        probs = np.full(7, (1 - p) / 6)
        probs[EMOTIONS.index(label)] = p
        return [Seen((0, 0, 10, 10), label, p, probs)]

    mood = Mood(seconds=1.0)
    assert mood.label is None
    for i in range(10):
        mood.add(i * 0.1, seen("happy"))
    mood.add(0.95, seen("sad"))  # one odd frame does not flip it
    assert mood.label == "happy"
    for i in range(10):
        mood.add(1.0 + i * 0.1, seen("sad"))
    assert mood.label == "sad"
    mood.add(3.5, [])  # a second without faces: nothing on screen
    assert mood.label is None


@contextmanager
def mjpeg_stream(frames):
    """A local HTTP server whose one stream sends the JPEG `frames`, then stalls, its connection
    held open (a camera that hangs); one that sends none never answers at all. Yields (URL, an
    Event set once every frame is sent)."""
    server = socket.create_server(("127.0.0.1", 0))
    sent, held = threading.Event(), []

    def serve():
        with contextlib.suppress(OSError):
            client, _ = server.accept()
            held.append(client)
            client.recv(4096)
            if frames:
                client.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
                for jpeg in frames:
                    client.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                   % (len(jpeg), jpeg))
            sent.set()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg", sent
    finally:
        server.close()
        for client in held:
            client.close()


@pytest.mark.parametrize("frames", [0, 10], ids=["never answers", "stalls after 10 frames"])
def test_ctrl_c_ends_a_stream_that_hangs_at_once(frames):
    """Before: OpenCV's FFmpeg held the process in its 30-s wait, deaf to Ctrl-C and SIGTERM; it
    then said it could not open the stream (exit 2), or printed its own timeout warning."""
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(hopper().convert("RGB")), cv2.COLOR_RGB2BGR))[1].tobytes()
    with mjpeg_stream([jpeg] * frames) as (url, sent):
        proc = subprocess.Popen(stickersort(["live", "--source", url, "--json"]), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert sent.wait(STARTUP_S), "the stream was never asked for"
            time.sleep(2)  # its frames read, or its opening under way
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr and "WARN" not in stderr, stderr
    assert json.loads(stdout)["frames"] == frames



def test_a_stream_that_stops_sending_is_a_failure_not_its_end():
    """Before: after OpenCV's 30-s wait, exit 0 with FFmpeg's timeout warning, as if it had ended."""
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(hopper().convert("RGB")), cv2.COLOR_RGB2BGR))[1].tobytes()
    with mjpeg_stream([jpeg] * 10) as (url, _):
        proc = subprocess.run(stickersort(["live", "--source", url, "--json"]), capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"stopped sending frames \(nothing for 3\d s\) after 10 frames$", proc.stderr.splitlines()[-1])

@contextmanager
def slow_video_stream(tmp_path, chunks=300, every=0.1):
    """A local HTTP server sending an MJPEG AVI clip of a face in CHUNKS pieces, one every EVERY
    seconds: a stream that plays on at its own pace, a read under way most of the time. Yields (its
    URL, an Event set once 20 pieces are sent)."""
    clip = tmp_path / "clip.avi"
    face = cv2.resize(cv2.cvtColor(np.asarray(hopper().convert("RGB")), cv2.COLOR_RGB2BGR), (320, 320))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for i in range(chunks):
        writer.write(cv2.warpAffine(face, cv2.getRotationMatrix2D((160, 160), i % 20 - 10, 1), (320, 320)))
    writer.release()
    data = clip.read_bytes()
    server, done, going = socket.create_server(("127.0.0.1", 0)), threading.Event(), threading.Event()

    def serve():
        with contextlib.suppress(OSError):
            client, _ = server.accept()
            with client:
                client.recv(4096)
                client.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/x-msvideo\r\n\r\n")
                step = len(data) // chunks
                for n, i in enumerate(range(0, len(data), step)):
                    if done.is_set():
                        break
                    client.sendall(data[i:i + step])
                    if n == 20:
                        going.set()
                    time.sleep(every)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/clip.avi", going
    finally:
        done.set()
        server.close()


def test_ctrl_c_on_a_stream_that_plays_on_exits_130_every_time(tmp_path):
    """Before: 3 times in 6, SIGABRT ("FATAL: exception not rethrown", exit 134): the capture
    thread came back from OpenCV while Python was shutting down."""
    for _ in range(4):
        with slow_video_stream(tmp_path) as (url, going):
            proc = subprocess.Popen(stickersort(["live", "--source", url, "--json"]), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                assert going.wait(STARTUP_S), "the stream was never asked for"
                time.sleep(0.5)  # frames shown, a read under way
                proc.send_signal(signal.SIGINT)
                stdout, stderr = proc.communicate(timeout=10)
            finally:
                proc.kill()
        assert proc.returncode == 130 and "FATAL" not in stderr and "terminate" not in stderr, stderr
        assert json.loads(stdout)["frames"] > 0


def test_a_web_preview_whose_file_ends_says_so():
    """Before: the page's address was printed, then the command ended at once without a word, the
    address already dead."""
    proc = subprocess.run(stickersort(["live", "--source", SAMPLES / "astronaut.jpg", "--web", "127.0.0.1:0"]),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "the source ended after 1 frame; the preview stops (--loop plays a file again)"
