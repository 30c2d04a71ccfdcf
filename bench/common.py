"""What both sides of the benchmark share. Standard library and numpy only: fer_peer.py imports
this inside fer's own virtual environment, where stickersort is not installed."""
import csv
import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

NOFACE = "noface"


def peak_rss_mb():
    """This process's own peak resident set (VmHWM): each tool runs in a process of its own,
    so neither is charged for the other's libraries."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource  # not Linux: ru_maxrss is KiB on Linux/BSD, bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1024), 1)


class Stages:
    """A timer for stickersort's pipeline hook (sorter/pipeline.py; the Scanner passes it on):
    `stages(name)` is a context manager around one stage's work, whose seconds are summed per
    name in `seconds`, reset between repeats."""

    def __init__(self):
        self.seconds = {}
        self.lock = threading.Lock()  # a scan's readers run in threads

    @contextmanager
    def __call__(self, name):
        started = time.perf_counter()
        try:
            yield
        finally:
            with self.lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def stage_report(seconds, total, files):
    """Per stage: seconds, ms per file, share of the total; 'other' is what no stage covers."""
    rows = dict(seconds, other=max(0.0, total - sum(seconds.values())))
    return {name: {"s": round(s, 3), "ms_per_file": round(1000 * s / max(files, 1), 2),
                   "share": round(s / total, 3) if total else 0.0}
            for name, s in rows.items()}


def repeats(job):
    """Scan numbers: at least job["repeats"] scans and at least job["scan_seconds"] of scanning.
    A fast tool's few scans would otherwise fit inside one burst of a noisy host's load while a
    slow tool's spread past it; the same span of time gives both the same chance of a quiet scan."""
    started, i = time.perf_counter(), 0
    while i < job["repeats"] or time.perf_counter() - started < job.get("scan_seconds", 0):
        yield i
        i += 1


def best_run(runs, files, startup):
    """runs: [(seconds, stage seconds)], one per repeat. On a shared machine the fastest repeat
    is the one least disturbed by others, so it is the figure; all are kept."""
    seconds, stages = min(runs, key=lambda run: run[0])
    return {
        "files": files,
        "files_per_s": round(files / seconds, 2),
        "files_per_s_runs": [round(files / s, 2) for s, _ in runs],
        "files_per_s_with_startup": round(files / (seconds + startup), 2),
        "scan_s": round(seconds, 3), "startup_s": round(startup, 3),
        "stages": stage_report(stages, seconds, files),
    }


def faces_per_s(predict, faces, batch, seconds, rounds=3):
    """Steady rate of a model on ready inputs: one warm-up call, then `rounds` rounds of whole
    batches (cycling through the faces), each of seconds / rounds and at least three calls. The
    best round counts, for the reason given in best_run."""
    starts = list(range(0, len(faces) - batch + 1, batch)) or [0]
    predict(faces[:batch])
    rates, calls = [], 0
    for _ in range(rounds):
        done, n, started = 0, 0, time.perf_counter()
        while n < 3 or time.perf_counter() - started < seconds / rounds:
            i = starts[calls % len(starts)]
            done += len(predict(faces[i:i + batch]))
            calls, n = calls + 1, n + 1
        rates.append(done / (time.perf_counter() - started))
    return round(max(rates), 1)


def accuracy(probs, labels):
    import numpy as np

    return round(float((np.asarray(probs).argmax(1) == np.asarray(labels)).mean()), 4)


def read_labels(path):
    """labels.csv (file,label,...) -> {relative path: label}."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row["label"].strip() for row in csv.DictReader(f) if row.get("file")}


def score_stickers(predicted, labels):
    """predicted: {file: label, or None where the file could not be read}.

    Accuracy counts every labelled file ('noface' is a label like the others); face_found is the
    share of face-labelled files where at least one face was found."""
    files = [f for f in labels if f in predicted]
    with_face = [f for f in files if labels[f] != NOFACE]
    faceless = [f for f in files if labels[f] == NOFACE]
    share = lambda hits, pool: round(hits / len(pool), 4) if pool else None
    return {
        "sticker_face_files": len(with_face), "sticker_noface_files": len(faceless),
        "sticker_face_found": share(sum(predicted[f] not in (None, NOFACE) for f in with_face), with_face),
        "sticker_accuracy": share(sum(predicted[f] == labels[f] for f in files), files),
        "sticker_accuracy_face_files": share(sum(predicted[f] == labels[f] for f in with_face), with_face),
        "sticker_noface_correct": share(sum(predicted[f] == NOFACE for f in faceless), faceless),
        "sticker_predictions": {f: predicted[f] for f in files},
    }


def measure(job, end_to_end, model_figures, packages):
    """One tool's figures. Stickers first, in a fresh process, so the first peak reading is the
    scan's alone: what sorting stickers costs."""
    import importlib.metadata as md

    result = end_to_end(job)
    result["peak_rss_mb"] = peak_rss_mb()
    result.update(model_figures(job))
    result["peak_rss_mb_with_model_bench"] = peak_rss_mb()
    result["versions"] = {name: md.version(name) for name in packages}
    return result


def worker_main(end_to_end, model_figures, packages):
    """`python WORKER job.json result.json`: measure(job), written as JSON."""
    job_path, out_path = sys.argv[1:3]
    result = measure(json.loads(Path(job_path).read_text()), end_to_end, model_figures, packages)
    Path(out_path).write_text(json.dumps(result, indent=1))


# --- libraries of many files ---------------------------------------------------------------------

# Trailing bytes that every decoder here stops before (PNG after IEND, JPEG after EOI, GIF after
# its trailer, WebP after its RIFF chunk), making each copy's content, so its hash, its own.
COPY_TAG = b"\0stickersort-copy-%d"
FILES_PER_FOLDER = 1000


def build_library(sources, dest, n, same_reading):
    """n byte-unique copies of `sources` under dest, FILES_PER_FOLDER to a folder, cycling
    through the sources that `same_reading(original, copy)` confirms read as the original does
    (checked on one copy each). Returns the sources kept."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for source in sources:
        probe = dest / f"probe{source.suffix}"
        probe.write_bytes(source.read_bytes() + COPY_TAG % 0)
        if same_reading(source, probe):
            kept.append((source.name, source.read_bytes()))
        probe.unlink()
    if not kept:
        raise SystemExit("no source file reads the same with a byte appended")
    for i in range(n):
        name, data = kept[i % len(kept)]
        folder = dest / f"{i // FILES_PER_FOLDER:04d}"
        if i % FILES_PER_FOLDER == 0:
            folder.mkdir(exist_ok=True)
        (folder / f"{i:07d}-{name}").write_bytes(data + COPY_TAG % i)
    return [name for name, _ in kept]
