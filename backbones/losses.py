"""Losses shared by the training recipes and the test-time methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backbones.batch import PointBatch


def distill_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance between projected 3D features and lifted 2D teacher features on the points seen by a view."""
    if mask.sum() == 0:
        return pred.sum() * 0.0
    p, t = pred[mask], target[mask]
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(p, t, dim=1)).mean()
    if kind == "l2":  # mean squared error of the raw features on the seen points
        return F.mse_loss(p, t)
    raise ValueError(f"unknown distillation loss '{kind}' (cosine or l2)")


def block_mask(batch: PointBatch, ratio: float, cell: float, generator: torch.Generator) -> torch.Tensor:
    """Mask whole grid cells (blocks of points) with probability ``ratio``: the MAE masking of points."""
    g = torch.floor(batch.coord / cell).long()
    g = g - g.min(0).values
    dims = g.max(0).values + 1
    key = ((batch.batch * dims[0] + g[:, 0]) * dims[1] + g[:, 1]) * dims[2] + g[:, 2]
    uniq, inv = torch.unique(key, return_inverse=True)
    chosen = torch.rand(uniq.shape[0], generator=generator) < ratio
    return chosen.to(inv.device)[inv]


def masked_input(batch: PointBatch, mask: torch.Tensor) -> PointBatch:
    """The batch with the input features of masked points replaced by the mask token (zeros)."""
    return batch.with_feat(torch.where(mask[:, None], torch.zeros_like(batch.feat), batch.feat))


def reconstruction_loss(pred: torch.Tensor, batch: PointBatch, mask: torch.Tensor) -> torch.Tensor:
    """MSE of the reconstructed input features (colour, normals) on the masked points."""
    if mask.sum() == 0:
        return pred.sum() * 0.0
    return F.mse_loss(pred[mask], batch.feat[mask])


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-point Shannon entropy of the softmax prediction."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)
