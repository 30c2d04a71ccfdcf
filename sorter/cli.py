"""The `stickersort` command. Heavy imports (OpenCV, ONNX Runtime, TensorFlow) happen inside the
commands that need them, so `query` and `stats` answer fast."""
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..model.labels import DEFAULT_MIN_CONFIDENCE
from ..training.config import Config  # the train knobs' defaults; no TensorFlow
from . import __version__
from .paths import default_db

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """A one-line error for the user; exit status 2."""
    exit_code = EXIT_USAGE


# Packages the base install leaves out (setup.cfg), and the extra that brings each.
EXTRAS = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "matplotlib": "plot"}
TRAINING = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib")


def _need(what, *modules):
    """Fail in one line, naming the extra to install, when an optional package is absent."""
    from importlib.util import find_spec
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        extra = "train" if "train" in {EXTRAS[m] for m in missing} else "plot"
        raise Fail(f"{what} needs {', '.join(missing)}, not in the base install: pip install 'stickersort[{extra}]'")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stickersort")
def cli():
    """Sort stickers, memes and GIFs by the facial expression in them."""


@contextmanager
def _failing(*errors):
    """Library errors, whose messages are one line for the user, become Fail (exit status 2)."""
    try:
        yield
    except errors as e:
        raise Fail(str(e))


def _options(*options):
    """Several options as one decorator, listed in --help in this order (as sqlite-utils shares
    its options between commands): each command that takes them gets options of its own."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _db_option(f):
    return click.option("--db", type=click.Path(path_type=Path), default=None,
                        help=f"SQLite database [default: $STICKERSORT_DB or {default_db()}]")(f)


# The face finder and the model: scan, watch and live.
model_options = _options(
    # The names of model.faces.DETECTORS, spelled out so --help does not import OpenCV.
    click.option("--detector", type=click.Choice(["blazeface", "haar"]), default="blazeface", show_default=True),
    click.option("--model", type=click.Path(path_type=Path, dir_okay=False), help="ONNX model [default: the bundled one]"))


def scan_options(dry_run=False):
    """What a scan is told: scan and watch (which writes as it goes: no --dry-run)."""
    return _options(
        click.option("--out", type=click.Path(path_type=Path), help="Emotion folders [default: DIR-by-emotion beside DIR]"),
        _db_option,
        click.option("--frames", default=8, show_default=True, type=click.IntRange(1, 64),
                     help="Frames sampled per file, evenly by time"),
        click.option("--min-confidence", default=DEFAULT_MIN_CONFIDENCE, show_default=True, type=click.FloatRange(0, 1),
                     help="A face file whose winning expression scores below this goes to OUT/unsure/, its best guess "
                          "kept in the database (query LABEL --include-unsure finds it)"),
        click.option("--link-mode", type=click.Choice(["symlink", "hardlink", "copy"]), default="symlink",
                     show_default=True),
        *([click.option("--dry-run", is_flag=True, help="Print what would be linked; write nothing")] if dry_run else []),
        click.option("--rescan", is_flag=True, help="Classify every file again, changed or not"),
        model_options,
        click.option("--follow-links", is_flag=True, help="Follow symlinks inside DIR"))


WEB_DEFAULT = "127.0.0.1:8765"

# Where the preview comes from and goes: live and watch --live.
preview_options = _options(
    click.option("--source", default="0", show_default=True, help="Camera index, video or GIF file, or stream URL"),
    click.option("--web", metavar="[HOST:PORT]", is_flag=False, flag_value=WEB_DEFAULT, default=None,
                 help=f"Serve the preview as a web page instead of a window [{WEB_DEFAULT}]"),
    click.option("--loop", is_flag=True, help="Start a file source again when it ends"))

quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar, no per-file messages")


def _scan_setup(directory, out, db, model):
    """scan's and watch's arguments checked, OUT and DB resolved: (root, out, db)."""
    from .paths import PathError, scan_paths
    with _failing(PathError):
        root, out, db = scan_paths(directory, out, db)
    if model is not None and not model.is_file():
        raise Fail(f"model file not found: {model}")
    return root, out, db


def _echo(quiet):
    return (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@scan_options(dry_run=True)
@click.option("-j", "--jobs", type=click.IntRange(1, 64), help="Files read at once [default: CPU cores, at most 4]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout")
@quiet_option
@click.option("-v", "--verbose", is_flag=True, help="A line per file")
def scan(directory, out, db, frames, min_confidence, link_mode, dry_run, rescan, detector, model, follow_links, jobs,
         as_json, quiet, verbose):
    """Classify every sticker under DIRECTORY and link it into OUT/<emotion>/.

    Exit status: 0 all files filed; 1 done, but some files could not be read (each recorded
    with its error); 2 nothing done (bad arguments, unusable DB or OUT).
    """
    from .links import LinkError
    from .paths import inside
    from .scan import Options, Scanner
    from .store import StoreError

    root, out, db = _scan_setup(directory, out, db, model)
    echo = _echo(quiet)
    options = Options(out=out, db=db, frames=frames, min_confidence=min_confidence, link_mode=link_mode,
                      dry_run=dry_run, rescan=rescan, detector=detector, model=model, follow_links=follow_links,
                      **({"jobs": jobs} if jobs else {}))
    if not quiet and inside(out, root):
        echo(f"note: {out} is inside {root}; the scan skips it")
    with _failing(StoreError, LinkError):  # a link that cannot be made fails for every file
        scanner = Scanner(options, echo=echo)
        summary = scanner.scan(root, progress=None if quiet else _progress)
    if verbose and not as_json:
        for row in scanner.store.query(root=str(root)):
            click.echo(_row_line(row))
    _print_summary(summary, as_json)
    sys.exit(EXIT_PARTIAL if summary.errors else EXIT_OK)


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


def _row_line(row):
    """One filed sticker as text; an unsure one says what it would have been."""
    line = f"{row['label']:<9} {row['confidence']:.2f}  {row['path']}"
    return f"{line}  (guess: {row['guess']})" if row["guess"] and row["guess"] != row["label"] else line


def _open_store(db):
    from .store import Store, StoreError
    with _failing(StoreError):
        return Store(db or default_db(), create=False)


@cli.command()
@click.argument("label", required=False)
@_db_option
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0,
              help="List only stickers scored at least this (a filter; scan's --min-confidence files the unsure)")
@click.option("--include-unsure", is_flag=True,
              help="With an expression LABEL, also list the unsure stickers whose best guess it is, after the sure ones")
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True)
def query(label, db, min_confidence, include_unsure, limit, as_json):
    """List filed stickers, best match first: all, or those with LABEL (e.g. happy, noface, unsure)."""
    from ..model.labels import EMOTIONS, NOFACE, UNSURE
    labels = (*EMOTIONS, NOFACE, UNSURE)
    if label and label not in labels:
        raise Fail(f"unknown label {label!r}; choose from {', '.join(labels)}")
    rows = _open_store(db).query(label, min_confidence, limit, include_unsure=include_unsure)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(_row_line(row))


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
@click.option("--arch", default=Config.arch, show_default=True, help="sticker-deep, sticker-wide (shipped, in int8), sticker or seed; --init brings its own")
@click.option("--epochs", default=Config.epochs, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=Config.batch_size, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=Config.lr, show_default=True, type=float, help="Peak learning rate (AdamW, cosine)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last epoch")
@click.option("--seed", default=Config.seed, show_default=True)
@click.option("--labels", type=click.Choice(["fer2013", "ferplus", "blend"]), default=Config.labels, show_default=True,
              help="blend: FER2013 labels with 30 % FER+ vote shares mixed into Training's targets")
@click.option("--ferplus", type=click.Path(path_type=Path), default=Config.ferplus,
              help="FER+ votes file fer2013new.csv(.gz)")
@click.option("--limit", type=click.IntRange(1), default=Config.limit, help="Train on N images only (a quick check)")
@click.option("--init", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=Config.init,
              help="Start from this .keras model (a new learning-rate cycle) instead of random weights; "
                   "an int8 .onnx export (the shipped model) has its float weights rebuilt, with --arch its arch")
@click.option("--teacher", "teachers", multiple=True, default=Config.teachers,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Distil: blend the labels half and half with this .onnx/.keras model's mirror-averaged "
                   "probabilities; repeat it to average an ensemble")
@click.option("--augment", type=click.Choice(["strong", "light"]), default=Config.augment, show_default=True,
              help="light (mirror, small shifts) suits a last cycle after --init")
@click.option("--int8", is_flag=True, default=Config.int8, help="Export stickernet.onnx quantized to int8 (about 2x faces/s)")
@click.option("--swa", type=click.IntRange(0), default=Config.swa,
              help="Stochastic weight averaging over N trajectories from the start, each EPOCHS/N long: "
                   "constant LR, weights saved every half epoch and averaged (a last cycle after --init)")
@click.option("--sam", type=click.FloatRange(0, min_open=False), default=Config.sam,
              help="Sharpness-aware minimization with this radius (0.05 is usual): flatter minima, "
                   "twice the time per epoch")
@click.option("--cards", type=click.IntRange(0), default=Config.cards,
              help="Also train on N views of each Training face as the scan sees it: put on a generated "
                   "sticker card (captions, palettes, JPEG, blur, tilt), found by the detector and cropped")
def train(data, out, resume, **knobs):
    """Train the expression CNN on FER2013 (Kaggle csv/csv.gz or the image-folder layout)."""
    _need("stickersort train", *TRAINING)
    from ..training.data import DataError
    from ..training.train import run
    try:
        metrics = run(data, out, Config(**knobs), resume=resume, verbose=2)
    except (DataError, ValueError) as e:
        raise Fail(str(e))
    click.echo(f"PublicTest {metrics['publictest_accuracy']:.4f}  PrivateTest "
               f"{metrics['privatetest_accuracy']:.4f}  (flip TTA {metrics['privatetest_accuracy_tta_flip']:.4f})")
    click.echo(f"wrote {out}/: best.keras, stickernet.onnx, metrics.json, history.csv, curves.png, confusion.png, samples.png")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A last cycle's .keras model (or an int8 .onnx export, rebuilt as in train --init); repeat it")
@click.option("--arch", default="sticker-wide", show_default=True, help="The arch of any .onnx --model")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/soup"), show_default=True)
@click.option("--int8", is_flag=True, help="Export stickernet.onnx quantized to int8 (about 2x faces/s)")
def soup(data, models, arch, out, int8):
    """Average the weights of several fine-tunes of one start (a greedy model soup, chosen on PublicTest)."""
    _need("stickersort soup", *TRAINING)
    from ..training.data import DataError
    from ..training.soup import run
    try:
        metrics = run(data, out, models, arch=arch, int8=int8, echo=click.echo)
    except (DataError, ValueError) as e:
        raise Fail(str(e))
    click.echo(f"{len(metrics['soup'])} of {len(models)} models kept.  PublicTest {metrics['publictest_accuracy']:.4f}  "
               f"PrivateTest {metrics['privatetest_accuracy']:.4f}  (flip TTA {metrics['privatetest_accuracy_tta_flip']:.4f})")
    click.echo(f"wrote {out}/: best.keras, stickernet.onnx, soup.json, metrics.json, confusion.png, samples.png")


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--split", type=click.Choice(["PrivateTest", "PublicTest", "Training"]), default="PrivateTest", show_default=True)
@click.option("--model", type=click.Path(path_type=Path, dir_okay=False), help="An .onnx or .keras model [default: the bundled one]")
@click.option("--labels", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True)
@click.option("--ferplus", type=click.Path(path_type=Path), help="FER+ votes file [default: ferplus/fer2013new.csv.gz beside DATA's folder]")
@click.option("--tta", is_flag=True, help="Average with the mirrored face (reported apart from the plain pass)")
@click.option("--limit", type=click.IntRange(1), help="Only the first N faces of the split")
@click.option("--against", type=click.Path(path_type=Path, dir_okay=False),
              help="Also score this model on the same faces (or stickers) and say whether the gap is beyond noise")
@click.option("--pipeline", is_flag=True,
              help="Put each face on a generated sticker card and run the scan's detect, crop and classify on it; "
                   "reported beside the direct figure")
@click.option("--calibrate", is_flag=True,
              help="Measure where a FER2013 frame lies around the detector's box on cards of the split's faces "
                   "(the crop's FER_FRAMES; use --split Training)")
@click.option("--detector", type=click.Choice(["blazeface", "haar"]), default="blazeface", show_default=True,
              help="With --calibrate: the detector to measure")
@click.option("--stickers", type=click.Path(path_type=Path, file_okay=False),
              help="Instead of FER2013: scan this folder as `scan` would and score it against its labels.csv")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
              help="With --stickers: draw precision against coverage as the confidence threshold moves into this PNG")
@click.option("--json", "as_json", is_flag=True)
def evaluate(data, split, model, labels, ferplus, tta, limit, against, pipeline, calibrate, detector, stickers, plot,
             as_json):
    """Accuracy, per-class table and confusion matrix of a model on one FER2013 split, directly or
    through the scan's pipeline (--pipeline), or on a labelled sticker folder (--stickers DIR)."""
    from ..model.inference import SHIPPED_MODEL
    model = model or SHIPPED_MODEL
    for path in filter(None, (model, against)):
        if not Path(path).is_file():
            raise Fail(f"model file not found: {path}")
    if stickers:
        if plot:
            _need("--plot", "matplotlib")
        return _evaluate_stickers(stickers, model, against, plot, as_json)
    if data is None:
        raise Fail("give FER2013 DATA (fer2013.csv.gz or an image folder), or --stickers DIR")
    from ..training import evaluate as ev
    from ..training.data import DataError
    if calibrate:
        with _failing(DataError):
            frame = ev.calibrate_split(data, split, detector, limit)
        return click.echo(json.dumps(frame, indent=2) if as_json else ev.format_calibration(frame, split))
    click.echo(f"evaluating {model} on {split}{' through the scan pipeline' if pipeline else ''}", err=True)
    with _failing(DataError):
        result = ev.evaluate_split(data, split, model, labels, ferplus, tta, limit, against, pipeline)
    click.echo(json.dumps(result, indent=2) if as_json else ev.format_result(result))


def _evaluate_stickers(folder, model, against, plot, as_json):
    from . import sticker_eval
    click.echo(f"evaluating {model} on the stickers in {folder}", err=True)
    with _failing(sticker_eval.EvalError):
        report = sticker_eval.evaluate(folder, model, against)
    if plot:
        sticker_eval.plot_curve(report, plot)
    click.echo(json.dumps(report, indent=2) if as_json else sticker_eval.format_report(report))


@cli.command()
@preview_options
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="A database from `scan`: show the library's stickers with the expression on screen")
@click.option("--max-frames", type=click.IntRange(1), help="Stop after N frames")
@model_options
@click.option("--json", "as_json", is_flag=True, help="No window; print the run's frames, faces, FPS and latency as JSON")
def live(source, web, db, loop, max_frames, detector, model, as_json):
    """Box each face in a camera, video or stream with its expression, as it plays.

    Without --web it opens a window (needs a display); with --json alone it runs without one.
    Ctrl-C, q in the window, or the end of a file source (unless --loop) ends it.
    """
    from .live import LiveError, run_live
    if db is not None:
        _open_store(db)  # a one-line error now rather than in the middle of the preview
    with _failing(LiveError):
        stats = run_live(source, web, db, detector, model, loop, max_frames, window=not as_json, echo=_echo(False))
    if as_json:
        click.echo(json.dumps(stats, indent=2))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@scan_options()
@click.option("--settle", default=1.0, show_default=True, type=click.FloatRange(0.05),
              help="Seconds a new or changed file must stay the same size before it is read")
@click.option("--live", "with_live", is_flag=True, help="Also run the live preview (a window, or --web) in this process")
@preview_options
@quiet_option
def watch(directory, out, db, frames, min_confidence, link_mode, rescan, detector, model, follow_links, settle,
          with_live, source, web, loop, quiet):
    """Scan DIRECTORY like `scan`, then keep following it: new and changed files are classified,
    moved ones keep their record, deleted ones lose record and link. Ctrl-C stops."""
    from .live import LiveError, run_live
    from .scan import Options
    from .store import Store, StoreError
    from .watch import run_watch

    root, out, db = _scan_setup(directory, out, db, model)
    with _failing(StoreError):
        Store(db)  # a one-line error now for an unusable database
    echo = _echo(quiet)
    options = Options(out=out, db=db, frames=frames, min_confidence=min_confidence, link_mode=link_mode,
                      rescan=rescan, detector=detector, model=model, follow_links=follow_links)

    def preview(stop):
        return run_live(source, web, db, detector, model, loop, stop=stop, echo=_echo(False))

    with _failing(LiveError):
        summary = run_watch(options, root, settle, echo, None if quiet else _progress, preview if with_live else None)
    echo(f"stopped: {summary.classified} classified, {summary.errors} errors since the first scan")


def main():
    try:
        cli.main(prog_name="stickersort")
    except KeyboardInterrupt:
        click.echo("stickersort: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # the last guard: one line, never a traceback, unless asked for
        if os.environ.get("STICKERSORT_DEBUG"):
            raise
        missing = (getattr(e, "name", None) or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
        if missing in EXTRAS:  # an optional package, on a path _need does not guard
            click.echo(f"stickersort: error: {missing} is not in the base install: "
                       f"pip install 'stickersort[{EXTRAS[missing]}]'", err=True)
            sys.exit(EXIT_USAGE)
        click.echo(f"stickersort: error: {type(e).__name__}: {e}", err=True)
        sys.exit(70)
