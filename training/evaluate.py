"""Accuracy, per-class precision/recall/F1 and confusion matrix of a model on one split."""
from pathlib import Path

import numpy as np

from ..model.inference import Classifier, net_inputs
from ..model.labels import EMOTIONS
from ..sorter.paired import is_tie, verdict
from . import progress

BATCH = 256  # faces per model call: the progress bar's step (ONNX Runtime's batch in Classifier too)


def predict(model_path, faces, tta=False, quiet=False):
    """Probabilities from an .onnx (ONNX Runtime) or .keras (Keras) model; tta adds the mirror."""
    if Path(model_path).suffix == ".keras":
        from .network import load
        model = load(model_path)
        run = lambda x: np.asarray(model.predict_on_batch(net_inputs(x)))
    else:
        run = Classifier(model_path).predict
    views = (faces, faces[:, :, ::-1]) if tta else (faces,)
    with progress.bar(total=len(faces) * len(views), quiet=quiet, unit=" faces",
                      desc=f"scoring with {Path(model_path).name}") as bar:
        probs = [_batched(run, view, bar) for view in views]
    return sum(probs) / len(probs)


def _batched(run, faces, bar):
    if not len(faces):
        return np.zeros((0, len(EMOTIONS)), "float32")
    chunks = []
    for i in range(0, len(faces), BATCH):
        chunks.append(run(np.ascontiguousarray(faces[i:i + BATCH])))
        bar.update(len(chunks[-1]))
    return np.concatenate(chunks)


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
    """Two models on the same faces (sorter/paired.py)."""
    true = targets.argmax(1)
    right, other_right = (_right(p, true) for p in (probs, other))
    discordant = int((right != other_right).sum())
    gap = int(right.sum()) - int(other_right.sum())
    return {"correct": int(right.sum()), "other_correct": int(other_right.sum()), "discordant": discordant,
            "sd": round(float(np.sqrt(discordant)), 1), "tie": is_tie(gap, discordant)}


def _right(probs, true):
    return (probs.argmax(1) == true) & ~np.isnan(probs).any(1)


def format_paired(p, other):
    gap = p["correct"] - p["other_correct"]
    return (f"against {other}: {p['correct']} vs {p['other_correct']} faces right ({gap:+d}); "
            f"{p['discordant']} discordant, SD {p['sd']}: {verdict(gap, p['tie'])}")


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


def through_pipeline(model_path, faces, detector="blazeface", seed=0, sticker_look=False, quiet=False):
    """Each face on its own generated card, through the scan's detect -> crop -> classify -> vote:
    (probabilities [N,7] where a face was found, else zeros; found [N] bool)."""
    from ..model.faces import make_detector
    from ..sorter.media import Frame, Media
    from ..sorter.pipeline import read_clip
    from .cards import make_card

    detect, classifier = make_detector(detector), Classifier(model_path)
    probs, found = np.zeros((len(faces), len(EMOTIONS)), "float32"), np.zeros(len(faces), bool)
    for i, face in enumerate(progress.bar(faces, quiet, unit=" cards", desc="through the scan pipeline")):
        card = make_card(face, seed * 1_000_003 + i, sticker_look).rgb
        h, w = card.shape[:2]
        seen, result = read_clip(Media("image", w, h, 1, 0.0, [Frame(0, 0.0, 1.0, card)]), detect, classifier)
        if seen:
            probs[i], found[i] = [result.scores[e] for e in EMOTIONS], True
    return probs, found


def calibrate_split(data, split, detector="blazeface", limit=None):
    """`stickersort evaluate DATA --calibrate`: where a FER2013 frame lies around the detector's
    box on cards of the split's faces (training.cards.calibrate_frame). Raises DataError."""
    from .cards import calibrate_frame
    from .data import DataError, load
    faces = load(data, for_training=False)[split][0][:limit]
    if not len(faces):
        raise DataError(f"{data}: no {split} faces")
    frame = calibrate_frame(faces, detector)
    if not frame["found"]:  # else NaN for every figure, and --json that is not JSON
        raise DataError(f"{data}: {detector} found none of the {len(faces)} {split} faces on their cards")
    return frame


def format_calibration(frame, split):
    return (f"FER2013 frame around {frame['detector']}'s box on {split} cards ({frame['found']} of "
            f"{frame['faces']} found): side {frame['scale']} x the box's longer side, centre offset "
            f"dx {frame['dx']}, dy {frame['dy']}")


def evaluate_split(data, split, model, labels="fer2013", ferplus=None, tta=False, limit=None, against=None,
                   pipeline=False, figures=None, quiet=False):
    """`stickersort evaluate DATA`: one split's figures; with pipeline, the same faces on cards
    through the scan's path are scored too, beside the direct figure. FIGURES, a folder, gets
    confusion.png and samples.png of the direct pass."""
    from .data import DataError, check_paths, load
    if labels == "ferplus" and ferplus is None:
        ferplus = Path(data).resolve().parent.parent / "ferplus" / "fer2013new.csv.gz"
    check_paths(data, labels, ferplus)
    faces, targets = load(data, labels=labels, ferplus=ferplus, drop_unlabelled=False, quiet=quiet,
                          for_training=False)[split]
    skipped = 0
    if labels == "ferplus":
        keep = majority_only(targets)
        end = len(keep)
        if limit and keep.sum() >= limit:  # only the faces passed over on the way to the limit's last
            end = int(np.flatnonzero(keep)[limit - 1]) + 1
        keep = keep[:end]
        skipped = int((~keep).sum())
        faces, targets = faces[:end][keep], targets[:end][keep]
    if limit:
        faces, targets = faces[:limit], targets[:limit]
    if not len(faces):  # else an accuracy of NaN, which is not even JSON
        raise DataError(f"{data}: no {split} faces" + (" with a FER+ majority" if labels == "ferplus" else ""))
    probs = predict(model, faces, tta=tta, quiet=quiet)
    result = scores(probs, targets)
    result.update({"split": split, "data": str(data), "labels": labels, "model": str(model), "tta": tta})
    if labels == "ferplus":
        result["skipped_no_majority"] = skipped
    if figures:
        draw_figures(figures, result, faces, targets, probs)
    if pipeline:
        seen, found = through_pipeline(model, faces, quiet=quiet)
        result["pipeline"] = _pipeline_figures(seen, found, targets, result["accuracy"])
        probs = _found_or_none(seen, found)
    if against:
        other = (_found_or_none(*through_pipeline(against, faces, quiet=quiet)) if pipeline
                 else predict(against, faces, tta=tta, quiet=quiet))
        result["against"] = {"model": str(against), **paired(probs, other, targets)}
    return result


FIGURES = ("confusion.png", "samples.png")  # what draw_figures writes


def draw_figures(folder, result, faces, targets, probs):
    """FOLDER/confusion.png and FOLDER/samples.png, as `train` draws them for its run."""
    from .data import DataError
    from .report import plot_confusion, plot_samples
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plot_confusion(result["confusion"], folder / FIGURES[0], title=f"{Path(result['model']).name} on {result['split']}")
        plot_samples(faces, targets, probs, folder / FIGURES[1])
    except OSError as e:
        raise DataError(f"--figures {folder}: cannot write there ({e.strerror or e})") from None


def _found_or_none(probs, found):
    """Probabilities with NaN rows for faces the detector missed, which `paired` counts wrong."""
    probs = probs.copy()
    probs[~found] = np.nan
    return probs


def _pipeline_figures(probs, found, targets, direct):
    true = targets.argmax(1)
    right = (probs.argmax(1) == true) & found
    return {"face_found": round(float(found.mean()), 4), "accuracy_found": round(float(right[found].mean()), 4)
            if found.any() else None, "accuracy_all": round(float(right.mean()), 4), "direct": direct,
            "scores_found": scores(probs[found], targets[found]) if found.any() else None}


def format_result(result):
    head = (f"model {result['model']} on {result['split']} of {result.get('data', 'the data')} "
            f"({result['labels']} labels{', flip TTA' if result['tta'] else ''})")
    lines = [head, format_table(result)]
    if "skipped_no_majority" in result:
        lines.append(f"skipped {result['skipped_no_majority']} faces without a FER+ majority among the seven")
    p = result.get("pipeline")
    if p:
        found = ("no face found on any card" if p["accuracy_found"] is None
                 else f"accuracy {p['accuracy_found']:.4f} of found faces")
        lines.append(f"through the scan pipeline (faces on generated cards): face found {p['face_found']:.4f}, "
                     f"{found}, {p['accuracy_all']:.4f} of all; direct {p['direct']:.4f}")
    if result.get("against"):
        lines.append(format_paired(result["against"], result["against"]["model"]))
    return "\n".join(lines)
