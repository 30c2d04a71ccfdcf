"""`stickersort live --web`: the real server in its own process, a real library scanned from real
faces, the page in a real headless Chromium."""
import json
import os
import shutil
import socket
import sqlite3
import struct
import time
import urllib.error

import cv2
import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from conftest import SAMPLES, wait_for
from media_makers import blank, face_gif, hopper
from webpages import HTTP, Served, chromium, get, get_json, raw


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


def state(url):
    status, body = get(f"{url}/state.json")
    assert status == 200
    return json.loads(body)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from stickersort.sorter.cli import cli

    tmp = tmp_path_factory.mktemp("web")
    library = tmp / "library"
    library.mkdir()
    clip = still_clip(library / "clip.mp4")
    shutil.copy(clip, library / "clip-copy.mp4")  # one content at two paths: shown once
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
    return {"clip": clip, "db": db, "tmp": tmp}


@pytest.fixture(scope="module")
def server(library):
    served = Served("live", "--source", library["clip"], "--loop", "--web", "127.0.0.1:0", "--db", library["db"])
    yield {"url": served.url, "db": library["db"], "served": served}
    assert served.stop() == 130  # Ctrl-C: a clean stop, the shell's status for it


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """live --web on a clip with no face and no --db, under the usual 1,024-descriptor limit."""
    clip = tmp_path_factory.mktemp("bare") / "empty.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for _ in range(25):
        writer.write(np.full((480, 640, 3), 60, np.uint8))
    writer.release()
    served = Served("live", "--source", clip, "--loop", "--web", "127.0.0.1:0", descriptors=1024)
    yield served
    started = time.monotonic()
    assert served.stop(seconds=30) == 130 and time.monotonic() - started < 15  # Ctrl-C, even after a storm
    assert "Traceback" not in "".join(served.stderr)


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
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: %s:%s\r\n\r\n" % (host.encode(), port.encode()))
        received = b""
        while received.count(b"\xff\xd9") < 2:  # two whole JPEGs
            chunk = s.recv(65536)
            assert chunk, f"the stream ended: {received[:200]!r}"
            received += chunk
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
    chrome = chromium(tmp_path)
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
    ranked = conn.execute("select hash, label from files where (label = ? or (label = 'unsure' and guess = ?)) "
                          "and error is null order by label = 'unsure', confidence desc, path", [mood, mood]).fetchall()
    expected = [row for i, row in enumerate(ranked) if row[0] not in [r[0] for r in ranked[:i]]][:6]  # a content once
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
    assert link.get_attribute("target") == "_blank" and "/view/" in link.get_attribute("href")


def test_the_same_content_at_two_paths_shows_once(server):
    conn = sqlite3.connect(server["db"])
    clip_hash = conn.execute("select hash from files where name = 'clip.mp4'").fetchone()[0]
    assert conn.execute("select count(*) from files where hash = ?", [clip_hash]).fetchone()[0] == 2
    stickers = wait_for(lambda: state(server["url"])["stickers"], "matches")
    ids = [s["id"] for s in stickers]
    assert clip_hash in ids and len(ids) == len(set(ids))


def test_copy_path_without_a_clipboard_api_selects_the_path_and_copies_it(server, browser):
    """Served on a non-loopback address a page is no secure context: no navigator.clipboard.
    The same page, in the real browser, with that API taken away."""
    browser.get(server["url"] + "/")
    wait_for(lambda: browser.find_elements("css selector", "#stickers figure button.copy"), "a sticker")
    browser.execute_script("Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});"
                           "Object.defineProperty(window, 'isSecureContext', {get: () => false});")
    button = browser.find_element("css selector", "#stickers figure button.copy")
    name = button.find_element("xpath", "./..").text.split(" (")[0].removeprefix("unsure ")
    button.click()
    field = wait_for(lambda: browser.find_elements("css selector", "#stickers figure input.path"), "the path field")[0]
    path = sqlite3.connect(server["db"]).execute("select path from files where name = ?", [name]).fetchone()[0]
    assert field.get_attribute("value") == path
    selected = browser.execute_script("const f = arguments[0]; return [document.activeElement === f,"
                                      " f.value.substring(f.selectionStart, f.selectionEnd)]", field)
    assert selected == [True, path]  # selected: Ctrl-C copies it even where execCommand is refused
    assert button.text in ("copied", "press Ctrl-C")
    # Chromium lets the click copy it the old way; pasted into a field, it is the path.
    if button.text == "copied":
        pasted = browser.execute_script(
            "const t = document.createElement('textarea'); document.body.append(t); t.focus();"
            "document.execCommand('paste'); return t.value")
        assert pasted in ("", path)  # reading the clipboard back needs a permission the page lacks


def test_a_sticker_opens_in_a_tab_titled_with_its_name(server, browser):
    browser.get(server["url"] + "/")
    link = wait_for(lambda: browser.find_elements("css selector", "#stickers figure a"), "a sticker")[0]
    digest = link.find_element("xpath", "./..").get_attribute("data-id")
    name = link.find_element("css selector", "img").get_attribute("alt")
    assert link.get_attribute("href").endswith(f"/view/{digest}/{name}")
    link.click()
    wait_for(lambda: len(browser.window_handles) == 2, "the new tab")
    browser.switch_to.window(browser.window_handles[1])
    assert wait_for(lambda: browser.title, "a title") == name
    wait_for(lambda: browser.execute_script(  # the sticker in it: the picture, or a clip's poster frame
        "const m = document.querySelector('img, video');"
        "return m && (m.tagName === 'IMG' ? m.complete && m.naturalWidth > 0 : !!m.poster)"), "the sticker in the tab")


def test_with_no_face_and_no_library_the_page_says_so(bare, browser):
    browser.get(bare.url + "/")
    wait_for(lambda: browser.execute_script("return document.getElementById('stream').naturalWidth") == 640,
             "the stream to show in the page")
    hint = wait_for(lambda: browser.find_element("css selector", "#hint").text, "the hint")
    heading = browser.find_element("css selector", "aside h1").text
    assert "Stickers for" not in heading and "no face" not in heading.lower() and heading.startswith("Live preview")
    assert "--db" in hint and not browser.find_elements("css selector", "#stickers figure")
    assert get_json(bare.url + "/state.json")[1]["library"] is False


def test_only_the_bound_address_is_answered(server):
    url = server["url"]
    port = url.rsplit(":", 1)[1]
    for path in ("/state.json", "/stream.mjpg", "/"):
        for host in ("evil.example", f"evil.example:{port}", "", "127.0.0.1:1"):
            status, body = raw(url, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close")
            assert " 400 " in status and "unknown Host" in json.loads(body)["error"], (path, host)
        status, body = raw(url, f"GET {path} HTTP/1.0")  # no Host at all
        assert " 400 " in status and b"library" not in body
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert " 200 " in raw(url, f"GET /state.json HTTP/1.1\r\nHost: {host}\r\nConnection: close")[0]


def test_errors_answer_json_never_a_traceback(server):
    for path, code in [("/no/such/page", 404), ("/sticker/" + "0" * 64, 404), ("/poster/zz", 404)]:
        status, answer = get_json(server["url"] + path)
        assert status == code and answer["error"], path
    status, answer = get_json(server["url"] + "/state.json", data=b"x=1")
    assert status == 405 and answer["error"]


def test_a_sticker_swapped_for_a_link_is_not_served(server, tmp_path):
    conn = sqlite3.connect(server["db"])
    path, digest = conn.execute("select path, hash from files where name = 'nothing.png'").fetchone()
    url = f"{server['url']}/sticker/{digest}/nothing.png"
    assert get(url) == (200, open(path, "rb").read())
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web\n")
    os.replace(path, tmp_path / "kept.png")
    try:
        for swap in (lambda: os.symlink("/etc/passwd", path), lambda: os.link(secret, path)):
            swap()
            status, body = get(url)
            assert status == 404 and b"root:" not in body and b"not for the web" not in body
            os.unlink(path)
    finally:
        os.replace(tmp_path / "kept.png", path)
    assert get(url)[0] == 200


def test_the_preview_goes_on_when_its_library_goes(library, tmp_path):
    """Before: with the database deleted, /state.json answered 500, the page said the preview had
    stopped, and every poll logged a line."""
    db = tmp_path / "copy.db"
    with sqlite3.connect(library["db"]) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    served = Served("live", "--source", library["clip"], "--loop", "--web", "127.0.0.1:0", "--db", db)
    try:
        wait_for(lambda: state(served.url)["stickers"], "the stickers of the expression on screen")
        for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        wait_for(lambda: "library_error" in state(served.url), "the matches, read afresh, to find no database")
        for _ in range(3):
            now = state(served.url)
            assert now["stickers"] == [] and "no database at" in now["library_error"] and now["fps"] >= 0
        assert get(served.url + "/sticker/" + "0" * 64)[0] == 503
    finally:
        assert served.stop() == 130
    assert "failed" not in "".join(served.stderr) and "Traceback" not in "".join(served.stderr)


def test_streams_beyond_the_cap_get_503_until_one_leaves(bare):
    from stickersort.sorter.serving import MAX_STREAMS
    # An earlier test's browser may still hold a slot for a moment: the server frees it when its
    # next frame finds the viewer gone.
    open_ = [wait_for(lambda: _stream_or_none(bare.url), "a free stream slot") for _ in range(MAX_STREAMS)]
    try:
        assert all(len(frames(r, 1)) == 1 for r in open_)
        status, answer = get_json(bare.url + "/stream.mjpg")
        assert status == 503 and "too many streams" in answer["error"]
        assert get_json(bare.url + "/state.json")[0] == 200  # requests still have threads
    finally:
        open_.pop().close()
    wait_for(lambda: _stream_opens(bare.url), "a slot freed by the viewer that left")
    for r in open_:
        r.close()


def test_viewers_that_never_read_are_closed_and_free_their_slots(tmp_path):
    """Before: MAX_STREAMS clients that asked for the stream and never read held every slot for
    good (each thread blocked on a full buffer), and every later viewer got 503."""
    from stickersort.sorter.serving import MAX_STREAMS, STALL_TIMEOUT
    noise = tmp_path / "noise.mp4"  # big JPEGs: an unread connection's buffers fill within a second
    writer = cv2.VideoWriter(str(noise), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    for _ in range(25):
        writer.write(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8))
    writer.release()
    served = Served("live", "--source", noise, "--loop", "--web", "127.0.0.1:0")
    stalled = []
    try:
        for _ in range(MAX_STREAMS):
            s = socket.create_connection(("127.0.0.1", served.port))
            s.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n\r\n".encode())
            stalled.append(s)
        started = time.monotonic()
        time.sleep(STALL_TIMEOUT / 3)
        assert get_json(served.url + "/stream.mjpg")[0] == 503  # held, and nobody reading
        wait_for(lambda: _stream_opens(served.url), "a slot freed by closing a stalled viewer",
                 seconds=STALL_TIMEOUT + 30)
        assert STALL_TIMEOUT - 1 < time.monotonic() - started < STALL_TIMEOUT + 15
        assert get(served.url + "/state.json", timeout=10)[0] == 200
    finally:
        for s in stalled:
            s.close()
        assert served.stop() == 130 and "Traceback" not in "".join(served.stderr)


def _stream_or_none(url):
    try:
        return stream(url)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code != 503:
            raise
        return None


def _stream_opens(url):
    try:
        with stream(url) as r:
            return len(frames(r, 1)) == 1
    except OSError:
        return False


def test_a_thousand_idle_connections_only_delay_a_request(bare):
    """Issue 28: 1,100 idle connections under a 1,024-descriptor limit killed the old server for
    good (1,024 threads, two cores burnt, every request timed out, Ctrl-C ignored)."""
    import resource
    from stickersort.sorter.serving import IDLE_TIMEOUT, THREADS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip("this test process needs 1,400 descriptors to hold the idle connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    idle = []
    try:
        for _ in range(1100):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", bare.port))
            idle.append(s)
        time.sleep(1)
        cpu = bare.cpu_seconds()
        started = time.monotonic()
        status, _ = get(bare.url + "/state.json", timeout=4 * IDLE_TIMEOUT)
        waited = time.monotonic() - started
        assert status == 200 and waited < 3 * IDLE_TIMEOUT
        assert bare.threads() < THREADS + 20  # a fixed pool, not a thread per connection
        assert bare.cpu_seconds() - cpu < 0.5 * waited + 1  # waiting, not spinning
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    started = time.monotonic()
    assert get(bare.url + "/state.json", timeout=10)[0] == 200 and time.monotonic() - started < 2
    assert _stream_opens(bare.url)


def test_a_slow_gif_shows_its_first_frame_at_once_and_ctrl_c_ends_its_wait(tmp_path):
    """A GIF whose frames ask for 10 minutes each. Before: the page waited a frame's delay for the
    first frame, and Ctrl-C went unheard until the next one was due."""
    face = Image.open(SAMPLES / "astronaut.jpg").convert("RGB")
    slow = tmp_path / "slow.gif"
    face.save(slow, save_all=True, append_images=[face.transpose(Image.FLIP_LEFT_RIGHT)], duration=600_000, loop=0)
    served = Served("live", "--source", slow, "--web", "127.0.0.1:0")
    try:
        wait_for(lambda: get_json(served.url + "/state.json")[1]["faces"], "the first frame's face", 30)
    finally:
        started = time.monotonic()
        assert served.stop(seconds=20) == 130
    assert time.monotonic() - started < 10
    assert served.stderr[-1].strip() == "stickersort: interrupted; 1 frames shown"
