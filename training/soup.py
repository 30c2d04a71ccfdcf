"""A greedy model soup (Wortsman et al. 2022): the weights of several last cycles from one start,
averaged into one net of the same size and speed. The ingredients are taken best first by their
PublicTest accuracy, and each stays only if the soup then gets no fewer PublicTest faces right.
Fine-tunes of one start lie in one basin, so their mean is a working net, not a blur of two.

Ingredients trained with `train --cards N` learned card crops as well as faces: with `cards`, the
mean's batch-norm statistics are recomputed on that same mix, and each mixture is judged on
PublicTest's faces and on one card view of each, as the scan crops it."""
import json
from pathlib import Path

import numpy as np

from . import data as fer_data
from . import run_folder
from .swa import recompute_batch_norm

BN_FACES = 16384  # twice SWA's sample: the soup is made once, and steadier statistics are cheap


def _faces_right(net, x, y):
    probs = net.predict(x, batch_size=512, verbose=0)
    return int((probs.argmax(1) == y.argmax(1)).sum())


def _judge(splits, cards):
    """net -> {what: faces right} on PublicTest's faces, and with cards on their card crops."""
    from ..model.inference import net_inputs
    from .cards import scanner_views

    x, y = splits["PublicTest"]
    tests = {"publictest_faces": (net_inputs(x), y)}
    if cards:
        vx, vy = scanner_views(x, y, 1, seed=0)
        tests["publictest_card_faces"] = (net_inputs(vx), vy)
    return lambda net: {name: _faces_right(net, *xy) for name, xy in tests.items()}


def _batch_norm_inputs(splits, train_faces, cards):
    """Training's net inputs, plus `cards` card views of each face: the mix the ingredients learned."""
    from ..model.inference import net_inputs
    from .cards import scanner_views

    if not cards:
        return train_faces
    views = scanner_views(*splits["Training"], cards, seed=0)[0]
    return np.concatenate([train_faces, net_inputs(views)])


def _ingredients(paths, arch, faces):
    from .train import start_net

    nets = [start_net(p, arch, faces) for p in paths]
    shapes = [[w.shape for w in n.get_weights()] for n in nets]
    for path, shape in zip(paths, shapes):
        if shape != shapes[0]:
            raise ValueError(f"{path} is not the same net as {paths[0]}: a soup needs one arch")
    return nets


def greedy(paths, splits, arch="sticker-wide", cards=0, echo=print):
    """The soup net and the record of every mixture tried (ingredients, PublicTest faces right;
    with cards, also on PublicTest's card crops, the sum deciding)."""
    import keras

    from ..model.inference import net_inputs
    train_faces = net_inputs(splits["Training"][0])
    nets = _ingredients(paths, arch, train_faces)
    judge, bn_inputs = _judge(splits, cards), _batch_norm_inputs(splits, train_faces, cards)
    alone = [judge(n) for n in nets]
    order = sorted(range(len(paths)), key=lambda i: -sum(alone[i].values()))  # stable: ties keep the given order
    weights = [n.get_weights() for n in nets]
    soup = keras.models.clone_model(nets[0])

    def mix(chosen):
        soup.set_weights([np.mean(ws, axis=0) for ws in zip(*(weights[i] for i in chosen))])
        # The ingredients' moving statistics do not fit their mean.
        recompute_batch_norm(soup, bn_inputs, n=BN_FACES)
        return judge(soup)

    tried = [{"models": [str(paths[i])], **alone[i]} for i in order]
    chosen, best = [order[0]], sum(mix([order[0]]).values())
    kept = soup.get_weights()  # a rejected mixture is left in SOUP; this is the last one kept
    for i in order[1:]:
        right = mix(chosen + [i])
        tried.append({"models": [str(paths[j]) for j in chosen + [i]], **right})
        faces = sum(right.values())
        echo(f"{len(chosen) + 1} models: {', '.join(f'{v} {k}' for k, v in right.items())}"
             + (" (kept)" if faces >= best else ""))
        if faces >= best:
            chosen, best, kept = chosen + [i], faces, soup.get_weights()
    soup.set_weights(kept)
    return soup, [str(paths[i]) for i in chosen], tried


def run(data, out, models, arch="sticker-wide", int8=False, cards=0, echo=print):
    """The whole `stickersort soup` job; returns metrics.json's content."""
    from . import report

    out = Path(out)
    run_folder.check_new(out)
    splits = fer_data.load(data)
    fer_data.require(data, splits)
    soup, chosen, tried = greedy(list(models), splits, arch, cards, echo)
    out.mkdir(parents=True, exist_ok=True)
    with run_folder.claimed(out / "soup.json", new=True):  # two soups started at once into one OUT
        soup.save(out / "best.keras")
        (out / "soup.json").write_text(json.dumps({"chosen": chosen, "tried": tried}, indent=1) + "\n")
        return report.write_all(out, splits, [], train_seconds=0.0, command=report.command_line(), labels=None,
                                int8=int8, soup=chosen)
