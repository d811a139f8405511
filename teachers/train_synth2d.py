"""Train the shipped ``synth2d`` teacher: ``python -m teachers.train_synth2d``.

Deterministic (seeded, single-threaded data order). Trains on the paired views of the train split of
every synthetic domain with strong appearance randomisation (hue rotation, white balance, brightness,
contrast, saturation, gamma, greyscale, noise, flips), then reports 2D mIoU on each domain's test
views and writes the weights plus a JSON of those numbers next to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.classes import NUM_CLASSES
from bench.data.datasets import get_dataset
from bench.data.synth import DOMAINS
from bench.metrics import confusion, miou
from bench.progress import progress
from teachers.base import normalise
from teachers.synth2d import MEAN_STD, WEIGHTS, Synth2DNet

log = logging.getLogger(__name__)


def load_views(domain: str, split: str, n: int):
    ds = get_dataset(domain)
    names = ds.scene_names(split, n)
    ds.ensure(names, workers=2)
    imgs, labs = [], []
    for name in names:
        for v in ds.load(name).views:
            imgs.append(v.image), labs.append(v.label)
    return np.stack(imgs), np.stack(labs)


def randomise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Strong appearance randomisation of a batch of images in [0,1], (B,3,H,W)."""
    b = x.shape[0]
    r = lambda lo, hi, *s: lo + (hi - lo) * torch.rand(*s, generator=g)  # noqa: E731
    # hue rotation about the grey axis
    ang = r(-math.pi, math.pi, b)
    k = torch.ones(3) / math.sqrt(3)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = torch.stack([torch.eye(3) + torch.sin(a) * kx + (1 - torch.cos(a)) * kx @ kx for a in ang])
    x = torch.einsum("bij,bjhw->bihw", rot, x)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * r(0.2, 1.6, b, 1, 1, 1)  # saturation
    x = x * r(0.6, 1.4, b, 3, 1, 1)  # white balance
    x = (x - 0.5) * r(0.6, 1.4, b, 1, 1, 1) + 0.5 + r(-0.25, 0.25, b, 1, 1, 1)  # contrast, brightness
    x = x.clamp(1e-4, 1) ** r(0.6, 1.6, b, 1, 1, 1)  # gamma
    to_grey = (torch.rand(b, generator=g) < 0.15)[:, None, None, None]
    x = torch.where(to_grey, x.mean(1, keepdim=True).expand_as(x), x)
    x = x + torch.randn(x.shape, generator=g) * r(0, 0.05, b, 1, 1, 1)
    return x.clamp(0, 1)


def evaluate(net: Synth2DNet, imgs: np.ndarray, labs: np.ndarray) -> float:
    net.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(imgs), 32):
            x = normalise(torch.from_numpy(imgs[i:i + 32]), *MEAN_STD)
            _, logits = net(x)
            pred = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False).argmax(1)
            conf += confusion(pred.numpy(), labs[i:i + 32], NUM_CLASSES)
    return miou(conf)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=24, help="train scenes per domain")
    ap.add_argument("--test-scenes", type=int, default=8, help="test scenes per domain for the report")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    data = [load_views(d, "train", args.scenes) for d in DOMAINS]
    imgs = np.concatenate([d[0] for d in data])
    labs = np.concatenate([d[1] for d in data])
    net = Synth2DNet(args.dim, args.width)
    bs = 16
    steps = args.epochs * math.ceil(len(imgs) / bs)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("synth2d", total=steps, info="")
        for epoch in range(args.epochs):
            net.train()
            order = torch.randperm(len(imgs), generator=g)
            for i in range(0, len(imgs), bs):
                idx = order[i:i + bs].numpy()
                x = torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float() / 255.0
                y = torch.from_numpy(labs[idx])
                if torch.rand(1, generator=g) < 0.5:
                    x, y = x.flip(3), y.flip(2)
                x = randomise(x, g)
                x = (x - 0.5) / 0.25
                _, logits = net(x)
                logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits, y, ignore_index=-1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {loss.item():.3f}")
    seconds = time.perf_counter() - t0
    report = {"train_seconds": round(seconds, 1), "epochs": args.epochs, "train_scenes_per_domain": args.scenes,
              "params": sum(p.numel() for p in net.parameters()), "test_miou_2d": {}}
    for d in DOMAINS:
        ti, tl = load_views(d, "test", args.test_scenes)
        report["test_miou_2d"][d] = round(evaluate(net, ti, tl), 4)
        log.info("%s: 2D test mIoU %.3f", d, report["test_miou_2d"][d])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s (%.1f s)", args.out, seconds)


if __name__ == "__main__":
    main()
