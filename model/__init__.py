"""What runs at inference: face finding, the classifier, the shipped weights."""
import os

# ONNX Runtime (1.29 on) sends usage telemetry from Linux too unless told not to, and warns in
# terminal colours when it cannot save a device id (a read-only HOME). Sorting someone's stickers
# has no business on the network; a user's own ORT_DISABLE_TELEMETRY is left as it is.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
