"""The local scan against `scan --engine ray` on the same files and the same cores, in one run.

    python bench/scale.py                      # 600 copies of stickers-dev, a local Ray
    python bench/scale.py --files 5000 --address HEAD:6379   # on a cluster (see docs/scale.md)

Each scan starts from an empty database and OUT, so every file is read; the fastest of --repeats
counts for each engine (a shared machine disturbs some scans). Ray's figure includes what each
job pays (starting its workers, loading their models), not joining or starting Ray itself, which
is reported apart. The per-worker rate is what a cluster multiplies; the driver's own time per
file (record and link, which stay in one process) bounds what any cluster can reach.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from big_library import DEFAULT_SOURCE, REPO, same_reading
from common import Stages, build_library

GOAL = 0.8  # Ray's files/s as a share of the local scan's, on the same cores
MILLION = 1_000_000


def scan(engine, folder, work, models=None, address=None):
    """One scan into an empty database: (seconds, summary, the driver's record+link seconds)."""
    from stickersort.sorter.scan import Options, Scanner

    stages = Stages()
    name = f"{engine}-{time.monotonic_ns()}"
    scanner = Scanner(Options(out=work / name, db=work / f"{name}.db", engine=engine, address=address),
                      classifier=models and models.classifier, detector=models and models.detector, timer=stages)
    started = time.perf_counter()
    summary = scanner.scan(folder)
    seconds = time.perf_counter() - started
    labels = dict(scanner.store.db.execute("select path, label from files").fetchall())
    return seconds, summary, stages.seconds.get("record", 0) + stages.seconds.get("link", 0), labels, scanner


def measure(folder, work, repeats, address):
    import numpy as np
    import ray

    from stickersort.sorter.engine_ray import connect

    started = time.perf_counter()
    connect(address)
    ray_start = time.perf_counter() - started
    workers = int(ray.cluster_resources().get("CPU", 1))
    warm = None
    best = {}
    for i in range(repeats):
        for engine in ("local", "ray"):
            if engine == "local" and warm is None:  # models loaded and run once, off the clock
                warm = scan("local", folder, work)[4]
                warm.detector.detect(np.zeros((64, 64, 3), np.uint8))
            run = scan(engine, folder, work, models=warm if engine == "local" else None, address=address)
            print(f"  {engine}: {run[1].files / run[0]:.1f} files/s", file=sys.stderr)
            if engine not in best or run[0] < best[engine][0]:
                best[engine] = run
    (local_s, summary, _, local_labels, _), (ray_s, _, driver_s, ray_labels, _) = best["local"], best["ray"]
    if local_labels != ray_labels:
        raise SystemExit("the two engines filed some files differently")
    files = summary.files
    per_worker = files / ray_s / workers
    driver_ceiling = files / driver_s if driver_s else None
    return {"files": files, "cores": os.cpu_count(), "ray_workers": workers, "local_jobs": warm.options.jobs,
            "local_files_per_s": round(files / local_s, 1), "ray_files_per_s": round(files / ray_s, 1),
            "ratio": round(local_s / ray_s, 3), "ray_start_s": round(ray_start, 1),
            "per_worker_files_per_s": round(per_worker, 1),
            "driver_ms_per_file": round(1000 * driver_s / files, 2),
            "driver_ceiling_files_per_s": round(driver_ceiling) if driver_ceiling else None}


def report(r):
    print(f"{r['files']} files, {r['cores']} cores: local scan ({r['local_jobs']} readers) "
          f"{r['local_files_per_s']} files/s, --engine ray ({r['ray_workers']} workers) {r['ray_files_per_s']} files/s")
    print(f"ray / local: {r['ratio']:.2f} (goal >= {GOAL}: {'met' if r['ratio'] >= GOAL else 'MISSED'}); "
          f"starting Ray took {r['ray_start_s']} s more, once")
    print(f"per worker: {r['per_worker_files_per_s']} files/s; driver (record + link): "
          f"{r['driver_ms_per_file']} ms/file, so at most ~{r['driver_ceiling_files_per_s']} files/s from one driver")
    for workers, what in ((r["ray_workers"], "this machine"), (20 * 16, "20 nodes of 16 cores")):
        rate = min(workers * r["per_worker_files_per_s"], r["driver_ceiling_files_per_s"] or float("inf"))
        print(f"1M files on {what} ({workers} workers): ~{MILLION / rate / 3600:.1f} h at {rate:,.0f} files/s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=600, help="byte-unique sticker files to scan")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE if DEFAULT_SOURCE.is_dir() else REPO / "sample_stickers")
    p.add_argument("--dir", type=Path, help="scan this folder instead (on a cluster: one every node mounts)")
    p.add_argument("--address", help="Ray cluster (HOST:PORT); default a local Ray with this machine's cores")
    p.add_argument("--repeats", type=int, default=2, help="scans per engine; the fastest counts")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stickersort-scale-") as tmp:
        folder = args.dir
        if folder is None:
            from stickersort.sorter.media import is_media

            folder = Path(tmp) / "library"
            build_library(sorted(s for s in args.source.iterdir() if is_media(s.name)), folder, args.files,
                          same_reading)
        work = Path(tmp) / "work"
        work.mkdir()
        result = measure(folder.resolve(), work, args.repeats, args.address)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
