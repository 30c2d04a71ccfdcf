"""Where things go when the user does not say: discoverable in --help and printed by scan."""
import os
from pathlib import Path


def default_db():
    if os.environ.get("STICKERSORT_DB"):
        return Path(os.environ["STICKERSORT_DB"]).absolute()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "stickersort" / "stickersort.db"


def default_out(root):
    root = Path(root)
    return root.parent / f"{root.name}-by-emotion"


def path_key(path):
    """Text for a path that SQLite can store, even when the name is not valid UTF-8 (the bad
    bytes become \\xNN); one path always gives the same key."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
