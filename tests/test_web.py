"""`stickersort live --web`: the real server in its own process, a real library scanned from real
faces, the page in a real headless Chromium."""
import json
import queue
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import wait_for
from media_makers import blank, face_gif, hopper

STARTUP = 60  # seconds; the box may be busy


def card_frame():
    """A 640x480 BGR frame with a face card in the middle."""
    frame = np.full((480, 640, 3), 60, np.uint8)
    frame[120:360, 200:440] = cv2.cvtColor(np.asarray(hopper(240)), cv2.COLOR_RGB2BGR)
    return frame


def still_clip(path, frames=50):
    """A clip whose frames all show the same face card: the expression on screen is the one
    `scan` gives the clip, so the matches panel has at least the clip itself to show."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for _ in range(frames):
        writer.write(card_frame())
    writer.release()
    return path


# No proxy: the test box may have one configured, and the server is local.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url):
    """(status, body) of a GET."""
    try:
        with HTTP.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def state(url):
    status, body = get(f"{url}/state.json")
    assert status == 200
    return json.loads(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from stickersort.sorter.cli import cli

    tmp = tmp_path_factory.mktemp("web")
    library = tmp / "library"
    library.mkdir()
    clip = still_clip(library / "clip.mp4")
    hopper().save(library / "hopper.png")
    face_gif(library / "wave.gif")
    blank().save(library / "nothing.png")
    db = tmp / "s.db"
    scanned = CliRunner().invoke(cli, ["scan", str(library), "--out", str(tmp / "out"), "--db", str(db), "-q"])
    assert scanned.exit_code == 0, scanned.output
    # The clip's own face as a still, filed unsure (no vote reaches 1): its best guess is the
    # expression on screen, so the panel shows it after the sure matches, marked unsure.
    doubtful = tmp / "doubtful"
    doubtful.mkdir()
    cv2.imwrite(str(doubtful / "still.png"), card_frame())
    scanned = CliRunner().invoke(cli, ["scan", str(doubtful), "--out", str(tmp / "out"), "--db", str(db), "-q",
                                       "--min-confidence", "1"])
    assert scanned.exit_code == 0, scanned.output

    proc = subprocess.Popen([sys.executable, "-m", "stickersort.sorter", "live", "--source", str(clip), "--loop",
                             "--web", "127.0.0.1:0", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A suite run from a background shell job ignores SIGINT, and children
                            # inherit that; a user's terminal does not.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    url = None
    deadline = time.monotonic() + STARTUP
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if "http://" in line:
            url = line.split("http://", 1)[1].split()[0].rstrip("/")
    assert url, f"live --web did not start (exit {proc.poll()})"
    yield {"url": f"http://{url}", "db": db}
    proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
    assert proc.wait(timeout=60) == 0


def frames(response, n):
    """The first n JPEG parts of an MJPEG response, decoded."""
    buf, out = b"", []
    while chunk := response.read1(8192):
        buf += chunk
        while True:
            head = buf.find(b"\r\n\r\n")
            if not buf.startswith(b"--frame\r\n") or head < 0:
                break
            length = int([line for line in buf[:head].split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])
            if len(buf) < head + 4 + length + 2:
                break
            jpeg = buf[head + 4:head + 4 + length]
            assert jpeg[:2] == b"\xff\xd8" and b"Content-Type: image/jpeg" in buf[:head]
            out.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
            buf = buf[head + 4 + length + 2:]
            if len(out) == n:
                return out
    raise AssertionError(f"the stream ended after {len(out)} frames")


def box_pixels(bgr):
    """Pixels in the colour live draws its boxes in (BGR 60, 220, 60), give or take JPEG."""
    return int(np.all(np.abs(bgr.astype(int) - (60, 220, 60)) < 45, axis=2).sum())


def stream(url):
    response = HTTP.open(f"{url}/stream.mjpg", timeout=30)
    assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
    return response


def test_stream_delivers_jpeg_frames_with_boxes(server):
    with stream(server["url"]) as response:
        shots = frames(response, 3)
    assert all(s.shape == (480, 640, 3) for s in shots)
    # The clip itself has no green at all; a drawn box round a ~200 px face has well over 400 pixels.
    assert box_pixels(cv2.imread(str(server["db"].parent / "library" / "hopper.png"))) < 50
    assert all(box_pixels(s) > 400 for s in shots)


def dropped_viewer(url):
    """A viewer that reads some of the stream, then vanishes with a reset, like a closed tab."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b"\xff\xd9") < 2:  # two whole JPEGs
            received += s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_viewers_share_one_capture_and_a_dropped_one_harms_nothing(server):
    with stream(server["url"]) as second:
        dropped_viewer(server["url"])
        assert len(frames(second, 5)) == 5
    with stream(server["url"]) as third:
        assert len(frames(third, 2)) == 2
    assert state(server["url"])["fps"] > 0


def test_stickers_are_served_by_database_hash_only(server):
    url, db = server["url"], server["db"]
    digest, path = sqlite3.connect(db).execute("select hash, path from files where name = 'hopper.png'").fetchone()
    assert get(f"{url}/sticker/{digest}") == (200, open(path, "rb").read())
    for probe in ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "0" * 64, digest.upper(), path.lstrip("/")]:
        assert get(f"{url}/sticker/{probe}")[0] == 404, probe


def non_loopback_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_server_answers_on_loopback_only(server):
    port = int(server["url"].rsplit(":", 1)[1])
    assert server["url"].startswith("http://127.0.0.1:")
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback to try")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=5).close()


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield chrome
    chrome.quit()


def test_the_page_shows_the_stream_and_stickers_of_the_expression_on_screen(server, browser):
    browser.get(server["url"] + "/")
    assert browser.title == "stickersort live"
    wait_for(lambda: browser.execute_script("return document.getElementById('stream').naturalWidth") == 640,
             "the stream to show in the page")
    shown = wait_for(lambda: browser.execute_script(
        "return [document.getElementById('mood').textContent,"
        " [...document.querySelectorAll('#stickers figure')].map(f => [f.dataset.id, f.dataset.label,"
        "  f.classList.contains('unsure'), f.querySelector('figcaption').textContent])]")
        if browser.find_elements("css selector", "#stickers figure") else None, "matching stickers")
    mood, stickers = shown
    conn = sqlite3.connect(server["db"])
    # Filed under the expression on screen first, then the unsure ones whose best guess it is.
    expected = conn.execute("select hash, label from files where (label = ? or (label = 'unsure' and guess = ?)) "
                            "and error is null order by label = 'unsure', confidence desc, path",
                            [mood, mood]).fetchall()[:6]
    assert [tuple(s[:2]) for s in stickers] == expected
    assert {s[1] for s in stickers} == {mood, "unsure"}
    for _, label, marked, caption in stickers:
        assert marked == caption.startswith("unsure ") == (label == "unsure")
    clip_hash, still_hash = (conn.execute("select hash from files where name = ?", [name]).fetchone()[0]
                             for name in ("clip.mp4", "still.png"))
    assert clip_hash in [s[0] for s in stickers if s[1] == mood]  # the face on screen is the clip's
    assert still_hash in [s[0] for s in stickers if s[1] == "unsure"]
    # Every sticker in the panel loaded from the server (a frame of it, for the clip).
    wait_for(lambda: browser.execute_script(
        "const imgs = [...document.querySelectorAll('#stickers img')];"
        "return imgs.length == arguments[0] && imgs.every(i => i.complete && i.naturalWidth > 0)", len(stickers)),
        "sticker files")
    unsure = [s for s in state(server["url"])["stickers"] if s["unsure"]]
    assert unsure and all(s["label"] == "unsure" and s["guess"] == mood for s in unsure)
    link = browser.find_element("css selector", "#stickers figure a")
    assert link.get_attribute("target") == "_blank" and "/sticker/" in link.get_attribute("href")
