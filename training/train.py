"""`stickersort train`: fit a network on FER2013, select on PublicTest, report PrivateTest once.

`run` is the whole job, in order: check OUT (a new run, or the same run resumed) -> load ->
limit -> distil -> card views -> net -> fit -> report; the steps follow it. Every knob is a field
of `Config` (training/config.py), declared there once with its default. An interrupted run
(Ctrl-C, a kill) continues from OUT/backup with `--resume` (weights, optimizer, epoch, LR step).
"""
import contextlib
import csv
import dataclasses
import json
import os
import shlex
import time
from pathlib import Path

import keras
import numpy as np

from ..model.inference import net_inputs
from ..sorter.interrupt import Signalled, deferred
from . import data as fer_data
from . import progress, report, run_folder, sam, swa
from .augment import augmenter
from .cards import scanner_views
from .config import ARCHS, Config
from .network import build, load
from .rebuild import BN_FACES, from_onnx

# The knobs a --resume may change: more epochs make a longer run, int8 is an export choice.
RESUMABLE = ("epochs", "int8")


def session_seed(config, done):
    """The seed of a session that starts after DONE epochs, within what the generators take."""
    return (config.seed + done) % 2**32


def run(data, out, config=Config(), resume=False, quiet=False):
    """The whole `stickersort train` job; returns metrics.json's content. Progress goes to stderr
    unless quiet."""
    out = Path(out)
    command = report.command_line()
    record = check_run(out, config, resume, command, data)
    with contextlib.ExitStack() as held:
        if resume:  # from now: two resumes of one run would both train
            held.enter_context(run_folder.claimed(out / "options.json"))
        splits = fer_data.load(data, labels=config.labels, ferplus=config.ferplus, quiet=quiet)
        fer_data.require(data, splits)
        if config.limit:
            splits = fer_data.limit(splits, config.limit, config.seed)
        done = len(read_history(out / "history.csv")) if resume else 0
        if done >= config.epochs:  # a run stopped in its export, or exported again (--int8)
            progress.say(f"{out} has trained its {done} epochs: only exporting (give --epochs more than {done} to "
                         f"train on)", quiet)
        # A resumed session draws its dropout and augmentation afresh: a backup restores the weights,
        # not the random generators, which would deal epoch 0's masks and views again.
        keras.utils.set_random_seed(session_seed(config, done))
        # Before the teachers and cards (minutes): an --init of another arch is told first. Its batch
        # norm is measured on Training's first faces, which the card views only follow.
        net = start_net(config.init, config.arch, net_inputs(splits["Training"][0][:BN_FACES]))
        if config.teachers:
            progress.say(f"distilling from {len(config.teachers)} teacher(s)", quiet)
            splits = distil(splits, config.teachers, config.teacher_weight)
        if config.cards:
            progress.say(f"adding {config.cards} card view(s) of each Training face", quiet)
            splits = with_scanner_views(splits, config.cards, config.seed)
        x = net_inputs(splits["Training"][0])  # once: 28,709 faces in float32 are 265 MB
        out.mkdir(parents=True, exist_ok=True)  # only now: bad data or a bad --init leaves no run folder
        if not resume:  # two runs started at once into one OUT: the second stops here
            held.enter_context(run_folder.claimed(out / "options.json", new=True))
        (out / "options.json").write_text(json.dumps(record, indent=1))
        history = fit(x, splits, net, out, config, quiet, done)
        # Summed per epoch rather than timed here: a resumed run's figure covers every session.
        train_seconds = sum(float(r.get("seconds") or 0) for r in history)
        progress.say("exporting and scoring the best epoch's model", quiet)
        return report.write_all(out, splits, history, train_seconds=train_seconds, command=command,
                                labels=config.labels, int8=config.int8, swa=config.swa)


def check_run(out, config, resume, command, data):
    """OUT/options.json's content for this run, checked before any data is read. A new run needs
    an OUT of its own. --resume must continue the same run: a teacher or a label set left off
    would silently change every target, so only the RESUMABLE knobs may differ."""
    check_options(config)
    options, data = recorded(config), os.path.realpath(data)  # realpath: no error for a link loop
    saved = out / "options.json"
    if not resume:
        run_folder.check_new(out, "pass --resume to go on with its training, or another --out"
                             if saved.exists() else "pass another --out")
        return {"command": command, "cwd": os.getcwd(), "data": data, "options": options}
    if not saved.exists():  # a mistyped OUT would otherwise start hours of a new run
        raise fer_data.DataError(f"{out} holds no training run to resume; leave out --resume to start one")
    run_folder.check_writable(out)
    stored = _stored(saved)
    done = len(read_history(out / "history.csv"))
    if done and not (out / "backup").is_dir():  # else it would start afresh and append to the history
        raise fer_data.DataError(f"{out}/backup, from which the run goes on, is gone: it cannot continue where it "
                                 f"stopped; start it again with another --out")
    if stored.get("data", data) != data:  # a run recorded before DATA was counts as its own
        raise fer_data.DataError(f"{out} was trained on {stored['data']}, not {data}: "
                                 f"resume with `{resume_hint(stored)}`")
    # A knob newer than the stored run ran at its default there.
    before = {**recorded(Config()), **stored["options"]}
    changed = sorted(k for k in options if before.get(k) != options[k])
    if changed:
        raise fer_data.DataError(f"{out} was trained with other {', '.join(changed)}: "
                                 f"resume with `{resume_hint(stored)}`")
    return stored


def resume_hint(record):
    """The command that goes on with RECORD's run (options.json's, or this invocation's), to paste:
    its own command with --resume, from the folder it was typed in when that is not this one
    (its paths may be relative)."""
    command = record["command"]
    try:
        words = shlex.split(command)
    except ValueError:  # an older run recorded it unquoted: "bob's faces.csv"
        words = command.split()
    if "--resume" not in words:
        command += " --resume"
    cwd = record.get("cwd")
    return command if not cwd or cwd == os.getcwd() else f"cd {shlex.quote(cwd)} && {command}"


def _stored(saved):
    """options.json's record, or a one-line error when it is not one."""
    try:
        stored = json.loads(saved.read_text())
        if isinstance(stored, dict) and isinstance(stored.get("options"), dict) and isinstance(stored.get("command"), str):
            return stored
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    raise fer_data.DataError(f"{saved}: not a training run's record, so the run cannot be resumed")


def check_options(config):
    """What the CLI's option types check, checked for a Python caller too, before any data."""
    if config.arch not in ARCHS:
        raise fer_data.DataError(f"unknown arch {config.arch!r}; choose from {', '.join(ARCHS)}")
    if config.swa > config.epochs:  # else fewer trajectories than recorded
        raise fer_data.DataError(f"--swa {config.swa}: {config.swa} trajectories need --epochs {config.swa} or more")
    if config.ferplus and config.labels not in ("ferplus", "blend"):  # else recorded, and read by nothing
        raise fer_data.DataError("--ferplus: the FER+ votes are read only with --labels ferplus or blend")
    for path in filter(None, (config.init, *config.teachers)):
        if not Path(path).is_file():
            raise fer_data.DataError(f"{path}: no such model file")


def recorded(config):
    """CONFIG's knobs as options.json records them, the RESUMABLE ones aside; paths made absolute,
    so that a resume started from another folder is the same run."""
    def value(name, v):
        if name == "teachers":
            return [os.path.realpath(t) for t in v]
        if name in ("ferplus", "init") and v:
            return os.path.realpath(v)
        return v

    return {f.name: value(f.name, getattr(config, f.name))
            for f in dataclasses.fields(config) if f.name not in RESUMABLE}


def distil(splits, teachers, weight=Config.teacher_weight):
    """Training targets become a blend of the labels and the teachers' mirror-averaged
    probabilities (an ensemble with flip TTA scores 2 points above its members' single pass;
    the student learns that)."""
    from . import evaluate
    x, y = splits["Training"]
    soft = np.mean([evaluate.predict(t, x, tta=True) for t in teachers], axis=0).astype("float32")
    return {**splits, "Training": (x, (1 - weight) * y + weight * soft)}


def with_scanner_views(splits, n, seed):
    """Training gains n views of each face as the scan frames it on a sticker card (targets,
    a teacher's included, follow their face): the net learns the crops it will be given."""
    x, y = splits["Training"]
    vx, vy = scanner_views(x, y, n, seed)
    return {**splits, "Training": (np.concatenate([x, vx]), np.concatenate([y, vy]))}


def fit(x, splits, net, out, config, quiet=False, done=0):
    """Train NET on X (Training's net inputs) and keep the PublicTest-best model in OUT/best.keras
    (under swa, the mean of the snapshots of `config.swa` SWA trajectories); DONE: the epochs a
    resumed run has behind it. Returns the Keras history rows. Ctrl-C stops it between batches,
    never while the epoch's backup is written."""
    y = splits["Training"][1]
    xv, yv = splits["PublicTest"]
    views = augmenter(session_seed(config, done), config.augment)
    trainer = (sam.trainer(views, net, config.sam) if config.sam
               else keras.Sequential([keras.Input(net.input_shape[1:]), views, net]))
    steps_per_epoch = int(np.ceil(len(x) / config.batch_size))
    steps = config.epochs * steps_per_epoch
    warmup = min(steps // 10, steps_per_epoch * 2)
    schedule = config.lr if config.swa else keras.optimizers.schedules.CosineDecay(
        config.lr / 20, decay_steps=max(1, steps - warmup), warmup_target=config.lr, warmup_steps=warmup)
    # Teachers', a blend's and the FER+ votes' targets are soft already; smoothing them again
    # would only blur them.
    soft = bool(config.teachers) or config.labels in ("blend", "ferplus")
    trainer.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=5e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.0 if soft else config.label_smoothing),
        metrics=["accuracy"])
    history_csv = out / "history.csv"
    with deferred() as stop:
        callbacks = [
            InterruptBetweenBatches(stop),
            StopWhenDiverged(out),
            Backup(str(out / "backup"), delete_checkpoint=False),
            EpochSeconds(),  # before the logger, which writes the logs it is handed
            keras.callbacks.CSVLogger(str(history_csv), append=True),
            swa.snapshots(out / "swa", steps_per_epoch, net.get_weights(), max(1, config.epochs // config.swa))
            if config.swa else KeepBest(out / "best.keras", history_csv),
            EpochProgress(config.epochs, steps_per_epoch, quiet),
        ]
        trainer.fit(Batches(x, y, config.batch_size, config.seed, done), epochs=config.epochs,
                    validation_data=(net_inputs(xv), yv), callbacks=callbacks, verbose=0)
        if stop.is_set():  # asked after the last batch: still a stop
            raise Signalled(stop.signum)
    if config.swa:
        swa.average(net, out / "swa", x, starts=config.swa)
        net.save(out / "best.keras")
    return read_history(history_csv)


class Batches(keras.utils.PyDataset):
    """Training's batches, in an order drawn anew for each epoch from (seed, epoch): fit's own
    shuffle, under keras.utils.set_random_seed, draws one order and deals it every epoch (Keras
    3.15 on TensorFlow). From the epoch's number, a resumed run goes on with the order it would
    have had."""

    def __init__(self, x, y, batch_size, seed, epoch=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, epoch
        self.order = self._drawn()

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        rows = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])  # sorted: a faster gather
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._drawn()

    def _drawn(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def start_net(init, arch, faces):
    """ARCH's new net, or --init's model to start a new learning-rate cycle from (a warm restart);
    an .onnx one has its float weights rebuilt, since the shipped model is only an int8 file."""
    if not init:
        return build(arch)
    if Path(init).suffix == ".onnx":
        return from_onnx(init, arch, faces)
    return load(init)


class KeepBest(keras.callbacks.Callback):
    """Saves the net whenever PublicTest accuracy improves, remembering the best across resumes."""

    def __init__(self, path, history_csv):
        super().__init__()
        self.path = str(path)
        # Every row: an epoch trained again after a resume may have scored less the first time.
        self.best = max((float(r["val_accuracy"]) for r in _rows(history_csv)), default=-1.0)

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy", -1.0)
        if accuracy > self.best:
            self.best = accuracy
            self.model.layers[-1].save(self.path)  # the net, without augmentation


class InterruptBetweenBatches(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during fit (interrupt.deferred's Stop) is raised at the next batch's end,
    not wherever it lands: an epoch ends with its backup's weights, then the backup's epoch
    number, then its history row, and a stop between two of them would leave a run that resumes
    from the wrong epoch or without a row, or a backup written in half; a second Ctrl-C stops at
    once."""

    def __init__(self, stop):
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch, logs=None):
        if self.stop.is_set():
            raise Signalled(self.stop.signum)

    on_test_batch_end = on_epoch_begin = on_train_batch_end


class StopWhenDiverged(keras.callbacks.Callback):
    """A NaN or infinite loss ends the run at once: every later batch and the export would only
    carry NaN weights on (keras' TerminateOnNaN would still export them)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"batch {batch + 1}", ("loss",))

    def on_epoch_end(self, epoch, logs=None):  # before the backup and best.keras: the last batch's update
        self._check(logs, f"epoch {epoch + 1}", ("loss", "val_loss"))

    def _check(self, logs, where, keys):
        bad = next((k for k in keys if k in (logs or {}) and not np.isfinite(float(logs[k]))), None)
        if bad:
            raise fer_data.DataError(f"the training diverged ({bad} {float(logs[bad])} at {where}): try a lower "
                                     f"--lr, with another --out (or delete {self.out})")


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' backup of each epoch, a damaged one (a run killed outright as it wrote it) told in
    one line rather than as h5py's error."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except OSError as e:
            raise ValueError(f"{self.backup_dir} is damaged (the run was killed while writing it?): {e}; "
                             f"start the run again with another --out") from None


class EpochProgress(keras.callbacks.Callback):
    """A bar over each epoch's batches with the running loss and accuracy, then one line per
    epoch with PublicTest's figures (progress.py: the bar on a terminal only)."""

    def __init__(self, epochs, steps, quiet=False):
        super().__init__()
        self.epochs, self.steps, self.quiet = epochs, steps, quiet

    def on_epoch_begin(self, epoch, logs=None):
        self.name = f"epoch {epoch + 1}/{self.epochs}"
        self.bar = progress.bar(total=self.steps, quiet=self.quiet, unit="batch", desc=self.name)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.set_postfix_str(_figures(logs or {}), refresh=False)
        self.bar.update()

    def on_test_begin(self, logs=None):
        self.bar.set_description_str(f"{self.name}, scoring PublicTest")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        logs = logs or {}
        seconds = f" ({logs['seconds']:.0f} s)" if "seconds" in logs else ""
        progress.say(f"{self.name}: {_figures(logs)}; PublicTest "
                     f"{_figures({k[4:]: v for k, v in logs.items() if k.startswith('val_')})}{seconds}", self.quiet)


def _figures(logs):
    return ", ".join(f"{k} {float(logs[k]):.4f}" for k in ("loss", "accuracy") if k in logs)


class EpochSeconds(keras.callbacks.Callback):
    """Adds each epoch's wall time to its logs, so history.csv carries it across resumes."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = round(time.time() - self.started, 1)


def read_history(history_csv):
    """history.csv's rows, one per epoch: a resumed run appends, so the last row of each is kept."""
    return list({int(r["epoch"]): r for r in _rows(history_csv)}.values())


def _rows(history_csv):
    if not Path(history_csv).exists():
        return []
    with open(history_csv) as f:
        return list(csv.DictReader(f))
