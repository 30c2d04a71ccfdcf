"""`stickersort browse`: the real server in its own process over a library scanned from the sample
stickers and a clip, the page in a real headless Chromium, screenshots checked by assertions."""
import json
import os
import shutil
import sqlite3
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from conftest import ROOT, SAMPLES, wait_for
from media_makers import face_mp4
from webpages import Served, chromium, get, get_json, raw

SHELVES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "unsure", "noface"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from stickersort.sorter.cli import cli
    tmp = tmp_path_factory.mktemp("browse")
    folder = tmp / "stickers"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md", "*.csv", "*.py"))
    face_mp4(folder / "clip.mp4")
    db, out = tmp / "s.db", tmp / "out"
    scanned = CliRunner().invoke(cli, ["scan", str(folder), "--out", str(out), "--db", str(db), "-q"])
    assert scanned.exit_code == 0, scanned.output
    return {"folder": folder, "db": db, "out": out, "tmp": tmp}


@pytest.fixture(scope="module")
def server(library):
    served = Served("browse", "--db", library["db"], "--port", 0)
    yield served
    assert served.stop() == 130  # Ctrl-C: one line, the shell's status for it
    assert served.stderr[-1].startswith("stickersort: interrupted") and "Traceback" not in "".join(served.stderr)


@pytest.fixture
def browser(tmp_path):
    chrome = chromium(tmp_path)
    yield chrome
    chrome.quit()


def db_counts(db):
    rows = sqlite3.connect(db).execute("select label, count(*) from files where error is null group by label")
    return {label: n for label, n in rows}


def page_counts(browser):
    shelves = browser.execute_script(
        "return [...document.querySelectorAll('section.shelf')].map(s => [s.dataset.label,"
        " s.querySelectorAll('figure:not([hidden])').length, s.querySelector('h2 .count').textContent])")
    return {label: (n, text) for label, n, text in shelves}


def open_library(browser, server):
    browser.get(server.url + "/")
    wait_for(lambda: browser.find_elements("css selector", "figure.sticker"), "the library to load")
    # Every thumbnail loaded from the server: images decoded, clips showing at least their poster.
    wait_for(lambda: browser.execute_script(
        "return [...document.querySelectorAll('figure img')].every(i => i.complete && i.naturalWidth > 0)"
        " && [...document.querySelectorAll('figure video')].every(v => v.readyState > 0 || v.poster)"),
        "every thumbnail")


def screenshot(browser, path):
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("STICKERSORT_DOC_SCREENSHOTS") and path.name == "browse.png":  # the picture in docs/web.md
        shutil.copy(path, ROOT / "docs" / path.name)


def test_every_shelf_with_its_stickers_counted_and_shown(server, library, browser, tmp_path):
    open_library(browser, server)
    assert browser.title == "stickersort library"
    counts = db_counts(library["db"])
    shown = page_counts(browser)
    assert list(shown) == SHELVES  # every expression, then unsure and noface, empty ones too
    assert {label: n for label, (n, _) in shown.items()} == {label: counts.get(label, 0) for label in SHELVES}
    assert all(text == f"({n})" for n, text in shown.values())
    assert sum(n for n, _ in shown.values()) == 13 and counts["noface"] and counts["unsure"]
    # Confidence on every sticker with a face, none on noface ones; the unsure one names its guess.
    captions = browser.execute_script(
        "return [...document.querySelectorAll('figure')].map(f => [f.dataset.label,"
        " !!f.querySelector('.confidence'), f.querySelector('figcaption').textContent])")
    assert all(has == (label != "noface") for label, has, _ in captions)
    assert all("guess " in text for label, _, text in captions if label == "unsure")
    # Animated ones play: the GIF or WebP itself is the thumbnail; a clip is a <video> with a poster.
    sources = browser.execute_script("return [...document.querySelectorAll('figure img')].map(i => i.src)")
    assert any(s.endswith("/astronaut_zoom.gif") for s in sources) and any(s.endswith("/astronaut_nod.webp") for s in sources)
    video = browser.execute_script("const v = document.querySelector('figure video'); return v && [v.src, v.poster, v.loop]")
    assert video and video[0].endswith("/clip.mp4") and "/poster/" in video[1] and video[2]
    assert get(video[1])[0] == 200
    # One correction control per sticker, offering every expression and noface.
    assert len(browser.find_elements("css selector", "figure .correct button.move")) == 13
    options = browser.execute_script("return [...document.querySelector('figure select.label').options].map(o => o.value)")
    assert options == [*SHELVES[:7], "noface"]
    browser.set_window_size(1280, 1000)
    screenshot(browser, tmp_path / "browse.png")


def test_search_by_name_filters_every_shelf(server, browser, tmp_path):
    open_library(browser, server)
    box = browser.find_element("css selector", "#search")
    box.send_keys("HOPPER")
    wait_for(lambda: sum(n for n, _ in page_counts(browser).values()) < 13, "the search to filter")
    names = browser.execute_script(
        "return [...document.querySelectorAll('figure:not([hidden]) .name')].map(n => n.textContent)")
    assert sorted(names) == ["hopper.png", "hopper.webp", "hopper_cutout.png", "hopper_reveal.gif"]
    assert all(text == f"({n})" for n, text in page_counts(browser).values())
    screenshot(browser, tmp_path / "browse-search.png")
    # A sticker opens in a tab of its own, titled with its file name, not its hash.
    browser.find_element("css selector", "figure:not([hidden]) a").click()
    wait_for(lambda: len(browser.window_handles) == 2, "the new tab")
    browser.switch_to.window(browser.window_handles[1])
    assert wait_for(lambda: browser.title, "a title") in names
    browser.close()
    browser.switch_to.window(browser.window_handles[0])
    box.clear()
    box.send_keys("no such name")
    wait_for(lambda: sum(n for n, _ in page_counts(browser).values()) == 0, "nothing to match")
    assert all(browser.execute_script("return [...document.querySelectorAll('section.shelf .empty')].map(e => !e.hidden)"))


def test_a_correction_moves_the_sticker_to_its_shelf_for_good(server, library, browser, tmp_path):
    open_library(browser, server)
    db = library["db"]
    path, old = sqlite3.connect(db).execute(
        "select path, label from files where label = 'neutral' order by path limit 1").fetchone()
    before = page_counts(browser)
    figure = browser.find_element("css selector", f"figure[data-path='{path}']")
    figure.find_element("css selector", "select.label option[value='sad']").click()
    figure.find_element("css selector", "button.move").click()
    wait_for(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#shelf-sad figure')].some(f => f.dataset.path === arguments[0])", path),
        "the sticker on the sad shelf")
    after = page_counts(browser)
    assert after["sad"][0] == before["sad"][0] + 1 and after[old][0] == before[old][0] - 1
    moved = browser.find_element("css selector", f"#shelf-sad figure[data-path='{path}']")
    assert f"(yours; model: {old} " in moved.text and "now sad" in browser.find_element("css selector", "#status").text
    screenshot(browser, tmp_path / "browse-corrected.png")
    # What `stickersort label` does: the user's label recorded, the link moved to OUT/sad/.
    assert sqlite3.connect(db).execute("select label, user_label from files where path = ?", [path]).fetchone() == ("sad", "sad")
    link = library["out"] / "sad" / os.path.basename(path)
    assert os.path.realpath(link) == path and not (library["out"] / old / os.path.basename(path)).exists()
    # The model's own label confirmed makes it yours, as `stickersort label` does (before: the
    # button did nothing when the label chosen was the one shown).
    kept = sqlite3.connect(db).execute(
        "select path from files where label = 'happy' and user_label is null order by path limit 1").fetchone()[0]
    browser.find_element("css selector", f"#shelf-happy figure[data-path='{kept}'] button.move").click()
    wait_for(lambda: sqlite3.connect(db).execute("select user_label from files where path = ?", [kept]).fetchone()
             == ("happy",), "the model's label made the user's")


def test_only_the_bound_address_is_answered(server):
    for host in ("evil.example", f"evil.example:{server.port}", "", f"127.0.0.1:{server.port + 1}"):
        status, body = raw(server.url, f"GET /library.json HTTP/1.1\r\nHost: {host}\r\nConnection: close")
        assert " 400 " in status and "unknown Host" in json.loads(body)["error"], host
    status, body = raw(server.url, "GET /library.json HTTP/1.0")  # no Host at all
    assert " 400 " in status and b"/" not in body.split(b"for")[0]
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        assert " 200 " in raw(server.url, f"GET /library.json HTTP/1.1\r\nHost: {host}\r\nConnection: close")[0]


def test_a_correction_from_another_site_is_refused(server, library):
    path = sqlite3.connect(library["db"]).execute("select path from files where label = 'happy' limit 1").fetchone()[0]
    body = json.dumps({"path": path, "label": "angry"}).encode()
    json_type = {"Content-Type": "application/json"}
    # A form post (no CORS preflight) and a JSON post from another origin: refused, nothing changed.
    status, answer = get_json(server.url + "/label", data=f"path={path}&label=angry".encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and "this page only" in answer["error"]
    assert get(server.url + "/label", data=body, headers=json_type | {"Origin": "http://evil.example"})[0] == 403
    assert sqlite3.connect(library["db"]).execute("select label from files where path = ?", [path]).fetchone()[0] == "happy"
    # Bad corrections are one-line JSON errors from label_file, never a traceback.
    for wrong, says in [({"path": path, "label": "ecstatic"}, "unknown label"),
                        ({"path": "/etc/passwd", "label": "sad"}, "no record"), ({"path": 3}, "expected"),
                        # before: a list body and a NUL were answered 500, a relative path taken from
                        # the server's own folder
                        ([path, "sad"], "expected"), ({"path": path + "\0", "label": "sad"}, "full path"),
                        ({"path": os.path.basename(path), "label": "sad"}, "full path"),
                        # before: 500, a lone surrogate being no path a record can have
                        ({"path": "/tmp/\ud800.png", "label": "sad"}, "full path")]:
        status, answer = get_json(server.url + "/label", data=json.dumps(wrong).encode(), headers=json_type)
        assert status == 400 and says in answer["error"], wrong
    status, answer = get_json(server.url + "/no/such/page")
    assert status == 404 and "error" in answer
    # Before: a body of any size was read whole (150 MB took the server from 73 to 513 MB).
    big = json.dumps({"path": path, "label": "sad", "pad": "x" * 100_000}).encode()
    assert get(server.url + "/label", data=big, headers=json_type)[0] == 413


def test_a_sticker_swapped_for_a_link_is_not_served(server, library, tmp_path):
    """The record names a file by hash; what stands at its path now must still be that file."""
    conn = sqlite3.connect(library["db"])
    secret = tmp_path / "secret.txt"  # outside every scanned root
    secret.write_text("not for the web\n" * 10)
    swaps = {"rocket.png": lambda p: os.symlink("/etc/passwd", p), "caption.png": lambda p: os.link(secret, p),
             "confetti.gif": lambda p: os.mkfifo(p)}
    for name, swap in swaps.items():
        path, digest = conn.execute("select path, hash from files where name = ?", [name]).fetchone()
        url = f"{server.url}/sticker/{digest}/{name}"
        status, body = get(url)
        assert status == 200 and body == open(path, "rb").read()
        os.replace(path, tmp_path / name)  # kept, to put back
        swap(path)
        status, body = get(url, timeout=10)
        assert status == 404 and b"not for the web" not in body and b"root:" not in body, name
        assert get(f"{server.url}/view/{digest}/{name}", timeout=10)[0] == 404  # before: 200, a page of nothing
        # Nor is a correction made through it: a hard link or copy in OUT would be of what it leads to.
        status, answer = get_json(server.url + "/label", data=json.dumps({"path": path, "label": "sad"}).encode(),
                                  headers={"Content-Type": "application/json"})
        assert status == 400 and ("no longer the file that was scanned" in answer["error"]
                                  or "changed since its scan" in answer["error"]), (name, answer)
        os.unlink(path)
        os.replace(tmp_path / name, path)
        assert get(url)[0] == 200
    # A touched file (new mtime, same content) is still served: its hash is checked instead.
    path, digest = conn.execute("select path, hash from files where name = 'loading.webp'").fetchone()
    os.utime(path, (1, 1))
    assert get(f"{server.url}/sticker/{digest}")[0] == 200


def test_stickers_with_odd_names_are_served_shown_and_corrected(tmp_path):
    """A line break goes into no Content-Disposition header (was: 500) and is in the URL's name
    (was: 404); a backslash or a byte that is not UTF-8 is escaped in the record, and a correction
    names the record so (was: "no record", the escape escaped again); a mark that reorders text
    is shown escaped, as the command line shows it."""
    from stickersort.sorter.cli import cli
    folder, db = tmp_path / "stickers", tmp_path / "s.db"
    folder.mkdir()
    names = {"line": "new\nline.png", "backslash": "back\\slash.png", "bytes": os.fsdecode(b"bad\xff.png"),
             "bidi": "rtl\u202egnp.exe.png"}
    for i, name in enumerate(names.values()):
        shutil.copy(SAMPLES / ["rocket.png", "hopper.png", "astronaut.jpg", "two_faces.jpg"][i], folder / name)
    scanned = CliRunner().invoke(cli, ["scan", str(folder), "--out", str(tmp_path / "out"), "--db", str(db), "-q"])
    assert scanned.exit_code == 0, scanned.output
    served = Served("browse", "--db", db, "--port", 0)
    try:
        stickers = {s["name"]: s for s in get_json(served.url + "/library.json")[1]["stickers"]}
        assert set(stickers) == {"new\\nline.png", "back\\x5cslash.png", "bad\\xff.png", "rtl\\u202egnp.exe.png"}
        line = stickers["new\\nline.png"]
        for url in (f"/sticker/{line['id']}", f"/sticker/{line['id']}/new%0Aline.png"):
            assert get(served.url + url) == (200, (SAMPLES / "rocket.png").read_bytes()), url
        status, page = get(f"{served.url}/view/{line['id']}/new%0Aline.png")
        assert status == 200 and b"new\\nline.png" in page
        for name in ("back\\x5cslash.png", "bad\\xff.png"):
            body = json.dumps({"path": stickers[name]["path"], "label": "angry"}).encode()
            status, answer = get_json(served.url + "/label", data=body, headers={"Content-Type": "application/json"})
            assert status == 200 and answer["label"] == "angry", answer
        labels = dict(sqlite3.connect(db).execute("select name, user_label from files"))
        assert labels == {"new\nline.png": None, "back\\x5cslash.png": "angry", "bad\\xff.png": "angry",
                          "rtl\u202egnp.exe.png": None}
    finally:
        served.stop()


def test_a_damaged_database_answers_json(library):
    broken = library["tmp"] / "broken.db"
    with sqlite3.connect(library["db"]) as source, sqlite3.connect(broken) as copy:
        source.backup(copy)
    served = Served("browse", "--db", broken, "--port", 0)
    try:
        path, digest = sqlite3.connect(broken).execute("select path, hash from files limit 1").fetchone()
        # Its pages past the first damaged: it opens, and fails as it is read (before: 500 "internal error").
        with open(broken, "r+b") as f:
            f.seek(4096)
            f.write(b"\xde\xad" * ((broken.stat().st_size - 4096) // 2))
        for url in ("/library.json", f"/sticker/{digest}", f"/poster/{digest}"):
            status, answer = get_json(served.url + url)
            assert status == 503 and "malformed" in answer["error"], (url, answer)
        broken.write_bytes(b"not a database at all" * 100)
        status, body = get(served.url + "/library.json")
        assert status == 503 and "error" in json.loads(body) and b"Traceback" not in body
        # A correction meets the same library, and says so the same way (before: 400, as a bad request).
        status, answer = get_json(served.url + "/label", data=json.dumps({"path": path, "label": "sad"}).encode(),
                                  headers={"Content-Type": "application/json"})
        assert status == 503 and "not an SQLite database" in answer["error"], answer
    finally:
        assert served.stop() == 130
    assert "Traceback" not in "".join(served.stderr)


def test_odd_requests_answer_json(server):
    """Before: `//` was redirected by an HTML page, a 405 had no Allow header, and a body nested
    past what json decodes was answered 500."""
    digest = get_json(server.url + "/library.json")[1]["stickers"][0]["id"]
    status, body = raw(server.url, f"GET /sticker//{digest} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close")
    assert " 404 " in status and "error" in json.loads(body)
    try:
        urllib.request.urlopen(urllib.request.Request(server.url + "/library.json", method="DELETE"), timeout=30)
    except urllib.error.HTTPError as e:
        assert e.code == 405 and set(e.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
        assert "error" in json.loads(e.read())
    else:
        raise AssertionError("DELETE answered")
    status, answer = get_json(server.url + "/label", data=b"[" * 60000, headers={"Content-Type": "application/json"})
    assert status == 400 and "expected" in answer["error"]
    # A still file the video reader cannot open: before, "changed since the scan: scan again".
    nod = next(s["id"] for s in get_json(server.url + "/library.json")[1]["stickers"] if s["name"] == "astronaut_nod.webp")
    status, answer = get_json(f"{server.url}/poster/{nod}")
    assert status == 200 or (status == 404 and "cannot decode" in answer["error"]), answer


def test_stickers_filed_through_followed_links_are_served(tmp_path):
    """A scan with --follow-links files a link in DIR and the files of a linked folder; before,
    the page listed them and answered 404 for each. One swapped for other content still is not."""
    from stickersort.sorter.cli import cli
    folder, elsewhere, db = tmp_path / "stickers", tmp_path / "elsewhere", tmp_path / "s.db"
    folder.mkdir()
    elsewhere.mkdir()
    shutil.copy(SAMPLES / "hopper.png", elsewhere / "hopper.png")
    shutil.copy(SAMPLES / "rocket.png", elsewhere / "rocket.png")
    (folder / "linked").symlink_to(elsewhere)
    (folder / "rocket.png").symlink_to(elsewhere / "rocket.png")
    scanned = CliRunner().invoke(cli, ["scan", str(folder), "--out", str(tmp_path / "out"), "--db", str(db),
                                       "-q", "--follow-links"])
    assert scanned.exit_code == 0, scanned.output
    served = Served("browse", "--db", db, "--port", 0)
    try:
        stickers = get_json(served.url + "/library.json")[1]["stickers"]
        assert len(stickers) == 3
        for s in stickers:
            assert get(f"{served.url}/sticker/{s['id']}")[0] == 200, s["path"]
        (folder / "rocket.png").unlink()
        (folder / "rocket.png").symlink_to(elsewhere / "hopper.png")
        (elsewhere / "rocket.png").unlink()
        rocket = next(s for s in stickers if s["path"] == str(folder / "rocket.png"))
        assert get(f"{served.url}/sticker/{rocket['id']}")[0] == 404
    finally:
        served.stop()


def test_a_port_in_use_is_one_line(cli, server, library):
    result = cli("browse", "--db", library["db"], "--port", server.port)
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "cannot listen" in result.output


def test_a_correction_under_another_programs_lock_is_answered_soon_and_leaks_nothing(server, library):
    """Before: a correction waited out a write's minute (eight of them held every request thread,
    so the page too), and each left its database connection open for the server's life."""
    import time
    path = sqlite3.connect(library["db"]).execute("select path from files where label = 'noface' limit 1").fetchone()[0]
    json_type = {"Content-Type": "application/json"}
    correct = lambda label: get_json(server.url + "/label", data=json.dumps({"path": path, "label": label}).encode(),
                                     headers=json_type)
    open_files = lambda: sum(os.path.realpath(f"/proc/{server.proc.pid}/fd/{fd}").startswith(str(library["db"]))
                             for fd in os.listdir(f"/proc/{server.proc.pid}/fd"))
    assert correct("noface")[0] == 200
    before = open_files()
    for label in ("sad", "noface") * 5:
        assert correct(label)[0] == 200
    assert open_files() == before
    holder = sqlite3.connect(library["db"], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        status, answer = correct("sad")
        assert status == 503 and "stayed locked" in answer["error"], answer
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
    import fcntl  # the links' turn, as a scan stopped with Ctrl-Z keeps it: before, waited on for ever
    turn = os.open(f"{library['db']}.lock", os.O_RDWR)
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        started = time.monotonic()
        status, answer = correct("sad")
        assert status == 400 and "for over 5 s" in answer["error"] and time.monotonic() - started < 10, answer
    finally:
        os.close(turn)
    assert sqlite3.connect(library["db"]).execute("select label from files where path = ?", [path]).fetchone()[0] == "noface"


def test_served_on_every_address_it_names_a_url_a_browser_reaches(library):
    """Before: `--host 0.0.0.0` printed http://0.0.0.0:PORT/, which names no machine."""
    served = Served("browse", "--db", library["db"], "--host", "0.0.0.0", "--port", 0)
    try:
        said = next(line for line in served.stderr if "http://" in line)
        assert served.url.startswith("http://127.0.0.1:") and "other addresses" in said
        assert get_json(served.url + "/library.json")[0] == 200
    finally:
        served.stop()
