"""``spunet``: a MinkUNet-style sparse voxel UNet on spconv.

Points are voxelised (mean of the features of the points in a voxel), run through a residual
encoder-decoder of submanifold / strided / inverse sparse convolutions with BatchNorm1d, and every
point takes back the feature of its voxel, so no point is left unpredicted. On CPU every sparse
convolution uses ``ConvAlgo.Native`` (spconv's other algorithms need CUDA); ``set_conv_algo`` switches
to spconv's default implicit-GEMM algorithm when the model moves to CUDA (spconv 2.3 stores weights in
one layout for every algorithm, so switching is safe).

Rulebook reuse: a method often runs the model several times on the same points (TTT-KD's steps and
its prediction, CoTTA's anchor and teacher on the un-augmented scene, any "after" prediction). The
voxelisation and the submanifold rulebooks (spconv's indice pairs, ``subm0``..``subm3``) depend only
on the coordinates, so they are computed once per coordinate tensor and kept on that tensor (they
live as long as the scene's batch does). A coarser level's rulebook is reused only when the strided
convolution produced exactly the cached voxels (checked with ``torch.equal`` every forward); the
strided convolutions' own rulebooks (cheap, kernel 2) are rebuilt every forward, because spconv
reuses stored indice pairs for submanifold convolutions only. Outputs are bit-identical to a forward
without reuse (same indice pairs, same arithmetic); ``rulebook_reuse(False)`` switches it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import spconv.pytorch as spconv
import torch
from spconv.core import ConvAlgo
from torch import nn

from backbones.batch import PointBatch
from backbones.registry import BACKBONES
from bench.params import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Check, Checked, Each

NATIVE = ConvAlgo.Native
_CACHE_ATTR = "_spunet_rulebooks"
_REUSE = {"on": True}


@contextmanager
def rulebook_reuse(enabled: bool) -> Iterator[None]:
    """Switch the reuse of voxelisation and rulebooks across forwards on the same coordinates on or off
    (for A/B timing and tests) inside the block."""
    before = _REUSE["on"]
    _REUSE["on"] = enabled
    try:
        yield
    finally:
        _REUSE["on"] = before


def _coord_cache(batch: PointBatch, voxel_size: float) -> dict | None:
    """The reuse cache of this batch's coordinates at ``voxel_size`` (None when reuse is off). Kept on
    the coordinate tensor, keyed by everything the voxelisation depends on; an in-place change of the
    coordinates or scene indices (tensor version counters) starts a fresh cache."""
    if not _REUSE["on"]:
        return None
    key = (float(voxel_size), batch.coord._version, batch.batch.data_ptr(), batch.batch._version, batch.num_scenes)
    store = getattr(batch.coord, _CACHE_ATTR, None)
    if store is None or store[0] != key:
        store = (key, {})
        setattr(batch.coord, _CACHE_ATTR, store)
    return store[1]


def _reuse(x: spconv.SparseConvTensor, cache: dict | None, level: int) -> None:
    """Put level ``level``'s cached submanifold rulebook into ``x`` when ``x`` has exactly its voxels."""
    if cache is None:
        return
    key = f"subm{level}"
    data = cache.get(key)
    if data is None or key in x.indice_dict:
        return
    if data.indices is x.indices or (data.indices.shape == x.indices.shape and torch.equal(data.indices, x.indices)):
        x.indice_dict[key] = data


def _remember(x: spconv.SparseConvTensor, cache: dict | None, level: int) -> None:
    key = f"subm{level}"
    if cache is not None and key not in cache and key in x.indice_dict:
        cache[key] = x.indice_dict[key]


@dataclass
class SpUNetConfig(Checked):
    CHECKS: ClassVar[dict[str, Check]] = {
        "voxel_size": POSITIVE, "channels": Each(AT_LEAST_1), "blocks": AT_LEAST_0, "bn_momentum": UNIT,
        "bn_eps": POSITIVE,
    }
    voxel_size: float = 0.08
    channels: tuple[int, ...] = (32, 48, 64, 96)
    blocks: int = 1  # residual blocks per level
    bn_momentum: float = 0.1
    bn_eps: float = 1e-3


def set_conv_algo(model: nn.Module, device: torch.device | str) -> None:
    algo = ConvAlgo.MaskImplicitGemm if torch.device(device).type == "cuda" else NATIVE
    for m in model.modules():
        if isinstance(m, spconv.conv.SparseConvolution):
            m.algo = algo


def voxelize(batch: PointBatch, voxel_size: float):
    """Voxel grid indices (batch, x, y, z) of the occupied voxels, and each point's voxel."""
    c = batch.coord
    mins = torch.stack([c[batch.batch == i].min(0).values for i in range(batch.num_scenes)])
    grid = torch.floor((c - mins[batch.batch]) / voxel_size).long()
    dims = grid.max(0).values + 1
    key = ((batch.batch * dims[0] + grid[:, 0]) * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    uniq, inverse = torch.unique(key, return_inverse=True)
    vz = uniq % dims[2]
    vy = (uniq // dims[2]) % dims[1]
    vx = (uniq // (dims[2] * dims[1])) % dims[0]
    vb = uniq // (dims[2] * dims[1] * dims[0])
    indices = torch.stack([vb, vx, vy, vz], 1).int()
    return indices, inverse, (dims + 1).tolist()


def scatter_mean(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, values.shape[1], device=values.device, dtype=values.dtype).index_add_(0, index, values)
    cnt = torch.zeros(n, device=values.device, dtype=values.dtype).index_add_(
        0, index, torch.ones_like(index, dtype=values.dtype))
    return out / cnt.clamp_min(1)[:, None]


class ResBlock(spconv.SparseModule):
    def __init__(self, c: int, key: str, cfg: SpUNetConfig):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(c, c, 3, bias=False, indice_key=key, algo=NATIVE)
        self.bn1 = nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.conv2 = spconv.SubMConv3d(c, c, 3, bias=False, indice_key=key, algo=NATIVE)
        self.bn2 = nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

    def forward(self, x):
        y = self.conv1(x)
        y = y.replace_feature(torch.relu(self.bn1(y.features)))
        y = self.conv2(y)
        return y.replace_feature(torch.relu(self.bn2(y.features) + x.features))


class ConvBNReLU(spconv.SparseModule):
    def __init__(self, conv, c: int, cfg: SpUNetConfig):
        super().__init__()
        self.conv, self.bn = conv, nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

    def forward(self, x):
        x = self.conv(x)
        return x.replace_feature(torch.relu(self.bn(x.features)))


class SpUNet(nn.Module):
    def __init__(self, in_channels: int, cfg: SpUNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.out_channels = ch[0]
        self.stem = ConvBNReLU(spconv.SubMConv3d(in_channels, ch[0], 3, bias=False, indice_key="subm0", algo=NATIVE),
                               ch[0], cfg)
        self.enc0 = spconv.SparseSequential(*[ResBlock(ch[0], "subm0", cfg) for _ in range(cfg.blocks)])
        self.down, self.enc, self.up, self.fuse, self.dec = (nn.ModuleList() for _ in range(5))
        for i in range(1, len(ch)):
            self.down.append(ConvBNReLU(spconv.SparseConv3d(ch[i - 1], ch[i], 2, stride=2, bias=False,
                                                            indice_key=f"down{i}", algo=NATIVE), ch[i], cfg))
            self.enc.append(spconv.SparseSequential(*[ResBlock(ch[i], f"subm{i}", cfg) for _ in range(cfg.blocks)]))
            self.up.append(ConvBNReLU(spconv.SparseInverseConv3d(ch[i], ch[i - 1], 2, bias=False,
                                                                 indice_key=f"down{i}", algo=NATIVE), ch[i - 1], cfg))
            self.fuse.append(ConvBNReLU(spconv.SubMConv3d(2 * ch[i - 1], ch[i - 1], 1, bias=False,
                                                          indice_key=f"subm{i - 1}", algo=NATIVE), ch[i - 1], cfg))
            self.dec.append(spconv.SparseSequential(*[ResBlock(ch[i - 1], f"subm{i - 1}", cfg)
                                                      for _ in range(cfg.blocks)]))

    def forward(self, batch: PointBatch) -> torch.Tensor:
        cache = _coord_cache(batch, self.cfg.voxel_size)
        if cache is not None and "voxels" in cache:
            indices, inverse, shape = cache["voxels"]
        else:
            indices, inverse, shape = voxelize(batch, self.cfg.voxel_size)
            if cache is not None:
                cache["voxels"] = (indices, inverse, shape)
        vfeat = scatter_mean(batch.feat, inverse, indices.shape[0])
        x = spconv.SparseConvTensor(vfeat, indices, shape, batch.num_scenes)
        _reuse(x, cache, 0)
        x = self.enc0(self.stem(x))
        _remember(x, cache, 0)
        skips = [x]
        for level, (down, enc) in enumerate(zip(self.down, self.enc), 1):
            x = down(x)
            _reuse(x, cache, level)
            x = enc(x)
            _remember(x, cache, level)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)
            x = x.replace_feature(torch.cat([x.features, skips[i].features], 1))
            x = self.dec[i](self.fuse[i](x))
        return x.features[inverse]


@BACKBONES.register("spunet", config=SpUNetConfig, kind="voxel")
def build_spunet(*, cfg: SpUNetConfig, in_channels: int) -> SpUNet:
    """MinkUNet-style sparse voxel UNet on spconv (SubM/strided/inverse convs, BN, residual blocks)."""
    return SpUNet(in_channels, cfg)
