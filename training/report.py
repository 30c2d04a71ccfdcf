"""What a finished training run leaves in OUT: ONNX export, metrics.json and the three plots."""
import json
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from ..model.labels import EMOTIONS
from . import evaluate

ONNX_NAME = "stickernet.onnx"


def command_line():
    """How this run was started, as the user typed it, quoted for the shell (recorded in
    options.json and metrics.json, and given back in hints to paste)."""
    return shlex.join(["stickersort", *sys.argv[1:]])


def write_all(out, splits, history, train_seconds, command, labels="fer2013", int8=False, swa=0, soup=()):
    import keras

    from .network import arch_of, count_macs
    from .export import to_int8, to_onnx

    out = Path(out)
    best = keras.models.load_model(out / "best.keras", compile=False)
    onnx_path = to_onnx(best, out / ONNX_NAME)
    if int8:  # every figure below is then the int8 file's, the one the scanner runs
        to_int8(onnx_path, splits["Training"][0][:1024], onnx_path)
    public = evaluate.scores(evaluate.predict(onnx_path, splits["PublicTest"][0]), splits["PublicTest"][1])
    private_probs = evaluate.predict(onnx_path, splits["PrivateTest"][0])
    private = evaluate.scores(private_probs, splits["PrivateTest"][1])
    tta = evaluate.scores(evaluate.predict(onnx_path, splits["PrivateTest"][0], tta=True),
                          splits["PrivateTest"][1])
    metrics = {
        "arch": arch_of(best), "labels": labels,  # under --init, the started-from net's
        "publictest_accuracy": public["accuracy"],
        "privatetest_accuracy": private["accuracy"],
        "privatetest_accuracy_tta_flip": tta["accuracy"],
        "privatetest": private,
        "epochs": len(history),
        # An SWA model or a soup is an average of weights, so no epoch of a history is it.
        "best_epoch": None if swa or soup else 1 + int(np.argmax([float(r["val_accuracy"]) for r in history])),
        "swa_trajectories": swa,
        "soup": list(soup),
        "params": int(best.count_params()), "macs": count_macs(best),
        "onnx_bytes": onnx_path.stat().st_size, "onnx_format": "int8" if int8 else "float32",
        "train_seconds": round(train_seconds, 1),
        "command": command,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "versions": _versions("keras", "tensorflow-cpu", "tensorflow", "numpy", "onnxruntime", "tf2onnx"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if history:  # a soup has none of its own: its ingredients' runs have the curves
        plot_curves(history, out / "curves.png")
    plot_confusion(private["confusion"], out / "confusion.png")
    plot_samples(*splits["PrivateTest"], private_probs, out / "samples.png")
    return metrics


def _versions(*names):
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and PublicTest; every epoch a marker, so that a run of
    one epoch is two points, not empty axes."""
    from matplotlib.ticker import MaxNLocator
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for column, label in ((key, "train (augmented)"), ("val_" + key, "PublicTest")):
            values = [float(r[column]) for r in history]
            ax.plot(epochs, values, marker="o", markersize=4, label=f"{label}: {values[-1]:.4f} last")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_xlabel("epoch"); ax.set_title(key); ax.grid(alpha=0.3); ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(confusion, path, title="PrivateTest"):
    """Counts and the share of each true class (row) in every cell; a class with no faces in the
    split is a grey row that says so, not a row of zeros that reads as all wrong."""
    plt = _pyplot()
    counts = np.asarray(confusion, dtype=int)
    totals = counts.sum(axis=1)
    shares = np.ma.masked_array(counts / np.maximum(1, totals[:, None]), np.repeat(totals[:, None] == 0, len(EMOTIONS), 1))
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.85")
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(shares, cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45)
    ax.set_yticks(range(len(EMOTIONS)), [f"{name} ({n})" for name, n in zip(EMOTIONS, totals)])
    for i, total in enumerate(totals):
        if not total:
            ax.text(len(EMOTIONS) / 2 - 0.5, i, "no faces", ha="center", va="center", color="0.35", style="italic")
            continue
        for j, n in enumerate(counts[i]):
            dark = shares[i, j] > 0.5
            ax.text(j, i, f"{n}\n{shares[i, j]:.0%}" if n else "0", ha="center", va="center", fontsize=8,
                    color="white" if dark else ("black" if n else "0.6"))
    ax.set_xlabel("predicted"); ax.set_ylabel("true (faces)")
    ax.set_title(f"{title}: {totals.sum()} faces, {np.trace(counts) / max(1, totals.sum()):.2%} right\n"
                 "count and share of the true class", fontsize=10)
    fig.colorbar(im, label="share of the true class")
    fig.tight_layout()
    return _save(fig, path)


def plot_samples(faces, targets, probs, path, per_class=7, seed=0):
    """PER_CLASS faces of each true class at random, each titled with the model's answer; a
    mistake is red and reads "predicted (true)"."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    true, pred = targets.argmax(1), probs.argmax(1)
    fig, axes = plt.subplots(len(EMOTIONS), per_class, figsize=(per_class * 1.3 + 1, len(EMOTIONS) * 1.45))
    for i, name in enumerate(EMOTIONS):
        idx = np.flatnonzero(true == i)
        picks = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for ax in axes[i]:
            ax.axis("off")
        axes[i, 0].text(-0.15, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=9)
        if not len(picks):
            axes[i, 0].text(0, 0.5, "no faces", transform=axes[i, 0].transAxes, va="center", color="0.4",
                            style="italic", fontsize=8)
        for ax, k in zip(axes[i], picks):
            ax.imshow(faces[k], cmap="gray", vmin=0, vmax=255)
            right = pred[k] == true[k]
            ax.set_title(EMOTIONS[pred[k]] if right else f"{EMOTIONS[pred[k]]} ({name})", fontsize=7,
                         color="black" if right else "red")
    fig.suptitle("rows: true class; titles: predicted, red for a mistake as predicted (true)", fontsize=9)
    fig.tight_layout(rect=(0.08, 0, 1, 1))
    return _save(fig, path)


def _save(fig, path):
    """Write FIG to PATH and hand it back closed, for a caller (a test) to read its texts."""
    plt = _pyplot()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig
