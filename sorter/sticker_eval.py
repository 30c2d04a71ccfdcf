"""`stickersort evaluate --stickers DIR`: how a labelled sticker folder comes out of the real scan.

DIR/labels.csv names each file's truth (`file,label`, more columns allowed): one of the seven
expressions, `noface`, or `ambiguous` (a real face a person could not call: it counts for "face
found" only), in any case. DIR is scanned by the scan itself into a temporary database, so what
is measured is what a user's folders get. The `source` column, when present, splits the figures
by kind of file.
"""
import csv
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from ..model.labels import EMOTIONS, NOFACE
from .paired import is_tie, verdict
from .paths import key_path

AMBIGUOUS = "ambiguous"
NO_SOURCE = "(none)"  # by_source's group of the files whose source column is empty
TRUTHS = (*EMOTIONS, NOFACE, AMBIGUOUS)
# The lowest threshold is sought in steps of 0.01; the curve shown and drawn is every fifth step.
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.0, 0.96, 0.01))
SHOWN = 5


class EvalError(Exception):
    """A folder that cannot be evaluated; the message is one line for the user."""


def evaluate(folder, model=None, against=None, stop=None):
    """The whole report for a labelled folder; with against, which files only one model gets right.
    stop: an Event that ends the scans between two files (media.Interrupted), their scratch removed."""
    labels = read_labels(folder)
    records = scan_records(folder, model, stop=stop)
    report = score(labels, records)
    report["folder"], report["model"] = str(folder), str(model)
    if against:
        report["against"] = {"model": str(against), **compare(labels, records, scan_records(folder, against, stop=stop))}
    return report


def read_labels(folder):
    """{file name: (label, source)} from folder/labels.csv."""
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        what = ("a folder, not a file" if path.is_dir() else "not a regular file (a FIFO or socket)"
                if path.exists() else "no such file")
        raise EvalError(f"{path}: {what} (a labels.csv with columns file,label is needed)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            if reader.fieldnames:  # as a person types them: "file, label"
                reader.fieldnames = [name.strip() for name in reader.fieldnames]
            if not {"file", "label"} <= set(reader.fieldnames or ()):
                raise EvalError(f"{path}: expected the columns file,label")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise EvalError(f"{path}: not a UTF-8 csv ({type(e).__name__})") from None
    except csv.Error as e:  # a cell past csv's field limit, say
        raise EvalError(f"{path}: not a csv that can be read ({e})") from None
    if not rows:
        raise EvalError(f"{path}: no rows after the header")
    short = next((i for i, r in enumerate(rows, start=2) if not (r["file"] or "").strip()
                  or not (r["label"] or "").strip()), None)
    if short:  # a short row, or an empty cell
        raise EvalError(f"{path}:{short}: expected a file name and a label")
    for row in rows:  # as a person types them: "Happy", " sad"
        row["label"] = row["label"].strip().lower()
    bad = sorted({r["label"] for r in rows} - set(TRUTHS))
    if bad:
        raise EvalError(f"{path}: unknown labels {', '.join(bad)}; use {', '.join(TRUTHS)}")
    # The scan names files by their name in DIR: one listed elsewhere would never be scored.
    outside = next((r["file"] for r in rows if Path(r["file"]).name != r["file"]), None)
    if outside:
        raise EvalError(f"{path}: {outside} is not a file name in {folder} (no folders, no paths)")
    twice = next((f for f, n in Counter(r["file"] for r in rows).items() if n > 1), None)
    if twice:
        raise EvalError(f"{path}: {twice} is listed more than once")
    missing = [r["file"] for r in rows if not (Path(folder) / r["file"]).is_file()]
    if missing:
        raise EvalError(f"{path}: {len(missing)} listed file{'s are' if len(missing) > 1 else ' is'} missing, "
                        f"e.g. {missing[0]}")
    # Else scored as unreadable, wrong, without a word: the scan passes over links and other files.
    from .media import is_media
    unread = next((r["file"] for r in rows if (Path(folder) / r["file"]).is_symlink()
                   or not is_media(r["file"])), None)
    if unread:
        raise EvalError(f"{path}: {unread} is not a file the scan reads (a link, or not a sticker by its name's "
                        f"ending)")
    return {r["file"]: (r["label"], r.get("source") or NO_SOURCE) for r in rows}


def scan_records(folder, model=None, detector="blazeface", frames=8, stop=None):
    """{file name: its record} from a scan of folder into a throwaway database and OUT."""
    from .scan import Options, Scanner

    with tempfile.TemporaryDirectory(prefix="stickersort-eval-") as tmp:
        options = Options(out=Path(tmp) / "out", db=Path(tmp) / "eval.db", model=model,
                          detector=detector, frames=frames)
        scanner = Scanner(options)
        scanner.scan(folder, stop=stop)
        # DIR's own files: one of the same name in a subfolder is another file. Records name
        # them by key (paths.path_key: a backslash is \x5c), labels.csv by name.
        own = {}
        for r in scanner.store.db.query("select * from files"):
            path = Path(key_path(r["path"]))
            if path.parent == Path(key_path(r["root"])):
                own[path.name] = r
        return own


def prediction(record):
    """(best label, confidence) of a record: noface, an emotion (the vote's winner, unsure or
    not), or None for a file the scan could not read."""
    if record is None or record["error"]:
        return None, 0.0
    if not record["faces"]:
        return NOFACE, 0.0
    scores = json.loads(record["scores"])
    best = max(scores, key=scores.get)
    return best, float(scores[best])


def score(labels, records):
    """Every figure of the report from truths and records."""
    files = [(name, truth, source, *prediction(records.get(name))) for name, (truth, source) in labels.items()]
    curve = _curve(files)
    report = {"files": len(files), **_figures(files), "curve": curve[::SHOWN], "confusion": _confusion(files),
              "threshold_80": threshold_for(curve)}
    sources = sorted({f[2] for f in files})
    if len(sources) > 1:
        report["by_source"] = {s: _figures([f for f in files if f[2] == s]) for s in sources}
    report["per_file"] = {name: {"truth": truth, "predicted": pred, "confidence": round(conf, 4)}
                          for name, truth, _, pred, conf in files}
    # Scored as errors: why, since a model that fails (NaN scores, say) looks like one that is wrong.
    report["unreadable"] = {name: (records.get(name) or {}).get("error") or "not recorded by the scan"
                            for name, _, _, pred, _ in files if pred is None}
    return report


def _ratio(right, n):
    return {"right": int(right), "n": int(n), "share": round(right / n, 4) if n else None}


def _figures(files):
    emotion = [f for f in files if f[1] in EMOTIONS]
    noface = [f for f in files if f[1] == NOFACE]
    faces = [f for f in files if f[1] not in (NOFACE,)]
    per_class = {e: _ratio(sum(f[3] == e for f in emotion if f[1] == e), sum(f[1] == e for f in emotion))
                 for e in EMOTIONS}
    return {"emotion_accuracy": _ratio(sum(f[3] == f[1] for f in emotion), len(emotion)),
            "noface_right": _ratio(sum(f[3] == NOFACE for f in noface), len(noface)),
            "face_found": _ratio(sum(f[3] not in (NOFACE, None) for f in faces), len(faces)),
            "per_class": per_class}


def _curve(files):
    """Precision and coverage if files under each confidence threshold went to `unsure`.
    Precision counts every file given an emotion, a faceless one included (a wrong filing);
    coverage is the share of emotion files given an emotion. Ambiguous files have no truth."""
    judged = [f for f in files if f[1] != AMBIGUOUS]
    n_emotion = sum(f[1] in EMOTIONS for f in judged)
    points = []
    for t in THRESHOLDS:
        given = [f for f in judged if f[3] in EMOTIONS and f[4] >= t]
        right = sum(f[3] == f[1] for f in given)
        points.append({"threshold": t, "given": len(given), "right": right,
                       "precision": round(right / len(given), 4) if given else None,
                       "coverage": round(sum(f[1] in EMOTIONS for f in given) / n_emotion, 4) if n_emotion else None})
    return points


def _confusion(files):
    """Rows: truth (expressions, noface, ambiguous); columns: predicted (expressions, noface, error)."""
    rows, cols = TRUTHS, (*EMOTIONS, NOFACE, "error")
    table = {r: {c: 0 for c in cols} for r in rows}
    for _, truth, _, pred, _ in files:
        table[truth][pred or "error"] += 1
    return table


def compare(labels, records, other_records):
    """Files only one of two models gets right (their best label against the truth)."""
    mine, theirs = [], []
    for name, (truth, _) in labels.items():
        if truth == AMBIGUOUS:
            continue
        a, b = prediction(records.get(name))[0] == truth, prediction(other_records.get(name))[0] == truth
        if a != b:
            (mine if a else theirs).append(name)
    gap, discordant = len(mine) - len(theirs), len(mine) + len(theirs)
    return {"only_this": sorted(mine), "only_other": sorted(theirs), "gap": gap,
            "sd": round(float(np.sqrt(discordant)), 1), "tie": is_tie(gap, discordant)}


def threshold_for(curve, min_precision=0.8, min_coverage=0.6):
    """The curve's point at the lowest threshold whose files given an emotion are right at least
    min_precision of the time (threshold None where none is), and whether coverage holds there."""
    for point in curve:
        if point["precision"] is not None and point["precision"] >= min_precision:
            return {**point, "coverage_at_least_60": point["coverage"] >= min_coverage}
    return {"threshold": None, "coverage_at_least_60": False}


def format_report(report):
    def pct(r):
        return f"{r['right']}/{r['n']} ({100 * r['share']:.1f} %)" if r["n"] else "none"

    lines = [f"stickers in {report['folder']}, model {report['model']}: {report['files']} files"]
    groups = [("all", report), *((f"source {s}", g) for s, g in report.get("by_source", {}).items())]
    for name, g in groups:
        lines.append(f"  {name}: emotion {pct(g['emotion_accuracy'])}, noface right {pct(g['noface_right'])}, "
                     f"face found {pct(g['face_found'])}")
    if report.get("unreadable"):
        name, why = next(iter(report["unreadable"].items()))
        lines.append(f"  could not read {len(report['unreadable'])} (scored as errors), e.g. {name}: {why}")
    lines.append("per class (all): " + ", ".join(f"{e} {c['right']}/{c['n']}" for e, c in report["per_class"].items()))
    lines.append("confusion (rows truth, columns predicted): " + " ".join(c[:4] for c in (*EMOTIONS, NOFACE, "error")))
    for truth, row in report["confusion"].items():
        lines.append(f"  {truth[:9]:<9} " + " ".join(f"{v:>4}" for v in row.values()))
    lines.append("threshold  given  precision  coverage")
    for p in report["curve"]:
        prec = f"{p['precision']:.3f}" if p["precision"] is not None else "  -  "
        cov = f"{p['coverage']:.3f}" if p["coverage"] is not None else "  -  "
        lines.append(f"   {p['threshold']:.2f}    {p['given']:>4}    {prec}     {cov}")
    t = report["threshold_80"]
    lines.append(f"lowest threshold with precision >= 0.80: {t['threshold']}" + ("" if t["threshold"] is None else
                 f" ({t['right']} of {t['given']} right, coverage {t['coverage']:.3f}: "
                 f"{'at least' if t['coverage_at_least_60'] else 'under'} 0.60)"))
    if report.get("against"):
        a = report["against"]
        lines.append(f"against {a['model']}: {a['gap']:+d} files (SD {a['sd']}: {verdict(a['gap'], a['tie'])}); "
                     f"only this model right: "
                     f"{', '.join(a['only_this']) or 'none'}; only the other: {', '.join(a['only_other']) or 'none'}")
    return "\n".join(lines)


def plot_curve(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # No precision where no file is given an emotion; no coverage where labels.csv names no emotion file.
    points = [p for p in report["curve"] if p["precision"] is not None and p["coverage"] is not None]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    if not points:
        ax.text(0.5, 0.5, "no emotion files in labels.csv: no curve", ha="center", fontsize=8)
    ax.plot([p["coverage"] for p in points], [p["precision"] for p in points], marker="o")
    shown = set()
    for p in points[::2]:
        if (p["coverage"], p["precision"]) not in shown:  # thresholds that change nothing share a point
            shown.add((p["coverage"], p["precision"]))
            ax.annotate(f"{p['threshold']:.2f}", (p["coverage"], p["precision"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("coverage (emotion files given an emotion)")
    ax.set_ylabel("precision (files given an emotion that are right)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("stickers: precision against coverage by confidence threshold", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
