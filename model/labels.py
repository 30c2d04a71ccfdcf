"""Class order everywhere: the FER2013 label numbers."""
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NOFACE = "noface"
# A face was found but the vote's winner is too weak to file it: OUT/unsure/, best guess kept.
UNSURE = "unsure"
