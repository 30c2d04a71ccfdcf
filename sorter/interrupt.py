"""Ctrl-C and SIGTERM: for the commands that run until stopped or keep scratch files (scan, watch,
live, evaluate --stickers), a stop at a safe point (deferred); for work with no safe points of its
own (train's reading and export, a soup), SIGTERM raised as Ctrl-C is (terminated_as_interrupted).

The first signal only asks the work to end at its next safe point (between two files, between two
frames), so the database and OUT are left as a finished step leaves them; a second Ctrl-C stops at
once (KeyboardInterrupt). Work that ends early because its Stop was set raises media.Interrupted.
Either way the command exits 128 + the signal's number: 130 for Ctrl-C.
"""
import signal
import threading
from contextlib import contextmanager


class Stop(threading.Event):
    """Set when the work should end; `signum`: the signal that asked, if one did."""
    signum = None


@contextmanager
def deferred(signals=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, those signals set the Stop it yields. Python runs signal handlers in
    the main thread only: elsewhere nothing sets it."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def asked(signum, frame):
        stop.signum = stop.signum or signum
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    before = {s: signal.signal(s, asked) for s in signals}
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@contextmanager
def terminated_as_interrupted():
    """Within the block, SIGTERM raises Signalled where it lands, as Ctrl-C raises KeyboardInterrupt:
    work with no safe points of its own (train's reading and export, a soup) unwinds, its temporary
    files removed, where SIGTERM's default ended the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raised(signum, frame):
        raise Signalled(signum)

    before = signal.signal(signal.SIGTERM, raised)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class Signalled(KeyboardInterrupt):
    """Work a signal ended at a point of its own choosing, not a Stop's (training, between two
    batches): `signum`, for the exit status."""

    def __init__(self, signum):
        super().__init__()
        self.signum = signum


def exit_status(signum):
    """The shell's convention for a run a signal ended."""
    return 128 + (signum or signal.SIGINT)
