"""Helpers shared by the output-adjusting methods (LAME, T3A): the label head split into a feature
part and a linear classifier, distinct feature rows, and a chunked k-nearest-neighbour graph."""

from __future__ import annotations

import torch
from torch import nn

from backbones.batch import PointBatch
from backbones.model import SegModel


def classifier(model: SegModel) -> nn.Linear:
    """The last linear layer of the label head: the classifier that LAME's features feed and T3A adjusts."""
    return model.heads["seg"][-1]


@torch.no_grad()
def penultimate(model: SegModel, batch: PointBatch) -> torch.Tensor:
    """Per-point features right before the classifier (backbone, then the label head's hidden layer)."""
    feat = model(batch, ())["feat"]
    return model.heads["seg"][:-1](feat)


def distinct_rows(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``z`` and each row's index among them. Points of one voxel share the
    voxel's feature, so on a voxel backbone this gives one row per occupied voxel."""
    return torch.unique(z, dim=0, return_inverse=True)


def knn_indices(x: torch.Tensor, k: int, chunk: int = 1024, spare: int = 8) -> torch.Tensor:
    """(M, k) indices of each row's k nearest other rows (Euclidean), computed in chunks of rows.

    Candidates come from the fast matrix-product distances (``k + spare`` per row); they are ranked
    again by the exact distance ``|a - b|``, whose rounding does not reorder near-ties the way the
    ``|a|^2 + |b|^2 - 2ab`` expansion can."""
    m = x.shape[0]
    k = min(k, m - 1)
    out = []
    for s in range(0, m, chunk):
        rows = torch.arange(s, min(s + chunk, m), device=x.device)
        d = torch.cdist(x[rows], x)
        d[torch.arange(len(rows), device=x.device), rows] = float("inf")  # not its own neighbour
        cand = d.topk(min(k + spare, m - 1), dim=1, largest=False).indices
        exact = (x[rows][:, None] - x[cand]).norm(dim=-1)
        out.append(cand.gather(1, exact.topk(k, dim=1, largest=False).indices))
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long, device=x.device)
