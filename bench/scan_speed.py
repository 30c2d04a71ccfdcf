"""Cold vs warm `stickersort scan` of a folder, and `query` latency, in one run.

    python bench/scan_speed.py [DIR]     # default: ../shared/datasets/stickers-dev

The warm scan is reported as a ratio of the cold one measured in the same run (the target: < 10 %).
Query latency is the whole command (interpreter start included), the way a user feels it.
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared" / "datasets" / "stickers-dev"


def timed(args):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stickersort.sorter", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        sys.exit(f"stickersort {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return time.perf_counter() - started, proc.stdout


def main():
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not folder.is_dir():
        sys.exit(f"no folder {folder} (pass one, or put the shared data sets beside the repo)")
    with tempfile.TemporaryDirectory() as tmp:
        scan = ["scan", folder, "--out", f"{tmp}/out", "--db", f"{tmp}/s.db", "--json", "-q"]
        cold_wall, out = timed(scan)
        cold = json.loads(out)
        warm_wall, out = timed(scan)
        warm = json.loads(out)
        query = [timed(["query", "happy", "--db", f"{tmp}/s.db"])[0] for _ in range(5)]
    n = cold["files"]
    print(f"folder: {folder} ({n} files)")
    print(f"{'':<22}{'cold':>10}{'warm':>10}{'warm/cold':>11}")
    print(f"{'scan loop (s)':<22}{cold['seconds']:>10.2f}{warm['seconds']:>10.3f}{warm['seconds'] / cold['seconds']:>11.3f}")
    print(f"{'whole command (s)':<22}{cold_wall:>10.2f}{warm_wall:>10.2f}{warm_wall / cold_wall:>11.3f}")
    print(f"{'files/s (scan loop)':<22}{n / cold['seconds']:>10.1f}{n / warm['seconds']:>10.0f}")
    print(f"{'files/s (command)':<22}{n / cold_wall:>10.1f}{n / warm_wall:>10.1f}")
    print(f"query happy: median {statistics.median(query) * 1000:.0f} ms, max {max(query) * 1000:.0f} ms (5 runs)")


if __name__ == "__main__":
    main()
