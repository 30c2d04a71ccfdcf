"""FER2013 in its two public layouts (Kaggle csv, image folders) and FER+ votes, as numpy arrays.

Every loader returns {split: (faces uint8 [N,48,48], targets float32 [N,7])}; targets are one-hot
for FER2013 labels and normalized vote shares for FER+.
"""
import csv
import gzip
import io
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..model.labels import EMOTIONS
from . import progress

SPLITS = ("Training", "PublicTest", "PrivateTest")
FOLDER_SPLITS = {"train": "Training", "training": "Training", "validation": "PublicTest",
                 "val": "PublicTest", "test": "PrivateTest"}
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
FERPLUS_OTHER = ("contempt", "unknown", "NF")  # FER+ votes outside our seven classes
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
BLEND_WEIGHT = 0.3  # FER+ share in --labels blend


class DataError(Exception):
    """Bad training data; the message is meant for the user as it is."""


def _open_text(path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # -sig: a spreadsheet's byte-order mark


@contextmanager
def _reading(path, what):
    """A file that is not text, not gzip, or cut short, as one DataError line."""
    try:
        yield
    except (UnicodeDecodeError, EOFError, OSError, zlib.error, csv.Error) as e:
        raise DataError(f"{path}: cannot be read as {what} ({type(e).__name__})") from None


def _shown_header(header):
    """The first row read, within a line: an archive's header block (Kaggle's fer2013.tar.gz) is
    kilobytes of NUL bytes."""
    text = ",".join(header or ())
    if "\0" in text:
        return "binary data: an archive, say (extract fer2013.csv from it)"
    return repr(text if len(text) <= 60 else text[:60] + "...")


def one_hot(labels):
    return np.eye(len(EMOTIONS), dtype="float32")[np.asarray(labels, dtype=int)]


def load_csv(path, quiet=False):
    """The Kaggle fer2013.csv (or .csv.gz): header emotion,pixels,Usage."""
    faces, labels, usage = [], [], []
    with _reading(path, "FER2013's csv"), _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise DataError(f"{path}: expected the header 'emotion,pixels,Usage', got {_shown_header(header)}")
        for line, row in enumerate(progress.bar(reader, quiet, desc=f"reading {Path(path).name}", unit=" faces"),
                                   start=2):
            if not row:  # a blank line (one at the end, as an editor leaves it)
                continue
            if len(row) < 3:
                raise DataError(f"{path}:{line}: {len(row)} columns, expected emotion,pixels,Usage")
            faces.append(_pixels(path, line, row[1]))
            labels.append(_label(path, line, row[0]))
            usage.append(_usage(path, line, row[2]))
    if not faces:
        raise DataError(f"{path}: no rows after the header")
    return np.stack(faces), np.array(labels), np.array(usage)


def _pixels(path, line, text):
    values = text.split()
    if len(values) != 48 * 48:
        raise DataError(f"{path}:{line}: {len(values)} pixel values, expected 2304 (48x48)")
    try:
        pixels = np.array(values, dtype=np.int64)
    except (ValueError, OverflowError):
        pixels = None
    if pixels is None or pixels.min() < 0 or pixels.max() > 255:
        bad = next((v for v in values if not _byte(v)), values[0])
        raise DataError(f"{path}:{line}: pixel value {bad!r} is not a whole number 0..255")
    return pixels.astype(np.uint8).reshape(48, 48)


def _byte(text):
    try:
        return 0 <= int(text) <= 255
    except ValueError:
        return False


def _label(path, line, text):
    if text.strip() not in {str(i) for i in range(len(EMOTIONS))}:
        raise DataError(f"{path}:{line}: emotion {text!r} is not one of 0..6")
    return int(text)


def _usage(path, line, text):
    """A row of no known split would be dropped without a word, and with it, say, all of Training."""
    if text.strip() not in SPLITS:
        raise DataError(f"{path}:{line}: Usage {text!r} is not one of {', '.join(SPLITS)}")
    return text.strip()


def _gray(im):
    """A 48x48 uint8 face from any image: Pillow's convert("L") clips a 16-bit one to white."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im, dtype=np.float64)
        sixteen = im.mode.startswith("I;16") or wide.max() > 255  # "I": a 16-bit PNG, or 32-bit values
        im = Image.fromarray((wide / 257 if sixteen else wide).clip(0, 255).astype(np.uint8))
    return np.asarray(im.convert("L").resize((48, 48)))


def load_folder(root, quiet=False):
    """train/<emotion>/*.jpg with validation/ or test/; Training_/PublicTest_/PrivateTest_ name
    prefixes, when present, mark the official split instead of the folder."""
    from PIL import Image

    root = Path(root)
    found = [(img, label, folder_split)
             for split_dir in sorted(p for p in root.iterdir() if p.is_dir())
             if (folder_split := FOLDER_SPLITS.get(split_dir.name.lower()))
             for label, folder in _class_folders(split_dir)
             # A FIFO's open would wait for ever; a folder, a device: no image either.
             for img in sorted(folder.glob("*")) if img.suffix.lower() in IMAGE_SUFFIXES and img.is_file()]
    faces, labels, usage = [], [], []
    for img, label, folder_split in progress.bar(found, quiet, desc=f"reading {root.name}", unit=" faces"):
        try:
            with Image.open(img) as im:
                faces.append(_gray(im))
        except (OSError, ValueError, Image.DecompressionBombError):  # PIL's UnidentifiedImageError is an OSError
            raise DataError(f"{img}: not an image that can be read") from None
        labels.append(label)
        prefix = img.name.split("_", 1)[0]
        usage.append(prefix if prefix in SPLITS else folder_split)
    if not faces:
        tables = sorted(p.name for p in Path(root).glob("*.csv*"))  # the Kaggle file beside, say
        hint = f"; for a CSV, pass the file: {Path(root) / tables[0]}" if tables else ""
        raise DataError(f"{root}: no images under train/<emotion>/ (emotions: {', '.join(EMOTIONS)}){hint}")
    return np.stack(faces), np.array(labels), np.array(usage)


def _class_folders(split_dir):
    """(label, folder) for each emotion's folder in a split's (`Happy/` is happy's); a folder of
    another name is refused, where it would have been dropped without a word."""
    found = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name.lower() not in EMOTIONS:
            raise DataError(f"{folder}: not an emotion's folder (expected {', '.join(EMOTIONS)})")
        found.append((EMOTIONS.index(folder.name.lower()), folder))
    return found


def load_ferplus(path, usage):
    """FER+ votes (fer2013new.csv), row-aligned with FER2013, whose rows' splits are `usage`:
    vote shares over our 7 classes. Rows whose majority is contempt, unknown or not-a-face get
    NaN targets."""
    with _reading(path, "a FER+ votes file"), _open_text(path) as f:
        reader = csv.DictReader(f)
        missing = set(FERPLUS_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: not a FER+ votes file (missing columns {sorted(missing)})")
        columns = FERPLUS_COLUMNS + tuple(c for c in FERPLUS_OTHER if c in reader.fieldnames)
        rows = list(reader)
        every = np.array([_votes(path, i + 2, row, columns) for i, row in enumerate(rows)], "float32")
    if not len(every):
        raise DataError(f"{path}: no rows after the header")
    votes = every[:, :len(FERPLUS_COLUMNS)]
    outside = every[:, len(FERPLUS_COLUMNS):].max(axis=1, initial=0) >= votes.max(axis=1)
    votes[outside] = 0
    if len(votes) != len(usage):
        raise DataError(f"{path}: {len(votes)} rows, but the FER2013 data has {len(usage)}")
    _check_aligned(path, rows, usage)
    totals = votes.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, votes / totals, np.nan).astype("float32")


def _check_aligned(path, rows, usage):
    """The votes file's own Usage column (fer2013new.csv has one) against FER2013's rows: a file
    out of order would score every face against another's votes, without a word."""
    for i, (row, split) in enumerate(zip(rows, usage)):
        if row.get("Usage") and row["Usage"] != split:  # an empty cell says nothing
            raise DataError(f"{path}:{i + 2}: Usage {row['Usage']!r}, where FER2013's row {i + 1} is {split}: "
                            f"not row-aligned with the FER2013 data")


def _votes(path, line, row, columns):
    """One row's vote counts (an empty cell is no votes)."""
    if any(row[c] is None for c in columns):
        raise DataError(f"{path}:{line}: a short row, without all the vote columns")
    return [_count(path, line, row[c]) for c in columns]


def _count(path, line, text):
    try:
        votes = float(text or 0)
    except ValueError:
        votes = -1.0
    if not 0 <= votes < float("inf"):
        raise DataError(f"{path}:{line}: vote count {text!r} is not a number of votes")
    return votes


def load(path, labels="fer2013", ferplus=None, drop_unlabelled=True, quiet=False, for_training=True):
    """{split: (faces, targets)}; for_training: Training must hold every class (scoring one split
    asks only for that split's faces)."""
    path = Path(path)
    check_paths(path, labels, ferplus)
    faces, hard, usage = load_folder(path, quiet) if path.is_dir() else load_csv(path, quiet)
    targets = one_hot(hard)
    if labels in ("ferplus", "blend"):
        votes = load_ferplus(ferplus, usage)
        targets = votes if labels == "ferplus" else _blend(targets, votes, usage == "Training")
    keep = ~np.isnan(targets).any(axis=1) if drop_unlabelled else np.ones(len(targets), bool)
    splits = {}
    for split in SPLITS:
        mask = (usage == split) & keep
        splits[split] = (faces[mask], targets[mask])
    if for_training:
        _check(path, splits)
    return splits


def check_paths(path, labels="fer2013", ferplus=None):
    """The files a load needs, there: checked before the seconds of reading that would come first."""
    if not Path(path).exists():
        raise DataError(f"{path}: no such file or folder")
    if not Path(path).is_dir() and not Path(path).is_file():  # /dev/zero: read whole, without end
        raise DataError(f"{path}: not a regular file (a device, FIFO or socket); give the csv or the image folder")
    if labels in ("ferplus", "blend"):
        if Path(path).is_dir():  # its faces come in folder order, which says nothing of the csv's rows
            raise DataError(f"--labels {labels}: the FER+ votes follow the rows of FER2013's Kaggle csv, and "
                            f"{path} is an image folder, whose faces cannot be matched to them; give the csv")
        if ferplus is None:
            raise DataError(f"--labels {labels} needs the FER+ votes file (--ferplus PATH)")
        if not Path(ferplus).exists():
            raise DataError(f"{ferplus}: no such file (the FER+ votes file; name it with --ferplus)")


def _blend(labels, votes, rows, weight=BLEND_WEIGHT):
    """FER2013 labels with FER+ vote shares mixed in, on the given rows: a label smoothing that
    knows which expressions the annotators confused. The label keeps the larger share."""
    voted = rows & ~np.isnan(votes).any(axis=1)
    blended = labels.copy()
    blended[voted] = (1 - weight) * labels[voted] + weight * votes[voted]
    return blended


def _check(path, splits):
    x, y = splits["Training"]
    if not len(x):
        raise DataError(f"{path}: no Training rows")
    counts = y.sum(axis=0)
    empty = [EMOTIONS[i] for i, c in enumerate(counts) if c == 0]
    if empty:
        raise DataError(f"{path}: no Training examples of {', '.join(empty)}")


def require(path, splits, names=("PublicTest", "PrivateTest")):
    """A run chooses its best epoch on PublicTest and reports PrivateTest: each must have rows,
    said before the run, not after its last epoch."""
    for name in names:
        if not len(splits[name][0]):
            raise DataError(f"{path}: no {name} rows (a run chooses its best epoch on PublicTest and reports "
                            f"PrivateTest; in the folder layout they are validation/ and test/, or names that begin "
                            f"PublicTest_ and PrivateTest_)")


def limit(splits, n, seed=0):
    """A quick subset: n training rows, and n // 4 of each evaluation split."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, (x, y) in splits.items():
        k = n if split == "Training" else max(1, n // 4)
        idx = rng.permutation(len(x))[:k]
        out[split] = (x[idx], y[idx])
    return out
