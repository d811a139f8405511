"""The segmentation model: a backbone plus heads (label projector, 2D-feature projector, reconstruction).

``SegModel.forward`` returns the per-point backbone features and the outputs of the heads asked for,
so a method can choose which parameters to adapt (``model.backbone`` vs ``model.heads[...]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from backbones.batch import PointBatch, in_channels
from backbones.registry import BACKBONES
from bench.data.classes import NUM_CLASSES
from bench.registry import make_config

MODEL_CODE_VERSION = 1  # bump when a change to backbones/ invalidates trained checkpoints


@dataclass
class ModelSpec:
    """Everything that defines a model's architecture (part of the checkpoint cache key)."""

    backbone: str = "spunet"
    backbone_cfg: dict = field(default_factory=dict)
    features: tuple[str, ...] = ("color", "normal")
    num_classes: int = NUM_CLASSES
    kd_dim: int = 0  # width of the 2D-feature projector (0 = none)
    mae: bool = False  # with a masked-reconstruction head

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        return d


def projector(cin: int, cout: int) -> nn.Sequential:
    """A two-layer MLP head (no normalisation layers: BN-based methods act on the backbone only)."""
    return nn.Sequential(nn.Linear(cin, cin), nn.ReLU(), nn.Linear(cin, cout))


class SegModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        entry = BACKBONES.get(spec.backbone)
        cfg = make_config(entry, spec.backbone_cfg, "backbone")
        self.backbone = entry.factory(cfg=cfg, in_channels=in_channels(spec.features))
        c = self.backbone.out_channels
        heads = {"seg": projector(c, spec.num_classes)}
        if spec.kd_dim:
            heads["kd"] = projector(c, spec.kd_dim)
        if spec.mae:
            heads["mae"] = projector(c, in_channels(spec.features))
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch: PointBatch, heads: tuple[str, ...] = ("seg",)) -> dict[str, torch.Tensor]:
        feat = self.backbone(batch)
        out = {"feat": feat}
        for h in heads:
            out[h] = self.heads[h](feat)
        return out


def build_model(spec: ModelSpec, device: str | torch.device = "cpu") -> SegModel:
    model = SegModel(spec)
    return to_device(model, device)


def to_device(model: nn.Module, device) -> nn.Module:
    model = model.to(device)
    if getattr(model, "spec", None) is not None and model.spec.backbone == "spunet":
        from backbones.spunet import set_conv_algo

        set_conv_algo(model, device)
    return model
