"""Class order everywhere: the FER2013 label numbers."""
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NOFACE = "noface"
