"""The expression networks, written against Keras 3 only so any backend can train them.

Class order everywhere: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
Input: 48x48x1 float in [0, 1]. Output: 7 softmax probabilities.
"""
import keras
from keras import layers

INPUT_SHAPE = (48, 48, 1)


def seed(num_classes=7):
    """The seed project's CNN, kept exactly as the baseline: 4 conv + 2 dense, BN, dropout."""
    x = inputs = keras.Input(INPUT_SHAPE)
    for filters, kernel in ((64, 3), (128, 5), (512, 3), (512, 3)):
        x = layers.Conv2D(filters, kernel, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    for units in (256, 512):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(0.25)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="seed")


def _conv_bn(x, filters, kernel=3, strides=1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _sep_block(x, filters, repeats=2):
    """Residual block of separable convolutions, then 2x downsampling (Xception style)."""
    shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
    shortcut = layers.BatchNormalization()(shortcut)
    for i in range(repeats):
        if i:
            x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    return layers.Add()([x, shortcut])


def sticker_net(num_classes=7, width=32, repeats=(2, 2, 2), dropout=0.3):
    """Default arch: full-resolution eyes/mouth features from one conv, then a strided conv and
    Xception-style separable blocks at 24/12/6 px, where wide channels cost few MACs on a CPU."""
    x = inputs = keras.Input(INPUT_SHAPE)
    x = _conv_bn(x, width)
    x = _conv_bn(x, width, strides=2)  # 48 -> 24
    for mult, n in zip((2, 4, 8), repeats):  # 24 -> 12 -> 6 -> 3
        x = _sep_block(x, width * mult, n)
        x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(width * 16, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"sticker_net_w{width}")


ARCHS = {
    "seed": seed,
    "sticker": sticker_net,
    "sticker-deep": lambda **kw: sticker_net(repeats=(2, 3, 3), **kw),
    # 1.5x the channels: too slow in float32 for the 3,000 faces/s target, fast enough in int8.
    "sticker-wide": lambda **kw: sticker_net(width=48, repeats=(2, 3, 3), **kw),
}


def build(arch="sticker-deep", **kwargs):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[arch](**kwargs)


def load(path):
    """A saved .keras net. A file Keras cannot read is a ValueError in one line (Keras says "File
    not found" of a file that is there but no .keras archive)."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception:  # Keras fails in many ways on a bad file, each with its own type
        raise ValueError(f"model {path}: not a .keras model Keras can load") from None
    takes, gives = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    if takes != INPUT_SHAPE or gives != (7,):
        raise ValueError(f"model {path}: takes {takes} and gives {gives}, not 48x48x1 faces -> 7 expressions")
    return model


def arch_of(net):
    """The ARCHS name whose net has NET's parameter count (each arch's differs), or None."""
    return next((name for name, make in ARCHS.items() if make().count_params() == net.count_params()), None)


def count_macs(model):
    """Multiply-accumulates of one forward pass, for conv, separable conv and dense layers."""
    macs = 0
    for layer in model.layers:
        out = layer.output.shape
        if isinstance(layer, layers.SeparableConv2D):
            cin = layer.input.shape[-1]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs += out[1] * out[2] * (k * cin + cin * out[-1])
        elif isinstance(layer, layers.Conv2D):
            cin = layer.input.shape[-1]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs += out[1] * out[2] * k * cin * out[-1]
        elif isinstance(layer, layers.Dense):
            macs += layer.input.shape[-1] * out[-1]
    return int(macs)
