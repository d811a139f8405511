"""``pointnet2``: a point-based backbone on raw points (PointNet++-style), pure PyTorch.

Set abstraction levels pick centres by grid sampling (one point per cell, cell size doubling per
level; deterministic and much cheaper than farthest-point sampling), group each centre's k nearest
neighbours from the level below, encode (neighbour feature, relative position) with a shared MLP
with BatchNorm1d and max-pool. Feature propagation interpolates back with inverse-distance weights
of the 3 nearest coarse points and fuses the skip features. Scenes of a batch are kept apart by
shifting each scene far along x before neighbour search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from backbones.batch import PointBatch
from backbones.registry import BACKBONES
from bench.params import AT_LEAST_1, POSITIVE, UNIT, Check, Checked, Each

SCENE_GAP = 1.0e4  # metres between scenes of a batch during neighbour search


@dataclass
class PointNet2Config(Checked):
    CHECKS: ClassVar[dict[str, Check]] = {
        "grid": Each(POSITIVE), "channels": Each(AT_LEAST_1), "k": AT_LEAST_1, "bn_momentum": UNIT,
    }
    grid: tuple[float, ...] = (0.12, 0.24, 0.48)  # cell size of each set-abstraction level
    channels: tuple[int, ...] = (32, 64, 96, 128)  # stem, then one per level
    k: int = 16
    bn_momentum: float = 0.1


def knn(query: torch.Tensor, ref: torch.Tensor, k: int, chunk: int = 1024, margin: float = 0.5):
    """Exact k nearest ``ref`` points of each ``query`` point: (indices, distances).

    Queries are sorted spatially and handled in chunks; each chunk searches only the reference points
    inside its bounding box grown by ``margin``. A query whose k-th distance exceeds the margin might
    have a closer point outside the box, so those few are searched against all reference points.
    """
    k = min(k, ref.shape[0])
    n = query.shape[0]
    order = _spatial_order(query, margin)
    idx = torch.empty(n, k, dtype=torch.long, device=query.device)
    dist = torch.empty(n, k, dtype=query.dtype, device=query.device)
    for i in range(0, n, chunk):
        qi = order[i:i + chunk]
        q = query[qi]
        lo, hi = q.min(0).values - margin, q.max(0).values + margin
        cand = torch.nonzero(((ref >= lo) & (ref <= hi)).all(1)).squeeze(1)
        if cand.shape[0] >= k:
            dd, ii = torch.cdist(q, ref[cand]).topk(k, dim=1, largest=False)
            ii = cand[ii]
            bad = dd[:, -1] > margin
        else:
            dd = torch.empty(len(qi), k, dtype=query.dtype, device=query.device)
            ii = torch.empty(len(qi), k, dtype=torch.long, device=query.device)
            bad = torch.ones(len(qi), dtype=torch.bool, device=query.device)
        if bad.any():
            dd[bad], ii[bad] = torch.cdist(q[bad], ref).topk(k, dim=1, largest=False)
        idx[qi], dist[qi] = ii, dd
    return idx, dist


def _spatial_order(pos: torch.Tensor, cell: float) -> torch.Tensor:
    g = torch.floor((pos - pos.min(0).values) / cell).long()
    dims = g.max(0).values + 1
    return torch.argsort((g[:, 0] * dims[1] + g[:, 1]) * dims[2] + g[:, 2])


def grid_sample_points(pos: torch.Tensor, cell: float) -> torch.Tensor:
    """Indices of one point per occupied grid cell (the lowest index in each cell)."""
    g = torch.floor((pos - pos.min(0).values) / cell).long()
    dims = g.max(0).values + 1
    key = (g[:, 0] * dims[1] + g[:, 1]) * dims[2] + g[:, 2]
    uniq, inv = torch.unique(key, return_inverse=True)
    first = torch.full((uniq.shape[0],), pos.shape[0], dtype=torch.long, device=pos.device)
    first.scatter_reduce_(0, inv, torch.arange(pos.shape[0], device=pos.device), "amin")
    return first


def mlp(cin: int, cout: int, momentum: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout, momentum=momentum), nn.ReLU())


class SetAbstraction(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, momentum: float):
        super().__init__()
        self.k = k
        self.mlp1 = mlp(cin + 3, cout, momentum)
        self.mlp2 = mlp(cout, cout, momentum)

    def forward(self, pos, feat, centre_idx, scale):
        centres = pos[centre_idx]
        nb, _ = knn(centres, pos, self.k, margin=scale)
        rel = (pos[nb] - centres[:, None]) / scale
        x = torch.cat([feat[nb], rel], -1)  # (M,k,C+3)
        m, k, c = x.shape
        x = self.mlp1(x.reshape(m * k, c))
        x = self.mlp2(x).reshape(m, k, -1).max(1).values
        return centres, x


class FeaturePropagation(nn.Module):
    def __init__(self, c_coarse: int, c_skip: int, cout: int, momentum: float, margin: float):
        super().__init__()
        self.margin = margin
        self.mlp = nn.Sequential(mlp(c_coarse + c_skip, cout, momentum), mlp(cout, cout, momentum))

    def forward(self, pos_fine, feat_fine, pos_coarse, feat_coarse):
        nb, d = knn(pos_fine, pos_coarse, 3, margin=self.margin)
        w = 1.0 / (d + 1e-6)
        w = w / w.sum(1, keepdim=True)
        interp = (feat_coarse[nb] * w[..., None]).sum(1)
        return self.mlp(torch.cat([interp, feat_fine], 1))


class PointNet2(nn.Module):
    def __init__(self, in_channels: int, cfg: PointNet2Config):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        assert len(ch) == len(cfg.grid) + 1, "channels needs one entry more than grid"
        self.out_channels = ch[0]
        self.stem = nn.Sequential(mlp(in_channels, ch[0], cfg.bn_momentum), mlp(ch[0], ch[0], cfg.bn_momentum))
        self.sa = nn.ModuleList(SetAbstraction(ch[i], ch[i + 1], cfg.k, cfg.bn_momentum) for i in range(len(cfg.grid)))
        self.fp = nn.ModuleList(FeaturePropagation(ch[i + 1], ch[i], ch[i], cfg.bn_momentum, 2 * cfg.grid[i])
                                for i in range(len(cfg.grid)))

    def forward(self, batch: PointBatch) -> torch.Tensor:
        pos = batch.coord.clone()
        pos[:, 0] += batch.batch.to(pos.dtype) * SCENE_GAP
        feat = self.stem(batch.feat)
        levels = [(pos, feat)]
        for sa, cell in zip(self.sa, self.cfg.grid):
            p, f = levels[-1]
            centre_idx = grid_sample_points(p, cell)
            levels.append(sa(p, f, centre_idx, cell * 2))
        p_c, f_c = levels[-1]
        for i in reversed(range(len(self.fp))):
            p_f, f_f = levels[i]
            f_c = self.fp[i](p_f, f_f, p_c, f_c)
            p_c = p_f
        return f_c


@BACKBONES.register("pointnet2", config=PointNet2Config, kind="point")
def build_pointnet2(*, cfg: PointNet2Config, in_channels: int) -> PointNet2:
    """PointNet++-style point backbone: grid-sampled set abstraction, kNN grouping, 3-NN propagation."""
    return PointNet2(in_channels, cfg)
