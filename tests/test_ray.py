"""`scan --engine ray` on a real local Ray: the same records and links as a local scan; every
file recorded exactly once, and stdout the summary alone, when a worker is killed mid-job; one Ray
and a quiet stderr when the scan is stopped; an address that is no Ray head refused in seconds."""
import http.server
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from glob import glob
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, tree_hash, wait_for
from invariants import check_db, check_out, query
from procs import stickersort


WORKER_TITLE = "ray::MapWorker(MapBatches(Reader))"  # a Ray Data worker's process title


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds); the scans join it."""
    ray = pytest.importorskip("ray", reason="needs the [ray] extra")
    from stickersort.sorter import engine_ray

    engine_ray.connect()
    yield
    ray.shutdown()


def test_a_model_error_on_a_worker_is_that_files_error_record(local_ray, cli, tmp_path):
    """As in a local scan. Before: the job failed whole, exit 70 and a Ray traceback, nothing recorded."""
    from test_redteam_media import onnx_model
    model = onnx_model(tmp_path / "nan.onnx")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLES / "hopper.png", src / "face.png")
    shutil.copy(SAMPLES / "confetti.gif", src / "plain.gif")
    got = {}
    for engine in ("local", "ray"):
        db = tmp_path / f"{engine}.db"
        result = cli("scan", src, "--engine", engine, "--model", model, "--out", tmp_path / engine, "--db", db, "-q")
        assert result.exit_code == 1, result.output
        got[engine] = query(db, "select name, label, error from files order by name")
    assert got["ray"] == got["local"] and "NaN" in got["ray"][0]["error"] and got["ray"][1]["label"] == "noface"


def test_without_an_address_a_scan_starts_its_own_ray_whatever_ray_address_says(tmp_path):
    """Before: with RAY_ADDRESS set (a RayJob sets it) or a `ray start` on the machine, Ray joined
    that instead and refused the local Ray's num_cpus: exit 2, "cannot reach a local Ray"."""
    pytest.importorskip("ray", reason="needs the [ray] extra")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLES / "hopper.png", src / "face.png")
    args = ["scan", src, "--engine", "ray", "--out", tmp_path / "out", "--db", tmp_path / "s.db", "-q"]
    done = subprocess.run(stickersort(args), capture_output=True, text=True, timeout=300,
                          env=os.environ | {"RAY_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 0, done.stderr
    assert [r["label"] for r in query(tmp_path / "s.db", "select label from files")] == ["neutral"]


def test_without_the_extra_the_ray_engine_names_it(monkeypatch, cli, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = cli("scan", SAMPLES, "--engine", "ray", "--out", tmp_path / "out", "--db", tmp_path / "s.db")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --engine ray needs ray, not in the base install: pip install -e {shlex.quote(f'{ROOT}[ray]')}"]
    assert not (tmp_path / "s.db").exists()


def library(root, copies):
    """`copies` folders of the sample stickers, so names repeat (links need unique names, chosen
    in walk order), plus a file that is no sticker (an error record)."""
    for i in range(copies):
        shutil.copytree(SAMPLES, root / f"set{i}", ignore=shutil.ignore_patterns("*.py", "*.csv", "*.md"))
    (root / "set0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    # A name that is not UTF-8 (Latin-1 "café"), which the job must carry as bytes.
    shutil.copy(SAMPLES / "hopper.png", root / "set0" / os.fsdecode(b"caf\xe9.png"))
    return root


def records(db, out):
    """Everything a scan made, with what must differ between two scans left out: when it was
    made, face row ids, and where OUT is."""
    files = query(db, "select * from files order by path")
    for row in files:
        row.pop("scanned_at")
    faces = query(db, "select file, frame, time, x, y, w, h, detector_score, label, probs from faces "
                      "order by file, frame, x, y")
    links = query(db, "select link, file, label, mode, target from links order by link")
    for row in links:
        row["link"] = os.path.relpath(row["link"], out)
    made = sorted((str(p.relative_to(out)), os.readlink(p)) for p in Path(out).rglob("*") if p.is_symlink())
    return files, faces, links, made


def test_ray_scan_makes_the_records_and_links_a_local_scan_makes(local_ray, cli, tmp_path):
    root = library(tmp_path / "in", copies=2)
    before = tree_hash(root)
    runs = {}
    for engine in ("local", "ray"):
        out, db = tmp_path / engine / "out", tmp_path / engine / "s.db"
        result = cli("scan", root, "--engine", engine, "--out", out, "--db", db, "-q")
        assert result.exit_code == 1, result.output  # the broken file
        runs[engine] = records(db, out)
        check_db(db)
        check_out(str(out), db)
    local, on_ray = runs["local"], runs["ray"]
    assert len(local[0]) == 26 and len(local[3]) == 25  # every file, every sticker linked
    for what, a, b in zip(("files", "faces", "links", "OUT"), local, on_ray):
        assert a == b, what
    # Again: nothing changed, so nothing is read (no job) and nothing moves.
    again = cli("scan", root, "--engine", "ray", "--out", tmp_path / "ray" / "out",
                "--db", tmp_path / "ray" / "s.db", "--json", "-q")
    assert '"classified": 0' in again.output and '"unchanged": 25' in again.output and '"errors": 1' in again.output
    assert records(tmp_path / "ray" / "s.db", tmp_path / "ray" / "out")[2:] == on_ray[2:]
    assert tree_hash(root) == before
    import ray
    assert ray.is_initialized()  # the module's Ray, which the scans found joined, is left to it


def busy_workers():
    """Pids of the Ray Data workers in the middle of a batch (this test's own local Ray started
    them); a worker's title says what it runs."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title == f"{WORKER_TITLE}.submit":
            found.append(int(pid))
    return found


def test_a_worker_killed_mid_job_leaves_every_file_recorded_once_and_stdout_the_summary(tmp_path):
    pytest.importorskip("ray", reason="needs the [ray] extra")
    root = library(tmp_path / "in", copies=4)
    db, out = tmp_path / "s.db", tmp_path / "out"
    args = ["scan", root, "--engine", "ray", "--json", "-q", "--out", out, "--db", db]
    proc = subprocess.Popen(stickersort(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = wait_for(busy_workers, "a Ray Data worker reading a batch", seconds=300)[0]
    os.kill(victim, signal.SIGKILL)  # mid-batch: Ray must start another worker and read it again
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr  # the broken file
    # Ray says that the worker died and its batch is retried, from a thread of its own: on stderr,
    # not in the JSON a script reads on stdout.
    assert "(raylet)" in stderr and "will be retried" in stderr
    summary = json.loads(stdout)
    assert (summary["files"], summary["classified"], summary["errors"]) == (50, 49, 1)
    rows = query(db, "select path, count(*) as n from files group by path")
    assert len(rows) == 50 and {r["n"] for r in rows} == {1}
    assert len(query(db, "select link from links")) == 49  # one per sticker; the broken file has none
    check_db(db)
    check_out(str(out), db)


def test_a_writing_store_does_not_import_pandas_which_the_ray_extra_installs(tmp_path):
    """sqlite-utils would import pandas (seconds on a busy machine) only to know its types. (Reading
    stores, for query and stats, import no sqlite-utils at all: tests/test_query.py.)"""
    import subprocess
    import sys

    code = (f"import sys; from stickersort.sorter.store import Store; Store({str(tmp_path / 's.db')!r}).close(); "
            "import sqlite_utils.db as d; print('pandas' in sys.modules, d.pd)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None"]


@pytest.mark.parametrize("args, says", [
    (["-j", "2"], "--jobs is for the local engine: a Ray scan runs one reader per CPU of the cluster"),
    (["--address", ""], "--address: expected HOST:PORT, or auto")])
def test_options_a_ray_scan_would_ignore_are_refused(cli, tmp_path, args, says):
    pytest.importorskip("ray", reason="needs the [ray] extra")
    result = cli("scan", SAMPLES, "--engine", "ray", *args, "--out", tmp_path / "out", "--db", tmp_path / "s.db")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [f"Error: {says}"]


def test_an_address_that_is_no_ray_head_fails_in_seconds(tmp_path):
    # The dashboard's port, say: it takes the connection, and Ray retried it for 13 minutes.
    pytest.importorskip("ray", reason="needs the [ray] extra")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{web.server_address[1]}"
    started = time.monotonic()
    proc = subprocess.run(stickersort(["scan", SAMPLES, "--engine", "ray", "--address", address,
                                       "--out", tmp_path / "out", "--db", tmp_path / "s.db"]),
                          capture_output=True, text=True, timeout=300)
    web.shutdown()
    assert not (tmp_path / "s.db").exists()  # exit 2: nothing done
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"Error: cannot reach the Ray cluster at {address}: it does not answer as a Ray head does "
        "(give the head's GCS port, 6379 unless set)"]
    assert time.monotonic() - started < 60


def test_a_ray_head_passes_the_address_check(local_ray):
    import ray

    from stickersort.sorter.engine_ray import _check_reachable
    _check_reachable(ray.get_runtime_context().gcs_address)


def test_a_sigterm_while_ray_starts_stops_the_scan_in_one_line_and_leaves_no_ray(tmp_path):
    """Before: ray.init's own handler, in place while Ray started, exited with status 15 or 130 in
    silence (or aborted, 134), leaving Ray's dashboard and runtime-env agents running."""
    pytest.importorskip("ray", reason="needs the [ray] extra")
    root = library(tmp_path / "in", copies=1)
    args = ["scan", root, "--engine", "ray", "-q", "--out", tmp_path / "out", "--db", tmp_path / "s.db"]
    started = time.time()
    proc = subprocess.run(stickersort(args, at_call=("SIGTERM", "start_ray_processes", 1)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("stickersort: interrupted")
    wait_for(lambda: not _orphans_since(started), "Ray's agents to go", seconds=30)


def _orphans_since(started):
    """Ray processes left to init (parent 1) that were started since `started`."""
    rows = subprocess.run(["ps", "-eo", "ppid=,etimes=,args="], capture_output=True, text=True).stdout.splitlines()
    young = time.time() - started + 1
    return [r for r in rows if (f := r.split(None, 2))[0] == "1" and int(f[1]) <= young and f[2].startswith("ray::")]


@pytest.mark.parametrize("signame, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_leaves_one_ray_and_a_quiet_stderr(tmp_path, signame, status):
    """SIGTERM before: ray.init's own handler exited at once with status 15, a C++ stack on stderr,
    wherever the scan was (between a record and its link, say)."""
    pytest.importorskip("ray", reason="needs the [ray] extra")
    root = library(tmp_path / "in", copies=10)  # so that its job is still running at the exit
    db, out = tmp_path / "s.db", tmp_path / "out"
    args = ["scan", root, "--engine", "ray", "-q", "--out", out, "--db", db]
    started = time.time()
    proc = subprocess.Popen(stickersort(args, at_call=(signame, "upsert", 3)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == status, stderr
    # Once Ray's log level was said here, and a warning about SIGTERM.
    assert stderr.strip().splitlines() == [
        "stickersort: interrupted; every file done so far is recorded and linked; scan again to finish"]
    # A Ray session's folder is named for the process that started it. The job left running
    # once started a second Ray, dashboard and all, as the process exited.
    ray_dir = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    sessions = [s for s in glob(str(ray_dir / f"session_*_{proc.pid}")) if os.stat(s).st_mtime >= started - 1]
    assert len(sessions) == 1  # (an older one of the same pid, a process long gone, aside)
    check_db(db)
    check_out(str(out), db)


# What Ray Data's metadata-prefetch thread did in CI, made certain: a thread of a job a stop left
# running calls Ray once Ray's exit handler has shut it down. An atexit handler registered before
# Ray's runs after it, and waits for that thread.
_RAY_GONE_UNDER_A_THREAD = """
import atexit, sys, threading
gone = threading.Event()
atexit.register(lambda: (gone.set(), caller.join(30)))
from stickersort.sorter.engine_ray import joined

def call_ray():
    gone.wait()
    ray.wait([ref], timeout=0.1)  # on a Ray that is gone: RaySystemError

with joined():
    import ray
    ref = ray.put(1)
    caller = threading.Thread(target=call_ray, daemon=True)
    caller.start()
    if sys.argv[1] == "stopped":
        raise SystemExit(130)
"""


@pytest.mark.parametrize("how", ["stopped", "ended"])
def test_a_ray_thread_failing_after_ray_is_gone_says_nothing(how):
    """Before: a stop left Ray Data's prefetch thread calling Ray after Ray's exit handler had
    shut it down, a traceback on stderr after the scan's one line (a CI run, once in many)."""
    pytest.importorskip("ray", reason="needs the [ray] extra")
    proc = subprocess.run([sys.executable, "-c", _RAY_GONE_UNDER_A_THREAD, how], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == (130 if how == "stopped" else 0), proc.stderr
    assert proc.stderr == ""
