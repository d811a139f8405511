"""``gipso``: GIPSO's pseudo-labelling and propagation, without its temporal term (Saltori et al., "GIPSO:
Geometrically Informed Propagation for Online Adaptation in 3D LiDAR Segmentation", ECCV 2022; official
code saltoricristiano/gipso-sfouda: ``pipelines/adaptation_online_single.py``, ``utils/pseudo.py``
(``get_pseudo_mcmc_cbst``, ``geometric_propagation``), ``utils/losses.py`` (``SoftDICELoss``) and the
configs ``configs/adaptation/*.yaml``: ``metric: mcmc_cbst``, ``top_p: 0.01``, ``propagation_size: 10``,
``propagation_method: geometric_features``, ``loss: SoftDICELoss``, ``eps: 0.25``, Adam lr 1e-3).

Per scene and step, as the official ``adaptation_double_pseudo_step``:
1. Pseudo-labels from the **frozen source model** (a copy taken before the stream; BN with its source
   statistics): Monte-Carlo dropout on the backbone's per-point features before the label head
   (the official ``MinkUNet18_MCMC``: dropout p = ``dropout`` = 0.5 on the backbone output, then the
   final layer), ``mc_samples`` = 5 samples; the prediction is the argmax of the mean softmax, the
   uncertainty of a point the standard deviation of its softmax over the samples (unbiased), averaged
   over the classes. The dropout masks are ``rand(N, D) >= dropout`` (kept features scaled by
   1 / (1 - dropout)), drawn from the scene's generator, sample after sample.
2. Class-balanced selection (``get_cbst_th``): per predicted class c with n_c points, the threshold is
   the (floor((n_c - 1) * ``top_p``) + 1)-th smallest uncertainty, and the points strictly below it are
   seeds (``top_p`` = 0.01: about 1 % per class; a class with at most 100 points gets none).
3. Propagation (``geometric_propagation``): each seed's ``k`` = 10 nearest points in a geometric feature
   space (itself included) are its neighbours; a non-seed point that exactly one seed reaches takes that
   seed's label, one that several seeds reach is left unlabelled (ignored) *even when they agree*: the
   official rule is a uniqueness test, not a majority vote. Seeds keep their own label (deviation: the
   official code writes the labels class by class, so a seed that lies among another class's seed's
   neighbours takes the label of the class written last, an artefact of the class order).
4. The loss is the official soft Dice loss on the labelled points: targets smoothed to 1 - ``dice_eps``
   on the label and ``dice_eps`` / (C - 1) elsewhere (``dice_eps`` = 0.25), per class
   2 sum(p t) / (sum(p^2) + sum(t)) over the classes present in the targets, the loss minus their mean.
   The whole segmentation network (backbone and label head) takes one optimizer step: Adam, lr 1e-3,
   weight decay 1e-5 (the pipeline's default), with BN in training mode (batch statistics, the stored
   ones moving with ``bn_momentum`` = 0.1, MinkowskiEngine's default). No step when no point is labelled.
5. Online over the stream (never reset), the prediction normalises with the stored statistics (the
   official model in eval mode).

Where 3D indoor scenes force a change (stated):
- **Geometric features.** The official feature space is DIP (a learned, rotation-invariant local
  descriptor, precomputed per LiDAR frame by a separate network). Here the features are computed on the
  scene's points, per point from the covariance of its ``geo_k`` = 16 nearest points (itself included;
  eigenvalues l1 >= l2 >= l3): linearity (l1 - l2) / l1, planarity (l2 - l3) / l1, scattering l3 / l1,
  verticality |n_z| (n the eigenvector of l3), and the point's height above the scene's lowest point
  divided by the scene's height. Rooms are gravity-aligned and their classes are largely told apart by
  orientation and height, not by local shape alone: floor, table top and ceiling are all horizontal
  planes, walls, doors and windows vertical ones; a rotation-invariant descriptor would make a floor
  seed label wall points. ``space = "xyz"`` propagates in 3D coordinates instead (the official
  ``propagation_method: knn``).
- **No temporal term.** GIPSO adds a self-supervised consistency loss between matched points of
  consecutive frames (``ssl_beta`` = 0.5); the scenes of a target stream are separate static rooms, not
  frames of one sequence, so there is nothing to match and the term is left out.
- **Order of prediction.** The official code predicts each frame before adapting on it; the harness
  protocol predicts after (``predict = "after"``), or with ``last_output`` (``predict = "same"``), which
  holds the logits of the adapting forward (BN with the scene's statistics).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from bench.params import AT_LEAST_0, UNIT, Check, Range, one_of
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class GIPSOConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 3e-4, 1e-3), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "top_p": UNIT, "k": AT_LEAST_0, "space": one_of("geometric", "xyz"), "geo_k": Range(3),
        "mc_samples": Range(2), "dropout": Range(0, 1, hi_open=True), "dice_eps": Range(0, 1, hi_open=True),
        "bn_momentum": UNIT, "weight_decay": AT_LEAST_0,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3  # official (Adam)
    weight_decay: float = 1e-5  # official
    top_p: float = 0.01  # share of each predicted class's points kept as seeds (lowest uncertainty)
    k: int = 10  # neighbours per seed (official propagation_size); 0: no propagation (official propagate: false)
    space: str = "geometric"  # geometric features or xyz coordinates for the neighbours
    geo_k: int = 16  # points in the covariance of a point's geometric features (ours)
    mc_samples: int = 5  # Monte-Carlo dropout samples of the source model (official)
    dropout: float = 0.5  # official drop_prob
    dice_eps: float = 0.25  # label smoothing of the soft Dice loss (official eps)
    bn_momentum: float = 0.1  # stored BN statistics follow the scene's while adapting


def geometric_features(coord: torch.Tensor, k: int) -> torch.Tensor:
    """(N, 5) per-point features of one scene: linearity, planarity, scattering of the covariance of the
    point's ``k`` nearest points (itself included), verticality |n_z| and relative height (module docstring)."""
    xyz = coord.detach().cpu().double().numpy()
    n = len(xyz)
    _, idx = cKDTree(xyz).query(xyz, k=min(k, n))
    nb = xyz[idx.reshape(n, -1)]
    centred = nb - nb.mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", centred, centred) / nb.shape[1]
    evals, evecs = np.linalg.eigh(cov)  # ascending eigenvalues
    l3, l2, l1 = (np.clip(evals[:, i], 0.0, None) for i in range(3))
    s = np.maximum(l1, 1e-12)
    z = xyz[:, 2]
    height = (z - z.min()) / max(float(z.max() - z.min()), 1e-6)
    out = np.stack([(l1 - l2) / s, (l2 - l3) / s, l3 / s, np.abs(evecs[:, 2, 0]), height], 1)
    return torch.from_numpy(out).to(coord)


def mc_dropout(model, batch, samples: int, p: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction (mean softmax, (N, C)) and uncertainty (per-point std over samples, mean over classes)
    of ``model`` with dropout ``p`` on its backbone features before the label head."""
    feat = model(batch, ())["feat"]
    probs = []
    for _ in range(samples):
        keep = torch.rand(feat.shape, generator=g, dtype=feat.dtype).to(feat.device) >= p
        probs.append(model.heads["seg"](feat * keep / (1 - p)).softmax(1))
    probs = torch.stack(probs, 1)
    return probs.mean(1), probs.std(1).mean(1)


def select_seeds(pred: torch.Tensor, uncertainty: torch.Tensor, top_p: float) -> torch.Tensor:
    """(N,) bool: per predicted class, the points strictly below its floor((n - 1) * top_p)-th smallest
    uncertainty (0-based), the official class-balanced threshold."""
    seeds = torch.zeros_like(pred, dtype=torch.bool)
    for c in pred.unique():
        idx = (pred == c).nonzero().squeeze(1)
        th = uncertainty[idx].sort().values[math.floor((len(idx) - 1) * top_p)]
        seeds[idx[uncertainty[idx] < th]] = True
    return seeds


def propagate(space: torch.Tensor, label: torch.Tensor, seeds: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """Pseudo-labels: seeds keep ``label``; a non-seed point among the ``k`` nearest points (in ``space``,
    a seed itself included) of exactly one seed takes that seed's label; every other point is -1."""
    out = torch.full_like(label, -1)
    out[seeds] = label[seeds]
    sid = seeds.nonzero().squeeze(1)
    if len(sid) == 0 or k == 0:
        return out
    k = min(k, space.shape[0])
    hits = torch.zeros_like(label)
    src = torch.full_like(label, -1)
    for s in range(0, len(sid), chunk):
        rows = sid[s:s + chunk]
        d = torch.cdist(space[rows], space, compute_mode="donot_use_mm_for_euclid_dist")
        j = d.topk(k, dim=1, largest=False).indices
        hits.index_add_(0, j.reshape(-1), torch.ones_like(j.reshape(-1)))
        src[j.reshape(-1)] = label[rows][:, None].expand_as(j).reshape(-1)
    once = (hits == 1) & ~seeds
    out[once] = src[once]
    return out


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """GIPSO's soft Dice loss (negative range) on the points with a label: minus the mean, over the classes
    present in ``target``, of 2 sum(p t) / (sum(p^2) + sum(t)) with label-smoothed targets t."""
    keep = target >= 0
    logits, target = logits[keep], target[keep]
    c = logits.shape[1]
    onehot = F.one_hot(target, c).to(logits.dtype)
    soft = onehot * (1 - eps) + (1 - onehot) * (eps / (c - 1))
    p = logits.softmax(1)
    dice = 2 * (p * soft).sum(0) / (p.pow(2).sum(0) + soft.sum(0) + 1e-12)
    present = (onehot.sum(0) > 0).to(logits.dtype)
    return -(present * dice).sum() / (present.sum() + 1e-12)


@METHODS.register("gipso", config=GIPSOConfig)
class GIPSO(Method):
    """GIPSO without its temporal term: source-model MC-dropout seeds (1 %/class), geometric propagation, Dice"""

    bn_mode = "source"  # predict with the stored statistics (moved while adapting)

    def __init__(self, model, cfg: GIPSOConfig):
        super().__init__(model, cfg)
        self.source = copy.deepcopy(model).requires_grad_(False)
        self._stats: dict[str, float] = {}

    def adapt_params(self):
        return list(self.model.backbone.parameters()) + list(self.model.heads["seg"].parameters())

    def make_optimizer(self, params):
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.lr, momentum=0.9, weight_decay=self.cfg.weight_decay)
        return torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def scene_space(self, batch) -> torch.Tensor:
        """The space the neighbours are found in (a batch is one scene, as the harness passes it)."""
        return batch.coord if self.cfg.space == "xyz" else geometric_features(batch.coord, self.cfg.geo_k)

    def adapt(self, inp):
        self.last_output = None
        cfg, steps = self.cfg, 0
        space = self.scene_space(inp.batch) if cfg.steps else None
        seeds_share, labelled_share = [], []
        for _ in range(cfg.steps):
            with torch.no_grad():
                set_bn_mode(self.source, "source")
                prob, unc = mc_dropout(self.source, inp.batch, cfg.mc_samples, cfg.dropout, inp.generator)
                pred = prob.argmax(1)
                seeds = select_seeds(pred, unc, cfg.top_p)
                pl = propagate(space, pred, seeds, cfg.k)
            seeds_share.append(int(seeds.sum()) / len(seeds))
            labelled_share.append(int((pl >= 0).sum()) / len(pl))
            set_bn_mode(self.model, "update", cfg.bn_momentum)
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            if not bool((pl >= 0).any()):
                continue
            self.step(soft_dice_loss(logits, pl, cfg.dice_eps))
            steps += 1
        self._stats = {"seeds": _mean(seeds_share), "labelled": _mean(labelled_share), "updated": float(steps > 0)}
        return steps

    def scene_stats(self) -> dict[str, float]:
        """Share of the scene's points that were seeds and that had a pseudo-label after propagation
        (means over its steps), and whether a step was taken."""
        return dict(self._stats)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
