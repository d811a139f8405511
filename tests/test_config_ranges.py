"""Declared ranges and choices of config parameters (``bench.params``): a grid with a value out of range
or not among the choices fails while it loads, one line per bad value, before any work starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cli_inprocess import bench

from backbones import BACKBONES, RECIPES
from bench.errors import BenchError
from bench.grid import load_grid
from bench.params import AT_LEAST_1, UNIT, Each, Either, Range, declared_checks, one_of
from bench.registry import load_all, make_config
from methods import METHODS

load_all()

HEAD = """
pairs = ["synth-scannet->synth-s3dis"]
backbones = ["spunet"]
teachers = ["synth2d"]
seeds = [0]
test_scenes = 2
"""

# (method table lines or a [train] table, what the message must say)
CASES = {
    "steps": ('[[methods]]\nname = "ttt_kd"\nsteps = -3', "method 'ttt_kd': parameter 'steps' = -3 must be >= 0"),
    "stride": ('[[methods]]\nname = "ttt_kd_online"\nstride = 0',
               "method 'ttt_kd_online': parameter 'stride' = 0 must be >= 1"),
    "optimizer": ('[[methods]]\nname = "tent"\noptimizer = "adamw"',
                  "method 'tent': parameter 'optimizer' = 'adamw' must be one of 'adam', 'sgd'"),
    "loss": ('[[methods]]\nname = "ttt_kd"\nloss = "l1"',
             "method 'ttt_kd': parameter 'loss' = 'l1' must be one of 'cosine', 'l2'"),
    "bn": ('[[methods]]\nname = "entropy"\nbn = "foo"',
           "method 'entropy': parameter 'bn' = 'foo' must be one of 'test', 'source'"),
    "lr": ('[[methods]]\nname = "tent"\nlr = -0.1', "method 'tent': parameter 'lr' = -0.1 must be > 0"),
    # TOML writes infinity as inf: no unbounded range lets it through (it trained to garbage, status "ok")
    "lr_inf": ('[[methods]]\nname = "tent"\nlr = inf',
               "method 'tent': parameter 'lr' = inf must be a finite number, > 0"),
    "margin_inf": ('[[methods]]\nname = "eata"\nd_margin = -inf',
                   "method 'eata': parameter 'd_margin' = -inf must be a finite number, >= 0"),
    "epochs": ('[train]\nepochs = -1\n[[methods]]\nname = "source"',
               "[train]: parameter 'epochs' = -1 must be >= 1 (the [train] table of recipe(s) source)"),
}


def _grid(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(HEAD + body + "\n")
    return p


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_fails_while_the_grid_loads(tmp_path, case):
    body, message = CASES[case]
    p = _grid(tmp_path, body)
    with pytest.raises(BenchError) as e:
        load_grid(str(p))
    assert str(e.value) == f"{p}: {message}"


def test_cli_reports_every_problem_at_once(tmp_path):
    body = "\n".join(b for b, _ in CASES.values() if not b.startswith("[train]"))
    p = _grid(tmp_path, CASES["epochs"][0] + "\n" + body)
    out = tmp_path / "out"
    r = bench("run", "--grid", str(p), "--dry-run", "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists(), r.stderr
    text = " ".join(r.stderr.split())
    assert f"{len(CASES)} problems" in text, r.stderr
    for _, message in CASES.values():  # ttt_kd trains with joint-kd: [train] is checked for both recipes
        message = message.replace("recipe(s) source)", "recipe(s) source, joint-kd)")
        assert text.count(message) == 1, (message, r.stderr)


def test_a_bad_value_is_one_line_however_many_cells_use_it(tmp_path):
    """A crossed list is checked value by value; a [train] value once for all the grid's recipes."""
    p = _grid(tmp_path, '[train]\nepochs = 0\n[[methods]]\nname = "source"\n[[methods]]\nname = "ttt_kd"\n'
                        'steps = [1, -3, 5]\nlr = [1e-4, 0.0]\n[[methods]]\nname = "tent"\nsteps = -3')
    p.write_text(p.read_text().replace('["spunet"]', '[{ name = "spunet", voxel_size = 0, channels = [16, 0] }]'))
    with pytest.raises(BenchError) as e:
        load_grid(str(p))
    lines = str(e.value).splitlines()[1:]
    assert lines == [  # what the method tables share first, each once; then the method tables
        "  - backbone 'spunet': parameter 'voxel_size' = 0.0 must be > 0",
        "  - backbone 'spunet': parameter 'channels' = (16, 0) must be a non-empty list, each value >= 1",
        "  - [train]: parameter 'epochs' = 0 must be >= 1 (the [train] table of recipe(s) source, joint-kd)",
        "  - method 'ttt_kd': parameter 'steps' = -3 must be >= 0",
        "  - method 'ttt_kd': parameter 'lr' = 0.0 must be > 0",
        "  - method 'tent': parameter 'steps' = -3 must be >= 0",
    ]


def test_values_the_shipped_grids_use_stay_valid(tmp_path):
    """steps = 0 (the steps grid: no adaptation), prior = 0, ap = 0, filter_k = -1 are meaningful."""
    for name, params in [("ttt_kd", {"steps": 0}), ("bn_adapt", {"prior": 0.0}), ("cotta", {"ap": 0.0}),
                         ("t3a", {"filter_k": -1}), ("eata", {"fisher_alpha": 0.0, "d_margin": 1.01}),
                         ("gipso", {"k": 0})]:
        make_config(METHODS.get(name), params, "method")
    with pytest.raises(BenchError, match=r"parameter 'filter_k' = 0 must be -1 or >= 1"):
        make_config(METHODS.get("t3a"), {"filter_k": 0}, "method")


def test_direct_construction_is_checked_too():
    """Checks run in ``__post_init__``: a config built in code is refused as well (ValueError), and a
    subclass that redeclares a field keeps its parent's check (AdaContrast's optimizer)."""
    with pytest.raises(ValueError, match="'stride' = 0 must be >= 1"):
        METHODS.get("ttt_kd_online").config(stride=0)
    with pytest.raises(ValueError, match="'optimizer' = 'adamw' must be one of 'adam', 'sgd'"):
        METHODS.get("adacontrast").config(optimizer="adamw")
    with pytest.raises(ValueError, match="'epochs' = -1 must be >= 1"):
        RECIPES.get("joint-kd2d").config(epochs=-1)


def _ours(*registries):
    """Entries defined by the project (tests register methods of their own)."""
    return [pytest.param(reg, e.name, id=f"{reg.kind}:{e.name}") for reg in registries for e in reg.entries()
            if e.factory.__module__.split(".")[0] in ("methods", "backbones")]


@pytest.mark.parametrize("reg, name", _ours(METHODS, RECIPES, BACKBONES))
def test_default_config_builds_and_every_number_is_declared(reg, name):
    """The default config passes its checks, and every numeric parameter declares its valid values."""
    entry = reg.get(name)
    cfg = make_config(entry, {}, reg.kind)
    checks = declared_checks(entry.config)
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, (int, float, tuple)) and not isinstance(v, bool):
            assert f.name in checks, f"{reg.kind} '{name}': declare the valid values of '{f.name}' in CHECKS"


def test_check_texts():
    assert [str(c) for c in (Range(0, lo_open=True), AT_LEAST_1, UNIT, Range(0, 1, hi_open=True))] == \
        ["> 0", ">= 1", "in [0, 1]", "in [0, 1)"]
    assert str(Either((one_of(-1), AT_LEAST_1))) == "-1 or >= 1"
    assert str(Each(AT_LEAST_1)) == "a non-empty list, each value >= 1"
    assert not one_of("adam", "sgd").ok("adamw") and not UNIT.ok(float("nan")) and not AT_LEAST_1.ok(True)
    assert not Each(AT_LEAST_1).ok(()) and Each(AT_LEAST_1).ok((1, 2))


def test_open_ended_plugin_method_takes_any_parameter(tmp_path):
    """A plugin method registered without a config whose factory takes ``**kwargs`` gets its table's
    parameters unchecked (they cannot be), not a false "has no parameter" error; a method with a config
    still gets one."""

    def plugin(**kw):
        return kw

    METHODS.register("open_plugin_test")(plugin)
    try:
        grid = load_grid(str(_grid(tmp_path, '[[methods]]\nname = "open_plugin_test"\nalpha = [1, 2]')))
        assert sorted(c.params["alpha"] for c in grid.cells) == [1, 2]
        with pytest.raises(BenchError, match="method 'tent' has no parameter 'alpha'"):
            load_grid(str(_grid(tmp_path, '[[methods]]\nname = "tent"\nalpha = 1')))
    finally:
        METHODS._entries.pop("open_plugin_test")
