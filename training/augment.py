"""Train-time augmentation as Keras layers, so it runs inside the compiled step on any backend."""
import keras
from keras import layers


def augmenter(seed=None, strength="strong"):
    """`strong` for a run from scratch; `light` (mirror and small shifts) for a last cycle, where
    the net adapts to faces as the scanner sees them."""
    if strength == "light":
        return keras.Sequential([
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed),
        ], name="augment")
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
        layers.RandomRotation(0.04, fill_mode="nearest", seed=seed),  # about +-15 degrees
        layers.RandomZoom((-0.15, 0.15), fill_mode="nearest", seed=seed),
        layers.RandomContrast(0.3, seed=seed),
        layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), fill_value=0.5, value_range=(0, 1),
                             seed=seed),
    ], name="augment")
