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


def _method(name, model, scene=None, **params):
    """The registered method; methods that need clean source scenes get them (copies of ``scene``)."""
    entry = METHODS.get(name)
    m = entry.factory(model=model, cfg=make_config(entry, params, "method"))
    if m.needs.source_scenes > 0 and scene is not None:
        m.prepare([_input(scene, 100 + i) for i in range(m.needs.source_scenes)])
    return m


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


@pytest.mark.parametrize("name", ["tent", "ttt_kd_online", "cotta", "eata", "sar", "dua", "adacontrast"])
def test_online_mode_keeps_state_across_scenes(scene, name):
    model = _model()
    # an untrained model has no confident and no diverse points: open EATA's and SAR's filters
    m = _method(name, model, scene, **({"e_margin": 10.0} if name in ("eata", "sar") else {}),
                **({"d_margin": 1.01} if name == "eata" else {}))
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
    ("dua", {"copies": 2}, [0, 0, 0]),
    ("adacontrast", {}, [1, 1, 1]),
    ("source", {}, [0, 0, 0]),
])
def test_step_counts(scene, name, params, expected):
    m = _method(name, _model(), **params)
    assert [m.adapt(_input(scene, i)) for i in range(3)] == expected


@pytest.mark.parametrize("name", ["eata", "sar"])
def test_reliability_filter_skips_uncertain_points(scene, name):
    model = _model()
    before = _state(model)
    m = _method(name, model, scene, e_margin=0.0)  # no point is reliable: no step, nothing changes
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
    gain 4.2 and 0.8 points), its sign on each scene did not (12 of 12 scenes positive here).

    The pair is one with a large shift in the current world (v4: synth-s3dis -> synth-scannet, where
    Source-Only loses most); on world v3 it was synth-scannet -> synth-s3dis, which in v4 is a small shift
    (a homes-to-offices model transfers well), where distillation has little to recover (p = 0.79 there)."""
    from scipy.stats import wilcoxon

    from bench.cell import run_cell
    from bench.grid import cell_id

    gains = []
    for seed in (0, 1):
        base = {"grid": "t", "train_scenes": 8, "val_scenes": 0, "test_scenes": 6, "device": "cpu",
                "features": ["color", "normal"], "lift_tol": 0.1, "data_options": {}, "recipe": "joint-kd",
                "train_on": "source", "backbone": {"name": "spunet", "channels": [16, 32, 48]},
                "teacher": {"name": "oracle", "noise": 0.3}, "source": "synth-s3dis", "target": "synth-scannet",
                "seed": seed, "model_seed": seed, "train_cfg": {"epochs": 8}}
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


# ---- fidelity rules of issue 13 (the algorithms themselves are pinned in test_method_reference.py)

@pytest.mark.parametrize("name, has_output", [
    ("tent", True), ("entropy", True), ("eata", True), ("sar", True), ("cotta", True), ("bn_adapt", True),
    ("ttt_kd", True), ("ttt_kd_online", True), ("dua", False), ("ttt_mae", False), ("adacontrast", False),
    ("source", False),
])
def test_last_output_is_the_adapting_forward(scene, name, has_output):
    model = _model()
    m = _method(name, model, scene, **({"e_margin": 10.0} if name in ("eata", "sar") else {}))
    inp = _input(scene)
    m.adapt(inp)
    if not has_output:
        assert m.last_output is None
        return
    out = m.last_output
    assert out is not None and out.shape == (scene.num_points, model.spec.num_classes) and not out.requires_grad
    if name == "bn_adapt":  # no update: the adapting forward is the prediction
        assert torch.equal(out, m.predict(inp))
    elif name != "cotta":  # computed before the update: differs from the prediction after it
        assert not torch.allclose(out, m.predict(inp))


def test_ttt_kd_takes_no_step_on_a_scene_without_seen_points(scene):
    model = _model()
    m = _method("ttt_kd_online", model, lr=1e-2)
    assert m.adapt(_input(scene, 0)) == 1  # Adam now has momentum
    after_first = _state(model)
    blind = _input(scene, 1)
    blind.teacher_mask = torch.zeros_like(blind.teacher_mask)
    assert m.adapt(blind) == 0
    assert _same(after_first, _state(model))  # no step, so no momentum move either
    assert m.last_output is None


def test_l2_distillation_is_the_mean_squared_error_on_seen_points():
    from backbones.losses import distill_loss

    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(50, 8, generator=g) * 3, torch.randn(50, 8, generator=g)
    mask = torch.arange(50) % 3 == 0
    assert torch.allclose(distill_loss(p, t, mask, "l2"), ((p[mask] - t[mask]) ** 2).mean())
    assert not torch.allclose(distill_loss(p * 2, t, mask, "l2"), distill_loss(p, t, mask, "l2"))  # not scale-free


def test_dua_momentum_schedule_runs_across_the_stream(scene):
    model = _model()
    m = _method("dua", model, copies=2)
    bn = next(mod for mod in model.modules() if isinstance(mod, BN))
    for i in range(1, 4):
        m.adapt(_input(scene, i - 1))
        assert bn.momentum == pytest.approx(0.1 * 0.94 ** i + 0.005)  # the sum, counted over the stream
    m.reset()
    m.adapt(_input(scene, 0))
    assert bn.momentum == pytest.approx(0.1 * 0.94 + 0.005)  # a reset restarts the schedule


def test_sar_freezes_the_top_norm_layers_and_scales_its_thresholds(scene):
    import math

    from bench.data.classes import NUM_CLASSES
    from methods.sar import norm_layers_in_forward_order

    model = _model()
    m = _method("sar", model)
    layers = norm_layers_in_forward_order(model)
    n_skip = round(0.25 * len(layers))
    assert n_skip > 0 and m.frozen_top == layers[len(layers) - n_skip:]
    frozen = {id(p) for mod in m.frozen_top for p in (mod.weight, mod.bias)}
    opt = {id(p) for g in m.optimizer.param_groups for p in g["params"]}
    assert opt and not opt & frozen and len(opt) == 2 * (len(layers) - n_skip)
    names = {id(mod): n for n, mod in model.named_modules()}
    assert names[id(layers[-1])].startswith("backbone.dec.0")  # the full-resolution decoder feeds the heads
    assert m.cfg.reset_constant == pytest.approx(0.2 / math.log(1000) * math.log(NUM_CLASSES))


def test_eata_fisher_comes_from_source_scenes_and_regularises(scene):
    model = _model()
    m = _method("eata", model, e_margin=10.0)
    with pytest.raises(Exception, match="prepare"):
        m.adapt(_input(scene))
    before = _state(model)
    m.prepare([_input(scene, 100 + i) for i in range(2)])
    assert _same(before, _state(model))  # the Fisher pass moves nothing
    assert all(f.shape == p.shape for f, p in zip(m.fisher, m.params)) and sum(float(f.sum()) for f in m.fisher) > 0
    assert m.regulariser_size() == 0.0
    m.adapt(_input(scene))
    assert m.regulariser_size() > 0.0


def test_bn_adapt_prior_zero_is_batch_statistics_bn(scene):
    from methods.base import set_bn_mode

    model = _model()
    inp = _input(scene)
    m = _method("bn_adapt", model)
    out = m.predict(inp)
    set_bn_mode(model, "test")
    with torch.no_grad():
        ref = model(inp.batch)["seg"]
    assert torch.equal(out, ref)
    half = _method("bn_adapt", model, prior=0.5).predict(inp)
    assert not torch.allclose(half, out) and not torch.allclose(half, _method("source", model).predict(inp))


def test_adacontrast_memories_fill_and_reset(scene):
    model = _model()
    m = _method("adacontrast", model, samples=300, queue_size=500, warmup_samples=300)
    m.adapt(_input(scene, 0))
    assert m.queue_feat.shape == (model.backbone.out_channels, 500) and m.bank_feat.shape[0] == 300
    assert m.seen == 300  # first scene: argmax pseudo-labels (warm-up)
    m.adapt(_input(scene, 1))
    m.adapt(_input(scene, 2))
    # the official fill rule appends while the bank is below its size (600 >= 500), then it is a FIFO ring
    assert m.bank_feat.shape[0] == 600 and m.seen == 300  # later scenes used kNN voting
    assert torch.allclose(m.queue_feat.norm(dim=0), torch.ones(500))
    m.reset()
    assert m.queue_feat is None and m.bank_feat is None and m.seen == 0
