"""Stochastic weight averaging: a last cycle at a constant, fairly high learning rate, its
weights saved every half epoch and averaged at the end, each trajectory's first quarter left out.
`starts` runs several trajectories, each from the start weights with a fresh optimizer: on the
shipped net one trajectory's average gained 13 PublicTest faces in float32, two trajectories'
27 (docs/model-history.md: it also lost agreement with the FER+ majority, so it did not ship)."""
from pathlib import Path

import numpy as np

SKIP = 0.25  # the first quarter of the run leaves the start's basin edge; not averaged


def snapshots(folder, steps_per_epoch, start_weights, epochs_per_start):
    """A callback saving the net's weights every half epoch, named by global half-epoch number so
    a resumed run overwrites rather than duplicates, and sending the net back to START_WEIGHTS
    every EPOCHS_PER_START epochs."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    every = max(1, steps_per_epoch // 2)

    class _Snapshots(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if epoch and epoch % epochs_per_start == 0:
                self.model.layers[-1].set_weights(start_weights)
                for v in self.model.optimizer.variables:  # moments and step count: a fresh Adam
                    if not v.path.endswith("learning_rate"):  # (a variable too, in Keras 3)
                        v.assign(np.zeros(v.shape, v.dtype))

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % every == 0 and (batch + 1) // every <= 2:
                n = 2 * self.epoch + (batch + 1) // every
                self.model.layers[-1].save_weights(str(folder / f"snap{n:03d}.weights.h5"))

    return _Snapshots()


def average(net, folder, faces, starts=1):
    """Load the mean of each trajectory's later snapshots into NET, then give its batch norms the
    statistics of the averaged weights (the snapshots' own moving statistics do not fit it)."""
    paths = sorted(Path(folder).glob("snap*.weights.h5"))
    per_start = max(1, len(paths) // starts)
    paths = [p for i, p in enumerate(paths) if i % per_start >= int(per_start * SKIP)]
    if not paths:
        raise ValueError(f"no weight snapshots in {folder}")
    total = None
    for p in paths:
        net.load_weights(str(p))
        w = net.get_weights()
        total = w if total is None else [a + b for a, b in zip(total, w)]
    net.set_weights([a / len(paths) for a in total])
    recompute_batch_norm(net, faces)


def recompute_batch_norm(net, faces, n=8192, batch=1024, seed=0):
    """Each BN's input mean and variance over N Training faces, with the net in training mode so
    every earlier BN normalizes by batch statistics, as in the standard SWA update."""
    import keras

    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(net.input, [bn.input for bn in bns])
    pick = np.random.default_rng(seed).choice(len(faces), min(n, len(faces)), replace=False)
    sums = [[0.0, 0.0] for _ in bns]
    chunks = [pick[i:i + batch] for i in range(0, len(pick), batch)]
    for chunk in chunks:
        for s, out in zip(sums, probe(faces[np.sort(chunk)], training=True)):
            out = np.asarray(out)
            axes = tuple(range(out.ndim - 1))  # every axis but the channels': a conv's or a dense layer's BN
            s[0] += out.mean(axes) / len(chunks)
            s[1] += (out ** 2).mean(axes) / len(chunks)
    for bn, (mean, square) in zip(bns, sums):
        gamma, beta = bn.get_weights()[:2]
        bn.set_weights([gamma, beta, mean, square - mean ** 2])
