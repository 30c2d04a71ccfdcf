"""`stickersort live --web`: the preview page, its MJPEG stream and the stickers that match.

Served as sorter/serving.py serves every page (waitress; Host checked; errors as JSON; sticker
files re-checked before they are sent): every viewer streams from the one capture loop, and a
viewer that goes away only ends its own response.
"""
from flask import Response, abort, jsonify

from ..model.labels import UNSURE
from .live import LiveError
from .paths import shown
from .serving import Server, ServeError, Streams, exposure_note, flask_app, guard, sticker_routes
from .store import StoreError


def create_app(live, matches=None):
    app = flask_app(__name__)
    streams = Streams()

    @app.get("/")
    def page():
        return app.send_static_file("live.html")

    @app.get("/stream.mjpg")
    def stream():
        return streams.open(Response(_mjpeg(live), mimetype="multipart/x-mixed-replace; boundary=frame"))

    @app.get("/state.json")
    def state():
        now = live.now
        try:
            rows = matches(now["mood"]) if matches else []
        except StoreError as e:  # the database gone or damaged under the preview, which goes on
            return jsonify(now | {"library": True, "stickers": [], "library_error": str(e)})
        # A label you gave has no score: the model's is for its own vote (as `query` says).
        stickers = [{"id": r["hash"], "name": shown(r["name"]), "path": r["path"], "kind": r["kind"],
                     "label": r["label"], "confidence": None if r["user_label"] else r["confidence"],
                     "guess": r["guess"], "unsure": r["label"] == UNSURE, "yours": r["user_label"] is not None}
                    for r in rows]
        return jsonify(now | {"library": matches is not None, "stickers": stickers})

    def rows(digest):
        try:
            return matches.rows(digest) if matches else []
        except StoreError as e:
            abort(503, str(e))

    sticker_routes(app, rows)
    return app


def _mjpeg(live):
    seq = 0
    while True:
        jpeg, seq = live.next_jpeg(seq)
        if jpeg is None:
            return
        yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)


def parse_address(text):
    """"HOST:PORT", ":PORT" or "PORT" -> (host, port); the host defaults to 127.0.0.1."""
    if text.startswith("[") and text.endswith("]"):
        raise ValueError(f"--web {text}: no port; expected e.g. {text}:8765")
    host, _, port = text.rpartition(":")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"--web {text}: expected HOST:PORT, an IPv6 host in brackets, e.g. [::1]:8765")
    host = host.strip("[]") or "127.0.0.1"
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"--web {text}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def serve(live, host, port, matches=None, show=None, echo=print):
    """Serve the page while `live` runs in this thread; returns the run's stats."""
    app = create_app(live, matches)
    try:
        server = Server(app, host, port)
    except ServeError as e:
        raise LiveError(f"--web {e}") from None
    guard(app, host, server.port)
    if note := exposure_note(host, "the camera and the stickers"):
        echo(note)
    echo(f"live preview at {server.where} (Ctrl-C stops)")
    server.start()
    try:
        return live.run(show)
    finally:
        server.stop()
