"""A ResNet teacher for FER2013 in PyTorch on the CPU (bf16 autocast, AMX), resumable: the lab
script of docs/model-history.md's "A CPU teacher in PyTorch", kept here as the record of that run.
It is no part of the package, and PyTorch no dependency of the project: it runs in a venv of its
own (`python -m venv TEACHVENV && TEACHVENV/bin/pip install torch numpy onnx`), on FER.npz, the
faces and blended targets as `training.data.load(DATA, labels="blend", ferplus=...)` gives them
(keys Training_x, Training_y, PublicTest_x, ... as saved by np.savez):

    TEACHVENV/bin/python docs/model/teacher_torch.py FER.npz runs/torch-r18h --epochs 80 --seed 1

Each epoch: a checkpoint RUN/last.pt, PublicTest single and flip; the best (single) as RUN/best.pt.
At the end (or with --export): RUN/teacher.onnx, NHWC [N,48,48,1] in [0,1] -> softmax, as the
repository's classifiers are.
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("run")
p.add_argument("--width", type=int, default=32)
p.add_argument("--epochs", type=int, default=80)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--wd", type=float, default=5e-4)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--bench", type=int, default=0, help="time N batches and stop")
p.add_argument("--export", action="store_true")
args = p.parse_args()
torch.set_num_threads(args.threads)
run = Path(args.run)
run.mkdir(parents=True, exist_ok=True)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class Net(nn.Module):
    def __init__(self, w=32, n=7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        chans, layers, cin = [w, 2 * w, 4 * w, 8 * w], [], w
        for i, c in enumerate(chans):
            layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(cin, n)

    def forward(self, x):  # x: [N,1,48,48] in [0,1]
        x = self.layers(self.stem((x - 0.5) / 0.25))
        return self.fc(self.drop(x.mean((2, 3))))


class Exported(nn.Module):
    """NHWC in [0,1] -> probabilities, the repository's classifier interface."""
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x.permute(0, 3, 1, 2)), -1)


def augment(x, g):
    """x: [B,1,48,48] float. Mirror, affine (rotation 15, zoom 15 %, shift 10 %), contrast, erasing."""
    b = x.shape[0]
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(15)
    scale = 1 + (torch.rand(b, generator=g) * 2 - 1) * 0.15
    tx, ty = [(torch.rand(b, generator=g) * 2 - 1) * 0.2 for _ in range(2)]
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    c = 1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.3
    bright = (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.1
    x = ((x - mean) * c + mean + bright).clamp(0, 1)
    # random erasing, half the batch: a rectangle of 2-20 % of the area filled with noise
    erase = torch.rand(b, generator=g) < 0.5
    area = (0.02 + torch.rand(b, generator=g) * 0.18) * 48 * 48
    ratio = torch.exp((torch.rand(b, generator=g) * 2 - 1) * math.log(3))
    h = (area * ratio).sqrt().clamp(4, 40)
    w = (area / ratio).sqrt().clamp(4, 40)
    y0 = torch.rand(b, generator=g) * (48 - h)
    x0 = torch.rand(b, generator=g) * (48 - w)
    ii = torch.arange(48).view(1, 48, 1).float()
    jj = torch.arange(48).view(1, 1, 48).float()
    m = ((ii >= y0.view(-1, 1, 1)) & (ii < (y0 + h).view(-1, 1, 1)) & (jj >= x0.view(-1, 1, 1))
         & (jj < (x0 + w).view(-1, 1, 1)) & erase.view(-1, 1, 1)).unsqueeze(1)
    x = torch.where(m, torch.rand(x.shape, generator=g), x)
    return x


def tensor(faces):
    return torch.from_numpy(faces).float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(net, x, flip=False):
    net.eval()
    out = []
    for i in range(0, len(x), 512):
        b = x[i:i + 512]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p = torch.softmax(net(b).float(), -1)
            if flip:
                p = (p + torch.softmax(net(b.flip(3)).float(), -1)) / 2
        out.append(p.float())
    return torch.cat(out).numpy()


d = np.load(args.data)
xtr, ytr = tensor(d["Training_x"]), torch.from_numpy(d["Training_y"]).float()
xpu, ypu = tensor(d["PublicTest_x"]), d["PublicTest_y"].argmax(1)
xpr, ypr = tensor(d["PrivateTest_x"]), d["PrivateTest_y"].argmax(1)

torch.manual_seed(args.seed)
net = Net(args.width).to(memory_format=torch.channels_last)
decay = [p for n, p in net.named_parameters() if p.ndim > 1]
no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0}],
                      lr=args.lr, momentum=0.9, nesterov=True)
steps_per_epoch = len(xtr) // args.batch
total = args.epochs * steps_per_epoch


def lr_at(step):
    warm = args.warmup * steps_per_epoch
    if step < warm:
        return args.lr * (step + 1) / warm
    return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


start, best, history = 0, -1.0, []
if (run / "last.pt").exists():
    ck = torch.load(run / "last.pt", weights_only=False)
    net.load_state_dict(ck["net"])
    opt.load_state_dict(ck["opt"])
    start, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
    print(f"resumed after epoch {ck['epoch']} (best PublicTest {best:.4f})", flush=True)
print(f"params {sum(p.numel() for p in net.parameters()):,}; epochs {args.epochs}; steps/epoch {steps_per_epoch}",
      flush=True)


def export(path):
    ck = torch.load(path, weights_only=False)
    net.load_state_dict(ck["net"])
    net.eval()
    pu, pr = predict(net, xpu), predict(net, xpr)
    puf, prf = predict(net, xpu, True), predict(net, xpr, True)
    metrics = {"epoch": ck["epoch"], "PublicTest": float((pu.argmax(1) == ypu).mean()),
               "PublicTest_flip": float((puf.argmax(1) == ypu).mean()),
               "PrivateTest": float((pr.argmax(1) == ypr).mean()),
               "PrivateTest_flip": float((prf.argmax(1) == ypr).mean())}
    np.savez(run / "probs.npz", pu=pu, pr=pr, puf=puf, prf=prf)
    dummy = torch.rand(2, 48, 48, 1)
    torch.onnx.export(Exported(net).float(), dummy, run / "teacher.onnx", input_names=["input"],
                      output_names=["probs"], dynamic_axes={"input": {0: "n"}, "probs": {0: "n"}}, opset_version=17,
                      dynamo=False)
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print("exported", metrics, flush=True)


if args.export:
    export(run / "best.pt")
    raise SystemExit

for epoch in range(start, args.epochs):
    t0 = time.time()
    g = torch.Generator().manual_seed(args.seed * 100003 + epoch)
    order = torch.randperm(len(xtr), generator=g)
    net.train()
    seen, loss_sum, right = 0, 0.0, 0
    for k in range(steps_per_epoch):
        step = epoch * steps_per_epoch + k
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = order[k * args.batch:(k + 1) * args.batch]
        xb = augment(xtr[idx], g).contiguous(memory_format=torch.channels_last)
        yb = ytr[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(xb)
        loss = -(yb * F.log_softmax(logits.float(), -1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(idx)
        loss_sum += loss.item() * len(idx)
        right += (logits.argmax(1) == yb.argmax(1)).sum().item()
        if args.bench and k + 1 == args.bench:
            print(f"{seen / (time.time() - t0):.1f} img/s", flush=True)
            raise SystemExit
    pu = predict(net, xpu)
    acc = float((pu.argmax(1) == ypu).mean())
    row = {"epoch": epoch, "loss": loss_sum / seen, "acc": right / seen, "val": acc, "s": time.time() - t0,
           "lr": lr_at(step)}
    history.append(row)
    if acc > best:
        best = acc
        torch.save({"net": net.state_dict(), "epoch": epoch}, run / "best.pt")
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "best": best,
                "history": history}, run / "last.tmp")
    (run / "last.tmp").replace(run / "last.pt")
    print(json.dumps(row), flush=True)

export(run / "best.pt")
