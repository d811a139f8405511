"""Test-time adaptation methods, one module each, registered in ``METHODS``."""

from methods import adacontrast, bn_adapt, cotta, dua, eata, entropy, sar, source, tent, ttt_kd, ttt_mae  # noqa: F401
from methods.base import Method, MethodConfig, SceneInput  # noqa: F401
from methods.registry import METHODS  # noqa: F401
