"""Class order everywhere: the FER2013 label numbers."""
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NOFACE = "noface"
# A face was found but the vote's winner is too weak to file it: OUT/unsure/, best guess kept.
UNSURE = "unsure"
# Below this winning confidence a file goes to OUT/unsure/ (`scan --min-confidence`). Chosen on
# stickers-dev with the shipped model (`stickersort evaluate --stickers DIR`): the lowest threshold,
# in steps of 0.01, at which the files given an emotion are right 80 % of the time (56 of 70 there,
# coverage 60.9 %, with stage 9).
DEFAULT_MIN_CONFIDENCE = 0.53
