"""Test-time adaptation methods, one module each, registered in ``METHODS``."""

from methods import (  # noqa: F401
    adacontrast,
    bn_adapt,
    cotta,
    deyo,
    dua,
    eata,
    entropy,
    gipso,
    lame,
    memo,
    mmtta,
    probe,
    roid,
    rotta,
    sar,
    shot_im,
    source,
    t3a,
    tent,
    ttt_kd,
    ttt_mae,
    xmuda,
)
from methods.base import Method, MethodConfig, SceneInput  # noqa: F401
from methods.registry import METHODS  # noqa: F401
