"""Expression probabilities for 48x48 gray faces through ONNX Runtime: no TensorFlow import.

ONNX Runtime was picked by benchmark (bench/classifier_runtimes.py): see docs/runtimes.md.
"""
import hashlib
import os
import platform
from functools import cached_property
from pathlib import Path

import numpy as np

SHIPPED_MODEL = Path(__file__).with_name("stickernet.onnx")
FACE_SHAPE = (48, 48, 1)  # one input face; a batch of them is [N, 48, 48, 1]
N_CLASSES = 7
# CPU flags of x86 int8 dot products that sum in 32 bits; without them ONNX Runtime's u8s8 kernels
# sum pairs in saturating 16 bits (vpmaddubsw) and the int8 model loses half a point of accuracy.
EXACT_INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


class ModelError(Exception):
    """A model that cannot be used, or that gave no usable answer; one line for the user."""


def _first_line(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def model_id(path):
    """Content hash of a model file: records made by another model get reclassified."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def saturating_int8_cpu():
    """An x86 CPU without VNNI. Unknown x86 flags (no /proc/cpuinfo) count as one: the exact
    kernels are only slower on a VNNI CPU, never wrong; on other CPUs the option does nothing."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return True
    return not flags & EXACT_INT8_FLAGS


def net_inputs(faces):
    """uint8 [N,48,48] faces -> the networks' float32 [N,48,48,1] in [0, 1]; float input passes."""
    faces = np.asarray(faces)
    if faces.dtype == np.uint8:
        faces = faces.astype("float32") / 255.0
    return faces[..., None] if faces.ndim == 3 else faces


class Classifier:
    def __init__(self, path=None, threads=None):
        self.path = Path(path or SHIPPED_MODEL)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        self.threads = threads or min(2, os.cpu_count() or 1)

    @cached_property
    def session(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: an error is raised, and said in one line, by us
        # Scans interleave decoding, detection and classification: threads that spin waiting
        # for the next batch only steal the core the decoder needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if saturating_int8_cpu():  # exact u8u8 kernels: the card's accuracy, ~15 % fewer faces/s
            options.add_session_config_entry("session.x64quantprecision", "1")
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime's own exception types, one per way of failing
            raise ModelError(f"model {self.path}: not an ONNX model ONNX Runtime can load ({_first_line(e)})") from None
        self._check(session)
        return session

    def _check(self, session):
        """Refuse a model that does not take [N, 48, 48, 1] faces to [N, 7] scores: found out now,
        once, rather than as an error on every file."""
        inputs = session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        fits = shape is not None and len(shape) == 4 and all(
            not isinstance(d, int) or d == want for d, want in zip(shape[1:], FACE_SHAPE))
        if not fits or inputs[0].type != "tensor(float)":
            got = ", ".join(f"{i.name} {i.shape} {i.type}" for i in inputs)
            raise ModelError(f"model {self.path}: takes {got}, not one float input [N, 48, 48, 1] "
                             f"(48x48 gray faces)")
        if isinstance(shape[0], int):  # else it fails at the first frame with two faces, or a batch
            raise ModelError(f"model {self.path}: takes batches of {shape[0]} faces only; export it with the "
                             f"batch size left open, [N, 48, 48, 1]")
        try:  # two faces: a net whose graph fixes one face a run (a reshape to [1, ...]) fails here
            out = session.run(None, {inputs[0].name: np.zeros((2, *FACE_SHAPE), "float32")})[0]
        except Exception as e:
            raise ModelError(f"model {self.path}: fails on a batch of two faces ({_first_line(e)})") from None
        if np.shape(out) != (2, N_CLASSES):
            raise ModelError(f"model {self.path}: gives {list(np.shape(out))} for two faces, not "
                             f"{N_CLASSES} expression scores each")

    @cached_property
    def id(self):
        return model_id(self.path)

    def predict(self, faces, batch_size=256):
        """faces: uint8 [N,48,48] (or float in [0,1] [N,48,48,1]) -> float32 [N,7]."""
        faces = net_inputs(faces)
        if not len(faces):
            return np.zeros((0, 7), "float32")
        name = self.session.get_inputs()[0].name
        chunks = [self.session.run(None, {name: faces[i:i + batch_size]})[0]
                  for i in range(0, len(faces), batch_size)]
        probs = np.concatenate(chunks).astype("float32")
        if not np.isfinite(probs).all():  # stored, NaN would be a NULL confidence nothing can sort
            bad = int((~np.isfinite(probs)).any(axis=1).sum())
            raise ModelError(f"model {self.path.name} ({self.id}) gave NaN or infinite scores "
                             f"for {bad} of {len(probs)} faces")
        return probs
