"""What every teacher provides: per-point features of a scene (and for image teachers, dense 2D maps)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import file_hash
from bench.data.scene import Scene
from bench.errors import BenchError
from teachers.lift import lift, select_views

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
WEIGHTS_ENV = "TTT_BENCH_WEIGHTS"


class Teacher:
    """A frozen feature extractor. ``point_features`` returns (features (N,D), mask of points it covers)."""

    name: str
    dim: int
    weights_id: str = ""  # identifies the weights (hash of the file, or 'random-init')

    @property
    def label(self) -> str:
        return self.name + (" (random-init)" if self.weights_id == RANDOM_INIT else "")

    def point_features(self, scene: Scene, views: int | str = "all", tol: float = 0.1):
        raise NotImplementedError

    def cache_key(self) -> dict:
        return {"teacher": self.name, "weights": self.weights_id, "dim": self.dim}


class ImageTeacher(Teacher):
    """A 2D network: dense features of the views, lifted onto the points."""

    device: str = "cpu"
    batch_size: int = 8

    def __init__(self, net: nn.Module, name: str, dim: int, weights_id: str, device: str = "cpu"):
        self.net, self.name, self.dim = net.eval().to(device), name, dim
        self.weights_id, self.device = weights_id, device
        for p in self.net.parameters():
            p.requires_grad_(False)

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B,H,W,3) uint8 -> (B,D,h,w) features on the model's patch grid."""
        raise NotImplementedError

    @torch.no_grad()
    def dense(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-pixel features: (B,H,W,3) uint8 -> (B,D,H,W), the patch grid upsampled bilinearly."""
        images = torch.as_tensor(images)
        fm = self.feature_maps(images.to(self.device))
        return F.interpolate(fm, size=images.shape[1:3], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def point_features(self, scene: Scene, views: int | str = "all", tol: float = 0.1):
        if not scene.views:
            raise BenchError(f"scene {scene.dataset}/{scene.name} has no paired views, so teacher '{self.name}' "
                             "cannot lift features onto it; use a dataset with images or a method without a "
                             "teacher (real datasets: the README's 'Real data' section says where each reader "
                             "looks for images)")
        chosen = [scene.views[i] for i in select_views(scene.views, views)]
        maps = []
        for i in range(0, len(chosen), self.batch_size):
            imgs = torch.from_numpy(np.stack([v.image for v in chosen[i:i + self.batch_size]]))
            maps.extend(self.feature_maps(imgs.to(self.device)).float().cpu())
        return lift(scene.coord, chosen, maps, tol)


def normalise(images: torch.Tensor, mean, std, scale: float = 255.0) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / scale
    return (x - torch.tensor(mean, device=x.device)[:, None, None]) / torch.tensor(std, device=x.device)[:, None, None]


def resolve_weights(teacher: str, weights: str | None, expected: str, source: str) -> str | Path:
    """The weights to load: 'random-init', an explicit path, or ``$TTT_BENCH_WEIGHTS/<expected>``."""
    if weights == RANDOM_INIT:
        return RANDOM_INIT
    if weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise BenchError(f"teacher '{teacher}': weights file {p} not found. Give an existing checkpoint "
                             f"(expected {expected}, from {source}).")
        return p
    root = os.environ.get(WEIGHTS_ENV)
    if root and (Path(root).expanduser() / expected).is_file():
        return Path(root).expanduser() / expected
    raise BenchError(
        f"teacher '{teacher}' needs pretrained weights and none can be downloaded here. Put {expected} "
        f"(from {source}) into the folder named by ${WEIGHTS_ENV}"
        f"{f' (now {root})' if root else ''}, or pass it as weights=PATH in the grid / --teacher-weights PATH, "
        f"or use weights='{RANDOM_INIT}' for a plumbing smoke test (results are labelled random-init).")


def load_state_dict(path: Path, teacher: str) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"teacher '{teacher}': cannot load {path} as a weights-only torch checkpoint ({e})") from e
    for k in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    return sd


def load_into(net: nn.Module, sd: dict, path: Path, teacher: str) -> None:
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing:
        raise BenchError(f"teacher '{teacher}': {path} does not fit the chosen architecture: {len(missing)} missing "
                         f"keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
                         "Check the variant matches the checkpoint.")
    if unexpected:
        log.info("teacher %s: ignored %d unused keys of %s", teacher, len(unexpected), path)


def weights_id(w) -> str:
    return RANDOM_INIT if w == RANDOM_INIT else file_hash(Path(w))
