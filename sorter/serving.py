"""What the live and browse pages share: the server under them, the guards in front of every
route, and sticker files served only while they are still what was scanned.

The server is waitress (bench/web_servers.py chose it): a fixed pool of request threads, a cap
on open connections below the descriptor limit, and idle connections closed after a timeout,
so a thousand idle clients only delay a request until they time out, and nothing is left of
them once they go; so are connections that leave their responses unread (_close_stalled). Endless responses (the MJPEG stream) each hold a thread; a cap keeps
threads free for requests and answers 503 beyond it.
"""
import hashlib
import html
import ipaddress
import logging
import os
import re
import resource
import socket
import stat
import threading
from urllib.parse import quote

import cv2
from flask import Flask, Response, abort, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, ServiceUnavailable
from werkzeug.routing import PathConverter

from . import media
from .paths import inside, shown

THREADS = 8  # request threads
MAX_STREAMS = 4  # endless responses at once, fewer than THREADS: the rest answer requests
IDLE_TIMEOUT = 10  # seconds a connection may sit without a request before it is closed
STALL_TIMEOUT = 15  # seconds a connection may leave what is sent to it unread before it is closed
MAX_BODY = 1 << 16  # bytes a request may carry: a correction is a short JSON object
STOP_WAIT = 5  # seconds Ctrl-C waits for requests in flight
SPARE_DESCRIPTORS = 256  # kept for the model, the database and the files served
MAX_DESCRIPTORS = 4096  # the soft limit is raised towards the hard one, up to this
STREAM_BUFFER = 1 << 20  # bytes queued per connection: a slow viewer gets fresh frames, not a backlog
SHA256 = re.compile(r"[0-9a-f]{64}")


# Addresses only this machine reaches: serving anywhere else is said once the server is bound.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_note(host, what):
    """The note for a server other machines may reach, or None."""
    return None if host in LOCAL_HOSTS else f"note: serving on {host}: other machines can see {what}"


class ServeError(Exception):
    """A one-line message for the user: the address cannot be listened on."""


# ---- the Host header -------------------------------------------------------------------------

def host_check(host, port):
    """A test for Host headers: true for those naming the address the server listens on. A page
    on another site whose own DNS name now points at 127.0.0.1 (DNS rebinding) sends that name,
    and is refused. Listening on every address (0.0.0.0, ::), any IP address and this machine's
    names are accepted: a rebinding attack needs a name of its own."""
    bound = _ip(host)
    everywhere = bound is not None and bound.is_unspecified
    ips = {bound} if bound is not None else _resolved(host, port)
    names = {host.lower()} if bound is None else set()
    if everywhere:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    if everywhere or any(ip.is_loopback for ip in ips):
        names.add("localhost")

    def allowed(value):
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", value or "")
        if not m:
            return False
        name, given = (m[1], m[2]) if m[1] else (m[3], m[4])
        if int(given or 80) != port:
            return False
        ip = _ip(name)
        return name.lower() in names if ip is None else everywhere or ip in ips
    return allowed


def _resolved(name, port):
    try:
        return {_ip(info[4][0].split("%")[0]) for info in socket.getaddrinfo(name, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return set()


def _ip(text):
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def flask_app(import_name):
    """A page's Flask app, its URLs taken as written: Werkzeug would answer a `//` in a path with
    an HTML page redirecting, where it now meets guard's JSON 404."""
    app = Flask(import_name)
    app.url_map.merge_slashes = False
    return app


def guard(app, host, port):
    """Every route of app answers only Host headers naming (host, port), and every error as
    JSON {"error": ...}: never a traceback, never an HTML page."""
    allowed = host_check(host, port)

    @app.before_request
    def _check_host():
        if not allowed(request.environ.get("HTTP_HOST", "")):
            return jsonify(error="unknown Host header: this server answers only requests for "
                                 f"{_shown(host)}:{port}"), 400

    @app.errorhandler(HTTPException)
    def _http_error(e):
        allow = [(k, v) for k, v in e.get_headers() if k == "Allow"]  # a 405 says what is allowed
        return jsonify(error=e.description), e.code, allow

    @app.errorhandler(Exception)
    def _error(e):
        logging.getLogger("stickersort").error("request %s failed: %s: %s", request.path, type(e).__name__, e)
        return jsonify(error="internal error"), 500
    return app


# Listening on every address, the page is browsed at one of them: 0.0.0.0 names no machine, and
# browsers on some systems cannot reach it.
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


def _shown(host):
    return f"[{host}]" if ":" in host else host


# ---- endless responses -------------------------------------------------------------------------

class Streams:
    """At most `limit` endless responses at once; one more is refused with 503."""

    def __init__(self, limit=MAX_STREAMS):
        self.slots = threading.BoundedSemaphore(limit)

    def open(self, response):
        """response, holding a slot until the client leaves or the stream ends."""
        if not self.slots.acquire(blocking=False):
            raise ServiceUnavailable(f"too many streams open (at most {MAX_STREAMS}); close a viewer and retry")
        response.call_on_close(self.slots.release)
        return response


# ---- sticker files ---------------------------------------------------------------------------

def recorded(store, digest):
    """The readable files recorded with this content hash, by path, each with `followed`: whether
    its folder's scan followed links (--follow-links), so that it may be one, or lie beyond one."""
    if not SHA256.fullmatch(digest):
        return []
    return [row | {"followed": store.follows_links(row["root"])} for row in store.readable_with_hash(digest)]


def open_recorded(row):
    """The file a record names, opened, if it still is the file that was scanned: a regular file
    (not a link, a FIFO or a device) inside its scanned root, of the recorded size and mtime or
    else of the recorded content. None otherwise: someone may have put a link to /etc/passwd in
    its place. The checks are made on the open file, so nothing can be swapped in after them.
    Where its scan followed links, it is followed too, and beyond the root must hold the recorded
    content."""
    from .paths import key_path
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    if not row.get("followed"):
        flags |= os.O_NOFOLLOW
    try:
        f = os.fdopen(os.open(key_path(row["path"]), flags), "rb")
    except OSError:
        return None
    try:
        if _still_scanned(f, row):
            f.seek(0)
            return f
    except OSError:
        pass
    f.close()
    return None


def _still_scanned(f, row):
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        return False
    where = f"/proc/self/fd/{f.fileno()}"
    real = os.readlink(where) if os.path.islink(where) else os.path.realpath(f.name)
    if inside(real, row["root"]):
        if (st.st_size, st.st_mtime_ns) == (row["size"], row["mtime_ns"]):
            return True
    elif not row.get("followed"):
        return False
    return hashlib.file_digest(f, "sha256").hexdigest() == row["hash"]


def _servable(row):
    f = open_recorded(row)
    if f:
        f.close()
    return f is not None


def send_recorded(rows):
    """The first of rows whose file is still what was scanned, as a response; 404 if none is."""
    for row in rows:
        f = open_recorded(row)
        if f:
            # A header cannot hold a name's line break or other control character.
            name = re.sub(r"[\x00-\x1f\x7f]", "_", row["name"])
            return send_file(f, download_name=name, conditional=False, max_age=0)
    return jsonify(error=NO_SUCH_STICKER), 404


NO_SUCH_STICKER = "no such sticker (or its file changed since the scan: scan again)"


VIEW = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ margin: 0; background: #16181d; display: grid; place-items: center; min-height: 100vh; }}
img, video {{ max-width: 100vw; max-height: 100vh; }}</style></head>
<body>{content}</body></html>
"""


def view_page(rows, name=None):
    """A page of its own for a sticker, titled with its file name (not its hash; of the copies of
    its content, the one named): the sticker, or for a clip a player with a frame as its poster
    (browsers play few clip codecs)."""
    # The named copy, else the first that can be served: not a page of a picture that cannot load.
    named = [r for r in rows if r["name"] == name]
    row = next((r for r in named + [r for r in rows if r not in named] if _servable(r)), None)
    if row is None:
        return jsonify(error=NO_SUCH_STICKER), 404
    src = f"/sticker/{row['hash']}/{quote(row['name'])}"
    title = html.escape(shown(row["name"]))
    content = (f'<video src="{src}" poster="/poster/{row["hash"]}" controls autoplay muted loop></video>'
               if row["kind"] == "video" else f'<img src="{src}" alt="{title}">')
    return VIEW.format(title=title, content=content)


def poster_of(rows):
    """The first frame of the first of rows still as scanned, as a JPEG response; 404 if none."""
    undecoded = False
    for row in rows:
        f = open_recorded(row)
        if not f:
            continue
        with f:  # decoded from the file checked, not from whatever its path names by now
            capture = media.video_capture(f)
            ok, bgr = capture.read()
            capture.release()
        if ok:
            return Response(cv2.imencode(".jpg", bgr)[1].tobytes(), mimetype="image/jpeg")
        undecoded = True
    # A file still as scanned that the video reader cannot open (an animated WebP): no scan helps.
    abort(404, "no poster: the video reader cannot decode this sticker" if undecoded else NO_SUCH_STICKER)


class _Name(PathConverter):
    """A file name after the hash, whatever it holds: a line break too (`path:` takes none)."""
    regex = "(?s:[^/].*?)"


def sticker_routes(app, rows_of):
    """The routes both pages serve stickers by. rows_of(digest): the records of that content.
    Files are found by content hash in the database, never by a path from the URL; the name after
    the hash is only what the browser titles a tab with."""
    app.url_map.converters["name"] = _Name

    @app.get("/sticker/<digest>")
    @app.get("/sticker/<digest>/<name:name>")
    def sticker(digest, name=None):
        return send_recorded(rows_of(digest))

    @app.get("/view/<digest>/<name:name>")
    def view(digest, name):
        return view_page(rows_of(digest), name)

    @app.get("/poster/<digest>")
    @app.get("/poster/<digest>/<name:name>")
    def poster(digest, name=None):
        """A frame of a video sticker: browsers play few of the codecs clips come in (not mp4v)."""
        return poster_of(rows_of(digest))


# ---- the server ------------------------------------------------------------------------------

class Server:
    """app served by waitress on (host, port) from a thread of its own, until stop()."""

    def __init__(self, app, host, port):
        from waitress.server import create_server
        for name in ("waitress", "waitress.queue"):  # not a line per connection over the limit
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            self.server = create_server(
                app, host=host, port=port, threads=THREADS, connection_limit=_connection_limit(),
                channel_timeout=IDLE_TIMEOUT, cleanup_interval=1, asyncore_use_poll=True,
                outbuf_high_watermark=STREAM_BUFFER, max_request_body_size=MAX_BODY, ident="stickersort",
                expose_tracebacks=False)
        except (OSError, ValueError) as e:
            raise ServeError(f"{_shown(host)}:{port}: cannot listen there: {getattr(e, 'strerror', None) or e}") from None
        _close_stalled(self.server)
        # A name that resolves to several addresses gets a socket on each (waitress' MultiSocketServer).
        listening = getattr(self.server, "effective_listen", None)
        self.host, self.port = host, int(listening[0][1] if listening else self.server.effective_port)
        ip = _ip(host)
        every = ip is not None and ip.is_unspecified  # 0.0.0.0, ::, ::0
        self.url = f"http://{_shown(LOOPBACK[ip.version] if every else host)}:{self.port}/"
        # What the user is told: where this machine browses it, and that others can.
        self.where = self.url + (" (and at this machine's other addresses)" if every else "")
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="stickersort-server")

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Requests in flight get STOP_WAIT seconds (streams end with their source), then no
        connections. In that order: a request thread that ends after close() wakes the closed
        server's loop through a closed descriptor and prints a traceback."""
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_WAIT)
        self.server.close()


def can_listen(host, port):
    """ServeError now, rather than after a watch's first scan, where (host, port) cannot be
    listened on. Taken in between, the Server itself says so then."""
    Server(lambda environ, start_response: [], host, port).stop()  # waitress wants an app


def _close_stalled(server):
    """Connections that leave their responses unread for STALL_TIMEOUT are closed, as waitress
    closes idle ones. Without this, a client that asks and never reads (a stream, or requests
    sent one after another on one connection) holds a request thread, and a stream's slot, for
    good once its buffer is full: a few such clients would shut everyone else out."""
    from waitress.server import BaseWSGIServer
    servers = [server] if isinstance(server, BaseWSGIServer) else [
        s for s in server.map.values() if isinstance(s, BaseWSGIServer)]  # one per address
    for each in servers:
        def maintenance(now, each=each, idle=each.maintenance):  # run by waitress's loop, every cleanup_interval
            idle(now)
            for channel in list(each.active_channels.values()):
                if channel.total_outbufs_len and channel.last_activity < now - STALL_TIMEOUT:
                    # Closed now, in the loop's thread: a socket nobody reads never becomes
                    # writable, so a will_close would never be seen. The request thread waiting
                    # to write wakes, finds the client gone, and ends its response.
                    channel.handle_close()
        each.maintenance = maintenance


def _connection_limit():
    """Open connections allowed: what the descriptor limit leaves, raised first towards the hard
    limit. Beyond it waitress stops accepting (they wait in the kernel's queue) instead of failing
    accept() in a loop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MAX_DESCRIPTORS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(16, min(soft, MAX_DESCRIPTORS) - SPARE_DESCRIPTORS)
