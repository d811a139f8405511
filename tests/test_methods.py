"""Tests that pin the semantics of the adaptation methods."""

import pytest
import torch

from backbones.batch import make_batch
from backbones.model import ModelSpec, build_model
from bench.registry import make_config
from methods import METHODS, SceneInput
from methods.base import BN, bn_affine_params


@pytest.fixture(scope="module")
def scene():
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    return ds.load(ds.scene_names("test", 1)[0], with_views=False)


def _model(kd=8, mae=True):
    torch.manual_seed(0)
    m = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [16, 24]}, kd_dim=kd, mae=mae))
    # give BN non-trivial running statistics, as after training
    for mod in m.modules():
        if isinstance(mod, BN):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _input(scene, index=0, dim=8):
    g = torch.Generator().manual_seed(index)
    b = make_batch([scene], ("color", "normal"))
    feat = torch.randn(scene.num_points, dim, generator=g)
    return SceneInput(b, index, g, feat, torch.ones(scene.num_points, dtype=torch.bool))


def _method(name, model, **params):
    entry = METHODS.get(name)
    return entry.factory(model, make_config(entry, params, "method"))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


ADAPTIVE = ["tent", "entropy", "eata", "sar", "cotta", "ttt_kd", "ttt_kd_online", "ttt_mae", "bn_adapt", "dua"]


@pytest.mark.parametrize("name", ADAPTIVE)
def test_reset_restores_bit_identical_weights(scene, name):
    model = _model()
    before = _state(model)
    # an untrained model has no confident points: open the reliability filters so the methods adapt
    m = _method(name, model, **({"e_margin": 10.0} if name in ("eata", "sar") else {}))
    m.adapt(_input(scene))
    m.adapt(_input(scene, 1))
    assert not _same(before, _state(model)), f"{name} changed nothing"
    m.reset()
    assert _same(before, _state(model))
    if m.optimizer is not None:
        assert all(len(s) == 0 for s in m.optimizer.state.values())
    # the BN layers are back in eval mode with their momentum
    assert all(not mod.training and mod.momentum == 0.1 for mod in model.modules() if isinstance(mod, BN))


@pytest.mark.parametrize("name", ["tent", "ttt_kd_online", "cotta", "eata"])
def test_online_mode_keeps_state_across_scenes(scene, name):
    model = _model()
    m = _method(name, model, **({"e_margin": 10.0} if name == "eata" else {}))
    assert m.cfg.episodic is False
    m.adapt(_input(scene, 0))
    after_first = _state(model)
    m.adapt(_input(scene, 1))
    assert not _same(after_first, _state(model))  # kept and moved on, not reset


def test_tent_optimises_only_bn_affine(scene):
    model = _model()
    before = _state(model)
    m = _method("tent", model, steps=2)
    opt_params = {id(p) for g in m.optimizer.param_groups for p in g["params"]}
    bn_params = {id(p) for p in bn_affine_params(model.backbone)}
    assert opt_params == bn_params and len(bn_params) > 0
    assert m.adapt(_input(scene)) == 2
    names = {id(p): n for n, p in model.named_parameters()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {names[i] for i in bn_params}
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before if "running" in k)  # no drift


def test_ttt_kd_never_changes_the_projectors(scene):
    model = _model()
    before = _state(model)
    m = _method("ttt_kd", model, steps=3, lr=1e-2)
    assert m.adapt(_input(scene)) == 3
    after = _state(model)
    heads = [k for k in before if k.startswith("heads.")]
    assert heads and _same(before, after, heads)
    assert not _same(before, after, [k for k in before if k.startswith("backbone.")])


def test_bn_adapt_changes_predictions_without_gradient_steps(scene):
    model = _model()
    before = _state(model)
    inp = _input(scene)
    src = _method("source", model).predict(inp)
    m = _method("bn_adapt", model)
    assert m.adapt(inp) == 0
    assert m.optimizer is None
    after = m.predict(inp)
    assert not torch.allclose(src, after)
    params_before = {k: v for k, v in before.items() if "running" not in k and "num_batches" not in k}
    assert _same(params_before, _state(model), list(params_before))
    # prior = 1 keeps the source statistics exactly
    m.reset()
    m1 = _method("bn_adapt", model, prior=1.0)
    m1.adapt(inp)
    assert torch.allclose(m1.predict(inp), src, atol=1e-5)


@pytest.mark.parametrize("name, params, expected", [
    ("ttt_kd", {"steps": 4}, [4, 4, 4]),
    ("ttt_kd_online", {"stride": 2, "steps": 1}, [1, 0, 1]),
    ("tent", {"steps": 2}, [2, 2, 2]),
    ("ttt_mae", {"steps": 1}, [1, 1, 1]),
    ("dua", {}, [0, 0, 0]),
    ("source", {}, [0, 0, 0]),
])
def test_step_counts(scene, name, params, expected):
    m = _method(name, _model(), **params)
    assert [m.adapt(_input(scene, i)) for i in range(3)] == expected


@pytest.mark.parametrize("name", ["eata", "sar"])
def test_reliability_filter_skips_uncertain_points(scene, name):
    model = _model()
    before = _state(model)
    m = _method(name, model, e_margin=0.0)  # no point is reliable: no step, nothing changes
    assert m.adapt(_input(scene)) == 0
    assert _same(before, _state(model), [k for k in before if "running" not in k])


def test_predict_leaves_weights_alone(scene):
    model = _model()
    before = _state(model)
    for name in ("source", "tent", "ttt_kd"):
        _method(name, model).predict(_input(scene))
    assert _same(before, _state(model))


def test_dropout_is_not_switched_on(scene):
    model = _model()
    model.heads["seg"].insert(1, torch.nn.Dropout(0.9))
    m = _method("tent", model)
    m.adapt(_input(scene))
    assert not model.heads["seg"][1].training
    a, b = m.predict(_input(scene)), m.predict(_input(scene))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_ttt_kd_with_oracle_teacher_raises_miou_on_shifted_target():
    """End to end through the runner: joint-kd model with the oracle teacher, shifted target.

    Asserted as a paired statistic, not a gap: per-scene gains of TTT-KD over Source-Only (same model, same
    scene) over 2 training seeds x 6 scenes, one-sided Wilcoxon signed-rank p < 0.01. The size of the gain
    moves with the CPU type (measured: a 2-point gain on 3 scenes on Intel was 1.3 on AMD; seeds 0 and 1 here
    gain 4.2 and 0.8 points), its sign on each scene did not (12 of 12 scenes positive here)."""
    from scipy.stats import wilcoxon

    from bench.cell import run_cell
    from bench.grid import cell_id

    gains = []
    for seed in (0, 1):
        base = {"grid": "t", "train_scenes": 8, "val_scenes": 0, "test_scenes": 6, "device": "cpu",
                "features": ["color", "normal"], "lift_tol": 0.1, "data_options": {}, "recipe": "joint-kd",
                "train_on": "source", "backbone": {"name": "spunet", "channels": [16, 32, 48]},
                "teacher": {"name": "oracle", "noise": 0.3}, "source": "synth-scannet", "target": "synth-s3dis",
                "seed": seed, "train_cfg": {"epochs": 8}}
        per_scene = {}
        for method, params in (("source", {}), ("ttt_kd", {"steps": 10, "lr": 1e-3})):
            cell = {**base, "method": method, "label": method, "params": params}
            cell["cell_id"] = cell_id(cell)
            row, scenes = run_cell(cell)
            assert row["status"] == "ok", row["error"]
            per_scene[method] = [s["miou"] for s in scenes]
            if method == "ttt_kd":
                assert row["steps_per_scene"] == 10
        gains += [b - a for a, b in zip(per_scene["source"], per_scene["ttt_kd"])]
    assert len(gains) == 12
    p = wilcoxon(gains, alternative="greater").pvalue
    assert p < 0.01 and sum(g > 0 for g in gains) >= 10, (p, gains)
