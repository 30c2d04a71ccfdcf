"""A greedy model soup (Wortsman et al. 2022): the weights of several last cycles from one start,
averaged into one net of the same size and speed. The ingredients are taken best first by their
PublicTest accuracy, and each stays only if the soup then gets no fewer PublicTest faces right.
Fine-tunes of one start lie in one basin, so their mean is a working net, not a blur of two."""
import json
from pathlib import Path

import numpy as np

from . import data as fer_data
from .swa import recompute_batch_norm

BN_FACES = 16384  # twice SWA's sample: the soup is made once, and steadier statistics are cheap


def _publictest_faces(net, splits):
    from ..model.inference import net_inputs
    x, y = splits["PublicTest"]
    probs = net.predict(net_inputs(x), batch_size=512, verbose=0)
    return int((probs.argmax(1) == y.argmax(1)).sum())


def _ingredients(paths, arch, faces):
    from .train import start_net

    nets = [start_net(p, arch, faces) for p in paths]
    shapes = [[w.shape for w in n.get_weights()] for n in nets]
    for path, shape in zip(paths, shapes):
        if shape != shapes[0]:
            raise ValueError(f"{path} is not the same net as {paths[0]}: a soup needs one arch")
    return nets


def greedy(paths, splits, arch="sticker-wide", echo=print):
    """The soup net and the record of every mixture tried (ingredients, PublicTest faces)."""
    import keras

    from ..model.inference import net_inputs
    train_faces = net_inputs(splits["Training"][0])
    nets = _ingredients(paths, arch, train_faces)
    alone = [_publictest_faces(n, splits) for n in nets]
    order = sorted(range(len(paths)), key=lambda i: -alone[i])  # stable: ties keep the given order
    weights = [n.get_weights() for n in nets]
    soup = keras.models.clone_model(nets[0])

    def mix(chosen):
        soup.set_weights([np.mean(ws, axis=0) for ws in zip(*(weights[i] for i in chosen))])
        # The ingredients' moving statistics do not fit their mean.
        recompute_batch_norm(soup, train_faces, n=BN_FACES)
        return _publictest_faces(soup, splits)

    tried = [{"models": [str(paths[i])], "publictest_faces": alone[i]} for i in order]
    chosen, best = [order[0]], mix([order[0]])
    kept = soup.get_weights()  # a rejected mixture is left in SOUP; this is the last one kept
    for i in order[1:]:
        faces = mix(chosen + [i])
        tried.append({"models": [str(paths[j]) for j in chosen + [i]], "publictest_faces": faces})
        echo(f"{len(chosen) + 1} models: {faces} PublicTest faces" + (" (kept)" if faces >= best else ""))
        if faces >= best:
            chosen, best, kept = chosen + [i], faces, soup.get_weights()
    soup.set_weights(kept)
    return soup, [str(paths[i]) for i in chosen], tried


def run(data, out, models, arch="sticker-wide", int8=False, echo=print):
    """The whole `stickersort soup` job; returns metrics.json's content."""
    from . import report

    out = Path(out)
    if (out / "metrics.json").exists():
        raise fer_data.DataError(f"{out} already holds a run; pass another --out")
    splits = fer_data.load(data)
    soup, chosen, tried = greedy(list(models), splits, arch, echo)
    out.mkdir(parents=True, exist_ok=True)
    soup.save(out / "best.keras")
    (out / "soup.json").write_text(json.dumps({"chosen": chosen, "tried": tried}, indent=1) + "\n")
    return report.write_all(out, splits, [], train_seconds=0.0, command=report.command_line(), labels=None,
                            int8=int8, soup=chosen)
