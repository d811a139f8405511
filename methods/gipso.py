"""``gipso``: confidence-filtered, class-balanced pseudo-labels propagated through geometric neighbourhoods
(Saltori et al., "GIPSO: Geometrically Informed Propagation for Online Adaptation in 3D LiDAR
Segmentation", ECCV 2022; official code saltoricristiano/gipso-sfouda).

GIPSO adapts a source model online on an unlabelled LiDAR stream: it selects reliable pseudo-labels
per class (class-balanced, by low uncertainty), propagates them to geometrically close points, trains
on them with cross-entropy, and adds a temporal consistency term between consecutive frames. Here,
per scene and step:
1. the current model predicts (no gradient, BN as while adapting); each point's confidence is its
   normalised entropy H / log C;
2. class-balanced selection: among the points predicted as class c, the ``select_ratio`` fraction
   with the lowest entropy (at least one point per predicted class) are seeds;
3. propagation: each seed passes its label to those of its ``k`` nearest other points in 3D
   (Euclidean, coordinates) that lie within ``radius`` metres and are not seeds themselves; a point
   reached by several seeds takes the label of the nearest one;
4. one Adam step on cross-entropy over seeds and propagated points, adapting the BN affine parameters
   of the backbone (``params = "bn"``) or the whole backbone (``"backbone"``).

3D adaptation stated: GIPSO measures neighbourhoods with features of an auxiliary geometric network
(and uses its uncertainty for selection); here neighbourhoods are plain 3D distances in the scene
(indoor scenes are dense and metric) and uncertainty is the model's own entropy. **No temporal term**:
the scenes of a target stream are separate static rooms, not consecutive frames of one sequence, so
GIPSO's frame-to-frame consistency loss has nothing to act on. Online over the stream by default.
``last_output`` holds the logits used for the pseudo-labels of the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from backbones.losses import entropy
from bench.params import AT_LEAST_0, UNIT, Check, one_of
from methods.base import Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class GIPSOConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 3e-4, 1e-3), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "select_ratio": UNIT, "k": AT_LEAST_0, "radius": AT_LEAST_0,
        "params": one_of("bn", "backbone"), "bn": one_of("test", "source"),
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    select_ratio: float = 0.1  # fraction of each predicted class's points kept as seeds (lowest entropy)
    k: int = 8  # neighbours each seed propagates to
    radius: float = 0.1  # metres; farther neighbours are not labelled
    params: str = "bn"  # bn: BN affine parameters of the backbone; backbone: all backbone parameters
    bn: str = "test"  # BN statistics while adapting and predicting: test or source


def select_seeds(logits: torch.Tensor, ratio: float) -> torch.Tensor:
    """(N,) bool: per predicted class, the ceil(ratio * count) lowest-entropy points."""
    ent = entropy(logits) / math.log(logits.shape[1])
    pred = logits.argmax(1)
    seeds = torch.zeros_like(pred, dtype=torch.bool)
    for c in pred.unique():
        idx = (pred == c).nonzero().squeeze(1)
        n = max(1, math.ceil(ratio * len(idx)))
        seeds[idx[ent[idx].topk(n, largest=False).indices]] = True
    return seeds


def propagate(coord: torch.Tensor, label: torch.Tensor, seeds: torch.Tensor, k: int, radius: float,
              chunk: int = 1024) -> torch.Tensor:
    """Labels of seeds, spread to their k nearest non-seed points within ``radius`` (nearest seed wins);
    -1 for points neither selected nor reached."""
    out = torch.full_like(label, -1)
    out[seeds] = label[seeds]
    sid = seeds.nonzero().squeeze(1)
    if len(sid) == 0 or k == 0:
        return out
    k = min(k + 1, coord.shape[0])  # +1: a seed is its own nearest point
    best = torch.full((coord.shape[0],), float("inf"), device=coord.device)
    src = torch.full_like(label, -1)
    for s in range(0, len(sid), chunk):
        rows = sid[s:s + chunk]
        d, j = torch.cdist(coord[rows], coord).topk(k, dim=1, largest=False)
        lab = label[rows][:, None].expand_as(j)
        ok = (d <= radius) & ~seeds[j]
        d, j, lab = d[ok], j[ok], lab[ok]
        best.scatter_reduce_(0, j, d, "amin")  # nearest seed so far; a later, nearer seed overwrites
        win = d == best[j]
        src[j[win]] = lab[win]
    reached = src >= 0
    out[reached] = src[reached]
    return out


@METHODS.register("gipso", config=GIPSOConfig)
class GIPSO(Method):
    """GIPSO (no temporal term): class-balanced confident pseudo-labels propagated to 3D neighbours"""

    def __init__(self, model, cfg: GIPSOConfig):
        self.bn_mode = cfg.bn
        super().__init__(model, cfg)

    def adapt_params(self):
        if self.cfg.params == "bn":
            return bn_affine_params(self.model.backbone)
        return list(self.model.backbone.parameters())

    def adapt(self, inp):
        set_bn_mode(self.model, self.bn_mode)
        for _ in range(self.cfg.steps):
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            pred = self.last_output.argmax(1)
            seeds = select_seeds(self.last_output, self.cfg.select_ratio)
            pl = propagate(inp.batch.coord, pred, seeds, self.cfg.k, self.cfg.radius)
            self.step(F.cross_entropy(logits, pl, ignore_index=-1))
        return self.cfg.steps
