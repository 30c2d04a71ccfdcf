"""`stickersort train`: fit a network on FER2013, select on PublicTest, report PrivateTest once.

Read top to bottom: load data -> build model -> fit with per-epoch checkpoints -> export -> report.
An interrupted run continues from OUT/backup with `--resume` (weights, optimizer, epoch, LR step).
"""
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from . import data as fer_data


class KeepBest:
    """Saves the model whenever PublicTest accuracy improves, remembering the best across resumes."""

    def __new__(cls, path, history_csv):
        import keras

        class _KeepBest(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best = _best_in_history(history_csv)

            def on_epoch_end(self, epoch, logs=None):
                acc = (logs or {}).get("val_accuracy", -1.0)
                if acc > self.best:
                    self.best = acc
                    self.model.layers[-1].save(path)  # the net, without augmentation

        return _KeepBest()


def epoch_seconds():
    """Adds each epoch's wall time to its logs, so history.csv carries it across resumes."""
    import keras

    class _EpochSeconds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = round(time.time() - self.started, 1)

    return _EpochSeconds()


def _best_in_history(history_csv):
    if not Path(history_csv).exists():
        return -1.0
    with open(history_csv) as f:
        return max((float(r["val_accuracy"]) for r in csv.DictReader(f)), default=-1.0)


def fit(splits, out, arch="sticker-deep", epochs=75, batch_size=64, lr=2e-3, seed=0,
        label_smoothing=0.1, verbose=1, init=None, augment="strong", swa=0, sam=0.0):
    """Train and keep the PublicTest-best model in OUT/best.keras (under swa, the mean of the
    snapshots of `swa` SWA trajectories). Returns the Keras history rows."""
    import keras

    from ..model.inference import net_inputs
    from . import sam as sam_module
    from . import swa as swa_module
    from .augment import augmenter

    keras.utils.set_random_seed(seed)
    out = Path(out)  # made by run, once the data has loaded
    x, y = splits["Training"]
    xv, yv = splits["PublicTest"]
    x = net_inputs(x)  # once: 28,709 faces in float32 are 265 MB
    net = _start_net(init, arch, x)
    views = augmenter(seed, augment)
    trainer = (sam_module.trainer(views, net, sam) if sam
               else keras.Sequential([keras.Input(net.input_shape[1:]), views, net]))
    steps_per_epoch = int(np.ceil(len(x) / batch_size))
    steps = epochs * steps_per_epoch
    warmup = min(steps // 10, steps_per_epoch * 2)
    schedule = lr if swa else keras.optimizers.schedules.CosineDecay(
        lr / 20, decay_steps=max(1, steps - warmup), warmup_target=lr, warmup_steps=warmup)
    trainer.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=5e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"])
    history_csv = out / "history.csv"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
        epoch_seconds(),  # before the logger, which writes the logs it is handed
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        swa_module.snapshots(out / "swa", steps_per_epoch, net.get_weights(), max(1, epochs // swa)) if swa
        else KeepBest(str(out / "best.keras"), history_csv),
    ]
    trainer.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
                validation_data=(net_inputs(xv), yv), callbacks=callbacks, verbose=verbose)
    if swa:
        swa_module.average(net, out / "swa", x, starts=swa)
        net.save(out / "best.keras")
    return _read_history(history_csv)


def _start_net(init, arch, faces):
    """--init starts a new learning-rate cycle from a trained model (a warm restart); an .onnx
    one has its float weights rebuilt, since the shipped model is only an int8 file."""
    import keras

    from ..model.network import build
    from .rebuild import from_onnx

    if not init:
        return build(arch)
    if Path(init).suffix == ".onnx":
        return from_onnx(init, arch, faces)
    return keras.models.load_model(init, compile=False)


def _read_history(history_csv):
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    # A resumed run appends; keep the last row of each epoch.
    return list({int(r["epoch"]): r for r in rows}.values())


def distil(splits, teachers, weight=0.5):
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
    from .cards import scanner_views
    x, y = splits["Training"]
    vx, vy = scanner_views(x, y, n, seed)
    return {**splits, "Training": (np.concatenate([x, vx]), np.concatenate([y, vy]))}


def _same_run(out, command, resume, **options):
    """OUT/options.json's content for this run. --resume must continue the same run: a teacher or
    a label set left off would silently change every target. More --epochs (a longer run) and
    --int8 (an export choice) may differ."""
    options = {k: [str(Path(t).resolve()) for t in v] if k == "teachers"
               else str(Path(v).resolve()) if k in ("ferplus", "init") and v else v
               for k, v in options.items()}
    saved = out / "options.json"
    if resume and saved.exists():
        stored = json.loads(saved.read_text())
        changed = sorted(k for k in options if stored["options"].get(k) != options[k])
        if changed:
            raise fer_data.DataError(f"{out} was trained with other {', '.join(changed)}: "
                                     f"resume with `{stored['command']} --resume`")
        return stored
    return {"command": command, "options": options}


def run(data, out, arch="sticker-deep", epochs=75, batch_size=64, resume=False, seed=0,
        labels="fer2013", ferplus=None, limit=None, lr=2e-3, verbose=1, init=None, teachers=(),
        augment="strong", int8=False, swa=0, sam=0.0, cards=0):
    """The whole `stickersort train` job; returns metrics.json's content."""
    out = Path(out)
    if (out / "history.csv").exists() and not resume:
        raise fer_data.DataError(f"{out} already holds a training run; pass --resume or another --out")
    from . import report
    command = report.command_line()
    record = _same_run(out, command, resume, arch=arch, batch_size=batch_size, seed=seed,
                       labels=labels, ferplus=ferplus, limit=limit, lr=lr, init=init,
                       teachers=teachers, augment=augment, swa=swa, sam=sam, cards=cards)
    splits = fer_data.load(data, labels=labels, ferplus=ferplus)
    if limit:
        splits = fer_data.limit(splits, limit, seed)
    if teachers:
        splits = distil(splits, teachers)
    if cards:
        splits = with_scanner_views(splits, cards, seed)
    out.mkdir(parents=True, exist_ok=True)  # only now: bad data leaves no run folder behind
    (out / "options.json").write_text(json.dumps(record, indent=1))
    # Teachers', a blend's and the FER+ votes' targets are soft already; smoothing them again
    # would only blur them.
    soft = bool(teachers) or labels in ("blend", "ferplus")
    history = fit(splits, out, arch, epochs, batch_size, lr, seed, verbose=verbose, init=init,
                  augment=augment, label_smoothing=0.0 if soft else 0.1, swa=swa, sam=sam)
    # Summed per epoch rather than timed here: a resumed run's figure covers every session.
    train_seconds = sum(float(r.get("seconds") or 0) for r in history)
    return report.write_all(out, splits, history, train_seconds=train_seconds,
                            command=command, labels=labels,
                            int8=int8, swa=swa)
