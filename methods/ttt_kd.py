"""``ttt_kd`` and ``ttt_kd_online``: Test-Time Training with Knowledge Distillation from 2D
foundation models (Weijler et al., 3DV 2025, arXiv 2403.11691).

On a ``joint-kd`` model (segmentation + 2D-feature projector trained jointly): for each test scene,
``steps`` gradient steps on the distillation loss between the 2D-feature projector's output and the
teacher features lifted onto the points (only points seen by a view count), updating the backbone
only (both projectors stay frozen); then a final prediction with everything frozen; then reset
(episodic). ``ttt_kd_online`` (TTT-KD-O) never resets and takes its steps on every ``stride``-th
scene of the target stream only.

Defaults: cosine loss, Adam, lr 1e-4, 5 steps, BN with source statistics (the views used for
lifting are a cell setting, default all). ``bn = "test"``
normalises with the scene's statistics instead, while adapting and predicting. ``loss = "l2"`` is
the mean squared error between the projected and the teacher features on the seen points.

A scene where no point is seen by a view gives no distillation signal: no step is taken (a zero
loss would still move the weights through Adam's momentum) and the step count is 0. ``last_output``
holds the label head's logits from the last step's forward (before that step's update); the paper
predicts with a separate forward after the steps (the harness default ``predict = "after"``).
"""

from dataclasses import dataclass
from typing import ClassVar

from backbones.losses import distill_loss
from bench.params import AT_LEAST_0, AT_LEAST_1, Check, one_of
from methods.base import Method, MethodConfig, Needs, set_bn_mode
from methods.registry import METHODS


@dataclass
class TTTKDConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (3e-5, 1e-4, 3e-4), "steps": (5, 25, 50)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "loss": one_of("cosine", "l2"), "bn": one_of("source", "test"),
    }
    steps: int = 5
    lr: float = 1e-4
    loss: str = "cosine"  # cosine or l2
    bn: str = "source"  # source or test


@METHODS.register("ttt_kd", config=TTTKDConfig)
class TTTKD(Method):
    """TTT-KD: per-scene steps on 2D->3D distillation, backbone only, reset after each scene"""

    needs = Needs(recipe="joint-kd", teacher=True)

    def __init__(self, model, cfg):
        self.bn_mode = cfg.bn
        super().__init__(model, cfg)

    def adapt_params(self):
        return list(self.model.backbone.parameters())

    def take_steps(self, inp, n: int) -> int:
        self.last_output = None
        if n == 0 or not bool(inp.teacher_mask.any()):
            return 0
        set_bn_mode(self.model, self.bn_mode)
        for _ in range(n):
            out = self.model(inp.batch, ("kd", "seg"))
            self.last_output = out["seg"].detach()
            self.step(distill_loss(out["kd"], inp.teacher_feat, inp.teacher_mask, self.cfg.loss))
        return n

    def adapt(self, inp):
        return self.take_steps(inp, self.cfg.steps)


@dataclass
class TTTKDOnlineConfig(TTTKDConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (3e-5, 1e-4, 3e-4), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {"stride": AT_LEAST_1}
    episodic: bool = False
    steps: int = 1
    stride: int = 1  # a TTT step on every stride-th scene of the stream


@METHODS.register("ttt_kd_online", config=TTTKDOnlineConfig)
class TTTKDOnline(TTTKD):
    """TTT-KD-O: no reset; TTT steps on every stride-th scene of the target stream"""

    def adapt(self, inp):
        return self.take_steps(inp, self.cfg.steps if inp.index % self.cfg.stride == 0 else 0)
