"""Files of the same content are read once per model: a twin (a copy, a file saved twice) reuses
the reading of its content, in flight in this scan or recorded in the database, instead of
decoding and classifying the same bytes again. Meme folders repeat files.

Called from the scan's reading threads: the database is read through a connection of the
caller's own, and what is in flight is shared under a lock.
"""
import sqlite3
import threading
import urllib.parse
from concurrent.futures import Future
from contextlib import closing


class Twins:
    def __init__(self, db_path):
        self.db_path = db_path
        self._lock = threading.Lock()
        # (digest, video) -> Future of (record, faces), from the start of its first file's reading until
        # that file is recorded (done()); from then on the database has it.
        self._reading = {}
        self._recorded_now = set()  # (digest, video) keys recorded since this Twins was made (for --rescan)

    def read_once(self, digest, model_id, read, recorded=True, video=False):
        """(record, faces, twin): the reading of this content by this model that a file before
        this one got (twin True), or read()'s. recorded False (--rescan): of the database's
        records, only those this scan made count. video: the file is read as a video (by its
        name's ending); the same bytes read by the image decoders are another reading (an MP4
        named .gif is an error there), so only a reading by the same reader is shared."""
        key = (digest, video)
        with self._lock:
            first = self._reading.get(key)
            if first is None:
                mine = self._reading[key] = Future()
        if first is not None:
            shared = first.result()
            return (*shared, True) if shared else (*read(), False)
        try:
            found = self._recorded(key, model_id) if recorded or key in self._recorded_now else None
            result = found or read()
        except BaseException:
            # The error may be that file's own (it vanished): a twin reads for itself.
            mine.set_result(None)
            with self._lock:
                self._reading.pop(key, None)
            raise
        mine.set_result(result)
        return (*result, found is not None)

    def done(self, digest, video=False):
        """The first file of this content is recorded: later twins find it in the database."""
        key = (digest, video)
        with self._lock:
            self._reading.pop(key, None)
            self._recorded_now.add(key)

    def _recorded(self, key, model_id):
        """A readable file of this content recorded by this model, by the same reader: its record
        and face rows."""
        digest, video = key
        uri = f"file:{urllib.parse.quote(str(self.db_path))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=60)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("select * from files where hash = ? and model_id = ? and error is null "
                               "and (kind = 'video') = ? order by scanned_at desc limit 1",
                               [digest, model_id, video]).fetchone()
            if row is None:
                return None
            faces = conn.execute("select * from faces where file = ? order by id", [row["path"]]).fetchall()
        return dict(row), [dict(f) for f in faces]
