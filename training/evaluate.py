"""Accuracy, per-class precision/recall/F1 and confusion matrix of a model on one split."""
from pathlib import Path

import numpy as np

from ..model.inference import Classifier, net_inputs
from ..model.labels import EMOTIONS


def predict(model_path, faces, tta=False):
    """Probabilities from an .onnx (ONNX Runtime) or .keras (Keras) model; tta adds the mirror."""
    if Path(model_path).suffix == ".keras":
        import keras
        model = keras.models.load_model(model_path, compile=False)
        run = lambda x: np.asarray(model.predict(net_inputs(x), batch_size=256, verbose=0))
    else:
        run = Classifier(model_path).predict
    probs = run(faces)
    if tta:
        probs = (probs + run(faces[:, :, ::-1].copy())) / 2
    return probs


def scores(probs, targets):
    """Metrics against the arg-max of targets (one-hot labels or FER+ vote shares)."""
    pred = probs.argmax(1)
    true = targets.argmax(1)
    k = len(EMOTIONS)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    per_class = {}
    for i, name in enumerate(EMOTIONS):
        tp = confusion[i, i]
        precision = tp / max(1, confusion[:, i].sum())
        recall = tp / max(1, confusion[i].sum())
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(confusion[i].sum())}
    return {"accuracy": round(float((pred == true).mean()), 4), "n": int(len(true)),
            "per_class": per_class, "confusion": confusion.tolist()}


def paired(probs, other, targets):
    """Two models on the same faces. Only the faces one gets right and the other wrong tell them
    apart; with D such faces a gap under sqrt(D) (one SD, McNemar) is a tie."""
    true = targets.argmax(1)
    right, other_right = probs.argmax(1) == true, other.argmax(1) == true
    discordant = int((right != other_right).sum())
    gap = int(right.sum()) - int(other_right.sum())
    return {"correct": int(right.sum()), "other_correct": int(other_right.sum()), "discordant": discordant,
            "sd": round(float(np.sqrt(discordant)), 1), "tie": bool(abs(gap) < max(1.0, np.sqrt(discordant)))}


def format_paired(p, other):
    gap = p["correct"] - p["other_correct"]
    verdict = "a tie (under 1 SD)" if p["tie"] else ("better" if gap > 0 else "worse")
    return (f"against {other}: {p['correct']} vs {p['other_correct']} faces right ({gap:+d}); "
            f"{p['discordant']} discordant, SD {p['sd']}: {verdict}")


def majority_only(targets):
    """FER+ rows with a unique most-voted class among ours: rows whose majority is contempt,
    unknown or not-a-face (NaN targets) and ties are skipped."""
    labelled = ~np.isnan(targets).any(axis=1)
    top = np.nanmax(np.where(labelled[:, None], targets, 0), axis=1, keepdims=True)
    return labelled & ((targets == top).sum(1) == 1)


def format_table(result):
    lines = [f"accuracy {result['accuracy']:.4f} on {result['n']} faces",
             f"{'class':<9} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>5}"]
    for name, c in result["per_class"].items():
        lines.append(f"{name:<9} {c['precision']:>6.3f} {c['recall']:>6.3f} {c['f1']:>6.3f} {c['support']:>5}")
    lines.append("confusion (rows true, columns predicted): " + " ".join(e[:3] for e in EMOTIONS))
    lines += ["  " + f"{EMOTIONS[i][:3]:<4}" + " ".join(f"{v:>4}" for v in row)
              for i, row in enumerate(result["confusion"])]
    return "\n".join(lines)
