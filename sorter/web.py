"""`stickersort live --web`: the preview page, its MJPEG stream and the stickers that match.

Werkzeug's threaded server, never in debug mode (its debugger runs code sent by the browser):
every viewer streams from the one capture loop, and a viewer that goes away only ends its own
response.
"""
import logging
import os
import re
import threading

import cv2
from flask import Flask, Response, abort, jsonify, send_file
from werkzeug.serving import make_server

from ..model.labels import UNSURE
from . import media
from .live import LiveError

SHA256 = re.compile(r"[0-9a-f]{64}")


def create_app(live, matches=None):
    app = Flask(__name__)

    @app.get("/")
    def page():
        return app.send_static_file("live.html")

    @app.get("/stream.mjpg")
    def stream():
        return Response(_mjpeg(live), mimetype="multipart/x-mixed-replace; boundary=frame")

    @app.get("/state.json")
    def state():
        now = live.now
        rows = matches(now["mood"]) if matches else []
        stickers = [{"id": r["hash"], "name": r["name"], "path": r["path"], "kind": r["kind"],
                     "label": r["label"], "confidence": r["confidence"], "guess": r["guess"],
                     "unsure": r["label"] == UNSURE} for r in rows]
        return jsonify(now | {"library": matches is not None, "stickers": stickers})

    def library_file(digest):
        # Files are found by content hash in the database, never by a path from the URL, so no
        # URL can reach a file outside the library.
        path = matches.file(digest) if matches and SHA256.fullmatch(digest) else None
        if not path or not os.path.isfile(path):
            abort(404)
        return path

    @app.get("/sticker/<digest>")
    def sticker(digest):
        return send_file(library_file(digest))

    @app.get("/poster/<digest>")
    def poster(digest):
        """A frame of a video sticker: browsers play few of the codecs clips come in (not mp4v)."""
        try:
            frame = media.read(library_file(digest), 1).frames[0].rgb
        except media.MediaError:
            abort(404)
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1]
        return Response(jpeg.tobytes(), mimetype="image/jpeg")

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
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web {text}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def serve(live, host, port, matches=None, show=None, echo=print):
    """Serve the page while `live` runs in this thread; returns the run's stats."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    try:
        server = make_server(host, port, create_app(live, matches), threaded=True)
    except OSError as e:
        raise LiveError(f"--web {host}:{port}: cannot listen there: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    echo(f"live preview at http://{shown}:{server.port}/ (Ctrl-C stops)")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return live.run(show)
    finally:
        server.shutdown()
        server.server_close()
