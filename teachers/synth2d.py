"""``synth2d``: the shipped 2D teacher of the built-in benchmark.

A small convolutional encoder-decoder trained by ``python -m teachers.train_synth2d`` on the paired
views of every synthetic domain with strong appearance randomisation, so that, like a foundation
model, its features are semantic and robust across domains. It stands in for DINOv2 & co., which
cannot be downloaded here. Its weights (``teachers/weights/synth2d.pt``, well under a few MB) ship
with the package, so the default grid never trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.classes import NUM_CLASSES
from bench.errors import BenchError
from teachers.base import ImageTeacher, load_into, normalise, read_checkpoint, weights_id
from teachers.registry import TEACHERS

WEIGHTS = Path(__file__).parent / "weights" / "synth2d.pt"
MEAN_STD = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Synth2DNet(nn.Module):
    """Encoder-decoder; ``forward`` gives (features at 1/2 resolution, class logits at the same size)."""

    def __init__(self, dim: int = 64, width: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.enc4 = _block(4 * w, 4 * w, dilation=2)
        self.dec3 = _block(8 * w, 4 * w)
        self.dec2 = _block(6 * w, 2 * w)
        self.feat = nn.Conv2d(2 * w, dim, 1)
        self.cls = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([F.interpolate(e4, size=e3.shape[2:], mode="bilinear", align_corners=False), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, size=e2.shape[2:], mode="bilinear", align_corners=False), e2], 1))
        f = self.feat(d2)
        return f, self.cls(F.relu(f))


@dataclass
class Synth2DConfig:
    weights: str | None = None  # None = the shipped teachers/weights/synth2d.pt


class Synth2D(ImageTeacher):
    def __init__(self, cfg: Synth2DConfig, device: str = "cpu"):
        path = Path(cfg.weights) if cfg.weights else WEIGHTS
        if not path.is_file():
            raise BenchError(f"synth2d weights {path} not found; train them with `python -m teachers.train_synth2d` "
                             "(they ship with the package, so a fresh clone should have them)")
        ckpt = read_checkpoint(path, "synth2d")
        dim = int(ckpt["feat.weight"].shape[0])
        width = int(ckpt["enc1.0.weight"].shape[0])
        net = Synth2DNet(dim, width)
        load_into(net, ckpt, path, "synth2d")
        super().__init__(net, "synth2d", dim, weights_id(path), device)

    def feature_maps(self, images):
        f, _ = self.net(normalise(images, *MEAN_STD))
        return f


@TEACHERS.register("synth2d", config=Synth2DConfig)
def build_synth2d(*, cfg: Synth2DConfig, device: str = "cpu") -> Synth2D:
    """small CNN trained on all synthetic domains with appearance randomisation (stands in for DINOv2)"""
    return Synth2D(cfg, device)
