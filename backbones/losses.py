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


def lovasz_softmax(logits: torch.Tensor, label: torch.Tensor, ignore: int = -1) -> torch.Tensor:
    """The Lovasz-softmax loss (Berman et al., CVPR 2018): a convex surrogate of 1 - IoU per class,
    averaged over the classes present in ``label``. For each class the points' errors
    ``|[y = c] - p_c|`` are sorted in decreasing order and weighted by the increments of the Jaccard
    loss of the sorted ground truth, so the loss acts on the IoU of every class, rare ones as much as
    walls."""
    valid = label != ignore
    probs, y = logits[valid].softmax(1), label[valid]
    if y.numel() == 0:
        return logits.sum() * 0.0
    losses = []
    for c in torch.unique(y).tolist():
        fg = (y == c).to(probs.dtype)
        err = (fg - probs[:, c]).abs()
        err_sorted, order = torch.sort(err, descending=True)
        g = fg[order]
        gts = g.sum()
        inter = gts - g.cumsum(0)
        union = gts + (1.0 - g).cumsum(0)
        jac = 1.0 - inter / union
        jac = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        losses.append(torch.dot(err_sorted, jac))
    return torch.stack(losses).mean()


def class_weights(labels: list, num_classes: int, power: float) -> torch.Tensor:
    """Per-class cross-entropy weights ``freq ** -power`` from the training labels (0 for absent classes),
    scaled so that the mean weight per labelled point is 1 (``power`` 0: plain cross-entropy; 0.5: the
    square root of the inverse frequency)."""
    import numpy as np

    counts = np.zeros(num_classes, dtype=np.float64)
    for lab in labels:
        lab = np.asarray(lab)
        counts += np.bincount(lab[lab >= 0], minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1.0)
    w = np.where(counts > 0, np.power(np.maximum(freq, 1e-12), -power), 0.0)
    w = w / max((w * freq).sum(), 1e-12)
    return torch.tensor(w, dtype=torch.float32)
