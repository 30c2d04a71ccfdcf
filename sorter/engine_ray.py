"""`scan --engine ray`: the files a scan must read, read by a Ray Data job.

The scan stays as it is (sorter/scan.py): it walks, checks each file against its record, and
records and links in walk order, in the driver. Only the reading (hash, decode, detect, crop,
classify, vote: sorter/pipeline.py, the code a local scan runs) moves to Ray workers, each of
which loads the models once (`map_batches` with a callable class, as many workers as the
cluster has CPUs). Workers open the files by the same path the driver walked, so on a cluster
the folder must be on a file system every node mounts at that path.

A worker killed mid-job is restarted and its batch read again (Ray Data's actors retry without
limit); the driver takes the first result for each file and drops any repeat, and a record is
an upsert, so every file is recorded exactly once.
"""
import contextlib
import logging
import os
import pickle
import socket
import sys
import threading
from concurrent.futures import Future
from dataclasses import replace

import numpy as np

from ..model.faces import quiet_stderr
from ..model.inference import ModelError
from . import media
from .pipeline import read_file
from .scan import Read, file_hash

# Files read by one Ray Data job. Each job starts its workers (and loads their models) anew, so
# it is large; the driver holds this many files' outcomes (paths and stats, no pixels) at most twice.
JOB_FILES = 10_000
# Files in one worker call: small enough to spread a folder over every worker and to lose little
# when a worker dies, large enough that Ray's per-task cost stays a small share.
BATCH_FILES = 8
CONNECT_SECONDS = 10  # to reach --address, before Ray's own minutes of retrying
# What a gRPC client sends first: HTTP/2's preface and an empty SETTINGS frame (type 4).
HTTP2_SETTINGS = 4
HTTP2_OPENING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, HTTP2_SETTINGS, 0, 0, 0, 0, 0])
# What a worker's error becomes in the driver, where the scan turns it into an error record.
ERRORS = {"media": media.MediaError, "model": ModelError, "missing": FileNotFoundError,
          "permission": PermissionError}


class EngineError(Exception):
    """The Ray cluster cannot be reached or started; the message is one line for the user."""


class RayReaders:
    """Stands where the scan's thread pool stands: submit() queues a file and returns a Future,
    which a Ray Data job over the queued files settles."""

    def __init__(self, scanner):
        self.scanner = scanner
        self.ahead = 2 * JOB_FILES
        self.queued = []  # (file, future) not yet in a job
        self.jobs = []
        connect(scanner.options.address)

    def submit(self, fn, file):
        future = _Waiting(self)
        self.queued.append((file, future))
        if len(self.queued) >= JOB_FILES:
            self.flush()
        return future

    def flush(self):
        """Starts a job over every queued file; its results settle their futures as they come."""
        if not self.queued:
            return
        batch, self.queued = self.queued, []
        job = threading.Thread(target=self._run, args=(batch,), daemon=True, name="ray-job")
        self.jobs.append(job)
        job.start()

    def _run(self, batch):
        # Paths as bytes: a name that is not UTF-8 has no Arrow string.
        futures = {os.fsencode(file.path): (file, future) for file, future in batch}
        try:
            for row in read_on_ray(list(futures), self.scanner.options):
                if row["path"] in futures:  # a retried batch's repeat: the first result stands
                    file, future = futures.pop(row["path"])
                    self._settle(file, future, pickle.loads(row["result"]))
            if futures:
                raise RuntimeError(f"the Ray job returned no result for {len(futures)} files")
        except BaseException as e:  # the scan stops on it, as on a local reader's crash
            for _, future in futures.values():
                if not future.done():
                    future.set_exception(e)

    def _settle(self, file, future, result):
        kind, value = result
        if kind == "read":
            digest, clip, seen, vote = value
            future.set_result(Read(digest, *self.scanner.record_of(file, digest, clip, seen, vote)))
        elif kind == "os":
            future.set_exception(OSError(*value))
        else:
            future.set_exception(ERRORS[kind](value))

    def shutdown(self, cancel_futures=False):
        """Waits for running jobs; a scan that stops early leaves them to the cluster."""
        if not cancel_futures:
            for job in self.jobs:
                job.join()


class _Waiting(Future):
    """A future whose file may still be queued: asking for its result starts the job."""

    def __init__(self, readers):
        super().__init__()
        self.readers = readers

    def result(self, timeout=None):
        if not self.done():
            self.readers.flush()
        return super().result(timeout)


@contextlib.contextmanager
def joined(address=None):
    """Ray joined (connect) for a scan's block. Ray's driver prints what befalls the job's workers
    ("(raylet) Task ... will be retried") on stdout, from a thread of its own, until Ray is left:
    within the block stdout is stderr, and a block that ends normally leaves Ray, so that stdout
    holds only what the scan prints after it (--json). One a Ctrl-C ends leaves its job as it is,
    and a Ray this process had joined before is left to whoever joined it."""
    joining = connect(address)
    if joining:
        threading.excepthook = _quiet_once_ray_is_gone(threading.excepthook)
    with contextlib.redirect_stdout(sys.stderr):
        yield
        if joining:
            import ray
            ray.shutdown()


def _quiet_once_ray_is_gone(said):
    """A threading.excepthook. A job a stop left running is torn down by Ray's exit handler, under
    threads of its own that go on calling Ray (Ray Data's metadata prefetch, say): each failed with
    a traceback on stderr, after the scan's last line. A thread's failure while Ray is joined is
    said as before (`said`: the hook in place until then)."""
    import ray

    def hook(args):
        if ray.is_initialized() or not issubclass(args.exc_type, ray.exceptions.RayError):
            said(args)
    return hook


def connect(address=None):
    """Joins the cluster at `address` (host:port, or "auto"), or starts a local Ray with this
    machine's cores; a Ray this process already joined is used as it is. True if it joined."""
    # Ray's C++ core logs notes meant for Ray's developers on this process's stderr, the scan's.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # Read as Ray is imported (here, for the command line): no Ray call but ray.init starts a Ray.
    # A job a Ctrl-C left running would otherwise start a second one, dashboard and all, at exit.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    import ray
    from ray.data import DataContext

    if ray.is_initialized():
        return False
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    try:
        if address and address != "auto":
            _check_reachable(address)
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot reach {where}: {_first_line(e)}") from None
    try:
        # Without --address, a Ray of its own: not one RAY_ADDRESS names (a RayJob sets it) or a
        # `ray start` left on this machine, which Ray would join and then refuse num_cpus for.
        # Its node address is the loopback's (Ray's own servers still bind every interface).
        local = {} if address else {"num_cpus": os.cpu_count(), "_node_ip_address": "127.0.0.1"}
        with quiet_stderr(), _signals_kept():  # quiet: where Ray took its log level from, said on fd 2
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, **local)
    except (OSError, RuntimeError, ValueError) as e:
        why = _first_line(e)
        if address and "Failed to connect" in why and not os.environ.get("RAY_AUTH_MODE"):  # Ray names no cause
            why += " (a cluster that requires a token needs RAY_AUTH_MODE=token and its token: docs/scale.md)"
        raise EngineError(f"cannot reach {where}: {why}") from None
    # Its per-job notes, and its errors: a failed task reaches the scan as an exception, said in one
    # line there; a job a Ctrl-C left running logs tracebacks as Ray shuts down under it.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the scan has its own; Ray's would interleave on stderr
    context.print_on_execution_start = False
    return True


def _first_line(e):
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextlib.contextmanager
def _signals_kept():
    """The scan's SIGTERM handler (sorter/interrupt.py: stop at the next safe point, exit 143) kept
    through ray.init, which puts one of its own first thing (sys.exit, wherever it is: a SIGTERM
    while Ray started left its agents running, or aborted the process), and put back after."""
    import signal

    import ray._private.utils as ray_utils
    kept, own = signal.getsignal(signal.SIGTERM), ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = own
        if kept is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, kept)


def _check_reachable(address):
    """A wrong address fails in seconds, where Ray would retry it for minutes, deaf to Ctrl-C: the
    head must take a connection and answer HTTP/2's opening with its settings, as Ray's GCS (a
    gRPC server) does; a web server, such as the dashboard's port, does not."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # Ray writes [::1]:6379
    if not host or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{address!r} is not HOST:PORT")
    with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as head:
        # A cluster with TLS answers a handshake first, which this opening does not make.
        if os.environ.get("RAY_USE_TLS", "0").lower() not in ("0", "false", "") or _answers_http2(head):
            return
    raise ValueError("it does not answer as a Ray head does (give the head's GCS port, 6379 unless set)")


def _answers_http2(head):
    head.sendall(HTTP2_OPENING)
    answer = head.recv(9)  # a frame's header: length (3 bytes), then its type
    return len(answer) >= 4 and answer[3] == HTTP2_SETTINGS


def read_on_ray(paths, options):
    """Rows {path, result} for every path (unordered): a pickled ("read", (digest, clip, faces,
    vote)) or (error kind, message), read by as many workers as the cluster has CPUs."""
    import ray

    workers = max(1, min(int(ray.cluster_resources().get("CPU", 1)), -(-len(paths) // BATCH_FILES)))
    data = ray.data.from_items([{"path": p} for p in paths],
                               override_num_blocks=max(1, -(-len(paths) // BATCH_FILES)))
    settings = {"frames": options.frames, "detector": options.detector,
                "model": str(options.model) if options.model else None}
    return data.map_batches(Reader, batch_size=BATCH_FILES, num_cpus=1, fn_constructor_kwargs=settings,
                            compute=ray.data.ActorPoolStrategy(size=workers)).iter_rows()


class Reader:
    """One Ray worker: the models, loaded once, and each file of a batch read as a local scan
    reads it (Scanner._read: hash, then sorter/pipeline.py)."""

    def __init__(self, frames, detector, model):
        from ..model.faces import make_detector
        from ..model.inference import Classifier

        self.frames = frames
        self.detector = make_detector(detector)
        # One thread: the cluster already runs one worker per CPU.
        self.classifier = Classifier(model, threads=1)

    def __call__(self, batch):
        paths = list(batch["path"])
        return {"path": np.array(paths, dtype=object),
                "result": np.array([pickle.dumps(self.read(os.fsdecode(p))) for p in paths], dtype=object)}

    def read(self, path):
        try:
            digest = file_hash(path)
            clip, seen, vote = read_file(path, self.frames, self.detector, self.classifier)
        except media.MediaError as e:
            return "media", str(e)
        except ModelError as e:  # NaN scores, say: this file's error record, as in a local scan
            return "model", str(e)
        except FileNotFoundError:
            return "missing", path
        except PermissionError:
            return "permission", path
        except OSError as e:
            return "os", (e.errno, e.strerror)
        # The pixels stay here: the record needs only how many frames were sampled.
        clip = replace(clip, frames=[replace(f, rgb=None) for f in clip.frames])
        return "read", (digest, clip, seen, vote)
