"""Test-time adaptation methods, one module each, registered in ``METHODS``."""

from methods import bn_adapt, cotta, dua, eata, entropy, sar, source, tent, ttt_kd, ttt_mae  # noqa: F401
from methods import deyo, lame, memo, roid, rotta, shot_im, t3a  # noqa: F401
from methods.base import Method, MethodConfig, SceneInput  # noqa: F401
from methods.registry import METHODS  # noqa: F401
