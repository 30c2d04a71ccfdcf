"""The long fuzz run: N hostile files (tests/hostile.py) through `media.read`, then one `scan`.

    nice -n 19 python bench/fuzz_long.py [--inputs 10000] [--seed 0] [--keep DIR]

Each phase runs in a child process, so a native crash in a decoder is caught and named instead of
ending the run; the child's peak RSS comes from the kernel (wait4, tests/procs.py). Prints one
JSON summary and exits 1 when anything other than MediaError escaped the reader, a child
crashed, a file ended without a record, the database or OUT fails tests/invariants.py's checks,
or a file took longer than the per-file limit.
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# MAX_SECONDS of decoding, then the uninterruptible rest: one frame, detection, classification.
PER_FILE_LIMIT_S = 30.0


def write_inputs(folder, n, seed):
    import hostile
    folder.mkdir(parents=True)
    for i in range(n):
        suffix, data = hostile.random_input(random.Random(seed * 1_000_003 + i))
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}{suffix}").write_bytes(data)


def child(phase, folder, work):
    """Run one phase in a child until it finishes, restarting after a crash (a signal, or an
    exception that ended it) past the file that caused it; returns (per-file lines, crashes,
    peak RSS in MiB)."""
    from procs import run_measured
    log, crashes, peak = work / f"{phase}.jsonl", [], 0
    log.unlink(missing_ok=True)
    while True:
        code, _, stderr, rss = run_measured([__file__, "--child", phase, folder, work])
        peak = max(peak, rss)
        if code == 0:
            return [d for d in _lines(log) if "started" not in d and d.get("outcome") != "crash"], crashes, peak
        dead = [d["file"] for d in _lines(log) if "started" in d][-1]
        crashes.append({"file": dead, "exit": code, "stderr": (stderr.strip().splitlines() or [""])[-1]})
        with open(log, "a") as f:
            f.write(json.dumps({"file": dead, "outcome": "crash"}) + "\n")


def _lines(log):
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def run_child(phase, folder, work):
    """In the child: one log line when a file starts (to name a crash) and one when it ends. After
    a crash the reader goes on past the files done; the scan starts again (the files done are
    unchanged, and a scan forgets files it does not see) and only skips the file that crashed."""
    log = open(work / f"{phase}.jsonl", "a", buffering=1)
    lines = _lines(work / f"{phase}.jsonl")
    if phase == "read":
        _read_all(folder, log, {d["file"] for d in lines if "started" not in d})
    else:
        _scan_all(folder, work, log, {d["file"] for d in lines if d.get("outcome") == "crash"})


def _read_all(folder, log, done):
    from stickersort.sorter import media
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if name in done:
            continue
        log.write(json.dumps({"file": name, "started": True}) + "\n")
        started = time.monotonic()
        try:
            clip = media.read(path)
            outcome = f"{clip.kind}: {len(clip.frames)} frames"
        except media.MediaError:
            outcome = "MediaError"
        except Exception as e:  # the bug this run exists to find
            outcome = f"ESCAPED {type(e).__name__}: {e}"
        log.write(json.dumps({"file": name, "outcome": outcome,
                              "seconds": round(time.monotonic() - started, 3)}) + "\n")


def _scan_all(folder, work, log, crashed):
    from stickersort.sorter.scan import Options, Scanner
    scanner = Scanner(Options(out=work / "out", db=work / "fuzz.db"))

    def timed(paths):  # the scan's own progress hook: the time between two files is one file's
        for path in paths:
            name = str(Path(path).relative_to(folder))  # the walk's paths are str
            if name in crashed:
                continue
            log.write(json.dumps({"file": name, "started": True}) + "\n")
            started = time.monotonic()
            yield path
            log.write(json.dumps({"file": name, "seconds": round(time.monotonic() - started, 3)}) + "\n")

    scanner.scan(folder, progress=timed)


def summarize(n, folder, work, read, scan):
    import sqlite3
    from invariants import check_db, check_out
    (read_lines, read_crashes, read_rss), (scan_lines, scan_crashes, scan_rss) = read, scan
    outcomes = {}
    for d in read_lines:
        kind = d["outcome"].split(":")[0] if not d["outcome"].startswith("ESCAPED") else "ESCAPED"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    conn = sqlite3.connect(work / "fuzz.db")
    root = os.path.realpath(folder)
    recorded = {os.path.relpath(p, root) for (p,) in conn.execute("select path from files")}
    labels = dict(conn.execute("select coalesce(label, 'error'), count(*) from files group by 1"))
    slowest = sorted(read_lines + scan_lines, key=lambda d: -d.get("seconds", 0))[:5]
    try:
        check_db(work / "fuzz.db")
        check_out(str(work / "out"), work / "fuzz.db")
        consistent = True
    except AssertionError as e:
        consistent = f"no: {e}"
    return {
        "inputs": n, "reader_outcomes": outcomes,
        "escaped": [d for d in read_lines if d["outcome"].startswith("ESCAPED")][:20],
        "crashes": read_crashes + scan_crashes,
        "scanned": len({d["file"] for d in scan_lines}), "recorded": len(recorded), "labels": labels,
        "without_record": sorted(d["file"] for d in scan_lines if d["file"] not in recorded)[:20],
        "database_and_out_consistent": consistent,
        "max_seconds_read": max((d.get("seconds", 0) for d in read_lines), default=0),
        "max_seconds_scan": max((d.get("seconds", 0) for d in scan_lines), default=0),
        "slowest": slowest, "per_file_limit_s": PER_FILE_LIMIT_S,
        "peak_rss_mib_read": read_rss, "peak_rss_mib_scan": scan_rss,
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return run_child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here and keep the files (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="stickersort-fuzz-"))
    folder = work / "in"
    for old in (folder, work / "out"):
        shutil.rmtree(old, ignore_errors=True)
    for old in work.glob("fuzz.db*"):
        old.unlink()
    started = time.monotonic()
    write_inputs(folder, args.inputs, args.seed)
    read = child("read", folder, work)
    scan = child("scan", folder, work)
    result = summarize(args.inputs, folder, work, read, scan)
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(work)
    bad = (result["escaped"] or result["crashes"] or result["without_record"]
           or result["database_and_out_consistent"] is not True
           or max(result["max_seconds_read"], result["max_seconds_scan"]) > PER_FILE_LIMIT_S)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
