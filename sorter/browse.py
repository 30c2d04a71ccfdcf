"""`stickersort browse`: the library as a page, shelf by shelf (each expression, then unsure and
noface), searchable by name, each sticker with its confidence and a button that corrects its
label as `stickersort label` does.

Served as sorter/serving.py serves every page: Host checked, errors as JSON, sticker files
re-checked before they are sent. A correction comes only as a JSON POST from the page's own
origin: a form on another site cannot send one (CSRF).
"""
import os
import threading

from flask import abort, jsonify, request

from ..model.labels import EMOTIONS, NOFACE, UNSURE
from .paths import key_path, shown
from .serving import Server, exposure_note, flask_app, guard, recorded, sticker_routes
from .store import Store, StoreError

SHELVES = (*EMOTIONS, UNSURE, NOFACE)
# How long a page's read waits for a database another program holds locked (a scan never does:
# its writes leave readers be), before a 503: every request thread would wait as long.
PAGE_LOCK_WAIT_S = 5


def create_app(db):
    app = flask_app(__name__)

    def store():
        try:
            return Store(db, readonly=True, wait=PAGE_LOCK_WAIT_S)
        except StoreError as e:
            abort(503, str(e))

    def read(what, *args):
        s = store()
        try:
            return what(s, *args)
        except StoreError as e:  # damaged, or locked, since the open
            abort(503, str(e))
        finally:
            s.close()

    @app.get("/")
    def page():
        return app.send_static_file("browse.html")

    @app.get("/library.json")
    def library():
        rows = read(Store.shelved, SHELVES)
        return jsonify(shelves=list(SHELVES), corrections=[*EMOTIONS, NOFACE],
                       stickers=[{"id": r["hash"], "name": shown(r["name"]), "path": r["path"], "kind": r["kind"],
                                  "label": r["label"], "yours": r["user_label"] is not None, "guess": r["guess"],
                                  "confidence": _confidence(r)} for r in rows])

    sticker_routes(app, lambda digest: read(recorded, digest))

    @app.post("/label")
    def label():
        from .library import LibraryError, NoLibrary, label_file
        origin = request.headers.get("Origin")
        if not request.is_json or (origin and origin != request.host_url.rstrip("/")):
            abort(403, "a correction comes from this page only")
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # nested past what json decodes
            body = None
        path, label = (body.get("path"), body.get("label")) if isinstance(body, dict) else (None, None)
        if not isinstance(path, str) or not isinstance(label, str):
            abort(400, 'expected {"path": ..., "label": ...}')
        # The page sends a recorded path, as recorded (sorter/paths.py's key: a backslash or a byte
        # that is not UTF-8 escaped), which is whole: anything else is not the library's.
        if not os.path.isabs(path) or "\0" in path or not _is_utf8(path):
            abort(400, "expected a recorded file's full path")
        try:
            row = label_file(db, key_path(path), label, wait=PAGE_LOCK_WAIT_S)
        except LibraryError as e:  # the library unusable, as /library.json answers it, or this request
            abort(503 if isinstance(e, NoLibrary) else 400, str(e))
        return jsonify(path=row["path"], label=row["label"], link=row["link"])

    return app


def serve(db, host, port, echo=print, stop=None):
    """Serve the library's page until Ctrl-C (or stop is set). Raises serving.ServeError."""
    app = create_app(db)
    server = Server(app, host, port)
    guard(app, host, server.port)
    if note := exposure_note(host, "the stickers and relabel them"):
        echo(note)
    echo(f"library {db} at {server.where} (Ctrl-C stops)")
    server.start()
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):  # a short wait: Ctrl-C reaches this thread between waits
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _confidence(row):
    """The model's confidence in its own vote (`guess`; older records have a label alone), none
    where it found no face."""
    return row["confidence"] if row["guess"] or (row["label"] in EMOTIONS and not row["user_label"]) else None


def _is_utf8(text):
    """Whether text is UTF-8, as every recorded path is (JSON may carry a lone surrogate)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
