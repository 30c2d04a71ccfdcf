"""Keras model -> the ONNX file the scanner runs with ONNX Runtime (no TensorFlow at inference)."""
import os
import tempfile
from pathlib import Path

import numpy as np


def to_onnx(keras_model, path):
    """Write an ONNX model whose input is 'faces' [N,48,48,1] float in [0,1] and output 7 probs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Export through a temporary name so a reader never sees a half-written model.
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        keras_model(np.zeros((1,) + tuple(keras_model.input_shape[1:]), "float32"))  # export needs a built call
        keras_model.export(tmp, format="onnx", verbose=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a package file must be readable
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
