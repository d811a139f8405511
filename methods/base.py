"""The method interface: a wrapper around a model that adapts on each test scene, then predicts.

A method names the parameters it adapts (only those go to its optimizer), keeps the source weights,
buffers, BatchNorm settings and optimizer state, and ``reset()`` restores them exactly. In episodic
mode the runner resets before every scene; in online mode state carries across the target's scene
stream. Every method predicts with a separate forward pass after its adaptation on the scene, so
all methods are compared under one protocol.

BatchNorm handling never calls ``model.train()`` (that would also switch dropout and any other
train-time behaviour): only the normalisation layers are toggled, and every BN kind counts
(``_BatchNorm`` covers BatchNorm1d/2d/3d and SyncBatchNorm; 3D backbones use BatchNorm1d).

Search space: a method's config dataclass declares the candidates of its key hyper-parameters for
``python -m bench select`` as a class variable (not a field, so not a parameter)::

    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (3e-5, 1e-4, 3e-4), "steps": (5, 25, 50)}

Every key is a field of the config and every value passes its type check. Declare at least the
learning rate and, for a method with gradient steps per scene, ``steps``; a method without such
parameters keeps the empty default. Keep spaces small (the selection crosses them and runs every
candidate on every validation cell, on 2 CPU cores): three learning rates, two or three step
counts. A subclass config inherits its parent's space; redeclare it where the defaults differ.

Test parameters: a config may declare, as a class variable beside ``SEARCH``, the parameters at which the
registry-driven contract tests (``tests/test_contracts.py``) run the method on a tiny untrained model and two
small scenes::

    TEST_PARAMS: ClassVar[dict[str, object]] = {"e_margin": 10.0}

They must make the method move visibly there (a confidence filter that rejects every point of an untrained
model's near-uniform predictions keeps the weights in place; open it) or make it cheaper with the same code
path (fewer augmented copies, fewer fitting epochs). The tests then check, for every registered method, that
it adapts (after two scenes it predicts otherwise than the source model, and where it declares parameters at
least one moved), that only declared parameters move, that ``reset()`` restores the model, the optimizer and
the method's own state bit for bit, and that online mode carries state. A method without ``TEST_PARAMS`` is
tested at its defaults. Every key is a field of the config and every value passes its check; a subclass
config inherits its parent's.

Valid values: a config also declares the range or choices of each parameter in ``CHECKS``
(``bench.params``), checked whenever the config is built, so a grid with ``steps = -3`` or
``optimizer = "adamw"`` fails before any work starts. Declare every numeric parameter with a bound the
code relies on (``steps``: ``AT_LEAST_0``; momenta and probabilities: ``UNIT``; counts: ``AT_LEAST_1``)
and every string parameter with a fixed set of values (``one_of(...)``). Checks are inherited.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from backbones.batch import PointBatch
from backbones.model import SegModel
from bench.params import POSITIVE, Check, Checked, one_of

BN = nn.modules.batchnorm._BatchNorm
NORM = (BN, nn.LayerNorm, nn.GroupNorm)


@dataclass
class SceneInput:
    batch: PointBatch
    index: int  # position of the scene in the target stream
    generator: torch.Generator  # seeded per (cell, scene): masks and augmentations
    teacher_feat: torch.Tensor | None = None  # (N,D) lifted teacher features
    teacher_mask: torch.Tensor | None = None  # (N,) points seen by a view
    label: torch.Tensor | None = None  # (N,) point labels (-1 = ignore): only on the source scenes for ``prepare``


@dataclass(frozen=True)
class Needs:
    """What a method needs from the harness, declared once on its class (``needs = Needs(...)``); the
    cell derives everything else from it (which model to train, whether to lift teacher features)."""

    recipe: str = "source"  # training recipe of the model the method adapts
    teacher: bool = False  # lifted teacher features per scene (SceneInput.teacher_feat / teacher_mask)
    source_scenes: int = 0  # clean, labelled source training scenes handed once to ``prepare`` (e.g. EATA's Fisher)


@dataclass
class MethodConfig(Checked):
    SEARCH: ClassVar[dict[str, tuple]] = {}  # candidates for `bench select` (see the module docstring)
    TEST_PARAMS: ClassVar[dict[str, object]] = {}  # parameters of the contract tests (see the module docstring)
    CHECKS: ClassVar[dict[str, Check]] = {"lr": POSITIVE, "optimizer": one_of("adam", "sgd")}
    episodic: bool = True  # reset to the source model before every scene
    lr: float = 1e-3
    optimizer: str = "adam"  # adam or sgd (momentum 0.9)


def set_bn_mode(model: nn.Module, mode: str, momentum: float | None = None) -> None:
    """'source': normalise with the stored (source) statistics; 'test': with the current batch's
    statistics, leaving the stored ones untouched; 'update': batch statistics, and the stored ones
    move towards them with ``momentum``."""
    for m in model.modules():
        if isinstance(m, BN):
            if mode == "source":
                m.eval()
                m.track_running_stats = True
            elif mode == "test":  # batch statistics; stored ones (and the batch counter) untouched
                m.train()
                m.track_running_stats = False
            elif mode == "update":
                m.train()
                m.track_running_stats = True
                m.momentum = momentum
            else:
                raise ValueError(f"unknown BN mode '{mode}' (source, test or update)")


def bn_affine_params(module: nn.Module, kinds=(BN,)) -> list[nn.Parameter]:
    params = []
    for m in module.modules():
        if isinstance(m, kinds):
            params += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
    return params


class Method:
    """Base class. Subclasses set ``config`` hooks and implement ``adapt`` (returns gradient steps)."""

    needs: ClassVar[Needs] = Needs()
    bn_mode = "source"  # how BN normalises while predicting
    # logits of the method's last adapting forward on the current scene (computed before its update),
    # or None: the protocol's ``predict = "same"`` reports them, as the official TENT/EATA/SAR/CoTTA do
    last_output: torch.Tensor | None = None

    def __init__(self, model: SegModel, cfg: MethodConfig):
        self.model, self.cfg = model, cfg
        model.eval()
        model.requires_grad_(False)
        self.params = self.adapt_params()
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = self.make_optimizer(self.params) if self.params else None
        self._model_state = copy.deepcopy(model.state_dict())
        self._opt_state = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None
        self._bn_attrs = [(m, m.training, m.momentum, m.track_running_stats) for m in model.modules()
                          if isinstance(m, BN)]

    # -- what a method adapts and how
    def prepare(self, source: list[SceneInput]) -> None:
        """Called once before the stream with ``needs.source_scenes`` clean source scenes."""

    def adapt_params(self) -> list[nn.Parameter]:
        return []

    def make_optimizer(self, params):
        """Adam, or SGD with momentum 0.9 (``CHECKS`` admits only these two)."""
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.lr, momentum=0.9)
        return torch.optim.Adam(params, lr=self.cfg.lr)

    def adapt(self, inp: SceneInput) -> int:
        """Adapt on one unlabelled scene; return the number of gradient steps taken."""
        return 0

    @torch.no_grad()
    def predict(self, inp: SceneInput) -> torch.Tensor:
        set_bn_mode(self.model, self.bn_mode)
        return self.model(inp.batch)["seg"]

    # -- state
    def reset(self) -> None:
        self.model.load_state_dict(self._model_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self._opt_state)
        for m, training, momentum, track in self._bn_attrs:
            m.train(training)
            m.momentum, m.track_running_stats = momentum, track
        self.on_reset()

    def on_reset(self) -> None:
        """Hook for methods with state of their own (moving averages, teacher copies)."""

    def scene_stats(self) -> dict[str, float]:
        """Per-scene statistics of the last ``adapt`` call (the current scene), read by the harness after
        the scene's prediction and recorded as ``stat_<key>`` columns of its scene row: e.g. EATA's share of
        points its filters kept, SAR's model recoveries. Keys are short names; values plain floats. The
        default records nothing."""
        return {}

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
