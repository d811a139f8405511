"""Contracts every registry entry keeps, parametrised over the registries themselves: a new method,
recipe, backbone, teacher, dataset or corruption is tested here without anyone editing a list."""

from __future__ import annotations

import copy
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from backbones import BACKBONES, RECIPES
from backbones.batch import make_batch
from backbones.model import ModelSpec, build_model
from bench.data import DATASETS
from bench.data.corrupt import CORRUPTIONS
from bench.data.datasets import CorruptedDataset, Dataset
from bench.errors import BenchError
from bench.registry import load_all, make_config
from bench.roles import role
from methods import METHODS
from methods.base import BN, Needs, SceneInput
from teachers import TEACHERS

load_all()
ON_CONTRACT = (METHODS, RECIPES, BACKBONES)  # teachers, datasets, corruptions join as their owners convert them


def _entries(*registries):
    return [pytest.param(reg, e.name, id=f"{reg.kind}:{e.name}") for reg in registries for e in reg.entries()]


# ----------------------------------------------------------------------------------- config contract
@pytest.mark.parametrize("reg, name", _entries(METHODS, RECIPES, BACKBONES, TEACHERS, DATASETS, CORRUPTIONS))
def test_config_contract(reg, name):
    """A config dataclass with a default for every field, built by make_config, round-tripping through
    plain data; a factory that takes the config as ``cfg=`` and swallows no unknown options."""
    entry = reg.get(name)
    if entry.config is None:
        if reg in ON_CONTRACT:
            pytest.fail(f"{reg.kind} '{name}' has no config dataclass")
        pytest.skip(f"{reg.kind} entries are not on the config contract yet")
    assert dataclasses.is_dataclass(entry.config)
    cfg = make_config(entry, {}, reg.kind)
    plain = dataclasses.asdict(cfg)
    assert make_config(entry, plain, reg.kind) == cfg  # round trip through plain (TOML-like) data
    with pytest.raises(BenchError, match="valid parameters"):
        make_config(entry, {"no_such_parameter_xyz": 1}, reg.kind)
    params = inspect.signature(entry.factory).parameters
    assert "cfg" in params, f"{reg.kind} '{name}': the factory must take the config as cfg="
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), "no **kwargs that swallow options"


@pytest.mark.parametrize("reg, name", _entries(METHODS, RECIPES, BACKBONES))
def test_config_types_are_checked(reg, name):
    """A value of the wrong type is refused, naming the parameter and the expected type."""
    entry = reg.get(name)
    for f in dataclasses.fields(entry.config):
        default = getattr(make_config(entry, {}, reg.kind), f.name)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            with pytest.raises(BenchError, match=f"parameter '{f.name}' = 'five'.*expected"):
                make_config(entry, {f.name: "five"}, reg.kind)
            return
    pytest.skip("no numeric parameter")


# ------------------------------------------------------------------------------------------ methods
@pytest.fixture(autouse=True)
def _one_thread():
    """Bit-identity holds for a fixed thread count; with several, float sums may be ordered differently."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def scenes():
    from bench.data import get_dataset

    ds = get_dataset("synth-scannet")
    names = ds.scene_names("test", 2)
    return [ds.load(n, with_views=False) for n in names]


def _model_for(needs: Needs):
    recipe = RECIPES.get(needs.recipe)
    torch.manual_seed(0)
    kd = 8 if (needs.teacher or recipe.extra.get("teacher")) else 0
    m = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [16, 24]}, kd_dim=kd,
                              mae=bool(recipe.extra.get("mae"))))
    for mod in m.modules():  # non-trivial running statistics, as after training
        if isinstance(mod, BN):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _input(scene, index: int):
    g = torch.Generator().manual_seed(1000 + index)
    inp = SceneInput(make_batch([scene], ("color", "normal")), index, g)
    inp.teacher_feat = torch.randn(scene.num_points, 8, generator=torch.Generator().manual_seed(index))
    inp.teacher_mask = torch.ones(scene.num_points, dtype=torch.bool)
    return inp


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _test_params(name: str) -> dict:
    """The parameters a method declares for these tests (``TEST_PARAMS`` on its config, see ``methods/base.py``);
    a method that declares none is tested with its defaults."""
    return dict(getattr(METHODS.get(name).config, "TEST_PARAMS", None) or {})


def _build(name, episodic: bool | None = None):
    """A tiny source model and the method on it, at the method's test parameters."""
    entry = METHODS.get(name)
    needs = getattr(entry.factory, "needs", Needs())
    assert isinstance(needs, Needs), f"method '{name}' must declare needs = Needs(...)"
    params = _test_params(name) | ({} if episodic is None else {"episodic": episodic})
    model = _model_for(needs)
    return model, entry.factory(cfg=make_config(entry, params, "method"), model=model), needs


def _prepared(method, needs, scenes):
    """The clean source scenes, with their point labels, as the harness hands them to ``prepare``."""
    if needs.source_scenes:
        inputs = [_input(scenes[0], 50 + i) for i in range(needs.source_scenes)]
        for inp in inputs:
            inp.label = torch.from_numpy(scenes[0].label)
        method.prepare(inputs)


def _bn_attrs(model) -> list[tuple]:
    return [(m.training, m.momentum, m.track_running_stats) for m in model.modules() if isinstance(m, BN)]


@pytest.mark.parametrize("name", METHODS.names())
def test_method_adapts_and_reset_restores_bit_identical_state(scenes, name):
    """Every registered method, at its ``TEST_PARAMS`` (its defaults where it declares none):

    - building it and ``prepare`` leave the model alone;
    - it adapts: after two scenes it no longer predicts what the source model predicts (the Source-Only
      baseline predicts exactly that), and where it declares parameters, at least one of them moved;
    - ``reset`` restores every weight and buffer, the BN modes and momenta and the optimizer state, and the
      method's own state (teacher copies, memory banks, supports, moving averages): it predicts as before
      adapting, and adapting on the same two scenes again gives bit-identical predictions and model state.
    """
    model, method, needs = _build(name)
    source = _model_for(needs)  # the same source model, untouched by any method
    with torch.no_grad():
        source_out = source(_input(scenes[0], 0).batch)["seg"]
    _prepared(method, needs, scenes)
    initial = _state(model)
    assert initial.keys() == source.state_dict().keys() and \
        all(torch.equal(v, initial[k]) for k, v in source.state_dict().items()), \
        f"{name}: building the method or prepare() moved the model"
    bn0 = _bn_attrs(model)
    opt0 = copy.deepcopy(method.optimizer.state_dict()) if method.optimizer else None
    declared0 = [p.detach().clone() for p in method.params]

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fresh = method.predict(_input(scenes[0], 0)).clone()
        for i in (0, 1):
            method.adapt(_input(scenes[i], i))
        return fresh, method.predict(_input(scenes[0], 0)).clone(), method.predict(_input(scenes[1], 1)).clone()

    fresh, out0, out1 = run()
    adapted = _state(model)
    if role(name, needs.recipe, "source", None) == "baseline":
        assert torch.equal(out0, source_out), f"{name} is the baseline: it must predict as the source model"
    else:
        assert not torch.equal(out0, source_out), \
            f"{name} still predicts as the source model after two scenes: give it TEST_PARAMS that make it move"
    if declared0:
        assert any(not torch.equal(p.detach(), p0) for p, p0 in zip(method.params, declared0, strict=True)), \
            f"{name} declares {len(declared0)} parameters to adapt but moved none of them"

    method.reset()
    after = _state(model)
    assert all(torch.equal(initial[k], after[k]) for k in initial), "reset must restore every weight and buffer"
    assert _bn_attrs(model) == bn0, "reset must restore the BN layers' modes and momenta"
    assert not any(training for training, _, _ in bn0), "between scenes the BN layers are in eval mode"
    if opt0 is not None:
        assert str(method.optimizer.state_dict()) == str(opt0), "reset must restore the optimizer state"
    again = run()
    assert torch.equal(again[0], fresh), f"{name} predicts otherwise after reset than before adapting"
    assert torch.equal(again[1], out0) and torch.equal(again[2], out1), \
        f"{name}: adapting again after reset gives other predictions (its own state was not reset)"
    assert all(torch.equal(adapted[k], v) for k, v in _state(model).items()), \
        f"{name}: adapting again after reset ends in another model state"


@pytest.mark.parametrize("name", METHODS.names())
def test_method_moves_only_declared_parameters(scenes, name):
    model, method, needs = _build(name)
    _prepared(method, needs, scenes)
    before = _state(model)
    declared = {id(p) for p in method.params}
    for i, s in enumerate(scenes):
        method.adapt(_input(s, i))
    for n, p in model.named_parameters():
        if id(p) not in declared:
            assert torch.equal(p.detach(), before[n]), f"{name} changed {n}, which it does not declare"
    out = method.last_output
    assert out is None or (out.shape == (scenes[-1].num_points, 12)), "last_output: logits of the last scene"


@pytest.mark.parametrize("name", METHODS.names())
def test_method_online_flag_is_honoured(scenes, name):
    """Online (episodic = false), what a method learned on one scene carries to the next: adapting on
    B after A ends in another state than adapting on B from the source model, unless the method
    changes no state at all."""
    model, method, needs = _build(name, episodic=False)
    assert method.cfg.episodic is False
    _prepared(method, needs, scenes)
    source = _state(model)
    method.adapt(_input(scenes[0], 0))
    moved = any(not torch.equal(source[k], v) for k, v in _state(model).items())
    method.adapt(_input(scenes[1], 1))
    carried = _state(model)
    method.reset()
    method.adapt(_input(scenes[1], 1))
    fresh = _state(model)
    # a method may keep state outside the model (RoTTA's memory bank) and move the model only once it
    # has seen enough: then the model is still the source after A but moves on B when A's state carried
    moved = moved or any(not torch.equal(source[k], carried[k]) for k in carried)
    if moved:
        assert any(not torch.equal(carried[k], fresh[k]) for k in carried), f"{name} did not carry its state"
    else:
        assert all(torch.equal(carried[k], fresh[k]) for k in carried)
    _, ep, _ = _build(name, episodic=True)
    assert ep.cfg.episodic is True


# -------------------------------------------------------------------------------- backbones, recipes
@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_builds_from_its_default_config(scenes, name):
    model = build_model(ModelSpec(backbone=name)).eval()
    with torch.no_grad():
        out = model(make_batch(scenes[:1], ("color", "normal")))
    assert out["seg"].shape == (scenes[0].num_points, 12) and torch.isfinite(out["seg"]).all()


@pytest.mark.parametrize("name", RECIPES.names())
def test_recipe_builds_a_trainer(name):
    entry = RECIPES.get(name)
    assert callable(entry.factory(cfg=make_config(entry, {}, "recipe")))
    assert isinstance(entry.extra.get("teacher"), bool) and isinstance(entry.extra.get("mae"), bool)


# ------------------------------------------------------------------------ teachers, datasets, corruptions
@pytest.mark.parametrize("name", TEACHERS.names())
def test_teacher_builds_from_its_default_config(name):
    from teachers import build_teacher

    entry = TEACHERS.get(name)
    spec = {"name": name}
    if entry.config is not None and "weights" in {f.name for f in dataclasses.fields(entry.config)} \
            and entry.defaults().get("weights") is None and name != "synth2d":
        spec["weights"] = "random-init"  # real foundation models: the architecture without downloaded weights
    t = build_teacher(spec, "cpu")
    assert t.dim > 0 and t.cache_key()["teacher"]


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_builds_from_its_default_config(tmp_path, name):
    """Synthetic datasets build as they are; real ones given an (empty) data root."""
    from bench.data import get_dataset

    try:
        ds = get_dataset(name) if name.startswith("synth") else get_dataset(name, root=str(tmp_path))
    except BenchError as e:
        pytest.fail(f"dataset '{name}' does not build: {e}")
    assert isinstance(ds, Dataset) and ds.fingerprint()
    assert set(ds.classes) <= set(range(12))


class _Mem(Dataset):
    has_views = False

    def __init__(self, scene):
        self.scene, self.name, self.classes = scene, "mem", tuple(range(12))

    def scene_names(self, split, count=None):
        return ["s"]

    def load(self, name, with_views=True):
        return copy.deepcopy(self.scene)


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_corruption_is_valid_and_deterministic(scenes, name):
    for severity in (1, 5):
        ds = CorruptedDataset(_Mem(scenes[0]), name, severity)
        a, b = ds.load("s"), ds.load("s")
        assert a.num_points > 0 and np.array_equal(a.coord, b.coord) and np.array_equal(a.label, b.label)
        assert a.dataset == f"mem:{name}@{severity}"
