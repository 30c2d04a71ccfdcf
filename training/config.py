"""Every knob of `stickersort train`, declared once with its default: the CLI's options take their
defaults from here, `train.run` reads them from here, and OUT/options.json records them (a
`--resume` is compared against that record). No TensorFlow here: the CLI imports it to build its
options, also in the base install."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# training/network.py's ARCHS, named here so the CLI refuses a misspelt --arch before TensorFlow loads.
ARCHS = ("sticker-deep", "sticker-wide", "sticker", "seed")


@dataclass(frozen=True)
class Config:
    arch: str = "sticker-deep"  # the net to build (training/network.py); an --init model brings its own
    epochs: int = 75  # the learning-rate cycle's length; a --resume may lengthen it
    batch_size: int = 64
    lr: float = 2e-3  # AdamW's peak learning rate: cosine after a warm-up, constant under swa
    seed: int = 0  # initial weights, augmentation, --limit's sample and the card views
    labels: str = "fer2013"  # Training targets: fer2013 labels, ferplus vote shares, or a blend of both
    ferplus: Optional[Path] = None  # FER+ votes file (fer2013new.csv), for labels ferplus and blend
    limit: Optional[int] = None  # train on this many faces only (a quick check)
    init: Optional[Path] = None  # start from this .keras or int8 .onnx model: a warm restart
    teachers: tuple = ()  # distil: models whose mirror-averaged probabilities join the targets
    teacher_weight: float = 0.5  # the teachers' share of each Training target
    augment: str = "strong"  # strong for a run from scratch, light (mirror, small shifts) for a last cycle
    label_smoothing: float = 0.1  # on one-hot targets only: soft ones (teachers, FER+ shares) are not smoothed again
    swa: int = 0  # stochastic weight averaging over this many trajectories from the start (0: off)
    sam: float = 0.0  # sharpness-aware minimization's radius (0: off)
    cards: int = 0  # views of each Training face on generated sticker cards, as the scan crops them, added to Training
    int8: bool = False  # export stickernet.onnx quantized to int8
