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


class PathError(ValueError):
    """A DIR, OUT or DB that a scan cannot use; the message is one line for the user."""


def inside(path, root):
    """Whether path is root or lies under it, symlinks resolved."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_paths(directory, out=None, db=None):
    """The folder to scan (resolved), OUT and the database (absolute, defaults filled in), checked
    before anything is written: (root, out, db), or PathError."""
    directory = Path(directory)
    if not directory.exists():
        raise PathError(f"no such directory: {directory}")
    if not directory.is_dir():
        raise PathError(f"not a directory: {directory}")
    root = Path(os.path.realpath(directory))
    out = Path(os.path.abspath(out)) if out else default_out(root)
    db = Path(os.path.abspath(db)) if db else default_db()
    if inside(root, out):
        raise PathError(f"--out {out} contains the folder being scanned; choose another --out")
    if out.exists() and not out.is_dir():
        raise PathError(f"--out {out} exists and is not a directory")
    if db.is_dir():
        raise PathError(f"--db {db} is a directory; give a file path")
    return root, out, db
