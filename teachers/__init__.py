"""2D teachers (DINOv2, CLIP, SAM, the shipped synth2d, the oracle), lifting to points, feature cache."""

from __future__ import annotations

from teachers import foundation, oracle, synth2d  # noqa: F401  (register entries)
from teachers.registry import TEACHERS


def build_teacher(spec: str | dict, device: str = "cpu"):
    """A teacher from a name or a table {name=..., <config fields>}."""
    from bench.registry import make_config

    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name")
    entry = TEACHERS.get(name)
    spec.setdefault("device", device)
    return entry.factory(make_config(entry, spec, "teacher"))
