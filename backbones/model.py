"""The segmentation model: a backbone plus heads (label projector, 2D-feature projector, reconstruction,
2D label head).

``SegModel.forward`` returns the per-point backbone features and the outputs of the heads asked for,
so a method can choose which parameters to adapt (``model.backbone`` vs ``model.heads[...]``).

The 2D label head ``heads["seg2d"]`` (built whenever ``kd_dim > 0``) is the trainable part of the 2D
branch of the multi-modal methods: the frozen 2D teacher's features, lifted onto the points, go through
it to 2D class logits (``SegModel.forward2d``); it takes no input from the 3D backbone. Only the
``joint-kd2d`` recipe (backbones/train_mm.py) trains it; in other teacher-trained models it stays at
its initialisation and no method reads it. A checkpoint written before the head existed loads as a
model without it (``_drop_absent_head2d``), so older ``joint-kd`` checkpoints stay valid.
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

MODEL_CODE_VERSION = 2  # bump when a change to backbones/ invalidates trained checkpoints


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


def head2d(cin: int, cout: int) -> nn.Sequential:
    """The 2D label head on lifted teacher features: Linear, BatchNorm1d, ReLU, Linear. Its BatchNorm
    gives the 2D branch normalisation statistics of its own (MM-TTA's slow/fast statistics per modality)."""
    return nn.Sequential(nn.Linear(cin, cin), nn.BatchNorm1d(cin), nn.ReLU(), nn.Linear(cin, cout))


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
        if spec.kd_dim:  # built last: the other heads' initialisation is unchanged by it
            heads["seg2d"] = head2d(spec.kd_dim, spec.num_classes)
        self.heads = nn.ModuleDict(heads)
        self._register_load_state_dict_pre_hook(self._drop_absent_head2d)

    def _drop_absent_head2d(self, state_dict, prefix, *args) -> None:
        if "seg2d" in self.heads and not any(k.startswith(prefix + "heads.seg2d.") for k in state_dict):
            del self.heads["seg2d"]

    def forward(self, batch: PointBatch, heads: tuple[str, ...] = ("seg",)) -> dict[str, torch.Tensor]:
        feat = self.backbone(batch)
        out = {"feat": feat}
        for h in heads:
            out[h] = self.heads[h](feat)
        return out

    def forward2d(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """2D class logits from lifted teacher features (N, kd_dim): the 2D branch's head; rows of points
        seen by no view carry no teacher information and are to be ignored by the caller."""
        if "seg2d" not in self.heads:
            from bench.errors import BenchError

            raise BenchError("this model has no 2D label head (heads['seg2d']); multi-modal methods need a model "
                             "trained by the 'joint-kd2d' recipe (set recipe = \"joint-kd2d\" or drop the override)")
        return self.heads["seg2d"](teacher_feat)


def build_model(spec: ModelSpec, device: str | torch.device = "cpu") -> SegModel:
    model = SegModel(spec)
    return to_device(model, device)


def to_device(model: nn.Module, device) -> nn.Module:
    model = model.to(device)
    if getattr(model, "spec", None) is not None and model.spec.backbone == "spunet":
        from backbones.spunet import set_conv_algo

        set_conv_algo(model, device)
    return model
