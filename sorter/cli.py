"""The `stickersort` command. Heavy imports (OpenCV, ONNX Runtime, TensorFlow) happen inside the
commands that need them, so `query` and `stats` answer fast."""
import errno
import json
import math
import os
import shlex
import sqlite3
import sys
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import click

from ..model.labels import DEFAULT_MIN_CONFIDENCE, EMOTIONS, NOFACE, UNSURE
from ..training.config import ARCHS, Config  # the train knobs' defaults; no TensorFlow
from . import __version__
from .paths import default_db, inside, path_key, shown

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
EXIT_FULL = 74  # sysexits' EX_IOERR: a disk full under what was written
EXIT_PIPE = 128 + 13  # as a process SIGPIPE ended: what it printed was read no further


class _Number(click.FloatRange):
    """A FloatRange of finite numbers: nan fails no comparison with a bound, so passes them, and
    inf passes an open one (--settle inf: nothing ever settles)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _Named(click.Path):
    """A path that must be named: Path("") is the current folder, so `--stickers "$DIR"` with $DIR
    unset evaluated the folder the user stood in."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty name names no file" if self.file_okay else
                      "an empty name would mean the current folder; name it (`.`) if that is meant", param, ctx)
        return super().convert(value, param, ctx)


DEFAULT = "default"


class _NumberOrDefault(_Number):
    """A number, or `default`: the shipped model's, remembered as such (DEFAULT)."""
    name = "number or default"

    def convert(self, value, param, ctx):
        return DEFAULT if value == DEFAULT else super().convert(value, param, ctx)


class Fail(click.ClickException):
    """A one-line error for the user; exit status 2."""
    exit_code = EXIT_USAGE

    def format_message(self):
        return shown(self.message)  # a path in it may hold anything


# Packages the base install leaves out (setup.cfg), and the extra that brings each.
EXTRAS = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "matplotlib": "plot",
          "ray": "ray"}
TRAINING = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib")


def _need(what, *modules):
    """Fail in one line, naming the extra to install, when an optional package is absent."""
    from importlib.util import find_spec
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        extras = {EXTRAS[m] for m in missing}
        extra = "train" if "train" in extras else extras.pop()
        raise Fail(f"{what} needs {', '.join(missing)}, not in the base install: {_install(extra)}")


def _install(extra):
    """The command that adds an extra: stickersort installs from its checkout (not from PyPI)."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e {shlex.quote(f'{checkout}[{extra}]')}"
    return f"pip install '.[{extra}]' in the stickersort checkout"


# Click's "no arguments: show the help" (8.2 on) is a usage error that is not an error.
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Commands(click.Group):
    """The commands. A KeyboardInterrupt that reaches here (a second Ctrl-C, or a first in a command
    that does not wait for a safe point) ends with one line and status 130 (interrupt.Signalled's
    128 + its signal), not click's `Aborted!` and 1.
    A bad option or argument is one line too, not click's usage block."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage(), _read_no_further():  # --help, --version
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with _one_line_usage(), _read_no_further():
                return super().invoke(ctx)
        except KeyboardInterrupt as e:
            from .interrupt import exit_status
            click.echo("stickersort: interrupted", err=True)
            ctx.exit(exit_status(getattr(e, "signum", None)))


@contextmanager
def _read_no_further():
    """`| head`: the reader took what it wanted. Ended as by SIGPIPE, silently, with its status:
    click's is 1, which a scan means for unreadable files."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise click.exceptions.Exit(EXIT_PIPE) from None


@contextmanager
def _one_line_usage():
    try:
        yield
    except _HELP:
        raise
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "stickersort"
        raise Fail(f"{e.format_message().rstrip('.')} (`{where} -h` for help)") from None


def _stopped(stop, what):
    """After work that a Ctrl-C or SIGTERM ended at a safe point: one line, status 128 + the signal."""
    from .interrupt import exit_status
    click.echo(f"stickersort: interrupted; {what}", err=True)
    sys.exit(exit_status(stop.signum))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stickersort")
def cli():
    """Sort stickers, memes and GIFs by the facial expression in them."""


@contextmanager
def _failing(*errors):
    """Library errors, whose messages are one line for the user, become Fail (exit status 2; 74
    when the OS or SQLite error they were raised from says the disk is full)."""
    try:
        yield
    except errors as e:
        fail = Fail(str(e))
        if _disk_full(e.__context__):  # kept by `raise ... from None`, which only hides it
            fail.exit_code = EXIT_FULL
        raise fail from None


def _disk_full(e):
    """Whether an OS or SQLite error says the disk (or a quota) is full: exit status 74, not 2."""
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
        getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@contextmanager
def _failing_database(db):
    """An SQLite error no Store method put in words (the database file deleted under a watch)."""
    try:
        yield
    except sqlite3.Error as e:
        raise Fail(f"database {db}: {e}") from None


def _options(*options):
    """Several options as one decorator, listed in --help in this order (as sqlite-utils shares
    its options between commands): each command that takes them gets options of its own."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _db_option(f):
    # Resolved when the command runs, so the help names the rule, not this machine's home.
    return click.option("--db", type=_Named(path_type=Path), default=None,
                        callback=lambda ctx, param, value: value or default_db(),
                        help="SQLite database [default: $STICKERSORT_DB, else "
                             "$XDG_DATA_HOME/stickersort/stickersort.db, ~/.local/share/... without it]")(f)


# The face finder and the model: scan, watch and live.
model_options = _options(
    # The names of model.faces.DETECTORS, spelled out so --help does not import OpenCV.
    click.option("--detector", type=click.Choice(["blazeface", "haar"]), default="blazeface", show_default=True,
                 help="Face finder (BlazeFace chosen by measurement: docs/detectors.md)"),
    click.option("--model", type=_Named(path_type=Path, dir_okay=False), help="ONNX model [default: the bundled one]"))


def scan_options(dry_run=False):
    """What a scan is told: scan and watch (which writes as it goes: no --dry-run)."""
    return _options(
        click.option("--out", type=click.Path(),  # a str, as DIRECTORY
                     help="Emotion folders [default: DIR-by-emotion beside DIR, unless DIR or a folder above "
                          "it was scanned before: then that scan's]"),
        _db_option,
        click.option("--frames", default=8, show_default=True, type=click.IntRange(1, 64),
                     help="Frames sampled per file, evenly by time"),
        click.option("--min-confidence", type=_NumberOrDefault(0, 1),
                     help="A face file whose winning expression scores below this goes to OUT/unsure/, its best guess "
                          f"kept in the database (query LABEL --include-unsure finds it); `default`: the shipped "
                          f"model's, now {DEFAULT_MIN_CONFIDENCE}, followed as models change [default: the last "
                          f"scan's]"),
        click.option("--link-mode", type=click.Choice(["symlink", "hardlink", "copy"]),
                     help="How OUT points at the originals (relative symlinks; hardlinks or copies where symlinks "
                          "are not possible); a rescan with another mode converts the links it made [default: the "
                          "last scan's, else symlink]"),
        *([click.option("--dry-run", is_flag=True, help="Print what would be linked; write nothing")] if dry_run else []),
        click.option("--rescan", is_flag=True, help="Classify every file again, changed or not"),
        model_options,
        click.option("--follow-links/--no-follow-links", default=None,
                     help="Follow symlinks inside DIR, or not [default: as the last scan, else not]"))


WEB_DEFAULT = "127.0.0.1:8765"

# Where the preview comes from and goes: live and watch --live.
preview_options = _options(
    click.option("--source", default="0", show_default=True, help="Camera index, video or sticker file, or stream URL"),
    click.option("--web", metavar="[HOST:PORT]", is_flag=False, flag_value=WEB_DEFAULT, default=None,
                 help=f"Serve the preview as a web page instead of a window [{WEB_DEFAULT}]"),
    click.option("--loop", is_flag=True, help="Start a file source again when it ends"))

quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar, no per-file messages")


def _scan_setup(directory, out, db, model, link_mode, min_confidence, follow_links, files=False):
    """scan's and watch's arguments checked, OUT and DB resolved, the settings not given taken
    from the folder's last scan (else the defaults): (root, out, db, link_mode, min_confidence,
    follow_links).
    files: a single sticker file may stand for DIRECTORY (scan)."""
    from .links import LinkError, check_mode
    from .paths import PathError, key_path, scan_paths
    from .store import following_within, settings_for
    with _failing(PathError, LinkError):
        root, out, db, last = scan_paths(directory, out, db, files, recall=settings_for)
        link_mode = link_mode or last.get("link_mode") or "symlink"
        check_mode(link_mode, root, out)
    if os.path.islink(root) and not (follow_links is not False and last.get("follow_links")):
        # Filed alone, it would be dropped by the folder's next scan, which does not follow links.
        raise Fail(f"{directory} is a symlink, which only a scan of {root.parent} following links files: scan "
                   f"its target ({os.path.realpath(root)}), or {root.parent} with --follow-links")
    _check_model(model)
    if min_confidence is None:  # None again where the last scan was given none: the model's default
        min_confidence = last.get("min_confidence")
    elif min_confidence == DEFAULT:
        min_confidence = None
    if follow_links is None:
        follow_links = bool(last.get("follow_links"))
        if not follow_links and (under := following_within(path_key(root), db)):  # else dropped unasked
            raise Fail(f"{key_path(under[0])} was last scanned with --follow-links: give --follow-links to keep "
                       f"the stickers it reached through links, or --no-follow-links to drop them")
    return root, out, db, link_mode, min_confidence, follow_links


def _check_model(model):
    """A --model that is missing, unreadable, or (ONNX) not faces -> 7 scores is refused now, not
    per file or after minutes of reading data."""
    if model is None:
        return
    if not model.is_file():
        raise Fail(f"model file not found: {model}")
    if model.suffix == ".keras":
        _need("a .keras model", *TRAINING)
        from ..training.quiet import import_tensorflow
        import_tensorflow()
        from ..training.network import load
        with _failing(ValueError):
            load(model)
        return
    from ..model.inference import Classifier, ModelError
    with _failing(ModelError):
        Classifier(model).session


def _echo(quiet):
    from .say import say
    return (lambda m: None) if quiet else say


@cli.command()
@click.argument("directory", type=click.Path())  # a str: Path("") would be the current folder
@scan_options(dry_run=True)
@click.option("-j", "--jobs", type=click.IntRange(1, 64), help="Files read at once [default: CPU cores, at most 4]")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where files are read: here, or as a Ray Data job (needs the [ray] extra; on a cluster, "
                   "DIR must be at the same path on every node)")
@click.option("--address", metavar="HOST:PORT", help="Ray cluster to run on (--engine ray) [default: a local Ray "
                                                     "with this machine's cores]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout")
@quiet_option
@click.option("-v", "--verbose", is_flag=True, help="A line per file")
def scan(directory, out, db, frames, min_confidence, link_mode, dry_run, rescan, detector, model, follow_links, jobs,
         engine, address, as_json, quiet, verbose):
    """Classify every sticker under DIRECTORY and link it into OUT/<emotion>/. DIRECTORY may also
    be one sticker file: only it is scanned, its folder standing for DIRECTORY.

    Exit status: 0 all files filed; 1 done, but some files or folders could not be read (each
    listed, a file recorded with its error); 2 nothing done (bad arguments, unusable DB or OUT);
    130 interrupted (143: SIGTERM), what was done kept; 141 its output's reader gone (`| head`);
    74 a disk full; 70 an internal error.
    """
    from .interrupt import deferred
    from .links import LinkError
    from .media import Interrupted
    from .paths import PathError, inside
    from .scan import Options, Scanner
    from .store import StoreError

    root, out, db, link_mode, min_confidence, follow_links = _scan_setup(
        directory, out, db, model, link_mode, min_confidence, follow_links, files=True)
    echo = _echo(quiet)
    options = Options(out=out, db=db, frames=frames, min_confidence=min_confidence, link_mode=link_mode,
                      dry_run=dry_run, rescan=rescan, detector=detector, model=model, follow_links=follow_links,
                      engine=engine, address=address, **({"jobs": jobs} if jobs else {}))
    errors = (StoreError, LinkError, PathError)
    if engine == "ray":
        _need("--engine ray", "ray")
        from .engine_ray import EngineError
        errors += (EngineError,)
        if jobs:
            raise Fail("--jobs is for the local engine: a Ray scan runs one reader per CPU of the cluster")
        if address is not None and not address.strip():
            raise Fail("--address: expected HOST:PORT, or auto")
    elif address is not None:
        raise Fail("--address needs --engine ray")
    if not quiet and inside(out, root):
        echo(f"note: {out} is inside {root}; the scan skips it")
    # A link that cannot be made fails for every file. Ray is joined before the database is made:
    # a cluster it cannot reach leaves nothing.
    with _failing(*errors), deferred() as stop, _engine(engine, address):
        scanner = Scanner(options, echo=echo)
        try:
            summary = scanner.scan(root, progress=None if quiet else _progress, stop=stop)
        except Interrupted:
            _stopped(stop, "every file done so far is recorded and linked; scan again to finish")
    if verbose and not as_json:
        for row in _filed(scanner, root):
            click.echo(shown(_row_line(row)))
    _print_summary(summary, as_json)
    sys.exit(EXIT_PARTIAL if summary.errors else EXIT_OK)


def _engine(engine, address):
    if engine != "ray":
        return nullcontext()
    from .engine_ray import joined
    return joined(address)


ERRORS_LISTED = 20  # after a scan; the rest are a `query error` away


def _progress(paths):
    from tqdm import tqdm
    return tqdm(paths, unit="file", file=sys.stderr, disable=None, leave=False)


def _print_summary(summary, as_json):
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    labels = ", ".join(f"{k} {v}" for k, v in sorted(summary.labels.items(), key=lambda kv: -kv[1]))
    links = summary.links
    click.echo(f"{_count(summary.files, 'file')} in {summary.seconds:.1f} s ({summary.files_per_s} files/s): "
               f"{summary.classified} classified, {summary.unchanged} unchanged, "
               f"{summary.errors} errors, {summary.vanished} vanished")
    click.echo(f"labels: {labels or 'none'}")
    would = "would be " if summary.dry_run else ""
    click.echo(shown(f"links in {summary.out}: {would}{links.get('created', 0)} created, {links.get('moved', 0)} moved, "
                     f"{links.get('removed', 0)} removed" + (f", {links['last_copies']} kept as the only copies"
                     if links.get("last_copies") else "") + f"; database {summary.db}"))
    for e in summary.error_files[:ERRORS_LISTED]:
        click.echo(shown(f"error: {e['path']}: {e['error']}"), err=True)
    if len(summary.error_files) > ERRORS_LISTED:
        rest = "scan without --dry-run to record them" if summary.dry_run else "`stickersort query error` lists them"
        click.echo(f"... and {len(summary.error_files) - ERRORS_LISTED} more errors ({rest})", err=True)


def _filed(scanner, root):
    """The readable files under root as the scan left them, best first, as `query` lists them; a
    dry run's, as it would have left them (what it would change, it did not record)."""
    rows = {r["path"]: r for r in scanner.store.query(root=path_key(root))}
    rows.update(scanner.would)
    for key in [k for k, r in rows.items() if r.get("error") or r.get("gone")]:  # as `query` lists none of them
        del rows[key]
    return sorted(rows.values(), key=lambda r: (r["confidence"] is None, -(r["confidence"] or 0), r["path"]))


def _row_line(row):
    """One filed sticker as text; an unsure one says what it would have been; an unreadable one why."""
    if row.get("error"):
        return f"{'error':<9}       {row['path']}: {row['error']}"
    score = "   -" if row["confidence"] is None else f"{row['confidence']:.2f}"  # noface: nothing was scored
    if row.get("user_label") and row["guess"] != row["label"]:  # `stickersort label`: the score is the model's
        vote = f"{row['guess']} {score.strip()}" if row["guess"] else "noface"
        return f"{row['label']:<9}    -  {row['path']}  (yours; model: {vote})"
    line = f"{row['label']:<9} {score}  {row['path']}"
    if row.get("user_label"):
        return f"{line}  (yours)"
    return f"{line}  (guess: {row['guess']})" if row["guess"] and row["guess"] != row["label"] else line


def _open_store(db, readonly=True):
    """The database of a command that reads it (read-only, so a file nobody may write works too),
    or with readonly=False of one that writes to it; it must exist."""
    from .store import Store, StoreError
    with _failing(StoreError):
        return Store(db, create=False, readonly=readonly)


# What query takes and stats lists (store.LABELS, named here so --help does not import the store).
LABELS = (*EMOTIONS, UNSURE, NOFACE, "error")


@cli.command(help=f"""List filed stickers, best match first: all, or those with LABEL, one of
{', '.join(LABELS)} (error: the files that could not be read, each with why).

When nothing matches, stdout stays empty (--json: an empty list), stderr says so, and the exit
status is 0.""")
@click.argument("label", required=False)
@_db_option
@click.option("--min-confidence", type=_Number(0, 1), default=0.0,
              help="List only stickers scored at least this, and those you labelled yourself (a filter; "
                   "scan's --min-confidence files the unsure)")
@click.option("--include-unsure", is_flag=True,
              help="With an expression LABEL, also list the unsure stickers whose best guess it is, after the sure ones")
@click.option("--limit", type=click.IntRange(1), default=None, metavar="N", help="List at most N stickers")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list on stdout, one object per sticker (confidence null where the model found no face)")
def query(label, db, min_confidence, include_unsure, limit, as_json):
    if label and label not in LABELS:
        raise Fail(f"unknown label {label!r}; choose from {', '.join(LABELS)}")
    if include_unsure and label not in EMOTIONS:  # else it would change nothing, silently
        raise Fail(f"--include-unsure goes with an expression LABEL ({', '.join(EMOTIONS)}): the unsure files "
                   f"whose best guess it is" + ("" if label else "; without LABEL every file is listed already"))
    from .store import StoreError
    store = _open_store(db)
    with _failing(StoreError):  # a damaged page
        # SQLite's LIMIT is a 64-bit integer; past it, the same as none.
        rows = store.query(label, min_confidence, limit if (limit or 0) < 2**63 else None, include_unsure=include_unsure)
    store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    for row in [] if as_json else rows:
        click.echo(shown(_row_line(row)))
    if not rows:
        click.echo(f"{_nothing(label, min_confidence)} in {store.path}", err=True)


def _nothing(label, min_confidence):
    if label == "error":
        return "no unreadable files"
    scored = f" scored {min_confidence} or more" if min_confidence else ""
    return f"no {label + ' ' if label else ''}stickers{scored}"


@cli.command()
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, label: count, on stdout")
def stats(db, as_json):
    """Count the stickers per label, every label listed, zeros too: the expressions, unsure,
    noface, and error (files that could not be read; `query error` lists them)."""
    from .store import StoreError
    store = _open_store(db)
    with _failing(StoreError):  # a damaged page
        counts = store.stats()
    store.close()
    if as_json:
        click.echo(json.dumps(counts))
        return
    for label, n in counts.items():
        click.echo(f"{label:<9} {n}")


@cli.command()
@click.argument("data", type=_Named(path_type=Path))
@click.option("--arch", type=click.Choice(ARCHS), default=Config.arch, show_default=True,
              help="The net to build (sticker-wide is the shipped one, in int8); --init brings its own")
@click.option("--epochs", default=Config.epochs, show_default=True, type=click.IntRange(1), help="Passes over Training")
@click.option("--batch-size", default=Config.batch_size, show_default=True, type=click.IntRange(1),
              help="Faces per step")
@click.option("--lr", default=Config.lr, show_default=True, type=_Number(0, min_open=True), help="Peak learning rate (AdamW, cosine)")
@click.option("--out", type=click.Path(), default="runs/train", show_default=True,
              help="The run's folder: best.keras, stickernet.onnx, options.json, history.csv, metrics.json, plots")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last finished epoch (weights, optimizer, "
              "schedule); other options than the run's own (--epochs, --int8 aside) are refused")
@click.option("--seed", default=Config.seed, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seeds weights, shuffling and augmentation")
@click.option("--labels", type=click.Choice(["fer2013", "ferplus", "blend"]), default=Config.labels, show_default=True,
              help="blend: FER2013 labels with 30 % FER+ vote shares mixed into Training's targets")
@click.option("--ferplus", type=_Named(path_type=Path), default=Config.ferplus,
              help="FER+ votes file fer2013new.csv(.gz)")
@click.option("--limit", type=click.IntRange(1), default=Config.limit, help="Train on N images only, scored on N/4 of each test split (a quick check)")
@click.option("--init", type=_Named(path_type=Path, dir_okay=False, exists=True), default=Config.init,
              help="Start from this .keras model (a new learning-rate cycle) instead of random weights; "
                   "an int8 .onnx export (the shipped model) has its float weights rebuilt, with --arch its arch")
@click.option("--teacher", "teachers", multiple=True, default=Config.teachers,
              type=_Named(path_type=Path, dir_okay=False, exists=True),
              help="Distil: blend the labels half and half with this .onnx/.keras model's mirror-averaged "
                   "probabilities; repeat it to average an ensemble")
@click.option("--augment", type=click.Choice(["strong", "light"]), default=Config.augment, show_default=True,
              help="light (mirror, small shifts) suits a last cycle after --init")
@click.option("--int8", is_flag=True, default=Config.int8, help="Export stickernet.onnx quantized to int8 (about 2x faces/s)")
@click.option("--swa", type=click.IntRange(0), default=Config.swa,
              help="Stochastic weight averaging over N trajectories from the start, each EPOCHS/N long: "
                   "constant LR, weights saved every half epoch and averaged (a last cycle after --init)")
@click.option("--sam", type=_Number(0, min_open=False), default=Config.sam,
              help="Sharpness-aware minimization with this radius (0.05 is usual): flatter minima, "
                   "twice the time per epoch")
@click.option("--cards", type=click.IntRange(0), default=Config.cards,
              help="Also train on N views of each Training face as the scan sees it: put on a generated "
                   "sticker card (captions, palettes, JPEG, blur, tilt), found by the detector and cropped")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no line per epoch on stderr")
def train(data, out, resume, quiet, **knobs):
    """Train the expression CNN on FER2013 (Kaggle csv/csv.gz or the image-folder layout).

    Ctrl-C or SIGTERM stops it between batches (exit status 130 or 143); OUT keeps every finished
    epoch, and the same command with --resume goes on from there.
    """
    _need("stickersort train", *TRAINING)
    from .interrupt import exit_status, terminated_as_interrupted
    from ..training.quiet import import_tensorflow
    import_tensorflow()
    from ..model.inference import ModelError
    from ..training.data import DataError
    from ..training.report import command_line
    from ..training.train import read_history, resume_hint, run
    out = _run_folder(out)
    try:
        with terminated_as_interrupted():
            metrics = run(data, out, Config(**knobs), resume=resume, quiet=quiet)
    except (DataError, ValueError, ModelError) as e:
        raise Fail(str(e))
    except KeyboardInterrupt as e:
        # This command, not the run's first: a resume may have given it more --epochs.
        click.echo(f"stickersort: interrupted after {len(read_history(out / 'history.csv'))} of {knobs['epochs']} "
                   "epochs" + (f"; `{resume_hint({'command': command_line()})}` goes on"
                               if (out / "options.json").exists() else ""), err=True)
        raise click.exceptions.Exit(exit_status(getattr(e, "signum", None)))
    click.echo(f"PublicTest {metrics['publictest_accuracy']:.4f}  PrivateTest "
               f"{metrics['privatetest_accuracy']:.4f}  (flip TTA {metrics['privatetest_accuracy_tta_flip']:.4f})")
    click.echo(f"wrote {out}/: best.keras, stickernet.onnx, metrics.json, history.csv, curves.png, confusion.png, samples.png")


def _run_folder(out):
    """--out as a Path: an empty one would be the current folder (a script's unset $OUT)."""
    if not out.strip():
        raise Fail("--out: an empty name would mean the current folder; name it (`.`) if that is meant")
    return Path(out)


@cli.command()
@click.argument("data", type=_Named(path_type=Path))
@click.option("--model", "models", multiple=True, required=True,
              type=_Named(path_type=Path, dir_okay=False, exists=True),
              help="A last cycle's .keras model (or an int8 .onnx export, rebuilt as in train --init); repeat it")
@click.option("--arch", type=click.Choice(ARCHS), default="sticker-wide", show_default=True,
              help="The arch of any .onnx --model")
@click.option("--out", type=click.Path(), default="runs/soup", show_default=True,
              help="best.keras, stickernet.onnx, metrics.json and the figures, as train writes them, plus soup.json: "
                   "every mixture tried")
@click.option("--int8", is_flag=True, help="Export stickernet.onnx quantized to int8 (about 2x faces/s)")
@click.option("--cards", type=click.IntRange(min=0), default=0, show_default=True,
              help="The models were trained with train --cards N: batch norm is recomputed on the same "
                   "mix, and each mixture is also judged on a card view of each PublicTest face")
def soup(data, models, arch, out, int8, cards):
    """Average the weights of several fine-tunes of one start (a greedy model soup, chosen on PublicTest)."""
    twice = next((m for i, m in enumerate(models) if any(os.path.samefile(m, o) for o in models[:i])), None)
    if twice:  # else counted as two of its ingredients, its weight doubled
        raise Fail(f"--model {twice} is given twice")
    _need("stickersort soup", *TRAINING)
    from ..training.quiet import import_tensorflow
    import_tensorflow()
    from ..model.inference import ModelError
    from ..training.data import DataError
    from ..training.soup import run
    from .interrupt import terminated_as_interrupted
    out = _run_folder(out)
    try:
        with terminated_as_interrupted():
            metrics = run(data, out, models, arch=arch, int8=int8, cards=cards, echo=click.echo)
    except (DataError, ValueError, ModelError) as e:
        raise Fail(str(e))
    click.echo(f"{len(metrics['soup'])} of {len(models)} models kept.  PublicTest {metrics['publictest_accuracy']:.4f}  "
               f"PrivateTest {metrics['privatetest_accuracy']:.4f}  (flip TTA {metrics['privatetest_accuracy_tta_flip']:.4f})")
    click.echo(f"wrote {out}/: best.keras, stickernet.onnx, soup.json, metrics.json, confusion.png, samples.png")


@cli.command()
@click.argument("data", type=_Named(path_type=Path), required=False)
@click.option("--split", type=click.Choice(["PrivateTest", "PublicTest", "Training"]), default="PrivateTest",
              show_default=True, help="The FER2013 split to score (select on PublicTest, report PrivateTest)")
@click.option("--model", type=_Named(path_type=Path, dir_okay=False), help="An .onnx or .keras model [default: the bundled one]")
@click.option("--labels", type=click.Choice(["fer2013", "ferplus"]), default="fer2013", show_default=True,
              help="Score against FER2013's labels or the FER+ majority (faces without one are skipped and counted)")
@click.option("--ferplus", type=_Named(path_type=Path), help="FER+ votes file [default: ferplus/fer2013new.csv.gz beside DATA's folder]")
@click.option("--tta", is_flag=True, help="Score each face with its mirror image too, their probabilities averaged (the figures "
                   "are then TTA's; the model card's bar counts the plain pass)")
@click.option("--limit", type=click.IntRange(1), help="Only the first N faces of the split")
@click.option("--against", type=_Named(path_type=Path, dir_okay=False),
              help="Also score this model on the same faces (or stickers) and say whether the gap is beyond noise")
@click.option("--pipeline", is_flag=True,
              help="Put each face on a generated sticker card and run the scan's detect, crop and classify on it; "
                   "reported beside the direct figure")
@click.option("--calibrate", is_flag=True,
              help="Measure where a FER2013 frame lies around the detector's box on cards of the split's faces "
                   "(the crop's FER_FRAMES; use --split Training)")
@click.option("--detector", type=click.Choice(["blazeface", "haar"]), default="blazeface", show_default=True,
              help="With --calibrate: the detector to measure")
@click.option("--stickers", type=_Named(path_type=Path, file_okay=False),
              help="Instead of FER2013: scan this folder as `scan` would and score it against DIR/labels.csv "
                   "(columns file,label; a label is an expression, noface, or ambiguous: counted for face found only)")
@click.option("--plot", type=_Named(path_type=Path, dir_okay=False),
              help="With --stickers: draw precision against coverage as the confidence threshold moves into this new PNG")
@click.option("--figures", type=_Named(path_type=Path, file_okay=False),
              help="Also draw the split's confusion.png (counts, row shares) and samples.png (faces, predicted "
                   "against true) into this folder, as train does (never over figures already there)")
@click.option("--json", "as_json", is_flag=True, help="Everything as JSON (with --stickers, each file's result too)")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no header on stderr")
def evaluate(data, split, model, labels, ferplus, tta, limit, against, pipeline, calibrate, detector, stickers, plot,
             figures, as_json, quiet):
    """Accuracy, per-class table and confusion matrix of a model on one FER2013 split, directly or
    through the scan's pipeline (--pipeline), or on a labelled sticker folder (--stickers DIR)."""
    from ..model.inference import SHIPPED_MODEL
    _refuse_unused(click.get_current_context(), stickers, calibrate)
    if plot:
        if plot.suffix.lower() != ".png":
            raise Fail(f"--plot {plot}: the plot is a PNG; give a name ending in .png")
        if not plot.parent.is_dir():
            raise Fail(f"--plot {plot}: no folder {plot.parent} to write it in")
        if os.path.lexists(plot):  # a sticker, a run's own plot, a link to anything: none is written over
            raise Fail(f"--plot {plot} exists: the plot is written only as a new file; choose another name")
    for place, name, read in ((plot, "--plot", stickers), (figures, "--figures", data)):
        if place and read and os.path.isdir(read) and inside(place, read):  # read as faces next time
            raise Fail(f"{name} {place} is inside {read}, which is evaluated: choose a place outside it")
    if figures and os.path.islink(figures) and not figures.exists():  # else found only once the work is done
        raise Fail(f"--figures {figures} is a broken link; give a folder")
    if tta and pipeline:  # the pipeline scores as the scan does: one pass, no mirror
        raise Fail("--tta scores the faces directly; --pipeline scores them as a scan does, in one pass: give one")
    if figures:
        from ..training.evaluate import FIGURES
        taken = [name for name in FIGURES if os.path.lexists(figures / name)]
        if taken:  # a train run's own figures, say, which would be replaced by another split's
            raise Fail(f"--figures {figures} already holds {' and '.join(taken)}; give a folder without them")
    from ..training.data import DataError
    from ..training.run_folder import check_writable
    with _failing(DataError):  # checked before the work, whose result a failed write would lose
        if plot:
            check_writable(plot.parent, named=plot)
        if figures:
            check_writable(figures)
    model = model or SHIPPED_MODEL
    models = [Path(p) for p in (model, against) if p]
    if (stickers or pipeline) and any(p.suffix == ".keras" for p in models):
        raise Fail(f"{'--stickers' if stickers else '--pipeline'} scans as `scan` does, with an .onnx model "
                   f"(train writes stickernet.onnx beside best.keras)")
    if ferplus and labels != "ferplus":  # else read by nothing, silently
        raise Fail("--ferplus: the FER+ votes are read only with --labels ferplus")
    if figures:
        _need("--figures", "matplotlib")
    for path in models:
        _check_model(path)
    if stickers:
        if plot:
            _need("--plot", "matplotlib")
        return _evaluate_stickers(stickers, model, against, plot, as_json, quiet)
    if data is None:
        raise Fail("give FER2013 DATA (fer2013.csv.gz or an image folder), or --stickers DIR")
    from ..model.inference import ModelError
    from ..training import evaluate as ev
    if calibrate:
        with _failing(DataError):
            frame = ev.calibrate_split(data, split, detector, limit)
        return click.echo(json.dumps(frame, indent=2) if as_json else ev.format_calibration(frame, split))
    _echo(quiet)(f"evaluating {model} on {split} of {data}{' through the scan pipeline' if pipeline else ''}")
    with _failing(DataError, ModelError):  # ModelError: a model that gives NaN, say
        result = ev.evaluate_split(data, split, model, labels, ferplus, tta, limit, against, pipeline, figures, quiet)
    click.echo(json.dumps(result, indent=2) if as_json else ev.format_result(result))


# What each of evaluate's three modes leaves unread: given, such an option is refused, not ignored.
_UNUSED = {
    "--stickers": ("data", "split", "labels", "ferplus", "tta", "limit", "pipeline", "calibrate", "detector", "figures"),
    "--calibrate": ("model", "labels", "ferplus", "tta", "against", "pipeline", "figures", "plot"),
    None: ("plot", "detector"),  # a split, scored: --plot goes with --stickers, --detector with --calibrate
}


def _given(ctx, names):
    """The parameters among names that the command line set (not left at their defaults)."""
    return [p for p in ctx.command.params
            if p.name in names and ctx.get_parameter_source(p.name) is not click.core.ParameterSource.DEFAULT]


def _refuse_unused(ctx, stickers, calibrate):
    mode = "--stickers" if stickers else "--calibrate" if calibrate else None
    given = _given(ctx, _UNUSED[mode])
    if given and mode:
        names = ", ".join(p.human_readable_name if isinstance(p, click.Argument) else p.opts[0] for p in given)
        raise Fail(f"{names}: not used with {mode}")
    if given:
        raise Fail(f"{given[0].opts[0]} goes with {'--stickers' if given[0].name == 'plot' else '--calibrate'}")


def _evaluate_stickers(folder, model, against, plot, as_json, quiet):
    from . import sticker_eval
    from .interrupt import deferred
    from .media import Interrupted
    _echo(quiet)(f"evaluating {model} on the stickers in {folder}")
    with _failing(sticker_eval.EvalError), deferred() as stop:  # a stop between files: its scratch removed
        try:
            report = sticker_eval.evaluate(folder, model, against, stop=stop)
        except Interrupted:  # stop is set: said below
            pass
    if stop.is_set():  # during the scans, or after them
        _stopped(stop, "nothing was kept")
    click.echo(json.dumps(report, indent=2) if as_json else sticker_eval.format_report(report))
    if plot:  # after the report, which a failed write would otherwise take with it
        try:
            sticker_eval.plot_curve(report, plot)
        except OSError as e:
            raise Fail(f"--plot {plot}: cannot write it ({e.strerror or e})")


@cli.command()
@preview_options
@click.option("--db", type=_Named(path_type=Path), default=None,
              help="A database from `scan`: show the library's stickers with the expression on screen")
@click.option("--max-frames", type=click.IntRange(1), help="Stop after N frames")
@model_options
@click.option("--json", "as_json", is_flag=True, help="No window; print the run's frames, faces, FPS and latency as JSON")
def live(source, web, db, loop, max_frames, detector, model, as_json):
    """Box each face in a camera, video or stream with its expression, as it plays.

    Without --web it opens a window (needs a display); with --json alone it runs without one.
    Ctrl-C, q in the window, or the end of a file source (unless --loop) ends it.
    """
    from ..model.inference import ModelError
    from .interrupt import deferred
    from .live import LiveError, run_live
    _check_model(model)
    if db is not None:
        _open_store(db)  # a one-line error now rather than in the middle of the preview
    # ModelError: a --model that passed the check on a blank face and fails on real ones.
    with _failing(LiveError, ModelError), deferred() as stop:  # Ctrl-C ends the run after the frame under way
        stats = run_live(source, web, db, detector, model, loop, max_frames, window=not as_json, stop=stop,
                         echo=_echo(False))
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    if stop.signum:
        _stopped(stop, f"{stats.get('frames', 0)} frames shown")


@cli.command()
@click.argument("directory", type=click.Path())  # a str: Path("") would be the current folder
@scan_options()
@click.option("--settle", default=1.0, show_default=True, type=_Number(0.05, 3600),
              help="Seconds a new or changed file's size and mtime must hold still before it is read")
@click.option("--live", "with_live", is_flag=True, help="Also run the live preview (a window, or --web) in this process")
@preview_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line per event on stdout: added, changed, removed, moved or error, with its "
                   "path; first an added line for each file the first scan leaves recorded")
@quiet_option
def watch(directory, out, db, frames, min_confidence, link_mode, rescan, detector, model, follow_links, settle,
          with_live, source, web, loop, as_json, quiet):
    """Scan DIRECTORY like `scan`, then keep following it: new and changed files are classified,
    moved ones keep their record, deleted ones lose record and link. After lost events (the
    kernel's queue overflowed) it rescans; past the inotify watch limit it polls. Ctrl-C stops (130)."""
    from .interrupt import deferred
    from .links import LinkError
    from .live import LiveError, check_preview, run_live
    from .paths import PathError
    from .scan import Options
    from .store import Store, StoreError
    from .watch import WatchError, run_watch

    given = _given(click.get_current_context(), ("source", "web", "loop"))
    if given and not with_live:  # else the preview the user asked for silently never comes
        raise Fail(f"{', '.join(p.opts[0] for p in given)}: the preview's options go with --live")
    if with_live:  # a mistake in the preview's arguments, told before the first scan makes anything
        with _failing(LiveError):
            check_preview(source, web, model, early=True)
    root, out, db, link_mode, min_confidence, follow_links = _scan_setup(
        directory, out, db, model, link_mode, min_confidence, follow_links)
    with _failing(StoreError):
        Store(db)  # a one-line error now for an unusable database
    echo = _echo(quiet)
    options = Options(out=out, db=db, frames=frames, min_confidence=min_confidence, link_mode=link_mode,
                      rescan=rescan, detector=detector, model=model, follow_links=follow_links)

    def preview(stop):
        return run_live(source, web, db, detector, model, loop, stop=stop, echo=_echo(False))

    report = (lambda event: click.echo(json.dumps(event))) if as_json else None
    # As for scan: OUT or the database unusable (a label folder it may not write, a full disk) ends it in one line.
    with _failing(LiveError, LinkError, PathError, StoreError, WatchError), _failing_database(db), deferred() as stop:
        summary = run_watch(options, root, stop, settle, echo, None if quiet else _progress,
                            preview if with_live else None, report)
    if summary is None:  # its --json events too were cut short: the database has the rest
        done = "during the first scan: every file done so far is recorded and linked; watch or scan again to finish"
        if stop.signum:
            _stopped(stop, done)
        return echo(f"stopped {done}")
    done = f"{summary.classified} classified, {summary.errors} errors since the first scan"
    if stop.signum:
        _stopped(stop, f"{done}; every file done is recorded and linked")
    echo(f"stopped: {done}")  # a stop no signal asked for


@cli.command()
@click.argument("file", type=click.Path(readable=False))  # the record is read, not the file; a str: Path("") is "."
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the record, its faces and links as JSON")
@click.option("--image", type=_Named(path_type=Path, dir_okay=False),
              help="Also draw the sampled frames with each face's box and label into this new PNG (an existing name is refused)")
def show(file, db, as_json, image):
    """Why FILE got its label: the vote and runner-up, each sampled frame's faces (box, detector
    score, label, probabilities), whose label it is, and where its link is. FILE may be its link in OUT."""
    from .library import LibraryError, describe, scanned_folder, show_file
    new_image = image and not os.path.lexists(image)  # an existing name: refused by draw
    if new_image and image.suffix.lower() != ".png":
        raise Fail(f"--image {image}: the picture is a PNG; give a new name ending in .png")
    with _failing(LibraryError):
        info = show_file(db, file)
        if new_image and (folder := scanned_folder(db, image.parent)):  # as evaluate --plot refuses its folder
            raise Fail(f"--image {image} is inside {folder}, which is scanned: its next scan would file the "
                       f"picture; choose a place outside")
        if image:
            from .contact_sheet import draw
            draw(info, image)
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join(map(shown, describe(info))))
    if image and not as_json:
        click.echo(f"wrote {image}", err=True)


@cli.command()
@click.argument("file", type=click.Path(readable=False))  # the record is read, not the file; a str: Path("") is "."
@click.argument("emotion", metavar="EMOTION")
@_db_option
def label(file, emotion, db):
    """File FILE under EMOTION for good (one of the seven expressions, or noface): its link moves to
    OUT/EMOTION/ and no rescan, --rescan or new model changes it; the model's vote stays in the record."""
    from .library import LibraryError, label_file
    with _failing(LibraryError):
        record = label_file(db, file, emotion)
    where = f"linked at {record['link']}" if record["link"] else "no link yet (the next scan makes it)"
    click.echo(shown(f"{record['path']}: {emotion} (yours), {where}" if record["changed"] else
                     f"{record['path']}: {emotion} (yours) already, {where}: nothing changed"))


def _forgetting(forget_files, db, dry_run, nothing, **args):
    """forget's and prune's run and report: a line per step, then what was done (or what `nothing()`
    says, asked only then)."""
    from .library import LibraryError
    from .paths import key_path
    echo = _echo(False)
    with _failing(LibraryError):
        done = forget_files(db, dry_run=dry_run, report=lambda action, path: echo(
            f"{'would ' if dry_run else ''}{action}: {path}"), **args)
    for folder, files in done.get("away", {}).items():
        echo(shown(f"left alone: {_count(files, 'recorded file')} under {folder}, which is gone or empty (a drive "
                   f"not mounted?); `stickersort forget {shlex.quote(key_path(folder))}` drops them"))
    if not done["files"]:
        if done.get("away"):
            return None
        with _failing(LibraryError):
            return echo(shown(nothing()))
    verb = "would forget" if dry_run else "forgot"
    click.echo(f"{verb} {_count(len(done['files']), 'file')}, {'would remove' if dry_run else 'removed'} "
               f"{_count(done['links_removed'], 'link')}" + (f", kept {_count(done['kept'], 'last copy', 'last copies')}"
                                                            if done["kept"] else ""))


def _count(n, thing, things=None):
    return f"{n} {thing if n == 1 else things or thing + 's'}"


@cli.command()
@click.argument("path", type=click.Path(readable=False))  # a str: Path("") would be the current folder
@_db_option
@click.option("--dry-run", is_flag=True, help="Print what would be forgotten and unlinked; change nothing")
def forget(path, db, dry_run):
    """Drop the records of the files at or under PATH and the links stickersort made for them in
    OUT. PATH may also be a file's entry in OUT. The files themselves are never touched; a later
    scan of PATH records them again. A hard link or copy in OUT that is the last copy of a file
    now gone stays, as the user's."""
    from .library import forget as forget_files

    def nothing():
        said, target = f"no records at or under {path}", os.path.realpath(path)
        if os.path.islink(path.rstrip(os.sep) or path) and forget_files(db, target, dry_run=True)["files"]:
            said += f" (a link, which names itself: `stickersort forget {shlex.quote(target)}` forgets what it leads to)"
        return said
    _forgetting(forget_files, db, dry_run, nothing, path=path)


@cli.command()
@_db_option
@click.option("--dry-run", is_flag=True, help="Print what would be forgotten and unlinked; change nothing")
def prune(db, dry_run):
    """Forget every recorded file that no longer exists (a deleted folder's, say), with its links.
    A scanned folder that is gone or empty whole, as a drive not mounted leaves it, is left alone
    and named (`forget` drops it). A hard link or copy in OUT that is the last copy of a file now
    gone stays, as the user's."""
    from .library import prune as prune_files
    _forgetting(prune_files, db, dry_run, lambda: "every recorded file still exists: nothing to prune")


@cli.command()
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON")
def dupes(db, as_json):
    """List groups of recorded files with the same content (those still there), the most space
    taken twice first."""
    from .library import LibraryError, dupes as find_dupes
    with _failing(LibraryError):
        groups = find_dupes(db)
    if as_json:
        return click.echo(json.dumps(groups, indent=2))
    for group in groups:
        names = len(group["files"])
        click.echo(f"{group['copies']} copies of {group['size']} bytes ({group['hash'][:12]})"
                   + (f", {names} names:" if names > group["copies"] else ":"))
        for f in group["files"]:
            click.echo(shown(f"  {f['label'] or 'error':<9} {f['path']}"
                             + (f"  (the same file as {f['same_file_as']})" if f["same_file_as"] else "")))
    if not groups:
        click.echo("no files with the same content", err=True)


@cli.command()
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (0.0.0.0: every address; other machines then see the library)")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)")
def browse(db, host, port):
    """Serve the library as a web page: a shelf per expression, unsure and noface, search by
    name, and a button per sticker that corrects its label as `stickersort label` does.
    Ctrl-C stops."""
    from . import browse as pages
    from .interrupt import deferred
    from .serving import ServeError
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # an IPv6 address as URLs write it
    _open_store(db).close()  # a one-line error now for a missing or foreign database
    with _failing(ServeError), deferred() as stop:
        pages.serve(db, host, port, echo=_echo(False), stop=stop)
    if stop.signum:
        _stopped(stop, "the library page is closed")


def main():
    if sys.stdout is None:  # started with fd 1 closed: all it prints would be lost, without a word
        print("stickersort: error: standard output is closed; redirect it (to /dev/null to drop what is printed)",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        _main()
    except SystemExit as e:
        live = sys.modules.get(f"{__package__}.live")  # imported only by live and watch --live
        if live and live.reads_in_flight():
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
            with suppress(OSError):  # a closed pipe (`| head`)
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        raise


def _cwd_gone():
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def _main():
    try:
        cli.main(prog_name="stickersort")
    except KeyboardInterrupt:
        click.echo("stickersort: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # the last guard: one line, never a traceback, unless asked for
        if os.environ.get("STICKERSORT_DEBUG"):
            raise
        # A relative name given in a folder deleted since: it cannot be made absolute.
        if isinstance(e, FileNotFoundError) and not os.path.isabs(e.filename or "") and _cwd_gone():
            click.echo("stickersort: error: the current folder is gone (deleted or moved): change to one that "
                       "exists, or give absolute paths", err=True)
            sys.exit(EXIT_USAGE)
        missing = (getattr(e, "name", None) or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
        if missing in EXTRAS:  # an optional package, on a path _need does not guard
            click.echo(f"stickersort: error: {missing} is not in the base install: {_install(EXTRAS[missing])}",
                       err=True)
            sys.exit(EXIT_USAGE)
        if isinstance(e, OSError) and _disk_full(e):  # no fault of ours
            click.echo(f"stickersort: error: {e.strerror}" + (f": {e.filename}" if e.filename else ""), err=True)
            sys.exit(EXIT_FULL)
        click.echo(f"stickersort: error: {type(e).__name__}: {e}", err=True)
        sys.exit(70)
