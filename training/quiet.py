"""TensorFlow imported without its start-up noise: `train`, `soup` and `evaluate` call this
before anything imports Keras. No TensorFlow at module level, so the CLI can import it.

Without it a CPU machine gets about ten lines (CUDA probes, CPU-feature notes, `failed call to
cuInit`) that say nothing wrong. A variable the user set is left as it is; TF_CPP_MIN_LOG_LEVEL=0
(every message) also keeps the import's own lines: someone debugging TensorFlow asked for them.
"""
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

LOG_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: errors and below go; a failure still raises in Python
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def import_tensorflow():
    """Import TensorFlow (and absl) quietly, once; a later import is free."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", LOG_LEVEL)
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"
    if not NVIDIA_DRIVER.exists():  # no GPU: nothing for CUDA to probe and complain about
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    # keras' ONNX export probes np.object, which numpy 2 answers with a FutureWarning.
    warnings.filterwarnings("ignore", message=r"In the future `np\.object`", category=FutureWarning)
    with _stderr_held(quiet):
        import tensorflow  # noqa: F401
    from absl import logging
    if quiet:
        logging.set_verbosity(logging.ERROR)


@contextmanager
def _stderr_held(hold):
    """The C++ side logs at library load, before TF_CPP_MIN_LOG_LEVEL is read: hold what it
    writes to fd 2, drop it on success and replay it when the import fails."""
    if not hold:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
