"""A big library on one machine: N byte-unique sticker files, scanned cold, scanned again
unchanged, then `query` and `stats` on its database, each as a user runs it (a process of its
own, interpreter start included), with the peak memory of each.

    python bench/big_library.py --files 100000          # the issue's size (about an hour cold here)
    python bench/big_library.py --files 2000 --keep DIR # a quick look; keep the files for next time

Goals (issue 27): unchanged rescan <= 3 s at 100k files, query and stats <= 0.3 s each, peak
memory <= 300 MB whatever N. The files are copies of stickers-dev (or sample_stickers/) with a
unique tail that every decoder ignores, checked per source before use.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build_library

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "stickers-dev"
GOALS = {"rescan_s": 3.0, "query_s": 0.3, "stats_s": 0.3, "peak_mb": 300}
# Peak RSS of the command alone: a child's ru_maxrss would count the benchmark it was forked from.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "stickersort.sorter", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(f"peak_kib={usage.ru_maxrss} status={os.waitstatus_to_exitcode(status)}", file=sys.stderr)
"""


def stickersort(*args):
    """`stickersort ARGS` in a process of its own: (seconds, stdout, peak MB)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, args)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    rest, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    peak, status = (int(field.split("=")[1]) for field in last.split())
    if status not in (0, 1):
        raise SystemExit(f"stickersort {' '.join(map(str, args))} failed ({status}):\n{rest[-2000:]}")
    return seconds, proc.stdout, round(peak / 1024)


def same_reading(original, copy):
    from stickersort.sorter import media

    try:
        a, b = media.read(original), media.read(copy)
    except media.MediaError:
        return False
    return (a.frames_total == b.frames_total and len(a.frames) == len(b.frames)
            and all((x.rgb == y.rgb).all() for x, y in zip(a.frames, b.frames)))


def measure(folder, work):
    db, out = work / "library.db", work / "out"
    scan = ["scan", folder, "--out", out, "--db", db, "--json", "-q"]
    cold_wall, cold_out, cold_peak = stickersort(*scan)
    cold = json.loads(cold_out)
    warm_wall, warm_out, warm_peak = stickersort(*scan)
    warm = json.loads(warm_out)
    assert warm["classified"] == 0, "the rescan read files again: they were not unchanged"
    query = [stickersort("query", "happy", "--db", db) for _ in range(3)]
    stats = [stickersort("stats", "--db", db) for _ in range(3)]
    return {
        "files": cold["files"],
        "cold_files_per_s": round(cold["files"] / cold["seconds"], 1), "cold_s": round(cold_wall, 1),
        "cold_peak_mb": cold_peak,
        "rescan_s": round(warm["seconds"], 3), "rescan_command_s": round(warm_wall, 2), "rescan_peak_mb": warm_peak,
        "query_s": round(statistics.median(q[0] for q in query), 3), "query_rows": query[0][1].count("\n"),
        "stats_s": round(statistics.median(s[0] for s in stats), 3),
        "peak_mb": max([cold_peak, warm_peak] + [q[2] for q in query + stats]),
    }


def report(r):
    rows = [("cold scan", f"{r['cold_files_per_s']} files/s ({r['cold_s']} s)", ""),
            ("unchanged rescan (scan loop)", f"{r['rescan_s']} s", f"<= {GOALS['rescan_s']} s"),
            ("unchanged rescan (command)", f"{r['rescan_command_s']} s", ""),
            ("query happy (command)", f"{r['query_s']} s, {r['query_rows']} rows", f"<= {GOALS['query_s']} s"),
            ("stats (command)", f"{r['stats_s']} s", f"<= {GOALS['stats_s']} s"),
            ("peak memory", f"{r['peak_mb']} MB (cold {r['cold_peak_mb']}, rescan {r['rescan_peak_mb']})",
             f"<= {GOALS['peak_mb']} MB")]
    print(f"{r['files']:,} files")
    for what, value, goal in rows:
        print(f"  {what:<30}{value:<40}{goal}")
    met = {"rescan_s": r["rescan_s"], "query_s": r["query_s"], "stats_s": r["stats_s"], "peak_mb": r["peak_mb"]}
    print("goals: " + ", ".join(f"{k} {'met' if v <= GOALS[k] else 'MISSED'}" for k, v in met.items()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=100_000, help="files in the library")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE if DEFAULT_SOURCE.is_dir() else REPO / "sample_stickers",
                   help="the stickers to copy")
    p.add_argument("--keep", type=Path, help="build (or reuse) the library here instead of a temporary folder")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stickersort-big-") as tmp:
        folder = args.keep or Path(tmp) / "library"
        built = folder / "built.json"
        if built.exists() and json.loads(built.read_text())["files"] != args.files:
            raise SystemExit(f"{folder} holds a library of another size; pass another --keep")
        if not built.exists():
            started = time.perf_counter()
            from stickersort.sorter.media import is_media

            sources = sorted(s for s in args.source.iterdir() if is_media(s.name))
            kept = build_library(sources, folder, args.files, same_reading)
            built.write_text(json.dumps({"files": args.files, "sources": kept}))
            print(f"built {args.files:,} files from {len(kept)} of {len(sources)} sources in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        work = Path(tmp) / "work"
        work.mkdir()
        result = measure(folder, work)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
