"""What makes a folder a run's OUT (train's or soup's), checked before any data is read: a new
run never writes into another run's folder, and an OUT that cannot be made fails at once rather
than after the work."""
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .data import DataError

# Any of these, and the folder holds a run (finished or not) that a new one would overwrite.
RUN_FILES = ("options.json", "history.csv", "best.keras", "metrics.json", "soup.json", "stickernet.onnx")
# What else a run writes under fixed names: a user's file there would be overwritten, and a
# half-deleted run's backup/ (`rm OUT/*` leaves it) taken up as the new run's own.
WRITTEN = ("curves.png", "confusion.png", "samples.png", "backup", "swa")


def holds_run(out):
    return any((Path(out) / name).exists() for name in RUN_FILES)


def check_new(out, hint="pass another --out"):
    """OUT for a new run: a folder holding none of a run's files, or one that can be made."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise DataError(f"{out} is a broken link; --out names the run's folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; --out names the run's folder")
    if holds_run(out):
        raise DataError(f"{out} already holds a run; {hint}")
    present = [name for name in WRITTEN if os.path.lexists(out / name)]
    if present:
        raise DataError(f"{out} holds {', '.join(present)}, which a new run would write over; pass another --out")
    check_writable(out)


def check_writable(out, named=None):
    """OUT, or the nearest folder above it that exists, must be a folder this user can write
    (NAMED, if given, is what the message calls it: a file to be written in OUT, say)."""
    near = Path(os.path.abspath(out))
    while not near.exists():
        near = near.parent
    if not near.is_dir() or not os.access(near, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {named or out}: {near} is not a folder you can write to")


@contextmanager
def claimed(record, new=False):
    """A run's own RECORD (options.json, soup.json) locked within the block, for one process to
    write the run at a time: new, it must not exist yet (O_EXCL: of two runs started at once into
    one OUT, both checked before either wrote, the second stops here), and a run that stops before
    writing it leaves none; else no other process may hold it."""
    try:
        held = open(record, "x" if new else "r+")  # r+: NFS locks a file open for writing only
    except FileExistsError:
        raise DataError(f"{record.parent} holds a run started since this one began; pass another --out") from None
    with held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another stickersort is writing the run in {record.parent}; let it end first") from None
        except OSError:  # a file system without locks (ENOLCK): the guard is lost, not the run
            pass
        try:
            yield
        except BaseException:
            if new and os.path.getsize(record) == 0:  # else it would pass for a run, to resume or not
                os.unlink(record)
            raise
