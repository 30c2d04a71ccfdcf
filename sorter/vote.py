"""All faces of all sampled frames -> one label per file."""
from dataclasses import dataclass

import numpy as np

from ..model.labels import DEFAULT_MIN_CONFIDENCE, EMOTIONS, NOFACE, UNSURE


@dataclass
class Vote:
    label: str
    confidence: float  # the winning class's share of the weighted vote
    margin: float  # winner minus runner-up
    scores: dict  # class -> weighted mean probability


def face_weight(area_share, detector_score, seconds):
    """Bigger, surer faces shown for longer count more; sqrt keeps a big face from drowning a
    cluster of small ones entirely."""
    return float(np.sqrt(max(area_share, 1e-6)) * max(detector_score, 1e-3) * max(seconds, 1e-3))


def vote(probs, weights):
    """probs [N,7], weights [N] -> Vote; no faces -> noface."""
    probs = np.asarray(probs, dtype="float64").reshape(-1, len(EMOTIONS))
    if not len(probs):
        return Vote(NOFACE, 0.0, 0.0, {})
    weights = np.asarray(weights, dtype="float64")
    mean = (probs * weights[:, None]).sum(0) / max(weights.sum(), 1e-12)
    order = np.argsort(mean)[::-1]
    return Vote(EMOTIONS[order[0]], round(float(mean[order[0]]), 4),
                round(float(mean[order[0]] - mean[order[1]]), 4),
                {e: round(float(p), 4) for e, p in zip(EMOTIONS, mean)})


def said(label, guess, confidence, user_label=None):
    """A filed label as a line shows it, with the model's vote beside it where it is another's or
    the user's: `happy (0.91)`, `unsure (happy 0.41)`, `sad (yours; model: happy 0.91)`, `noface`.
    The confidence is the model's, for its guess; with no guess (no face) there is none."""
    vote = f"{guess} {confidence:.2f}" if guess else "noface"
    if user_label and guess != label:
        return f"{label} (yours; model: {vote})"
    return label + ("" if not guess else f" ({confidence:.2f})" if guess == label else f" ({vote})")


def threshold(min_confidence):
    """A scan's --min-confidence as it files: None, a scan given none, is the shipped model's
    default, remembered as None so that a folder's next scan follows a new model's default."""
    return DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence


def filed_label(label, confidence, min_confidence=None):
    """The folder a vote files into: its expression, or `unsure` when the winner is too weak.
    noface stays noface: there is no guess to doubt."""
    return UNSURE if label in EMOTIONS and confidence < threshold(min_confidence) else label
