"""Expression probabilities for 48x48 gray faces through ONNX Runtime: no TensorFlow import.

ONNX Runtime was picked by benchmark (bench/classifier_runtimes.py): see docs/runtimes.md.
"""
import hashlib
import os
from functools import cached_property
from pathlib import Path

import numpy as np

SHIPPED_MODEL = Path(__file__).with_name("stickernet.onnx")


def model_id(path):
    """Content hash of a model file: records made by another model get reclassified."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


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
        options.log_severity_level = 3
        # Scans interleave decoding, detection and classification: threads that spin waiting
        # for the next batch only steal the core the decoder needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

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
        return np.concatenate(chunks).astype("float32")
