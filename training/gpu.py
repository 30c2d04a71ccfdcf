"""Teachers and their students trained on a lent GPU in one call, with Keras 3 on JAX.

The device machine has JAX and no TensorFlow, and its whole call (start, transfer, run) fits in
15 minutes, so each phase trains to a wall-clock deadline: the learning rate follows a cosine
over the time left rather than over a fixed number of epochs. `pack` runs here (CPU, the
repository's own cards and detector) and writes what the device needs into one folder small
enough to carry; `run` runs there:

    python -m stickersort.training.gpu pack ../shared/datasets/fer2013/fer2013.csv.gz \
        ../shared/datasets/ferplus/fer2013new.csv.gz STAGE8.onnx .devdata
    KERAS_BACKEND=jax python -m stickersort.training.gpu run .devdata OUT

Phases of `run`: redraw the card views from their seeds and boxes -> two teachers at once
(ResNet-18-style, 11 M params, bf16) on faces and views with the blended labels -> their
mirror-averaged probabilities -> students (`sticker-wide`) at once, targets half label, half
teachers -> each student's PublicTest-best net, as .keras, in OUT.
"""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..model.inference import net_inputs

VIEW_SEED, VIEWS = 60, 2  # card views of each Training face: scanner_views' seeds for seed 60
TEACHER_WEIGHT = 0.5
SPLITS = ("Training", "PublicTest", "PrivateTest")
WEBP_QUALITY = 95  # 45 dB PSNR: the faces travel at half their size, else over the 64 MiB a call carries
# Seconds from the start of `run`: teachers end by TEACH_END, students by STUDY_END.
TEACH_END = float(os.environ.get("GPU_TEACH_END", 310))
STUDY_END = float(os.environ.get("GPU_STUDY_END", 545))
STUDENTS = {  # name: (start, augmentation, peak LR)
    "warm": ("stage8", "light", 5e-4),
    "warm-strong": ("stage8", "strong", 1e-3),
    "scratch": (None, "strong", 2e-3),
}


# ---- here: what the device needs ----

def pack(data, ferplus, stage8, out, limit=None):
    """OUT/pack.npz (every face as WebP, split, blended targets, the card views' boxes, the first
    64 views' crops to check the redraw against) and OUT/stage8.keras, STAGE8's float net."""
    from . import data as fer_data
    from .rebuild import from_onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = fer_data.load(data, labels="blend", ferplus=ferplus, quiet=True)
    if limit:  # a quick check
        splits = {s: (x[:int(limit)], y[:int(limit)]) for s, (x, y) in splits.items()}
    faces = np.concatenate([splits[s][0] for s in SPLITS])
    blobs = [cv2.imencode(".webp", f, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])[1].tobytes() for f in faces]
    boxes, crops = view_boxes(splits["Training"][0])
    np.savez(out / "pack.npz", webp=np.frombuffer(b"".join(blobs), np.uint8),
             ends=np.cumsum([len(b) for b in blobs]),
             split=np.concatenate([np.full(len(splits[s][0]), i) for i, s in enumerate(SPLITS)]),
             y=np.concatenate([splits[s][1] for s in SPLITS]), boxes=boxes, check=crops[:64])
    from_onnx(stage8, "sticker-wide", net_inputs(splits["Training"][0])).save(out / "stage8.keras")


def view_boxes(faces):
    """(view, face, x, y, w, h) of the scan's best face on each card view that has one, and its crop."""
    from .cards import scanner_finds

    found = list(scanner_finds(faces, VIEWS, VIEW_SEED))
    return (np.array([(k, i, f.x, f.y, f.w, f.h) for k, i, f, _ in found], np.float64),
            np.stack([view for _, _, _, view in found]))


# ---- there: the run ----

def run(pack_dir, out):
    started = time.time()
    pack_dir, out, tmp = Path(pack_dir), Path(out), Path("/tmp/gpu-run")
    tmp.mkdir(exist_ok=True)
    unpack(pack_dir, tmp)
    say(started, "unpacked")
    teachers = [spawn("teacher", tmp, out, name, seed, started + TEACH_END) for name, seed in (("t1", 1), ("t2", 2))]
    done = [name for name, code in wait_all(teachers) if code == 0]
    say(started, f"teachers done: {done}")
    if not done:
        sys.exit("no teacher finished")
    probs = {n: np.load(tmp / f"{n}.npz") for n in done}
    teach = {k: np.mean([p[k] for p in probs.values()], axis=0) for k in ("faces", "views")}
    np.savez(out / "teachers.npz", **{f"{n}_{k}": p[k] for n, p in probs.items() for k in ("faces", "views")})
    np.savez(tmp / "teach.npz", **teach)
    split = np.load(tmp / "split.npy")
    y = np.load(tmp / "y.npy")
    for s in (1, 2):
        right = teach["faces"][split == s].argmax(1) == y[split == s].argmax(1)
        say(started, f"teachers together, flip TTA, {SPLITS[s]}: {right.mean():.4f}")
    students = [spawn("student", tmp, out, name, 10 + i, started + STUDY_END, pack_dir)
                for i, name in enumerate(STUDENTS)]
    for name, code in wait_all(students):
        say(started, f"student {name}: exit {code}")


def wait_all(procs):
    """Each worker's exit status; one too slow stops them all at once, so the lease is not spent."""
    while any(proc.poll() is None for _, proc in procs):
        if any(proc.poll() == TOO_SLOW for _, proc in procs):
            for _, proc in procs:
                proc.kill()
            sys.exit("stopped: a worker was too slow to finish by its deadline (the log says which)")
        time.sleep(1)
    return [(name, proc.returncode) for name, proc in procs]


def unpack(pack_dir, tmp):
    """Faces decoded and card views redrawn, as .npy files the workers map."""
    from multiprocessing import Pool

    pack = np.load(pack_dir / "pack.npz")
    webp, ends = pack["webp"], pack["ends"]
    starts = np.concatenate([[0], ends[:-1]])
    faces = np.stack([cv2.imdecode(webp[a:b], cv2.IMREAD_GRAYSCALE) for a, b in zip(starts, ends)])
    np.save(tmp / "faces.npy", faces)
    np.save(tmp / "split.npy", pack["split"])
    np.save(tmp / "y.npy", pack["y"])
    boxes = pack["boxes"]
    with Pool(min(16, os.cpu_count()), _init_views, (tmp / "faces.npy",)) as pool:
        views = np.stack(pool.map(_view, [tuple(b) for b in boxes], chunksize=256))
    np.save(tmp / "views.npy", views)
    np.save(tmp / "view_face.npy", boxes[:, 1].astype(int))
    check = pack["check"]
    print(f"views: {len(views)}; redrawn against packed crops, mean abs difference "
          f"{np.abs(views[:len(check)].astype(float) - check).mean():.2f}", flush=True)


def _init_views(faces_file):
    global _FACES
    _FACES = np.load(faces_file, mmap_mode="r")


def _view(box):
    from ..model.faces import Face, crop
    from .cards import view_card
    k, i, x, y, w, h = box
    return crop(view_card(np.asarray(_FACES[int(i)]), VIEW_SEED, int(k), int(i)), Face(x, y, w, h, 1.0))


def spawn(role, tmp, out, name, seed, deadline, pack_dir=None):
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3", "KERAS_BACKEND": "jax"}
    args = [sys.executable, "-m", __spec__.name, role, str(tmp), str(out), name, str(seed), str(deadline)]
    if pack_dir:
        args.append(str(pack_dir))
    return name, subprocess.Popen(args, env=env)


def say(started, text):
    print(f"[{time.time() - started:5.0f} s] {text}", flush=True)


# ---- the workers ----

MIN_EPOCHS = int(os.environ.get("GPU_MIN_EPOCHS", 12))  # fewer would fit before the deadline: stop at once
TOO_SLOW = 3  # a worker's exit status when it is


def _data(tmp):
    faces = np.load(tmp / "faces.npy")
    split, y = np.load(tmp / "split.npy"), np.load(tmp / "y.npy")
    views, view_face = np.load(tmp / "views.npy"), np.load(tmp / "view_face.npy")
    return faces, split, y, views, view_face


def teacher(tmp, out, name, seed, deadline):
    import keras
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(seed)
    faces, split, y, views, view_face = _data(tmp)
    train = split == 0
    net = resnet()
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    best = fit_until(net, np.concatenate([faces[train], views]), np.concatenate([y[train], y[train][view_face]]),
                     (net_inputs(faces[split == 1]), y[split == 1]), optimizer, 0.1, "strong", 256, seed,
                     deadline - 20, name)
    net.set_weights(best)
    probs = {"faces": tta(net, net_inputs(faces)), "views": tta(net, net_inputs(views))}
    np.savez(tmp / f"{name}.npz", **probs)
    for s in (1, 2):
        right = probs["faces"][split == s].argmax(1) == y[split == s].argmax(1)
        print(f"{name}: {SPLITS[s]} flip TTA {right.mean():.4f}", flush=True)


def student(tmp, out, name, seed, deadline, pack_dir):
    import keras
    from .network import build, load
    keras.utils.set_random_seed(seed)
    start, augment, lr = STUDENTS[name]
    faces, split, y, views, view_face = _data(tmp)
    teach = np.load(tmp / "teach.npz")
    train, w = split == 0, TEACHER_WEIGHT
    t = np.concatenate([(1 - w) * y[train] + w * teach["faces"][train],
                        (1 - w) * y[train][view_face] + w * teach["views"]]).astype("float32")
    net = load(Path(pack_dir) / "stage8.keras") if start else build("sticker-wide")
    optimizer = keras.optimizers.AdamW(lr, weight_decay=5e-4)
    best = fit_until(net, np.concatenate([faces[train], views]), t, (net_inputs(faces[split == 1]), y[split == 1]),
                     optimizer, lr, augment, 128, seed, deadline - 10, name, save=Path(out) / f"{name}.keras")
    _save_best(net, best, Path(out) / f"{name}.keras")
    net.set_weights(best)
    for s in (1, 2):
        p = net.predict(net_inputs(faces[split == s]), batch_size=1024, verbose=0)
        print(f"{name}: {SPLITS[s]} single pass {np.mean(p.argmax(1) == y[split == s].argmax(1)):.4f}", flush=True)


def resnet(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), dropout=0.3):
    """ResNet-18's basic blocks at 48/24/12/6 px: no stem downsampling, FER faces are small."""
    import keras
    from keras import layers

    def conv_bn(x, filters, strides=1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(x)

    x = inputs = keras.Input((48, 48, 1))
    x = layers.Activation("relu")(conv_bn(x, widths[0]))
    for stage, (width, n) in enumerate(zip(widths, blocks)):
        for b in range(n):
            strides = 2 if stage and not b else 1
            shortcut = x
            if strides > 1 or x.shape[-1] != width:
                shortcut = layers.BatchNormalization()(
                    layers.Conv2D(width, 1, strides=strides, use_bias=False)(x))
            y = layers.Activation("relu")(conv_bn(x, width, strides))
            x = layers.Activation("relu")(layers.Add()([conv_bn(y, width), shortcut]))
    x = layers.Dropout(dropout)(layers.GlobalAveragePooling2D()(x))
    outputs = layers.Dense(7, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="teacher")


def fit_until(net, faces, targets, validation, optimizer, peak, strength, batch, seed, deadline, name, save=None):
    """Train NET on FACES (uint8) until DEADLINE (epoch time), one fit() per epoch on views the
    host drew meanwhile. Keras's augmentation layers cost 850 ms a step on the H200 under JAX,
    against 12 ms for the ResNet's step, so the views are drawn on the CPUs. The LR: a tenth of
    PEAK for the first epoch (mostly compiling), then a warm-up and a cosine over the time left.
    Returns the PublicTest-best weights; SAVE, if given, holds them as training goes."""
    import keras

    net.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    xv, yv = validation
    rng = np.random.default_rng(seed)
    draw = ThreadPoolExecutor(1)
    upcoming = draw.submit(augment, faces, rng, strength)
    begun, best, best_acc, saved, epoch = time.time(), None, -1.0, time.time(), 0
    while True:
        started = time.time()
        done = (started - begun) / max(1.0, deadline - begun)
        lr = peak * (0.1 if not epoch else min(1.0, max(0.1, done / 0.05)) if done < 0.05
                     else 0.5 * (1 + np.cos(np.pi * (done - 0.05) / 0.95)))
        optimizer.learning_rate.assign(max(lr, peak / 100))
        x = upcoming.result()
        upcoming = draw.submit(augment, faces, rng, strength)
        logs = net.fit(x, targets, batch_size=batch, epochs=1, shuffle=True, verbose=0).history
        acc = float(np.mean(net.predict(xv, batch_size=1024, verbose=0).argmax(1) == yv.argmax(1)))
        if acc > best_acc:
            best_acc, best = acc, [w.copy() for w in net.get_weights()]
        now, epoch = time.time(), epoch + 1
        seconds = now - started
        print(f"{name} epoch {epoch}: lr {float(optimizer.learning_rate):.5f} loss {logs['loss'][-1]:.4f} "
              f"acc {logs['accuracy'][-1]:.4f} PublicTest {acc:.4f} ({seconds:.1f} s)", flush=True)
        if not epoch - 1:
            begun = now
        elif epoch == 2 and (deadline - now) / seconds < MIN_EPOCHS:
            print(f"{name}: {seconds:.1f} s an epoch, too slow for {MIN_EPOCHS} more by the deadline", flush=True)
            os._exit(TOO_SLOW)  # at once: sys.exit would wait for the next epoch's views being drawn
        if save and now - saved > 45:
            _save_best(net, best, save)
            saved = now
        if now + seconds > deadline:
            return best


def _save_best(net, best, path):
    """BEST's weights in a copy of NET without its optimizer: a third of the file, and what
    `train --init` and `evaluate --model` read."""
    import keras
    copy = keras.Model.from_config(net.get_config())
    copy.set_weights(best)
    copy.save(path)


def augment(faces, rng, strength):
    """One epoch's views of uint8 [N,48,48] faces as float32 [N,48,48,1]: what
    training/augment.py's layers draw (mirror, shift, and for `strong` rotation, zoom, contrast
    and erasing), drawn by OpenCV in a few threads."""
    n, strong = len(faces), strength == "strong"
    flip = rng.random(n) < 0.5
    shift = rng.uniform(-1, 1, (n, 2)) * (4.8 if strong else 2.4)
    angle = rng.uniform(-15, 15, n) if strong else np.zeros(n)
    scale = rng.uniform(0.85, 1.15, n) if strong else np.ones(n)
    out = np.empty((n, 48, 48), np.float32)

    def part(lo, hi):
        for i in range(lo, hi):
            turn = cv2.getRotationMatrix2D((23.5, 23.5), angle[i], scale[i])
            turn[:, 2] += shift[i]
            face = faces[i][:, ::-1] if flip[i] else faces[i]
            out[i] = cv2.warpAffine(np.ascontiguousarray(face), turn, (48, 48), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda lo: part(lo, min(n, lo + 4096)), range(0, n, 4096)))
    out /= 255.0
    if strong:
        mean = out.mean((1, 2), keepdims=True)
        out = np.clip((out - mean) * rng.uniform(0.7, 1.3, (n, 1, 1)).astype("float32") + mean, 0, 1)
        _erase(out, rng)
    return out[..., None]


def _erase(x, rng, p=0.5, area=(0.02, 0.15)):
    """Random erasing: a rectangle of the face set to mid-grey, on half the faces."""
    n = len(x)
    side = np.sqrt(rng.uniform(*area, n) * 48 * 48)
    ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.3), n))
    h = np.clip(side * np.sqrt(ratio), 1, 48).astype(int)
    w = np.clip(side / np.sqrt(ratio), 1, 48).astype(int)
    for i in np.flatnonzero(rng.random(n) < p):
        top, left = rng.integers(0, 49 - h[i]), rng.integers(0, 49 - w[i])
        x[i, top:top + h[i], left:left + w[i]] = 0.5


def tta(net, x):
    return (net.predict(x, batch_size=1024, verbose=0) + net.predict(x[:, :, ::-1], batch_size=1024, verbose=0)) / 2


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role in ("teacher", "student"):
        tmp, out, name, seed, deadline = Path(args[0]), Path(args[1]), args[2], int(args[3]), float(args[4])
        if role == "teacher":
            teacher(tmp, out, name, seed, deadline)
        else:
            student(tmp, out, name, seed, deadline, args[5])
    elif role == "pack":
        pack(*args)
    else:
        run(*args)
