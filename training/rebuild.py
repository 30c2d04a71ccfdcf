"""A trainable float Keras net rebuilt from an int8 ONNX export, for `train --init MODEL.onnx`.

The shipped file is all that a fresh checkout has of the shipped model: its float weights lived
in a gitignored run folder. The export folded each batch norm into the conv before it, so the
conv biases go back into the BN layers, and the BN statistics are set from Training faces so
that training-mode batch norm starts as the same function as the file.
"""
import numpy as np


BN_FACES = 2048  # the first faces, whose statistics a rebuilt net's batch norm takes


def from_onnx(path, arch, faces):
    """ARCH's net with PATH's weights; FACES (float net inputs) give the BN statistics."""
    import keras
    import onnx
    from onnx import numpy_helper

    from .network import build

    if not arch.startswith("sticker"):
        raise ValueError(f"{path}: only the sticker nets' int8 exports can be rebuilt; give the run's best.keras")
    try:
        graph = onnx.load(str(path)).graph
    except Exception:  # protobuf's DecodeError and kin
        raise ValueError(f"model {path}: not an ONNX model") from None
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    net = build(arch)
    convs = [n for n in graph.node if n.op_type == "Conv" and len(n.input) == 3]
    layers = [l for l in net.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.SeparableConv2D))]
    if len(convs) != len(layers):
        raise ValueError(f"{path} is not a {arch} net ({len(convs)} convs, {arch} has {len(layers)})")
    # Keras lists the plain convs and the separable ones apart, in graph order within each.
    convs.sort(key=lambda n: "separable" in n.input[1])
    layers.sort(key=lambda l: isinstance(l, keras.layers.SeparableConv2D))
    try:
        biases = _set_convs(convs, layers, consts, producer)
    except ValueError as e:  # same conv count, other widths
        raise ValueError(f"{path} is not a {arch} net: {e}") from None
    gemm = next((n for n in graph.node if n.op_type == "Gemm"), None)
    if gemm is None:  # a float export ends in MatMul and Add
        raise ValueError(f"{path}: only the sticker nets' int8 exports can be rebuilt; give the run's best.keras")
    w = _value(gemm.input[1], consts, producer)
    transposed = any(a.name == "transB" and a.i for a in gemm.attribute)
    net.layers[-1].set_weights([w.T if transposed else w, _value(gemm.input[2], consts, producer)])
    _set_batch_norms(net, [_bn_after(l, net) for l in layers], biases, faces)
    return net


def _set_convs(convs, layers, consts, producer):
    """Each Keras conv gets its ONNX twin's kernel; returns the folded biases, in layer order."""
    import keras

    biases = []
    for node, layer in zip(convs, layers):
        kernel = _value(node.input[1], consts, producer)
        if isinstance(layer, keras.layers.SeparableConv2D):
            depthwise = _value(_conv_feeding(node.input[0], producer).input[1], consts, producer)
            layer.set_weights([depthwise.transpose(2, 3, 0, 1), kernel.transpose(2, 3, 1, 0)])
        else:
            layer.set_weights([kernel.transpose(2, 3, 1, 0)])
        biases.append(_value(node.input[2], consts, producer))
    return biases


def _value(name, consts, producer):
    """A float constant, dequantized (per channel or per tensor) when it comes through Q/DQ."""
    if name in consts:
        return consts[name].astype("float32")
    node = producer[name]
    q, scale = consts[node.input[0]].astype("float32"), consts[node.input[1]]
    zero = consts[node.input[2]].astype("float32") if len(node.input) > 2 else 0.0
    if scale.ndim == 1 and q.ndim > 1:
        shape = [-1] + [1] * (q.ndim - 1)
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    return (q - zero) * scale


def _conv_feeding(name, producer):
    node = producer[name]
    while node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        node = producer[node.input[0]]
    return node


def _bn_after(layer, net):
    import keras
    return next(l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)
                and l.input._keras_history.operation is layer)


def _set_batch_norms(net, bns, biases, faces):
    """Moving statistics = each BN input's batch statistics, gamma and beta chosen so that
    BN(x) = x + bias, the folded conv's output, either way batch norm runs."""
    import keras

    for bn, bias in zip(bns, biases):  # first the identity plus bias, so the probe sees the file's net
        c = len(bias)
        bn.set_weights([np.ones(c, "float32"), bias, np.zeros(c, "float32"),
                        np.full(c, 1 - bn.epsilon, "float32")])
    probe = keras.Model(net.input, [bn.input for bn in bns])
    outs = probe.predict(faces[:BN_FACES], batch_size=256, verbose=0)
    for bn, bias, out in zip(bns, biases, outs):
        mean, var = out.mean((0, 1, 2)), out.var((0, 1, 2))
        bn.set_weights([np.sqrt(var + bn.epsilon), mean + bias, mean, var])
