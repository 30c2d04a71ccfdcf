"""The `stickersort` command. Heavy imports (OpenCV, ONNX Runtime, TensorFlow) happen inside the
commands that need them, so `query` and `stats` answer fast."""
import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .paths import default_db, default_out

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """A one-line error for the user; exit status 2."""
    exit_code = EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stickersort")
def cli():
    """Sort stickers, memes and GIFs by the facial expression in them."""


def _db_option(f):
    return click.option("--db", type=click.Path(path_type=Path), default=None,
                        help=f"SQLite database [default: $STICKERSORT_DB or {default_db()}]")(f)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Emotion folders [default: DIR-by-emotion beside DIR]")
@_db_option
@click.option("--frames", default=8, show_default=True, type=click.IntRange(1, 64), help="Frames sampled per file, evenly by time")
@click.option("--link-mode", type=click.Choice(["symlink", "hardlink", "copy"]), default="symlink", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print what would be linked; write nothing")
@click.option("--rescan", is_flag=True, help="Classify every file again, changed or not")
# The names of model.faces.DETECTORS, spelled out so --help does not import OpenCV.
@click.option("--detector", type=click.Choice(["blazeface", "haar"]), default="blazeface", show_default=True)
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), help="ONNX model [default: the bundled one]")
@click.option("--follow-links", is_flag=True, help="Follow symlinks inside DIR")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no per-file messages")
@click.option("-v", "--verbose", is_flag=True, help="A line per file")
def scan(directory, out, db, frames, link_mode, dry_run, rescan, detector, model, follow_links, as_json, quiet, verbose):
    """Classify every sticker under DIRECTORY and link it into OUT/<emotion>/.

    Exit status: 0 all files filed; 1 done, but some files could not be read (each recorded
    with its error); 2 nothing done (bad arguments, unusable DB or OUT).
    """
    from .scan import Options, Scanner
    from .store import StoreError

    root, out, db = _check_scan_paths(directory, out, db)
    if model is not None and not model.is_file():
        raise Fail(f"model file not found: {model}")
    echo = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    options = Options(out=out, db=db, frames=frames, link_mode=link_mode, dry_run=dry_run,
                      rescan=rescan, detector=detector, model=model, follow_links=follow_links)
    if not quiet and _inside(out, root):
        echo(f"note: {out} is inside {root}; the scan skips it")
    try:
        scanner = Scanner(options, echo=echo)
        summary = scanner.scan(root, progress=None if quiet else _progress)
    except StoreError as e:
        raise Fail(str(e))
    if verbose and not as_json:
        for row in scanner.store.query(root=str(root)):
            click.echo(f"{row['label']:<9} {row['confidence']:.2f}  {row['path']}")
    _print_summary(summary, as_json)
    sys.exit(EXIT_PARTIAL if summary.errors else EXIT_OK)


def _inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_scan_paths(directory, out, db):
    if not directory.exists():
        raise Fail(f"no such directory: {directory}")
    if not directory.is_dir():
        raise Fail(f"not a directory: {directory}")
    root = Path(os.path.realpath(directory))
    out = Path(os.path.abspath(out)) if out else default_out(root)
    db = Path(os.path.abspath(db)) if db else default_db()
    if _inside(root, out):
        raise Fail(f"--out {out} contains the folder being scanned; choose another --out")
    if out.exists() and not out.is_dir():
        raise Fail(f"--out {out} exists and is not a directory")
    if db.is_dir():
        raise Fail(f"--db {db} is a directory; give a file path")
    return root, out, db


def _progress(paths):
    from tqdm import tqdm
    return tqdm(paths, unit="file", file=sys.stderr, disable=None, leave=False)


def _print_summary(summary, as_json):
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    labels = ", ".join(f"{k} {v}" for k, v in sorted(summary.labels.items(), key=lambda kv: -kv[1]))
    links = summary.links
    click.echo(f"{summary.files} files in {summary.seconds:.1f} s ({summary.files_per_s} files/s): "
               f"{summary.classified} classified, {summary.unchanged} unchanged, "
               f"{summary.errors} errors, {summary.vanished} vanished")
    click.echo(f"labels: {labels or 'none'}")
    click.echo(f"links in {summary.out}: {links.get('created', 0)} created, {links.get('moved', 0)} moved, "
               f"{links.get('removed', 0)} removed; database {summary.db}")
    for e in summary.error_files[:20]:
        click.echo(f"error: {e['path']}: {e['error']}", err=True)


def _open_store(db):
    from .store import Store, StoreError
    try:
        return Store(db or default_db(), create=False)
    except StoreError as e:
        raise Fail(str(e))


@cli.command()
@click.argument("label", required=False)
@_db_option
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0)
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True)
def query(label, db, min_confidence, limit, as_json):
    """List filed stickers, best match first: all, or those with LABEL (e.g. happy, noface)."""
    from ..model.labels import EMOTIONS, NOFACE
    if label and label not in (*EMOTIONS, NOFACE):
        raise Fail(f"unknown label {label!r}; choose from {', '.join((*EMOTIONS, NOFACE))}")
    rows = _open_store(db).query(label, min_confidence, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['label']:<9} {row['confidence']:.2f}  {row['path']}")


@cli.command()
@_db_option
@click.option("--json", "as_json", is_flag=True)
def stats(db, as_json):
    """Count filed stickers per label."""
    counts = _open_store(db).stats()
    if as_json:
        click.echo(json.dumps(counts))
        return
    for label, n in counts.items():
        click.echo(f"{label:<9} {n}")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--arch", default="sticker", show_default=True, help="sticker, sticker-deep, sticker-l or seed")
@click.option("--epochs", default=45, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=float, help="Peak learning rate (AdamW, cosine)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last epoch")
@click.option("--seed", default=0, show_default=True)
@click.option("--labels", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True)
@click.option("--ferplus", type=click.Path(path_type=Path), help="FER+ votes file fer2013new.csv(.gz)")
@click.option("--limit", type=click.IntRange(1), help="Train on N images only (a quick check)")
def train(data, arch, epochs, batch_size, lr, out, resume, seed, labels, ferplus, limit):
    """Train the expression CNN on FER2013 (Kaggle csv/csv.gz or the image-folder layout)."""
    from ..training.data import DataError
    from ..training.train import run
    try:
        metrics = run(data, out, arch=arch, epochs=epochs, batch_size=batch_size, resume=resume,
                      seed=seed, labels=labels, ferplus=ferplus, limit=limit, lr=lr, verbose=2)
    except (DataError, ValueError) as e:
        raise Fail(str(e))
    click.echo(f"PublicTest {metrics['publictest_accuracy']:.4f}  PrivateTest "
               f"{metrics['privatetest_accuracy']:.4f}  (flip TTA {metrics['privatetest_accuracy_tta_flip']:.4f})")
    click.echo(f"wrote {out}/: best.keras, stickernet.onnx, metrics.json, history.csv, curves.png, confusion.png, samples.png")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["PrivateTest", "PublicTest", "Training"]), default="PrivateTest", show_default=True)
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), help="An .onnx or .keras model [default: the bundled one]")
@click.option("--labels", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True)
@click.option("--ferplus", type=click.Path(path_type=Path), help="FER+ votes file [default: ferplus/fer2013new.csv.gz beside DATA's folder]")
@click.option("--tta", is_flag=True, help="Average with the mirrored face (reported apart from the plain pass)")
@click.option("--limit", type=click.IntRange(1), help="Only the first N faces of the split")
@click.option("--json", "as_json", is_flag=True)
def evaluate(data, split, model, labels, ferplus, tta, limit, as_json):
    """Accuracy, per-class table and confusion matrix of a model on one FER2013 split."""
    from ..model.inference import SHIPPED_MODEL
    from ..training import evaluate as ev
    from ..training.data import DataError, load
    model = model or SHIPPED_MODEL
    if not Path(model).is_file():
        raise Fail(f"model file not found: {model}")
    if labels == "ferplus" and ferplus is None:
        ferplus = Path(data).resolve().parent.parent / "ferplus" / "fer2013new.csv.gz"
    try:
        faces, targets = load(data, labels=labels, ferplus=ferplus)[split]
    except DataError as e:
        raise Fail(str(e))
    skipped = 0
    if labels == "ferplus":
        keep = ev.majority_only(targets)
        skipped = int((~keep).sum())
        faces, targets = faces[keep], targets[keep]
    if limit:
        faces, targets = faces[:limit], targets[:limit]
    result = ev.scores(ev.predict(model, faces, tta=tta), targets)
    result.update({"split": split, "labels": labels, "model": str(model), "tta": tta})
    if labels == "ferplus":
        result["skipped_no_majority"] = skipped
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(ev.format_table(result))


def main():
    try:
        cli.main(prog_name="stickersort")
    except KeyboardInterrupt:
        click.echo("stickersort: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # the last guard: one line, never a traceback, unless asked for
        if os.environ.get("STICKERSORT_DEBUG"):
            raise
        click.echo(f"stickersort: error: {type(e).__name__}: {e}", err=True)
        sys.exit(70)
