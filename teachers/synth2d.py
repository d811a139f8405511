"""``synth2d``, ``synth2d-s``, ``synth2d-l``: the shipped 2D teachers of the built-in benchmark.

Small convolutional encoder-decoders trained by ``python -m teachers.train_synth2d --variant s|m|l``
on the paired views of the synthetic domains with strong appearance randomisation, so that, like a
foundation model, their features are semantic and robust across domains. They stand in for DINOv2 &
co., which cannot be downloaded here; the three variants differ in capacity (width, feature
dimension) and training data, so a grid can ask whether a better teacher gives a better TTT-KD (the
CPU analogue of the paper's DINOv2 / CLIP / SAM ablation). Weights: ``teachers/weights/<name>.pt``
(each under 10 MB), so the default grids never train a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.classes import NUM_CLASSES
from bench.errors import BenchError
from teachers.base import RANDOM_INIT, ImageTeacher, load_into, normalise, read_checkpoint, weights_id
from teachers.registry import TEACHERS

WEIGHTS_DIR = Path(__file__).parent / "weights"
MEAN_STD = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@dataclass(frozen=True)
class Variant:
    """The architecture of one synth2d teacher (its training plan is in ``teachers.train_synth2d``)."""

    key: str  # s, m, l: the script's --variant
    name: str  # the registered teacher name
    width: int  # channels of the first encoder stage
    dim: int  # feature dimension (what TTT-KD's projector predicts)

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("s", "synth2d-s", width=12, dim=32),
    Variant("m", "synth2d", width=24, dim=64),
    Variant("l", "synth2d-l", width=32, dim=96),
)}
WEIGHTS = VARIANTS["m"].weights


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
    """``weights``: None = the shipped ``teachers/weights/<name>.pt``; a path; or 'random-init' (the
    architecture untrained, labelled as such)."""

    weights: str | None = None
    variant: ClassVar[str] = "m"

    def weights_file(self) -> Path | str:
        v = VARIANTS[self.variant]
        if self.weights == RANDOM_INIT:
            return RANDOM_INIT
        path = Path(self.weights).expanduser() if self.weights else v.weights
        if path.is_dir():  # a folder (as for the foundation teachers): the checkpoint inside it
            if not (path / v.weights.name).is_file():
                raise BenchError(f"teacher '{v.name}': folder {path} holds no {v.weights.name}; point weights at the "
                                 "checkpoint file itself")
            path = path / v.weights.name
        if not path.is_file():
            how = f"python -m teachers.train_synth2d --variant {v.key}"
            raise BenchError(f"teacher '{v.name}': weights {path} not found; "
                             + (f"produce them with `{how}` (it writes {v.weights})" if not self.weights else
                                f"give an existing file, or leave 'weights' unset for the shipped {v.weights} "
                                f"(produced by `{how}`)"))
        return path


@dataclass
class Synth2DSConfig(Synth2DConfig):
    variant: ClassVar[str] = "s"


@dataclass
class Synth2DLConfig(Synth2DConfig):
    variant: ClassVar[str] = "l"


class Synth2D(ImageTeacher):
    def __init__(self, cfg: Synth2DConfig, device: str = "cpu"):
        v = VARIANTS[cfg.variant]
        path = cfg.weights_file()
        net = Synth2DNet(v.dim, v.width)
        if path != RANDOM_INIT:
            ckpt = read_checkpoint(path, v.name)
            load_into(net, ckpt, path, v.name,
                      hint=f"{v.name} is width {v.width}, {v.dim}-d features; are these another variant's "
                           f"weights ({', '.join(o.name for o in VARIANTS.values() if o != v)})?")
        super().__init__(net, v.name, v.dim, weights_id(path), device)

    def feature_maps(self, images):
        f, _ = self.net(normalise(images, *MEAN_STD))
        return f


@TEACHERS.register("synth2d", config=Synth2DConfig)
def build_synth2d(*, cfg: Synth2DConfig, device: str = "cpu") -> Synth2D:
    """CNN (64-d features) trained on the synthetic domains with appearance randomisation (stands in for DINOv2)"""
    return Synth2D(cfg, device)


@TEACHERS.register("synth2d-s", config=Synth2DSConfig)
def build_synth2d_s(*, cfg: Synth2DSConfig, device: str = "cpu") -> Synth2D:
    """small synth2d (32-d features, less data): a weaker teacher for the teacher ablation"""
    return Synth2D(cfg, device)


@TEACHERS.register("synth2d-l", config=Synth2DLConfig)
def build_synth2d_l(*, cfg: Synth2DLConfig, device: str = "cpu") -> Synth2D:
    """large synth2d (96-d features, more data): a stronger teacher for the teacher ablation"""
    return Synth2D(cfg, device)
