"""Where things go when the user does not say: discoverable in --help and printed by scan."""
import os
import re
import stat
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
    """Text for a path that SQLite can store, one-to-one: a UTF-8 name is its own key, a byte that
    is not UTF-8 becomes \\xNN, and so that no name can pass for another, a backslash becomes
    \\x5c (the name `\\xff` is `\\x5cxff`, the byte 0xFF `\\xff`). key_path undoes it."""
    return os.fsencode(path).replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def key_path(key):
    """The path a key names (path_key's inverse)."""
    if "\\" not in key:
        return key
    return os.fsdecode(re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), key.encode()))


# Characters that would act on a terminal rather than show: controls (C0, DEL, C1: colours,
# window titles, clearing) and the marks that reorder text (a name could show another's).
_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def shown(text):
    """text safe to print on a terminal: every control or reordering character as \\xNN/\\uNNNN."""
    return _UNSHOWN.sub(lambda m: ascii(m[0])[1:-1], str(text))


class PathError(ValueError):
    """A DIR, OUT or DB that a scan cannot use; the message is one line for the user."""


def scanned_as(path):
    """What a scan of path scans: a folder resolved; a file in its folder resolved, its own name
    kept, so that a one-file scan of a link in DIR is that link, as DIR's walk lists it."""
    if os.path.isdir(path):
        return Path(os.path.realpath(path))
    head, name = os.path.split(path)  # not abspath: `link/../a.png` is where the link leads, then up
    return Path(os.path.realpath(head or ".")) / name


def inside(path, root):
    """Whether path is root or lies under it, symlinks resolved."""
    return within(os.path.realpath(path), [os.path.realpath(root)])


def within(real, places):
    """Whether the resolved path `real` is one of `places` (resolved) or lies under one: a link
    followed to OUT's happy/ enters OUT as surely as one to OUT."""
    return any(real == p or real.startswith(p.rstrip(os.sep) + os.sep) for p in places)


def bare(folder):
    """Is a scanned folder gone, or empty whole? A drive that is not mounted leaves its mount
    point so, and its files are not known to be gone (a folder the user emptied looks the same:
    `forget` drops its records)."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # cannot look: its files count as not known to be gone anyway


def scan_paths(directory, out=None, db=None, files=False, recall=None):
    """The folder to scan (resolved), OUT and the database (absolute, defaults filled in), checked
    before anything is written: (root, out, db, last), or PathError. With files, DIRECTORY may also
    be one sticker file (root is then that file, and its folder stands for the folder scanned).
    recall(folder, db): the settings of the folder's last scan (store.settings_for), whose OUT
    stands in for a missing `out`; `last` is what it gave ({} for none)."""
    from .media import SUFFIXES, is_media  # here: OpenCV is no import for query and stats
    if not str(directory).strip():  # Path("") is the current folder: a script's unset $DIR
        raise PathError("an empty DIRECTORY would mean the current folder; name it (`.`) if that is meant")
    if out is not None and not str(out).strip():
        raise PathError("an empty --out would mean the current folder; name it (`.`) if that is meant")
    directory = Path(directory)
    if not directory.exists():
        raise PathError(f"no such {'file or ' * files}directory: {directory}")
    if files and directory.is_file() and not is_media(directory):
        raise PathError(f"not a sticker file: {directory} (scan reads {', '.join(sorted(SUFFIXES))})")
    if not directory.is_dir() and not (files and directory.is_file()):
        raise PathError(f"not a {'sticker file or ' * files}directory: {directory}")
    root = scanned_as(directory)
    folder = root if root.is_dir() else root.parent
    if marked := next((f for f in (folder, *folder.parents) if is_out(f)), None):
        where = "is" if marked == folder and root.is_dir() else "is in"
        raise PathError(f"{directory} {where} {marked}, an OUT that stickersort made (its entries are links and "
                        f"copies of stickers): scan the folder of the originals")
    db = Path(os.path.realpath(db if db else default_db()))
    last = (recall and recall(path_key(folder), db)) or {}
    if last and not out and not os.path.isdir(key_path(last["out"])):
        raise PathError(f"{key_path(last['out'])}, where the last scan of {folder} linked its stickers, is gone (moved, "
                        f"or on a drive not mounted?): nothing done; give --out, where it is now or a new one")
    # Resolved: links are computed from where OUT really is (a symlinked home or macOS's /tmp
    # would leave them dangling), and OUT's marker names the database however it was spelt.
    out = Path(os.path.realpath(out)) if out else Path(key_path(last["out"])) if last else default_out(folder)
    if inside(root, out) or within(str(root), [str(out)]):  # a link in OUT, scanned alone, is one of OUT's
        raise PathError(f"--out {out} contains the {'folder' if root.is_dir() else 'file'} being scanned; "
                        f"choose another --out")
    if out.exists() and not out.is_dir():
        raise PathError(f"--out {out} exists and is not a directory")
    if db.is_dir():
        raise PathError(f"--db {db} is a directory; give a file path")
    for option, path in (("--out", out), ("--db", db)):
        if blocker := _file_on_the_way(path):
            raise PathError(f"{option} {path}: {blocker} is a file, not a folder")
    _check_out(out, db)
    return root, out, db, last


def _file_on_the_way(path):
    """The nearest existing folder of path's, when it is not a folder (so nothing can be made there)."""
    parent = next((p for p in path.parents if os.path.lexists(p)), None)
    return parent if parent is not None and not parent.is_dir() else None


# OUT's marker: the database that owns OUT. Another database's scan into it would file every
# sticker a second time beside the first.
OWNER_FILE = ".stickersort-db"


def lock_path(db):
    """The lock file beside the database that scans and watches sharing it take turns by."""
    return Path(f"{db}.lock")


def _check_out(out, db):
    """Refuses, before anything is made, an OUT another database owns, an entry in OUT where a
    label folder goes that is not a folder (a user's file, or a link to elsewhere), and a lock
    file that is not a file."""
    from ..model.labels import EMOTIONS, NOFACE, UNSURE
    owner = out_owner(out)
    if owner is not None and not names_db(owner, db):
        raise PathError(f"{out} belongs to the database {owner}: use --db {owner}, or choose another "
                        f"--out (or delete {out / OWNER_FILE} to give it to {db})")
    for label in (*EMOTIONS, NOFACE, UNSURE):
        folder = out / label
        if os.path.lexists(folder) and (folder.is_symlink() or not folder.is_dir()):
            raise PathError(f"{folder} is in the way of the {label} folder (not a folder of its own); "
                            f"move it, or choose another --out")
    lock = lock_path(db)
    if os.path.lexists(lock) and (lock.is_symlink() or not lock.is_file()):
        raise PathError(f"{lock} (the database's lock file) is not a plain file; remove it")


def is_out(folder):
    """Whether folder is marked as some database's OUT."""
    return os.path.lexists(os.path.join(folder, OWNER_FILE))


def names_db(owner, db):
    """Whether an OUT marker's text (out_owner) names the database at db, both resolved: a folder
    moved and linked back is where it was. Not a hard link's other name: SQLite keeps a WAL and a
    lock beside each name, so two names are two databases that would corrupt each other."""
    return owner is not None and os.path.realpath(owner) == os.path.realpath(db)


def out_owner(out):
    """The database OUT's marker names (a str), or None when it has none."""
    try:
        fd = os.open(Path(out) / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PathError(f"cannot read {Path(out) / OWNER_FILE}: {e.strerror}; remove it") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathError(f"{Path(out) / OWNER_FILE} is not stickersort's marker; remove it")
        return os.fsdecode(f.read(4096).rstrip(b"\n"))
