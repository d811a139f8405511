"""Multi-modal rows: the ``joint-kd2d`` recipe's 2D head, ``xmuda`` / ``mmtta`` against plain-torch
re-implementations, and the 2D / 3D / fused mIoU columns of a tiny real run (``gipso``'s reference test is
in tests/test_method_reference.py).

Reference tests (as tests/test_method_reference.py): each method runs through the registry on a tiny
BN model with a 2D head (``TinyMM``: the ``SegModel`` interface the methods use: ``backbone``,
``heads['seg' | 'seg2d']``, ``forward2d``); its reference below never touches the project's method
classes or ``set_bn_mode``: it is written functionally from the papers' formulas (F.batch_norm with the
statistics the paper prescribes, torch.optim.Adam on the named parameters). Both run over the same
three scenes, online; adapted parameters, BN buffers, the adapting forward's logits and both
predictions (3D, and 2D where the method has it) must agree after the first and after the third scene.
Tolerance rtol = atol = 1e-5, in float64 (``float64`` fixture): both sides compute the same arithmetic in a
possibly different order, and in float32 the order of a float sum differs between CPU types (BLAS kernels):
MM-TTA's prediction after 3 scenes differed by 2.5e-3 on an AMD EPYC with AVX2 only, a pseudo-label
selection that flips on a rounding difference and then moves the next Adam steps. The tiny model is
initialised in float32 (the same weights on every machine) and held in float64, as in
tests/test_method_reference.py; any semantic change moves the parameters by far more than 1e-5 after one
Adam step at lr 1e-2.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.batch import PointBatch
from backbones.model import ModelSpec, build_model
from bench.data.classes import NUM_CLASSES
from bench.registry import make_config
from methods import METHODS, SceneInput

TOL = 1e-5
N_POINTS, D2 = 300, 6
C = NUM_CLASSES


# ------------------------------------------------------------------- the tiny multi-modal model
class TinyMM(nn.Module):
    def __init__(self):
        super().__init__()
        self.spec = ModelSpec(backbone="tiny", kd_dim=D2)
        self.backbone = nn.Sequential(nn.Linear(9, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                      nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.heads = nn.ModuleDict({
            "seg": nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, C)),
            "seg2d": nn.Sequential(nn.Linear(D2, D2), nn.BatchNorm1d(D2), nn.ReLU(), nn.Linear(D2, C))})

    def forward(self, batch, heads=("seg",)):
        feat = self.backbone(tiny_input(batch))
        return {"feat": feat, **{h: self.heads[h](feat) for h in heads}}

    def forward2d(self, teacher_feat):
        return self.heads["seg2d"](teacher_feat)


def tiny_input(batch: PointBatch) -> torch.Tensor:
    return torch.cat([batch.feat, batch.coord - batch.coord.mean(0)], 1)


def tiny_model(sharp: float = 4.0) -> TinyMM:
    """``sharp`` scales the label heads' last layers: 4 spreads entropies from ~0 to ~ln C; 40 makes most
    predictions confident (class medians above xMUDA-PL's 0.9 cap). Initialised in float32 (the same weights
    on every run), returned in the default dtype (float64 in the reference test)."""
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        m = TinyMM()
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():
        m.heads["seg"][2].weight.mul_(sharp)
        m.heads["seg2d"][3].weight.mul_(sharp)
        for bn in [x for x in m.modules() if isinstance(x, nn.BatchNorm1d)]:
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m.to(old).eval()


def scene_input(i: int) -> SceneInput:
    rng = np.random.default_rng(i)
    coord = rng.uniform([0, 0, 0], [2, 2, 1], (N_POINTS, 3)).astype(np.float32)
    color = rng.uniform(-1, 1, (N_POINTS, 3)).astype(np.float32) + 0.3 * i
    normal = rng.normal(size=(N_POINTS, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    dt = torch.get_default_dtype()
    b = PointBatch(torch.from_numpy(coord).to(dt), torch.from_numpy(np.c_[color, normal]).to(dt),
                   torch.zeros(N_POINTS, dtype=torch.long), 1)
    inp = SceneInput(b, i, torch.Generator().manual_seed(1000 + i))
    inp.teacher_feat = torch.from_numpy(rng.normal(size=(N_POINTS, D2)).astype(np.float32)).to(dt)
    inp.teacher_mask = torch.from_numpy(rng.uniform(size=N_POINTS) < 0.7)
    return inp


# ------------------------------------------------- the functional forward used by every reference
def bn(x, m: nn.BatchNorm1d, mode: str, momentum: float = 0.1):
    """slow: stored statistics; fast: the batch's; update: the batch's, stored ones follow (torch's rule)."""
    if mode == "slow":
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    if mode == "fast":
        return F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, True, momentum, m.eps)


def f3d(m: TinyMM, batch, mode: str, momentum: float = 0.1):
    b = m.backbone
    x = torch.relu(bn(b[0](tiny_input(batch)), b[1], mode, momentum))
    x = torch.relu(bn(b[3](x), b[4], mode, momentum))
    return m.heads["seg"](x)


def f2d(m: TinyMM, feat, mode: str, momentum: float = 0.1):
    h = m.heads["seg2d"]
    return h[3](torch.relu(bn(h[0](feat), h[1], mode, momentum)))


def bn_affine(m: nn.Module):
    return [p for x in m.modules() if isinstance(x, nn.BatchNorm1d) for p in (x.weight, x.bias)]


def kl(p_target_logits, q_logits):
    """KL(P || Q) per point, P = softmax(target) (detached), Q = softmax(q)."""
    p = p_target_logits.detach().softmax(1)
    return (p * (p.log() - q_logits.log_softmax(1))).sum(1)


# ------------------------------------------------------------------------------- references
def ref_xmuda(m: TinyMM, scenes, lr: float, pl_weight: float):
    params = bn_affine(m.backbone) + bn_affine(m.heads["seg2d"])
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    outs = []
    for inp in scenes:
        mask = inp.teacher_mask
        l3 = f3d(m, inp.batch, "fast")
        l2 = f2d(m, inp.teacher_feat[mask], "fast")
        loss = kl(l3[mask], l2).mean() + kl(l2, l3[mask]).mean()
        if pl_weight:
            for logits in (l2, l3):
                prob, lab = logits.detach().softmax(1).max(1)
                target = lab.clone()
                for c in range(C):
                    sel = lab == c
                    if sel.any():
                        target[sel & (prob < min(prob[sel].median().item(), 0.9))] = -1
                loss = loss + pl_weight * F.cross_entropy(logits, target, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p2 = torch.full((N_POINTS, C), float("nan"))
            p2[mask] = f2d(m, inp.teacher_feat[mask], "fast")
            outs.append((l3.detach(), f3d(m, inp.batch, "fast"), p2))
    return outs


def ref_mmtta(m: TinyMM, scenes, lr: float, momentum: float, select: str):
    params = bn_affine(m.backbone) + bn_affine(m.heads["seg2d"])
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    outs = []
    for inp in scenes:
        mask, feat = inp.teacher_mask, inp.teacher_feat[inp.teacher_mask]
        with torch.no_grad():
            s3, s2 = f3d(m, inp.batch, "slow"), f2d(m, feat, "slow")
        f3, f2 = f3d(m, inp.batch, "update", momentum), f2d(m, feat, "update", momentum)
        q3 = 0.5 * (s3.softmax(1) + f3.detach().softmax(1))
        q2 = 0.5 * (s2.softmax(1) + f2.detach().softmax(1))
        w3 = 1.0 / (kl(f3[mask], s3[mask]) + 1e-8)  # KL(fast || slow), P = fast
        w2 = 1.0 / (kl(f2, s2) + 1e-8)
        y = q3.argmax(1)
        if select == "hard":
            y[mask] = torch.where(w2 > w3, q2.argmax(1), q3[mask].argmax(1))
        else:
            y[mask] = ((w2[:, None] * q2 + w3[:, None] * q3[mask]) / (w2 + w3)[:, None]).argmax(1)
        loss = F.cross_entropy(f3, y) + F.cross_entropy(f2, y[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p2 = torch.full((N_POINTS, C), float("nan"))
            p2[mask] = f2d(m, feat, "fast")
            outs.append((f3.detach(), f3d(m, inp.batch, "fast"), p2))
    return outs


# ---------------------------------------------------------------------------- the comparison
CASES = {
    "xmuda": ({"lr": 1e-2}, lambda m, s: ref_xmuda(m, s, 1e-2, 0.0)),
    "xmuda_pl": ({"lr": 1e-2, "pl_weight": 0.5}, lambda m, s: ref_xmuda(m, s, 1e-2, 0.5)),
    "xmuda_plsharp": ({"lr": 1e-2, "pl_weight": 0.5}, lambda m, s: ref_xmuda(m, s, 1e-2, 0.5)),
    "mmtta": ({"lr": 1e-2}, lambda m, s: ref_mmtta(m, s, 1e-2, 0.1, "hard")),
    "mmtta_soft": ({"lr": 1e-2, "select": "soft", "momentum": 0.3}, lambda m, s: ref_mmtta(m, s, 1e-2, 0.3, "soft")),
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(a, b):
    return torch.allclose(a, b, rtol=TOL, atol=TOL, equal_nan=True)


@pytest.fixture
def float64():
    """The reference comparison computes in float64 (see the module docstring)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n_scenes", [1, 3])
def test_method_matches_reference(case, n_scenes, float64):
    params, ref = CASES[case]
    name = case.split("_")[0]
    entry = METHODS.get(name)
    sharp = 40.0 if case.endswith("sharp") else 4.0
    model = tiny_model(sharp)
    method = entry.factory(cfg=make_config(entry, params, "method"), model=model)
    assert method.cfg.episodic is False  # online over the stream: state carries across the scenes
    got = []
    for i in range(n_scenes):
        inp = scene_input(i)
        method.last_output = None
        method.adapt(inp)
        same = method.last_output
        after = method.predict(inp)
        got.append((same, after, getattr(method, "last_output_2d", None)))
    ref_model = copy.deepcopy(tiny_model(sharp))
    want = ref(ref_model, [scene_input(i) for i in range(n_scenes)])
    for (gs, ga, g2), (ws, wa, w2) in zip(got, want):
        assert close(gs, ws), f"{case}: adapting forward differs"
        assert close(ga, wa), f"{case}: prediction differs"
        if w2 is not None:
            assert g2 is not None and close(g2, w2), f"{case}: 2D prediction differs"
    mine, theirs = model.state_dict(), ref_model.state_dict()
    for k in theirs:
        if mine[k].dtype.is_floating_point:
            assert close(mine[k], theirs[k]), f"{case}: {k} differs after {n_scenes} scene(s)"
    # the adaptation really moved the adapted parameters (a reference that matches a no-op would be void)
    assert not torch.equal(mine["backbone.1.weight"], tiny_model().state_dict()["backbone.1.weight"])


def test_unseen_points_have_no_2d_logits():
    for name in ("xmuda", "mmtta"):
        entry = METHODS.get(name)
        method = entry.factory(cfg=make_config(entry, {}, "method"), model=tiny_model())
        inp = scene_input(0)
        method.adapt(inp)
        method.predict(inp)
        l2 = method.last_output_2d
        assert torch.isnan(l2[~inp.teacher_mask]).all() and torch.isfinite(l2[inp.teacher_mask]).all()


def test_xmuda_without_seen_points_takes_no_step():
    entry = METHODS.get("xmuda")
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    method = entry.factory(cfg=make_config(entry, {}, "method"), model=model)
    inp = scene_input(0)
    inp.teacher_mask = torch.zeros(N_POINTS, dtype=torch.bool)
    assert method.adapt(inp) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_choice_is_a_bench_error():
    from bench.errors import BenchError

    for name, params in (("mmtta", {"select": "mean"}), ("gipso", {"space": "graph"})):
        entry = METHODS.get(name)
        with pytest.raises(BenchError, match=name):
            entry.factory(cfg=make_config(entry, params, "method"), model=tiny_model())


def test_search_space_declared():
    for name in ("xmuda", "mmtta", "gipso"):
        cfg = METHODS.get(name).config
        assert set(cfg.SEARCH) == {"lr", "steps"} and all(len(v) >= 2 for v in cfg.SEARCH.values())


# ------------------------------------------------------------------------------ the recipe
def _recipe_scenes(n: int, seed: int):
    """Scenes whose (fake) lifted teacher features encode the label linearly, 70% of points seen."""
    from bench.data.scene import Scene

    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(99).normal(size=(C, 8)).astype(np.float32)
    scenes, targets = [], {}
    for i in range(n):
        m = 500
        coord = rng.uniform([0, 0, 0], [3, 3, 2], (m, 3)).astype(np.float32)
        label = rng.integers(0, 4, m).astype(np.int64)
        color = rng.uniform(0, 1, (m, 3)).astype(np.float32)
        normal = np.tile([0, 0, 1], (m, 1)).astype(np.float32)
        s = Scene(f"r{i}", "train", coord, color, label, normal)
        feat = (proj[label] + 0.1 * rng.normal(size=(m, 8))).astype(np.float32)
        targets[s.name] = (feat, rng.uniform(size=m) < 0.7)
        scenes.append(s)
    return scenes, lambda s: targets[s.name]


def test_joint_kd2d_trains_the_2d_head():
    from backbones import RECIPES
    from backbones.train_mm import evaluate2d

    entry = RECIPES.get("joint-kd2d")
    assert entry.extra == {"teacher": True, "mae": False}
    cfg = make_config(entry, {"epochs": 6, "lr": 0.02}, "recipe")
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]}, kd_dim=8))
    scenes, tf = _recipe_scenes(4, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    miou0 = evaluate2d(model, scenes, [tf(s) for s in scenes], "cpu")
    info = entry.factory(cfg=cfg)(model, scenes, [], 0, "cpu", tf)
    after = model.state_dict()
    assert not torch.equal(before["heads.seg2d.0.weight"], after["heads.seg2d.0.weight"])
    assert not torch.equal(before["heads.kd.0.weight"], after["heads.kd.0.weight"])  # joint-kd's part trains too
    # features that encode the label linearly: the trained head is near perfect, the initial one is not
    assert info["train_miou_2d"] > 0.9 > miou0 + 0.3
    assert info["history"][-1]["loss_2d"] < info["history"][0]["loss_2d"]


def test_recipe_without_teacher_is_a_bench_error():
    from backbones import RECIPES
    from bench.errors import BenchError

    entry = RECIPES.get("joint-kd2d")
    model = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]}, kd_dim=8))
    with pytest.raises(BenchError, match="teacher"):
        entry.factory(cfg=make_config(entry, {"epochs": 1}, "recipe"))(model, _recipe_scenes(1, 0)[0], [], 0, "cpu")


def test_checkpoint_without_2d_head_still_loads():
    """A joint-kd checkpoint written before the 2D head existed loads as a model without it; the
    multi-modal methods then say which recipe they need."""
    from bench.errors import BenchError

    spec = ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]}, kd_dim=8)
    torch.manual_seed(0)
    m = build_model(spec)
    old = {k: v for k, v in m.state_dict().items() if not k.startswith("heads.seg2d.")}
    fresh = build_model(spec)
    fresh.load_state_dict(old)
    assert "seg2d" not in fresh.heads and "kd" in fresh.heads
    with pytest.raises(BenchError, match="joint-kd2d"):
        fresh.forward2d(torch.zeros(3, 8))
    full = build_model(spec)
    full.load_state_dict(m.state_dict())
    assert torch.equal(full.heads["seg2d"][0].weight, m.heads["seg2d"][0].weight)


# ------------------------------------------------------------------ 2D / 3D / fused columns, end to end
GRID = """
name = "mm"
datasets = ["synth-scannet"]
pairs = ["synth-scannet->synth-scannet"]
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.1 }]
teachers = ["synth2d"]
seeds = [0]
train_scenes = 2
val_scenes = 0
test_scenes = 2
[train]
epochs = 1
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "ttt_kd"
label = "TTT-KD"
recipe = "joint-kd2d"  # shares the xMUDA / MM-TTA model (it has the 2D-feature projector TTT-KD adapts with)
steps = 1
[[methods]]
name = "xmuda"
label = "xMUDA"
[[methods]]
name = "mmtta"
label = "MM-TTA"
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from bench.grid import load_grid
    from bench.runner import run_grid

    d = tmp_path_factory.mktemp("mm")
    (d / "mm.toml").write_text(GRID)
    run_grid(load_grid(str(d / "mm.toml")), d / "out")
    return d / "out"


def test_modal_columns_on_a_tiny_run(tiny_run):
    cells = pd.read_parquet(tiny_run / "cells.parquet").set_index("label")
    scenes = pd.read_parquet(tiny_run / "scenes.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    for col in ("miou_2d", "miou_3d", "miou_fused"):
        assert col in cells and col in scenes
    assert np.allclose(cells["miou_3d"], cells["miou"]) and np.allclose(scenes["miou_3d"], scenes["miou"])
    for label in ("Source-Only", "TTT-KD"):  # 3D-only rows: 3D alongside, no 2D / fused
        assert np.isnan(cells.loc[label, "miou_2d"]) and np.isnan(cells.loc[label, "miou_fused"])
    for label in ("xMUDA", "MM-TTA"):
        row = cells.loc[label]
        assert 0 < row["miou_2d"] <= 1 and 0 < row["miou_fused"] <= 1
        per = scenes[scenes["cell_id"] == row["cell_id"]]
        assert len(per) == 2 and np.isfinite(per["miou_2d"]).all() and np.isfinite(per["miou_fused"]).all()
    src = scenes[scenes["cell_id"] == cells.loc["Source-Only", "cell_id"]]
    assert np.isnan(src["miou_2d"]).all() and np.isfinite(src["miou_3d"]).all()


def test_modal_table_from_the_tiny_run(tiny_run):
    from bench.report.frame import load
    from bench.report.tables import modal_table

    res = load(tiny_run)
    t = modal_table(res)
    assert t is not None and t.header[1:4] == ["2D", "3D", "fused"]
    by = {r[0]: r[1:] for r in t.rows}
    kd = next(v for k, v in by.items() if k.startswith("TTT-KD"))
    xm = next(v for k, v in by.items() if k.startswith("xMUDA"))
    assert kd[0] == "-" and kd[1] != "-" and kd[2] == "-"
    assert all(v != "-" for v in xm)
    assert "2D" in t.to_markdown() and "fused" in t.to_latex()


def test_modal_figure_from_the_tiny_run(tiny_run, tmp_path):
    from bench.report.figures import _modal_rows, figures
    from bench.report.frame import load

    res = load(tiny_run)
    rows = _modal_rows(res)
    assert np.isfinite(rows["miou_2d"]).any() and np.isfinite(rows["miou_3d"]).all()
    written = {p.name for p in figures(res, tmp_path)}
    assert "fig_modal.png" in written


def test_modal_fusion_rule():
    """Fused = mean of the softmaxes on seen points, 3D elsewhere; 2D counts seen points only."""
    from bench.cell import _modal_confusions
    from bench.metrics import confusion

    l3 = torch.full((3, C), -20.0)
    l2 = torch.full((3, C), -20.0)
    l3[:, :2] = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    l2[:, :2] = torch.tensor([[0.0, 5.0], [0.0, 0.0], [0.0, 1.0]])
    l2[1] = float("nan")
    mask = torch.tensor([True, False, True])
    label = np.array([1, 1, 1])
    c3 = confusion(np.array([0, 0, 1]), label, C, (0, 1))
    c2, cf = _modal_confusions(l3, l2, mask, label, (0, 1), c3)
    assert c2.sum() == 2 and c2[1, 1] == 2  # both seen points right in 2D, the unseen one not counted
    assert cf.sum() == 3 and cf[1, 1] == 2 and cf[1, 0] == 1  # point 0 flipped by 2D, point 1 stays 3D


# ---------------------------------------------------------------------------------------- grids
def test_methods_all_lists_every_registered_method_on_the_id_ood_pairs():
    from bench.grid import load_grid

    g, ref = load_grid("methods_all"), load_grid("id_ood")
    shipped = {n for n in METHODS.names() if METHODS.get(n).factory.__module__.startswith("methods.")}
    assert {c.method for c in g.cells} == shipped  # not the ones other test modules register
    assert {(c.source, c.target) for c in g.cells} == {(c.source, c.target) for c in ref.cells}
    assert {(c.train_scenes, c.test_scenes, json_cfg(c)) for c in g.cells} == \
        {(c.train_scenes, c.test_scenes, json_cfg(c)) for c in ref.cells}


def json_cfg(cell) -> str:
    import json

    return json.dumps(cell.train_cfg, sort_keys=True)


def test_multimodal_grid_has_the_image_baselines_and_their_models():
    from bench.grid import load_grid

    g = load_grid("multimodal")
    assert {"xmuda", "mmtta", "ttt_kd", "source"} <= {c.method for c in g.cells}
    assert {c.recipe for c in g.cells if c.method in ("xmuda", "mmtta")} == {"joint-kd2d"}
    assert len({c.model_key() for c in g.cells if c.seed == 0}) == 3  # source, joint-kd, joint-kd2d
    assert len({c.model_key() for c in g.cells}) == 3 * len({c.model_seed for c in g.cells})  # seeds share them


def test_modal_table_is_absent_for_results_without_a_2d_row():
    """Results of 3D-only rows (here the committed id_ood reference, written before these columns) give
    no modal table; the main table is unaffected."""
    from pathlib import Path

    from bench.report.frame import load
    from bench.report.tables import modal_table

    ref = Path(__file__).resolve().parents[1] / "results" / "reference" / "id_ood"
    if not (ref / "cells.parquet").is_file():
        pytest.skip("no committed id_ood reference")
    assert modal_table(load(ref)) is None
