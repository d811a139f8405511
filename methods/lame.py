"""``lame``: Laplacian-regularised maximum-likelihood estimation, an output-only adjustment (Boudiaf,
Mueller, Ben Ayed & Bertinetto, CVPR 2022, "Parameter-free Online Test-time Adaptation"; official code
fiveai/LAME, also mariodoebler/test-time-adaptation ``methods/lame.py``).

The model is not changed (no backpropagation, BN with the source statistics). For the batch, LAME
finds assignments ``Y`` that stay close to the model's probabilities ``p`` and agree between
neighbours on a kNN graph ``W`` of L2-normalised penultimate features, by the official bound
optimisation: ``Y <- softmax(log p + lambda * W Y)`` from ``Y = p``, until the energy
``sum(-log p * Y - lambda * (W Y) * Y + Y log Y)`` changes by at most 1e-8 of itself (at most 100
iterations). ``W[i, j] = 1`` for the k nearest neighbours j of i (not symmetrised, as the official
kNN affinity).

3D adaptation (stated): the batch is one scene and a sample is a point. Points of one voxel share
the voxel's feature and prediction, so a point's nearest neighbours would be copies of itself; the
graph is built over the distinct feature rows (one node per occupied voxel on spunet, one per point
on a point backbone) and every point takes its node's ``Y``. The graph is stored as neighbour lists
(``W Y`` is a gather-sum), since a dense N x N matrix does not fit for ~20k points. The penultimate
features are the label head's hidden layer (the head is a two-layer MLP; its last Linear is the
classifier). The adjusted prediction is returned as ``log Y``.

Defaults: ``knn`` = 5 (the official overall-best k), ``lam`` = 1 and ``max_steps`` = 100 (official
code). The official default affinity is a dense RBF kernel over all pairs (bandwidth: the mean
distance to the 5th neighbour); its kNN affinity is one of the three it tunes over. A dense kernel
needs N x N memory (~1.6 GB for 20k nodes, per iteration a dense matmul), so the kNN affinity is used
here: a 3D necessity, not a tuned choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.params import AT_LEAST_0, AT_LEAST_1, Check
from methods._feat import classifier, distinct_rows, knn_indices, penultimate
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class LAMEConfig(MethodConfig):
    CHECKS: ClassVar[dict[str, Check]] = {"knn": AT_LEAST_1, "lam": AT_LEAST_0, "max_steps": AT_LEAST_1}
    knn: int = 5
    lam: float = 1.0  # weight of the Laplacian term (official bound_lambda)
    max_steps: int = 100
    symmetric: bool = False  # use (W + W^T) / 2 (official force_symmetry, off by default)


def laplacian_optimisation(unary: torch.Tensor, nbr: torch.Tensor, lam: float, max_steps: int,
                           symmetric: bool) -> torch.Tensor:
    """LAME's bound optimisation with a kNN affinity given as neighbour lists ``nbr`` (M, k)."""

    def affinity_times(y: torch.Tensor) -> torch.Tensor:
        wy = y[nbr].sum(1)
        if symmetric:
            wty = torch.zeros_like(y).index_add_(0, nbr.reshape(-1), y.repeat_interleave(nbr.shape[1], 0))
            wy = 0.5 * (wy + wty)
        return wy

    y = (-unary).softmax(-1)
    old = float("inf")
    for i in range(max_steps):
        pairwise = lam * affinity_times(y)
        y = (-unary + pairwise).softmax(-1)
        energy = (unary * y - lam * pairwise * y + y * torch.log(y.clip(1e-20))).sum().item()
        if i > 1 and abs(energy - old) <= 1e-8 * abs(old):
            break
        old = energy
    return y


@METHODS.register("lame", config=LAMEConfig)
class LAME(Method):
    """output-only Laplacian adjustment of the predictions on a kNN graph of point features"""

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.model, "source")
        z = penultimate(self.model, inp.batch)
        nodes, inverse = distinct_rows(z)
        unary = -torch.log(classifier(self.model)(nodes).softmax(1) + 1e-10)
        if nodes.shape[0] < 2:
            return torch.log(torch.exp(-unary).clip(1e-20))[inverse]
        nbr = knn_indices(F.normalize(nodes, dim=1), self.cfg.knn)
        y = laplacian_optimisation(unary, nbr, self.cfg.lam, self.cfg.max_steps, self.cfg.symmetric)
        return torch.log(y.clip(1e-20))[inverse]
