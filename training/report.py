"""What a finished training run leaves in OUT: ONNX export, metrics.json and the three plots."""
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from ..model.labels import EMOTIONS
from . import evaluate

ONNX_NAME = "stickernet.onnx"


def command_line():
    """How this run was started, as the user typed it (recorded in options.json and metrics.json)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


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
    plot_samples(*splits["Training"], out / "samples.png")
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
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [float(r[key]) for r in history], label="train (augmented)")
        ax.plot(epochs, [float(r["val_" + key]) for r in history], label="PublicTest")
        ax.set_xlabel("epoch"); ax.set_title(title); ax.grid(alpha=0.3); ax.legend()
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


def plot_confusion(confusion, path):
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45)
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center",
                    color="white" if cm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title("PrivateTest, normalized")
    fig.colorbar(im); fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


def plot_samples(faces, targets, path, per_class=7, seed=0):
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    labels = targets.argmax(1)
    fig, axes = plt.subplots(len(EMOTIONS), per_class, figsize=(per_class * 1.1, len(EMOTIONS) * 1.2))
    for i, name in enumerate(EMOTIONS):
        idx = np.flatnonzero(labels == i)
        picks = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(picks):
                ax.imshow(faces[picks[j]], cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
