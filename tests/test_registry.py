from dataclasses import dataclass

import pytest

from bench.errors import BenchError
from bench.registry import Registry, load_all, make_config


@dataclass
class Cfg:
    alpha: float = 0.5
    steps: int = 3


def test_register_build_and_defaults():
    reg = Registry("thing")

    @reg.register("a", config=Cfg)
    def make_a(cfg):
        """builds an a"""
        return ("a", cfg)

    assert reg.names() == ["a"]
    entry = reg.get("a")
    assert entry.description == "builds an a"
    assert entry.defaults() == {"alpha": 0.5, "steps": 3}
    assert reg.build("a", Cfg())[0] == "a"


def test_unknown_name_lists_valid_names():
    reg = Registry("thing")
    reg.register("alpha")(lambda: 1)
    reg.register("beta")(lambda: 2)
    with pytest.raises(BenchError, match="unknown thing 'gamma'; valid names: alpha, beta"):
        reg.get("gamma")


def test_make_config_rejects_unknown_parameter():
    reg = Registry("method")
    reg.register("m", config=Cfg)(lambda cfg: cfg)
    with pytest.raises(BenchError, match="no parameter 'lr'.*valid parameters: alpha, steps"):
        make_config(reg.get("m"), {"lr": 1.0}, "method")
    assert make_config(reg.get("m"), {"steps": 7}, "method").steps == 7


def test_every_registry_is_filled():
    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.corrupt import CORRUPTIONS
    from methods import METHODS
    from teachers import TEACHERS

    load_all()
    assert {"source", "bn_adapt", "tent", "entropy", "dua", "ttt_mae", "ttt_kd", "ttt_kd_online", "eata", "sar",
            "cotta"} <= set(METHODS.names())
    assert {"spunet", "pointnet2"} <= set(BACKBONES.names())
    assert {"source", "joint-kd", "joint-mae"} <= set(RECIPES.names())
    assert {"dinov2", "clip", "sam", "synth2d", "oracle"} <= set(TEACHERS.names())
    assert {"synth-scannet", "synth-s3dis", "synth-matterport"} <= set(DATASETS.names())
    assert len(CORRUPTIONS.names()) >= 9
