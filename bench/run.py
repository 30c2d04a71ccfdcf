"""stickersort against fer (https://github.com/justinshenk/fer), same machine, same data.

    python bench/run.py --json out.json              # measure both, print the table, write JSON
    python bench/run.py --json out.json --markdown   # ... and write bench/COMPARISON.md
    python bench/run.py --from out.json --markdown   # only rewrite COMPARISON.md from a JSON

fer runs in a virtual environment of its own outside the repo (made on first use, then reused),
each tool in a process of its own (bench/ours.py, bench/fer_peer.py) so each peak RSS is its own.
Needs the shared data sets beside the repo (../shared); it is a benchmark, not a test.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stickersort-bench"
MARKDOWN = BENCH / "COMPARISON.md"

# fer itself without its dependencies: a plain install pulls facenet-pytorch, so PyTorch and
# CUDA, for the MTCNN detector that fer does not use by default.
FER = "fer==25.10.3"
PEER_REQUIREMENTS = [
    "tensorflow-cpu>=2.16,<2.22",  # 2.21 still has tf.lite.Interpreter (deprecated), which fer uses
    "opencv-contrib-python>=4.8,<5",  # 5 drops cv2.data and the Haar cascades
    "setuptools<81",  # fer.fer imports pkg_resources, which setuptools 81 removes
    "pillow", "pandas", "matplotlib", "tqdm", "requests", "moviepy<2", "ffmpeg-python",
]

# key, label, format, which way is better
FIGURES = [
    ("privatetest_accuracy", "FER2013 PrivateTest accuracy", "{:.2%}", "higher"),
    ("faces_per_s_b1", "classifier faces/s, batch 1", "{:,.0f}", "higher"),
    ("faces_per_s_b64", "classifier faces/s, batch 64", "{:,.0f}", "higher"),
    ("files_per_s", "stickers: files/s end to end", "{:,.2f}", "higher"),
    ("sticker_face_found", "stickers: face found (face files)", "{:.1%}", "higher"),
    ("sticker_accuracy", "stickers: accuracy (all files)", "{:.1%}", "higher"),
    ("peak_rss_mb", "peak RSS of the sticker scan, MB", "{:,.0f}", "lower"),
]
EXTRA = [
    ("startup_s", "startup s (imports, model load)", "{:.2f}", "lower"),
    ("files_per_s_with_startup", "stickers: files/s incl. startup", "{:,.2f}", "higher"),
    ("files_per_s_one_reader", "stickers: files/s, one file at a time", "{:,.2f}", "higher"),
    ("sticker_accuracy_face_files", "stickers: accuracy (face files)", "{:.1%}", "higher"),
    ("sticker_noface_correct", "stickers: noface files right", "{:.1%}", "higher"),
    ("peak_rss_mb_with_model_bench", "peak RSS incl. PrivateTest, MB", "{:,.0f}", "lower"),
]
SPEED_GOAL = 10  # issue 27's goal for files/s against fer's, beside the first bar of 5x
STAGES = ("decode", "detect", "crop", "classify", "vote", "hash", "record", "link", "other")


class BenchError(Exception):
    """Something the user must fix before the benchmark can run; the message says what."""


def data_paths(shared):
    paths = {"fer2013": shared / "datasets" / "fer2013" / "fer2013.csv.gz",
             "stickers": shared / "datasets" / "stickers-dev",
             "labels": shared / "datasets" / "stickers-dev" / "labels.csv"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise BenchError("the benchmark needs the shared data sets beside the repository; missing:\n  "
                         + "\n  ".join(missing) + "\n(pass --shared PATH if they are elsewhere)")
    return paths


# --- fer's virtual environment -------------------------------------------------------------

def peer_python(venv):
    return venv / "bin" / "python"


def ensure_peer(venv, log):
    """Make (or reuse) fer's venv; a stamp records what it was made with, so a changed
    requirement list reinstalls instead of silently running on the old set."""
    stamp = venv / "stickersort-bench.json"
    wanted = {"fer": FER, "requirements": PEER_REQUIREMENTS}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted and peer_python(venv).exists():
        return peer_python(venv)
    log(f"setting up fer's virtual environment in {venv} (once; a few minutes) ...")
    if not peer_python(venv).exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        _call([_base_python(), "-m", "venv", str(venv)], "create the venv")
    pip = [str(peer_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _call(pip + ["--no-deps", FER], "install fer")
    _call(pip + PEER_REQUIREMENTS, "install fer's runtime dependencies")
    stamp.write_text(json.dumps(wanted))
    return peer_python(venv)


def _base_python():
    """The interpreter our venv was made from: fer's venv must not nest inside ours."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _call(cmd, what):
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise BenchError(f"could not {what} ({' '.join(cmd[:4])} ...):\n{done.stdout[-3000:]}")


# --- data ------------------------------------------------------------------------------------

def privatetest(csv_path, limit, log):
    """PrivateTest faces and labels as an .npz both workers read, cached beside fer's venv
    (parsing the 90 MB csv takes a while on a small machine)."""
    import numpy as np

    st = csv_path.stat()
    cached = CACHE / f"privatetest-{st.st_size}-{st.st_mtime_ns}.npz"
    if not cached.exists():
        from stickersort.training.data import load_csv

        log(f"reading {csv_path} ...")
        faces, labels, usage = load_csv(csv_path)
        keep = usage == "PrivateTest"
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cached, faces=faces[keep], labels=labels[keep])
    if not limit:
        return cached
    data = np.load(cached)
    pick = np.random.default_rng(0).permutation(len(data["labels"]))[:limit]
    subset = CACHE / f"privatetest-{st.st_size}-{st.st_mtime_ns}-{limit}.npz"
    np.savez(subset, faces=data["faces"][pick], labels=data["labels"][pick])
    return subset


def sticker_files(root):
    """The files `stickersort scan` visits under root, relative: both tools get the same list."""
    from stickersort.sorter.scan import walk

    root = root.resolve()
    return [os.path.relpath(p, root) for p in walk(root)]


def warm_page_cache(root, files):
    for rel in files:
        (root / rel).read_bytes()


# --- running the two sides ---------------------------------------------------------------------

def run_worker(python, script, job, workdir, name):
    job_path, out_path, log_path = (workdir / f"{name}.{ext}" for ext in ("job.json", "json", "log"))
    job_path.write_text(json.dumps(job))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    with open(log_path, "w") as log:
        done = subprocess.run([str(python), str(BENCH / script), str(job_path), str(out_path)],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log_path.read_text()[-4000:]
        raise BenchError(f"{name} side failed (exit {done.returncode}); end of its output:\n{tail}")
    return json.loads(out_path.read_text())


def machine(note):
    info = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "os": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        names = [l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
        kb = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        info["memory_gb"] = round(int(kb.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if note:
        info["note"] = note
    return info


def measure(args, log):
    paths = data_paths(args.shared)
    python = ensure_peer(args.peer_venv, log)
    job = {"repo": str(REPO), "stickers": str(paths["stickers"]), "labels": str(paths["labels"]),
           "files": sticker_files(paths["stickers"]), "frames": args.frames,
           "faces": str(privatetest(paths["fer2013"], args.limit, log)),
           "seconds": args.seconds, "repeats": args.repeats, "scan_seconds": args.scan_seconds,
           "model": str(args.model) if args.model else None}
    results = {"machine": machine(args.note),
               "settings": {"frames": args.frames, "seconds": args.seconds, "repeats": args.repeats,
                            "scan_seconds": args.scan_seconds, "limit": args.limit}}
    warm_page_cache(paths["stickers"], job["files"])  # neither side pays the first disk read
    with tempfile.TemporaryDirectory(prefix="stickersort-bench-") as tmp:
        for name, py, script in (("stickersort", sys.executable, "ours.py"),
                                 ("fer", python, "fer_peer.py")):
            log(f"measuring {name} ...")
            started = time.monotonic()
            results[name] = run_worker(py, script, job, Path(tmp), name)
            log(f"  done in {time.monotonic() - started:.0f} s")
    results["ratio"] = ratios(results)
    return results


# --- reporting ---------------------------------------------------------------------------------

def ratios(results):
    ours, theirs = results["stickersort"], results["fer"]
    return {key: round(ours[key] / theirs[key], 3) if ours.get(key) is not None and theirs.get(key) else None
            for key, *_ in FIGURES + EXTRA}


def _cell(value, fmt):
    return "n/a" if value is None else fmt.format(value)


def rows(results, figures):
    ours, theirs, ratio = results["stickersort"], results["fer"], results["ratio"]
    return [(label, _cell(ours.get(key), fmt), _cell(theirs.get(key), fmt),
             _cell(ratio.get(key), "{:.2f}x"), better) for key, label, fmt, better in figures]


def verdict(results):
    """The issue's bar: files/s >= 5x fer's, accuracy above fer's on both sets."""
    ratio, ours, theirs = results["ratio"], results["stickersort"], results["fer"]
    checks = [("end-to-end files/s >= 5x fer's", (ratio.get("files_per_s") or 0) >= 5),
              ("PrivateTest accuracy above fer's", ours["privatetest_accuracy"] > theirs["privatetest_accuracy"]),
              ("sticker accuracy above fer's", ours["sticker_accuracy"] > theirs["sticker_accuracy"])]
    return checks


def stage_rows(side):
    stages = side.get("stages", {})
    return [(name, f"{stages[name]['ms_per_file']:.1f}", f"{stages[name]['share']:.0%}")
            for name in STAGES if name in stages]


def text_table(results):
    header = ("", "stickersort", "fer", "ratio", "better")
    body = rows(results, FIGURES) + [("",) * 5] + rows(results, EXTRA)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(5)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(header), "-" * len(line(header))] + [line(r) for r in body]
    out.append("\nwhere a file's time goes (ms per file, share of the scan; ours read one file at a time):")
    for name in ("stickersort", "fer"):
        out.append(f"  {name:<12} " + "   ".join(f"{s} {ms} ms ({share})" for s, ms, share in stage_rows(results[name])))
    out.append("\nbar:")
    out += [f"  [{'x' if ok else ' '}] {what}" for what, ok in verdict(results)]
    speedup = results["ratio"].get("files_per_s") or 0
    out.append(f"  [{'x' if speedup >= SPEED_GOAL else ' '}] end-to-end files/s >= {SPEED_GOAL}x fer's "
               f"(issue 27; now {speedup:.2f}x)")
    return "\n".join(out)


def spread(runs):
    """A tool's files/s over its scans in one phrase: a fast tool makes dozens of them."""
    runs = sorted(runs)
    return (f"{len(runs)} scans, {runs[-1]} files/s at best, {runs[len(runs) // 2]} median, "
            f"{runs[0]} at worst")


def markdown(results):
    m, ours, theirs = results["machine"], results["stickersort"], results["fer"]
    where = f"{m['cpu']}, {m['cpus']} CPUs, {m.get('memory_gb', '?')} GB, {m['os']}, Python {m['python']}"
    note = f" ({m['note']})" if m.get("note") else ""
    lines = [
        "# How it compares",
        "",
        "<!-- Written by bench/run.py from its results (bench/results.json): regenerate, do not edit. -->",
        "",
        f"stickersort against [fer](https://github.com/justinshenk/fer) {theirs['versions']['fer']} "
        f"(Haar cascade + its quantized TFLite model, its defaults), measured by `bench/run.py` "
        f"on {m['when'][:10]}: {where}{note}; load average {m['load_average_at_start']} at the start. "
        f"Our model: `{ours.get('model_id', '?')}`.",
        "",
        "| | stickersort | fer | stickersort / fer | better |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {label} | {a} | {b} | {r} | {better} |"
              for label, a, b, r, better in rows(results, FIGURES + EXTRA)]
    lines += ["", "Where a sticker's time goes, milliseconds per file (share of the scan; ours from the pass "
              "that reads one file at a time):", "",
              "| | " + " | ".join(STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    for name in ("stickersort", "fer"):
        cells = {s: f"{ms} ({share})" for s, ms, share in stage_rows(results[name])}
        lines.append(f"| {name} | " + " | ".join(cells.get(s, "n/a") for s in STAGES) + " |")
    lines += ["", "Sticker scans, each tool repeating its scan for the same span of time (the fastest "
              "counts, being the least disturbed by anything else on the machine): "
              f"stickersort {spread(ours['files_per_s_runs'])}, fer {spread(theirs['files_per_s_runs'])}."]
    lines += ["", "Bar set for stickersort: " + "; ".join(
        f"{what}: **{'yes' if ok else 'no'}**" for what, ok in verdict(results)) + ".", ""]
    lines += method(results)
    return "\n".join(lines) + "\n"


def method(results):
    ours, settings = results["stickersort"], results.get("settings", {})
    faces, faceless = ours["sticker_face_files"], ours["sticker_noface_files"]
    return [
        "How each figure is taken (same run, same machine, each tool in a process of its own):",
        "",
        f"- **PrivateTest accuracy**: {ours['privatetest_n']:,} FER2013 PrivateTest faces, each "
        "model fed its own preprocessing: ours 48x48 gray / 255; fer's resized to 64x64 "
        "(bilinear) and scaled to [-1, 1], as `FER.detect_emotions` does. No test-time "
        "augmentation for either.",
        "- **classifier faces/s**: the model alone on ready inputs, after one warm-up call, for "
        f"{settings.get('seconds', '?')} s of whole batches. Ours is ONNX Runtime "
        f"({ours.get('classifier_threads', '?')} intra-op threads); fer's `_classify_emotions` "
        "runs its TFLite model one face per invoke, so batch 64 gains it little.",
        f"- **stickers**: every file of `stickers-dev` ({faces + faceless} labelled, {faceless} of "
        "them `noface`). Ours is the real `stickersort scan` path (`Scanner`) into an empty "
        "database and output folder: decode, hash, BlazeFace, crop, classify, vote, SQLite "
        f"record, symlink, with its default {ours.get('jobs', '?')} files read at once (`--jobs`; "
        "records and links stay in walk order); \"one file at a time\" is the same scan with "
        "`--jobs 1`, and the stage times below come from that pass. fer's side reads each file "
        "through the same pipeline code (`sorter/pipeline.py`), fer standing where our detector "
        f"and classifier stand: the same {settings.get('frames', '?')} frames per file, fer's "
        "Haar cascade, crop and model on each (the three steps of its `detect_emotions`, checked "
        "against it on the first files' frames before the clock starts), then our credible-face "
        "rule and weighted vote (fer's Haar cascade gives no confidence, so each face counts with "
        "score 1). fer does no hashing, recording or linking, which favours it. Accuracy counts "
        f"every file, `noface` being a label; \"face found\" is over the {faces} files that "
        "have a face. Both tools load their models and run them once before the clock starts; "
        "that cost is the startup row. Each tool repeats the whole scan, at least "
        f"{settings.get('repeats', '?')} times and for at least {settings.get('scan_seconds', '?')} s, "
        "and its fastest scan counts.",
        "- **stage times**: the pipeline's timer hook, the same for both tools: decode "
        "(`media.read`), detect (the face detector), crop (the crops and, for fer, its "
        "preprocessing), classify (the model) and vote (the weighted vote); "
        "and for us, through the same hook from the scan, hash (`file_hash`), record "
        "(`Store.save`: one SQLite transaction per file) and link (`Linker.place`). \"other\" "
        "is the rest of the loop (for us walking, stat, the old-record lookup).",
        "- **peak RSS**: each process's own VmHWM right after the sticker scans (imports, "
        "models, scans), and again at the end, after the PrivateTest pass (ours predicts it in "
        "batches of 256, which grows ONNX Runtime's arena; a scan classifies one file's faces "
        "at a time).",
        "",
        "Caveats: stickers-dev faces come from FER2013 PublicTest, so sticker accuracy is a "
        "pipeline check more than a model score; fer's model was trained by others on FER2013 "
        "with a split of their own, so its PrivateTest figure may not be a clean held-out "
        "number.",
        "",
        "Regenerate: `python bench/run.py --json bench/results.json --markdown` "
        "(or `--from bench/results.json --markdown` to rewrite this page only).",
    ]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--from", dest="source", type=Path, help="read results from this JSON instead of measuring")
    p.add_argument("--markdown", nargs="?", type=Path, const=MARKDOWN, default=None,
                   help=f"write the comparison page (default {MARKDOWN.relative_to(REPO)}; README links it)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared data sets' folder")
    p.add_argument("--peer-venv", type=Path, default=CACHE / "fer-venv", help="fer's virtual environment")
    p.add_argument("--model", type=Path, help="our ONNX model (default: the shipped one)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per sticker")
    p.add_argument("--seconds", type=float, default=3.0, help="time spent on each faces/s figure")
    p.add_argument("--repeats", type=int, default=5, help="sticker scans per tool at least; the fastest counts")
    p.add_argument("--scan-seconds", type=float, default=20.0,
                   help="each tool repeats its sticker scan for at least this long")
    p.add_argument("--limit", type=int, default=0, help="only this many PrivateTest faces (a quick check)")
    p.add_argument("--note", help="said beside the machine, e.g. what else was running")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    try:
        results = json.loads(args.source.read_text()) if args.source else measure(args, log)
    except BenchError as e:
        log(f"bench: {e}")
        return 2
    print(text_table(results))
    if args.json and not args.source:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(results))
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
