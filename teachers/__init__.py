"""2D teachers (DINOv2, CLIP, SAM, the shipped synth2d, the oracle), lifting to points, feature cache."""

from __future__ import annotations

from pathlib import Path

from teachers import foundation, oracle, synth2d  # noqa: F401  (register entries)
from teachers.registry import TEACHERS


def teacher_config(spec: str | dict):
    """(registry entry, validated config) of a teacher name or table {name=..., <config fields>}."""
    from bench.registry import make_config

    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    entry = TEACHERS.get(spec.pop("name"))
    return entry, make_config(entry, spec, "teacher")


def build_teacher(spec: str | dict, device: str = "cpu"):
    """A teacher from a name or a table {name=..., <config fields>}."""
    entry, cfg = teacher_config(spec)
    return entry.factory(cfg=cfg, device=device)


def check_teacher(spec: str | dict) -> str | Path | None:
    """Validate a teacher spec before any work starts, without building the model: unknown names and
    parameters, unknown variants and absent weights files raise BenchError. Returns the weights file
    the teacher will load ('random-init', or None for teachers without a weights file)."""
    _, cfg = teacher_config(spec)
    return cfg.weights_file() if hasattr(cfg, "weights_file") else None
