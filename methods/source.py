"""``source``: no adaptation. On a ``source`` model this is the Source-Only row, on a ``joint-kd`` or
``joint-mae`` model the Joint-Train row, on a model trained on the target the Oracle row."""

from dataclasses import dataclass

from methods.base import Method, MethodConfig
from methods.registry import METHODS


@dataclass
class SourceConfig(MethodConfig):
    pass


@METHODS.register("source", config=SourceConfig)
class Source(Method):
    """no adaptation (Source-Only / Joint-Train / target-trained Oracle rows)"""
