"""Each method against its algorithm written straight from the paper / official pseudo-code.

For TENT, EATA, SAR, CoTTA, DUA, BN-Adapt and AdaContrast, the reference below is plain torch,
written from the official code (DequanWang/tent, mr-eggplant/EATA and SAR, qinenergy/cotta,
jmiemirza/DUA, DianCh/AdaContrast and its online version in mariodoebler/test-time-adaptation),
with only the 3D rules of each method's docstring applied (a batch is one scene, a sample is a
point, thresholds scaled to the number of classes). It never goes through the project's method
classes. Both run on copies of one tiny BN model (``TinySeg``: the ``SegModel`` interface the
methods use) over the same three scenes, with generators seeded alike (the order in which a method
draws its random numbers is part of its documented behaviour), and the adapted parameters, the BN
buffers and both predictions (the adapting forward's output, ``last_output``, and the prediction
after adaptation, ``predict``) must agree after the first and after the third scene.

Tolerance: rtol = atol = 1e-5, in float64. Both sides compute the same arithmetic, possibly in a
different order (e.g. a sum of squared norms vs the norm of a stacked vector), and the order of a
float sum also differs between CPU types (BLAS kernels): in float32, EATA's Fisher term (lr 0.05 x
alpha 2000 amplifies rounding) differed by 2.2e-5 on an AMD EPYC while it agreed below 1e-6 on an
Intel Xeon. The tests therefore run in float64 (the tiny model is initialised in float32, as before,
and converted), where rounding stays many orders below the tolerance on any CPU, while any semantic
change (a threshold, a filter, a schedule, which layers adapt, an order of updates) moves parameters
by >1e-4 after one step at these learning rates.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.batch import PointBatch
from backbones.model import ModelSpec
from bench.data.classes import NUM_CLASSES
from bench.registry import make_config
from methods import METHODS, SceneInput
from methods.augment import augment_batch

TOL = 1e-5


@pytest.fixture(autouse=True)
def float64():
    """Both sides compute in float64 (see the module docstring)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
FEATURES = ("color", "normal")
N_POINTS = 400


# ---------------------------------------------------------------- the tiny model and the scenes

class TinyBackbone(nn.Module):
    """Per-point MLP on (features, scene-centred coordinates) with three BatchNorm1d layers."""

    def __init__(self, cin: int):
        super().__init__()
        self.out_channels = 8
        self.l1, self.bn1 = nn.Linear(cin + 3, 16), nn.BatchNorm1d(16)
        self.l2, self.bn2 = nn.Linear(16, 12), nn.BatchNorm1d(12)
        self.l3, self.bn3 = nn.Linear(12, 8), nn.BatchNorm1d(8)

    def layers(self):
        return [(self.l1, self.bn1), (self.l2, self.bn2), (self.l3, self.bn3)]

    def forward(self, batch: PointBatch) -> torch.Tensor:
        x = tiny_input(batch)
        for lin, bn in self.layers():
            x = torch.relu(bn(lin(x)))
        return x


def tiny_input(batch: PointBatch) -> torch.Tensor:
    cnt = torch.zeros(batch.num_scenes).index_add_(0, batch.batch, torch.ones(len(batch.batch)))
    centre = torch.zeros(batch.num_scenes, 3).index_add_(0, batch.batch, batch.coord) / cnt[:, None]
    return torch.cat([batch.feat, batch.coord - centre[batch.batch]], 1)


class TinySeg(nn.Module):
    """The SegModel interface: ``spec``, ``backbone``, ``heads['seg']`` (plus ``heads['kd']``, a 2D-feature
    projector, when ``kd_dim``, and ``heads['mae']``, a reconstruction head, when ``mae``; built after the
    label head, so they leave its initialisation unchanged), forward -> {'feat', heads}."""

    def __init__(self, kd_dim: int = 0, mae: bool = False):
        super().__init__()
        self.spec = ModelSpec(backbone="tiny", features=FEATURES, num_classes=NUM_CLASSES, kd_dim=kd_dim, mae=mae)
        self.backbone = TinyBackbone(6)
        heads = {"seg": nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES))}
        if kd_dim:
            heads["kd"] = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, kd_dim))
        if mae:
            heads["mae"] = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6))
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch, heads=("seg",)):
        feat = self.backbone(batch)
        return {"feat": feat, **{h: self.heads[h](feat) for h in heads}}


def tiny_model(**heads) -> TinySeg:
    """The same float32-initialised weights on every run, held in float64 (the tests compute in float64);
    ``heads``: TinySeg's ``kd_dim`` / ``mae``."""
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        m = TinySeg(**heads)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():
        m.heads["seg"][2].weight.mul_(4.0)  # spread the predictions: entropies from ~0 to ~ln C
        for bn in (m.backbone.bn1, m.backbone.bn2, m.backbone.bn3):  # non-trivial source statistics
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m.to(old).eval()


def scene_batch(i: int) -> PointBatch:
    rng = np.random.default_rng(i)
    coord = rng.uniform([0, 0, 0], [4, 4, 2.5], (N_POINTS, 3)).astype(np.float64)
    color = rng.uniform(-1, 1, (N_POINTS, 3)).astype(np.float64) + (0.3 * i)  # a shift along the stream
    normal = rng.normal(size=(N_POINTS, 3)).astype(np.float64)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return PointBatch(torch.from_numpy(coord), torch.from_numpy(np.c_[color, normal]),
                      torch.zeros(N_POINTS, dtype=torch.long), 1)


def gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + i)


def scene_input(i: int) -> SceneInput:
    return SceneInput(scene_batch(i), i, gen(i))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


# ---------------------------------------------------------------- running the registered method

def run_method(name: str, params: dict, n_scenes: int = 3, source_scenes: int = 0, stats: list | None = None,
               heads: dict | None = None, inputs=None):
    """Registered method over the stream: per scene (last_output, predict, parameters, buffers); each
    scene's ``scene_stats()`` is appended to ``stats`` when given. ``heads``: the tiny model's extra
    heads; ``inputs``: the scene input of stream position i (default ``scene_input``)."""
    model = tiny_model(**(heads or {}))
    entry = METHODS.get(name)
    m = entry.factory(model=model, cfg=make_config(entry, params, "method"))
    if source_scenes:
        m.prepare([SceneInput(scene_batch(50 + j), j, gen(50 + j)) for j in range(source_scenes)])
    out = []
    for i in range(n_scenes):
        inp = (inputs or scene_input)(i)
        if m.cfg.episodic:
            m.reset()
        m.adapt(inp)
        same = None if m.last_output is None else m.last_output.detach().clone()
        after = m.predict(inp).detach().clone()
        out.append((same, after, snapshot(model)))
        if stats is not None:
            stats.append(m.scene_stats())
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and BN running statistics by name (the reference may drop running stats: None)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "num_batches" not in k}


def compare(ours, ref, check_same: bool = True, buffers: bool = False):
    for scene in (0, 2):  # after 1 and after 3 scenes
        (s1, a1, p1), (s2, a2, p2) = ours[scene], ref[scene]
        keys = [k for k in p2 if buffers or "running" not in k]
        assert keys
        pairs = [(k, p1[k], p2[k]) for k in keys] + [("prediction after", a1, a2)]
        if check_same:
            pairs.append(("same forward", s1, s2))
        for what, x, y in pairs:
            torch.testing.assert_close(x, y, rtol=TOL, atol=TOL, msg=lambda m, w=what, i=scene: f"scene {i}, {w}: {m}")


def moved(ref, keys_like: str = "", **heads) -> bool:
    """The reference really adapted: parameters after 3 scenes differ from the source."""
    src = snapshot(tiny_model(**heads))
    return any(not torch.allclose(ref[2][2][k], src[k], atol=1e-4) for k in ref[2][2] if keys_like in k)


def batch_stats_bn(model: nn.Module) -> None:
    """Official tent/eata/sar/cotta ``configure_model``: BN with batch statistics, no running stats."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None


def median_entropy() -> float:
    with torch.no_grad():
        m = tiny_model()
        batch_stats_bn(m)
        return float(entropy(m(scene_batch(0))["seg"]).median())


# ---------------------------------------------------------------- TENT (DequanWang/tent)

def ref_tent(lr: float, n_scenes: int = 3):
    model = tiny_model()
    model.train()
    model.requires_grad_(False)
    batch_stats_bn(model)
    params = []
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    out = []
    for i in range(n_scenes):
        x = scene_batch(i)
        outputs = model(x)["seg"]
        loss = entropy(outputs).mean(0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            after = model(x)["seg"]
        out.append((outputs.detach(), after, snapshot(model)))
    return out


def test_tent_matches_reference():
    ref = ref_tent(lr=1e-2)
    assert moved(ref, "bn")
    compare(run_method("tent", {"lr": 1e-2}), ref)


# ---------------------------------------------------------------- EATA (mr-eggplant/EATA)

def ref_eata(e_margin: float, d_margin: float, alpha: float, lr: float, fisher_size: int, source_scenes: int):
    model = tiny_model()
    model.train()
    model.requires_grad_(False)
    batch_stats_bn(model)
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.requires_grad_(True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    # Fisher (main.py): pseudo-label CE per batch of 64 samples, squared grads summed, / number of batches;
    # 3D rule: samples are points of clean source scenes, fisher_size split evenly over the scenes
    fishers: dict[str, list[torch.Tensor]] = {}
    batches = []
    for j in range(source_scenes):
        n = fisher_size // source_scenes + (j < fisher_size % source_scenes)
        outputs = model(scene_batch(50 + j))["seg"]
        idx = torch.randperm(N_POINTS, generator=gen(50 + j))[:n]
        batches += [(outputs, c) for c in idx.split(64)]
    for iter_, (outputs, chunk) in enumerate(batches, start=1):
        _, targets = outputs[chunk].max(1)
        loss = F.cross_entropy(outputs[chunk], targets)
        loss.backward(retain_graph=True)
        for name, param in model.named_parameters():
            if param.grad is not None:
                fisher = param.grad.detach() ** 2 + (fishers[name][0] if iter_ > 1 else 0)
                if iter_ == len(batches):
                    fisher = fisher / iter_
                fishers[name] = [fisher, param.detach().clone()]
        for p in params:
            p.grad = None
    opt = torch.optim.SGD(params, lr, momentum=0.9)
    current = None
    out, counts = [], []
    for i in range(3):
        x = scene_batch(i)
        outputs = model(x)["seg"]
        ents = entropy(outputs)
        ids1 = torch.where(ents < e_margin)
        ids2 = torch.where(ids1[0] > -0.1)
        ents = ents[ids1]
        if current is not None:
            cos = F.cosine_similarity(current.unsqueeze(0), outputs[ids1].softmax(1), dim=1)
            ids2 = torch.where(torch.abs(cos) < d_margin)
            ents = ents[ids2]
            new = outputs[ids1][ids2].softmax(1)
        else:
            new = outputs[ids1].softmax(1)
        if new.shape[0] > 0:
            current = new.mean(0).detach() if current is None else (0.9 * current + 0.1 * new.mean(0)).detach()
        coeff = 1 / torch.exp(ents.detach() - e_margin)
        loss = ents.mul(coeff).mean(0)
        for name, param in model.named_parameters():
            if name in fishers:
                loss = loss + alpha * (fishers[name][0] * (param - fishers[name][1]) ** 2).sum()
        if len(ids1[0][ids2]) != 0:
            loss.backward()
            opt.step()
        opt.zero_grad()
        counts.append((len(ids1[0]), len(ids1[0][ids2])))
        with torch.no_grad():
            after = model(x)["seg"]
        out.append((outputs.detach(), after, snapshot(model)))
    assert names
    return out, counts


def test_eata_matches_reference():
    """The code that runs: EATA's defaults take the official optimizer (SGD, momentum 0.9), and the
    registered method is run without naming it."""
    cfg = METHODS.get("eata").config()
    assert (cfg.optimizer, cfg.lr) == ("sgd", 2.5e-4)
    e_margin = median_entropy()
    kw = dict(e_margin=e_margin, d_margin=0.97, lr=0.05, fisher_size=300)
    ref, counts = ref_eata(alpha=2000.0, source_scenes=2, **kw)
    # both filters are active: some points fail the entropy filter, some the redundancy filter
    assert all(0 < n2 and n2 <= n1 < N_POINTS for n1, n2 in counts) and any(n2 < n1 for n1, n2 in counts[1:])
    assert moved(ref, "bn")
    stats: list[dict] = []
    ours = run_method("eata", {**kw, "fisher_alpha": 2000.0}, source_scenes=2, stats=stats)
    compare(ours, ref)
    # the filter statistics are the reference's counts
    assert stats == [{"updated": 1.0, "reliable": n1 / N_POINTS, "kept": n2 / N_POINTS, "redundancy_blocked": 0.0}
                     for n1, n2 in counts]
    # the Fisher term matters here: without it the adapted weights differ
    ref0, _ = ref_eata(alpha=0.0, source_scenes=2, **kw)
    assert not torch.allclose(ref0[2][2]["backbone.bn1.weight"], ref[2][2]["backbone.bn1.weight"], atol=1e-4)


def test_eata_scene_stats_record_scenes_blocked_by_the_redundancy_filter():
    """d_margin = 0 removes every point once a moving average exists: the first scene updates, the
    later ones are blocked by the redundancy filter alone (their reliable points exist) and take no step."""
    e_margin = median_entropy()
    kw = dict(e_margin=e_margin, d_margin=0.0, lr=0.05, fisher_size=300)
    ref, counts = ref_eata(alpha=0.0, source_scenes=0, **kw)
    assert counts[0][1] > 0 and all(n1 > 0 and n2 == 0 for n1, n2 in counts[1:])
    stats: list[dict] = []
    compare(run_method("eata", {**kw, "fisher_alpha": 0.0}, stats=stats), ref)
    assert [s["updated"] for s in stats] == [1.0, 0.0, 0.0]
    assert [s["redundancy_blocked"] for s in stats] == [0.0, 1.0, 1.0]
    assert [s["kept"] for s in stats] == [counts[0][1] / N_POINTS, 0.0, 0.0]


# ---------------------------------------------------------------- SAR (mr-eggplant/SAR)

def ref_sar(margin: float, reset_constant: float, lr: float, rho: float = 0.05):
    model = tiny_model()
    model.train()
    model.requires_grad_(False)
    batch_stats_bn(model)
    # collect_params: norm layers except the top ones; 3D rule: the last 25% in forward order
    # (tiny model: bn1, bn2, bn3 -> round(0.75) = 1 layer skipped: bn3)
    params = []
    for nm, m in model.named_modules():
        if nm == "backbone.bn3":
            continue
        if isinstance(m, nn.BatchNorm1d):
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    model_state, opt_state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    ema, out, emas, resets = None, [], [], []
    for i in range(3):
        x = scene_batch(i)
        opt.zero_grad()
        outputs = model(x)["seg"]
        ents = entropy(outputs)
        ids1 = torch.where(ents < margin)
        ents[ids1].mean(0).backward()
        # SAM first step
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in params if p.grad is not None]), p=2)
        old = {}
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    continue
                old[p] = p.data.clone()
                p.add_(p.grad * (rho / (grad_norm + 1e-12)))
        opt.zero_grad()
        ents2 = entropy(model(x)["seg"])[ids1]
        ids2 = torch.where(ents2 < margin)
        loss_second = ents2[ids2].mean(0)
        assert len(ids1[0]) > 0 and len(ids2[0]) > 0, "pick a margin that keeps some points"
        if not np.isnan(loss_second.item()):
            ema = loss_second.item() if ema is None else 0.9 * ema + 0.1 * loss_second.item()
        loss_second.backward()
        with torch.no_grad():  # SAM second step: back to w, then the base optimizer's step
            for p in params:
                if p in old:
                    p.data = old[p]
        opt.step()
        opt.zero_grad()
        reset = ema is not None and ema < reset_constant
        if reset:  # model recovery; the caller keeps the ema (official forward)
            model.load_state_dict(model_state, strict=True)
            opt.load_state_dict(opt_state)
        emas.append(ema)
        resets.append(reset)
        with torch.no_grad():
            after = model(x)["seg"]
        out.append((outputs.detach(), after, snapshot(model)))
    return out, emas, resets


def test_sar_matches_reference():
    margin = median_entropy()
    ref, emas, resets = ref_sar(margin, reset_constant=0.0, lr=0.05)
    assert not any(resets) and moved(ref, "bn1")
    assert torch.equal(ref[2][2]["backbone.bn3.weight"], snapshot(tiny_model())["backbone.bn3.weight"])
    compare(run_method("sar", {"e_margin": margin, "reset_constant": 0.0, "lr": 0.05}), ref)
    # recovery: a threshold between the loss averages after scenes 1 and 2 fires on some scenes, not all
    # (which ones depends on the average surviving a recovery, as in the official code)
    thr = (emas[0] + emas[1]) / 2
    ref_r, _, resets_r = ref_sar(margin, reset_constant=thr, lr=0.05)
    assert any(resets_r) and not all(resets_r), resets_r
    stats: list[dict] = []
    compare(run_method("sar", {"e_margin": margin, "reset_constant": thr, "lr": 0.05}, stats=stats), ref_r)
    # each scene's row records its recoveries (scene_stats -> stat_reset)
    assert [s["reset"] for s in stats] == [float(r) for r in resets_r]
    assert all(s["updated"] == 1.0 for s in stats)


# ---------------------------------------------------------------- CoTTA (qinenergy/cotta)

def ref_cotta(ap: float, n_aug: int, lr: float, mt: float = 0.999, rst: float = 0.01):
    model = tiny_model()
    model.train()
    model.requires_grad_(True)
    batch_stats_bn(model)
    model_state = copy.deepcopy(model.state_dict())
    anchor = copy.deepcopy(model)
    model_ema = copy.deepcopy(model)
    for p in model_ema.parameters():
        p.detach_()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    out, used_aug, confs = [], [], []

    def teacher(x, g):
        anchor_prob = anchor(x)["seg"].softmax(1).max(1)[0]
        confs.append((float(anchor_prob.mean(0)), float(model_ema(x)["seg"].softmax(1).max(1)[0].mean(0))))
        if anchor_prob.mean(0) < ap:
            return torch.stack([model_ema(augment_batch(x, FEATURES, g))["seg"] for _ in range(n_aug)]).mean(0), True
        return model_ema(x)["seg"], False

    for i in range(3):
        x, g = scene_batch(i), gen(i)
        outputs = model(x)["seg"]
        with torch.no_grad():
            outputs_ema, aug = teacher(x, g)
        used_aug.append(aug)
        loss = (-(outputs_ema.softmax(1) * outputs.log_softmax(1)).sum(1)).mean(0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for ema_param, param in zip(model_ema.parameters(), model.parameters()):
                ema_param.data[:] = mt * ema_param[:].data[:] + (1 - mt) * param[:].data[:]
            for nm, m in model.named_modules():
                for npp, p in m.named_parameters(recurse=False):
                    if npp in ["weight", "bias"] and p.requires_grad:
                        mask = (torch.rand(p.shape, generator=g) < rst).float()
                        p.data = model_state[f"{nm}.{npp}"] * mask + p * (1.0 - mask)
            after, _ = teacher(x, g)
        out.append((outputs_ema.detach(), after, snapshot(model)))
    return out, used_aug, confs


@pytest.mark.parametrize("ap", [0.92, 0.0])
def test_cotta_matches_reference(ap):
    ref, used_aug, _ = ref_cotta(ap=ap, n_aug=4, lr=1e-2)
    assert all(used_aug) if ap > 0 else not any(used_aug)
    assert moved(ref)
    compare(run_method("cotta", {"ap": ap, "n_aug": 4, "lr": 1e-2}), ref)


def test_cotta_the_anchor_decides_not_the_teacher():
    """A fast teacher (ema 0.5) drifts from the anchor while every scene is augmented (ap = 1); an ap
    between the anchor's and the teacher's confidence on the last scene, and above the anchor's on the
    earlier scenes (so they stay augmented and the run is the same up to there), makes the anchor rule
    and a teacher rule disagree on the last scene. (Without augmentation the teacher equals the student
    and the loss has no gradient: in float32 Adam turned rounding noise into steps, a CPU-dependent drift.)"""
    _, used_aug, confs = ref_cotta(ap=1.0, n_aug=4, lr=5e-2, mt=0.5)
    assert all(used_aug)
    (a0, _), (a1, _), (a, t) = confs[0::2]  # (anchor, teacher) before each scene's update
    assert abs(a - t) > 1e-3, confs
    lo, hi = (max(a0, a1, a), t) if t > a else (max(a0, a1, t), a)
    assert hi - lo > 5e-4, confs  # room for an ap strictly between
    ap = (lo + hi) / 2
    ref, used_aug, _ = ref_cotta(ap=ap, n_aug=4, lr=5e-2, mt=0.5)
    assert used_aug == [True, True, a < ap]
    compare(run_method("cotta", {"ap": ap, "n_aug": 4, "lr": 5e-2, "ema": 0.5}), ref)


# ---------------------------------------------------------------- DUA (jmiemirza/DUA)

def ref_dua(copies: int, decay: float = 0.94, min_mom: float = 0.005):
    net = tiny_model()
    mom_pre = 0.1
    out = []
    for i in range(1, 4):
        x, g = scene_batch(i - 1), gen(i - 1)
        net.eval()
        mom_new = mom_pre * decay
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
                m.momentum = mom_new + min_mom
        mom_pre = mom_new
        views = [augment_batch(x, FEATURES, g) for _ in range(copies)]
        inputs = PointBatch(torch.cat([v.coord for v in views]), torch.cat([v.feat for v in views]),
                            torch.arange(copies).repeat_interleave(N_POINTS), copies)
        with torch.no_grad():
            net(inputs)
            net.eval()
            after = net(x)["seg"]
        out.append((None, after, snapshot(net)))
    return out


def test_dua_matches_reference():
    ref = ref_dua(copies=3)
    assert moved(ref, "running")
    ours = run_method("dua", {"copies": 3})
    assert all(s is None for s, _, _ in ours)
    compare(ours, ref, check_same=False, buffers=True)


# ---------------------------------------------------------------- BN-Adapt (Schneider et al.)

def ref_bn_adapt(prior: float):
    """Each BN layer: mu = prior mu_s + (1 - prior) mu_t, var = prior var_s + (1 - prior) var_t, with the
    scene's mean and biased variance of the layer's input in this same forward pass."""
    model = tiny_model()
    out = []
    for i in range(3):
        x = tiny_input(scene_batch(i))
        with torch.no_grad():
            for lin, bn in model.backbone.layers():
                z = lin(x)
                mu = prior * bn.running_mean + (1 - prior) * z.mean(0)
                var = prior * bn.running_var + (1 - prior) * ((z - z.mean(0)) ** 2).mean(0)
                x = torch.relu((z - mu) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
            logits = model.heads["seg"](x)
        out.append((logits, logits, snapshot(model)))
    return out


@pytest.mark.parametrize("prior", [0.0, 0.3])
def test_bn_adapt_matches_reference(prior):
    ref = ref_bn_adapt(prior)
    compare(run_method("bn_adapt", {"prior": prior}), ref, buffers=True)


# ---------------------------------------------------------------- AdaContrast (DianCh/AdaContrast)

def ref_adacontrast(lr: float, queue: int, samples: int, k_nn: int, weak: float = 0.25, m: float = 0.999,
                    T: float = 0.07):
    src_model = tiny_model()
    momentum_model = copy.deepcopy(src_model)
    momentum_model.requires_grad_(False)
    backbone_params = list(src_model.backbone.parameters())
    extra_params = list(src_model.heads["seg"].parameters())
    opt = torch.optim.SGD([
        {"params": backbone_params, "lr": lr, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True},
        {"params": extra_params, "lr": lr * 10, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True}])
    mem_feat = mem_labels = None
    queue_ptr = 0
    banks = {"features": torch.tensor([]), "probs": torch.tensor([]), "ptr": 0}
    first_x = 0
    out, used_knn = [], []
    for i in range(3):
        x, g = scene_batch(i), gen(i)
        images_w = augment_batch(x, FEATURES, g, weak)
        images_q = augment_batch(x, FEATURES, g)
        images_k = augment_batch(x, FEATURES, g)
        idx = torch.randperm(N_POINTS, generator=g)[:samples]  # the samples of this scene
        src_model.train()
        momentum_model.train()
        o = src_model(images_w)
        feats_w, logits_w = o["feat"][idx], o["seg"][idx]
        if mem_feat is None:  # MoCo memory: random normalised features, random labels
            mem_feat = F.normalize(torch.randn(8, queue, generator=g), dim=0)
            mem_labels = torch.randint(0, NUM_CLASSES, (queue,), generator=g)
        with torch.no_grad():
            probs_w = F.softmax(logits_w, dim=1)
            if first_x >= samples:  # official: kNN once 1024 samples were seen (scaled here to `samples`)
                d = 1 - F.normalize(feats_w, dim=1) @ F.normalize(banks["features"], dim=1).T
                nn_idx = d.sort().indices[:, :k_nn]
                pseudo_labels_w = banks["probs"][nn_idx, :].mean(1).max(dim=1)[1]
                used_knn.append(True)
            else:
                first_x += len(feats_w)
                pseudo_labels_w = probs_w.argmax(dim=1)
                used_knn.append(False)
        oq = src_model(images_q)
        feats_q, logits_q = oq["feat"][idx], oq["seg"][idx]
        q = F.normalize(feats_q, dim=1)
        with torch.no_grad():
            for pq, pk in zip(src_model.parameters(), momentum_model.parameters()):
                pk.data = pk.data * m + pq.data * (1.0 - m)
            k = F.normalize(momentum_model(images_k)["feat"][idx], dim=1)
        l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, mem_feat.clone().detach()])
        logits_ins = torch.cat([l_pos, l_neg], dim=1) / T
        with torch.no_grad():  # update_memory
            rep = torch.arange(queue_ptr, queue_ptr + len(k)) % queue
            mem_feat[:, rep] = k.T
            mem_labels[rep] = pseudo_labels_w
            queue_ptr = (queue_ptr + len(k)) % queue
        mask = torch.ones_like(logits_ins, dtype=torch.bool)
        mask[:, 1:] = pseudo_labels_w.reshape(-1, 1) != mem_labels
        logits_ins = torch.where(mask, logits_ins, torch.tensor([float("-inf")]))
        loss_ins = F.cross_entropy(logits_ins, torch.zeros(logits_ins.shape[0], dtype=torch.long))
        loss_cls = F.cross_entropy(logits_q, pseudo_labels_w)
        probs_mean = F.softmax(logits_q, dim=1).mean(dim=0)
        loss_div = -torch.sum(-probs_mean * torch.log(probs_mean + 1e-8))
        loss = loss_cls + loss_ins + loss_div
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # the slow features update the neighbour space (update_labels)
            ow = momentum_model(images_w)
            fw, pw = ow["feat"][idx], F.softmax(ow["seg"][idx], dim=1)
            start, end = banks["ptr"], banks["ptr"] + len(fw)
            if banks["features"].shape[0] < queue:
                banks["features"] = torch.cat([banks["features"], fw], dim=0)
                banks["probs"] = torch.cat([banks["probs"], pw], dim=0)
            else:
                rep = torch.arange(start, end) % len(banks["features"])
                banks["features"][rep, :], banks["probs"][rep, :] = fw, pw
            banks["ptr"] = end % len(banks["features"])
            src_model.eval()
            after = src_model(x)["seg"]
        out.append((None, after, snapshot(src_model)))
    return out, used_knn


def test_adacontrast_matches_reference():
    kw = dict(lr=0.05, samples=64, k_nn=5)
    ref, used_knn = ref_adacontrast(queue=160, **kw)  # the queue wraps at the third scene
    assert used_knn == [False, True, True] and moved(ref)
    ours = run_method("adacontrast", {"lr": 0.05, "samples": 64, "num_neighbors": 5, "queue_size": 160,
                                      "warmup_samples": 64})
    assert all(s is None for s, _, _ in ours)
    compare(ours, ref, check_same=False, buffers=True)


# ---------------------------------------------------------------- TTT-KD, TTT-KD-O, TTT-MAE, Entropy
# Written from the TTT-KD paper (Weijler et al., arXiv 2403.11691: "for each test scene, several optimization
# steps on the knowledge-distillation task fine-tune the parameters of the 3D backbone; during inference all
# parameters are frozen for the final prediction") and the methods' docstrings (Adam; BN with the stored source
# statistics unless ``bn = "test"``; cosine loss on the points seen by a view; no step on a scene with none;
# TTT-KD-O never resets and steps on every stride-th scene; TTT-MAE: block masks of the input features,
# reconstruction of the masked points' input features; Entropy: every backbone parameter, BN with the scene's
# statistics, online). The forward is functional (F.batch_norm with the statistics each mode prescribes), so
# the references never use the project's set_bn_mode nor the module's train/eval switches.

KD_DIM = 5


def tiny_forward(m: TinySeg, batch: PointBatch, bn: str, heads=("seg",)) -> dict[str, torch.Tensor]:
    """'source': normalise with the stored statistics; 'batch': with the scene's (stored ones untouched)."""
    x = tiny_input(batch)
    for lin, b in m.backbone.layers():
        z = lin(x)
        if bn == "source":
            z = F.batch_norm(z, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, b.eps)
        else:
            z = F.batch_norm(z, None, None, b.weight, b.bias, True, 0.0, b.eps)
        x = torch.relu(z)
    return {h: m.heads[h](x) for h in heads}


def kd_input(i: int, seen: float = 0.7) -> SceneInput:
    """A scene with lifted teacher features (KD_DIM) on the points seen by a view (a share ``seen``)."""
    inp = scene_input(i)
    rng = np.random.default_rng(500 + i)
    inp.teacher_feat = torch.from_numpy(rng.normal(size=(N_POINTS, KD_DIM)))
    inp.teacher_mask = torch.from_numpy(rng.uniform(size=N_POINTS) < seen)
    return inp


def make_opt(params, optimizer: str, lr: float):
    return torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)


def ref_ttt(loss_fn, lr: float, steps: int, episodic: bool, bn: str, optimizer: str = "adam", stride: int = 1,
            inputs=kd_input, heads: dict | None = None, loss_heads=("kd", "seg")):
    """The TTT loop shared by TTT-KD(-O), TTT-MAE and Entropy: ``steps`` steps on ``loss_fn(out, inp, step)``
    of the backbone's parameters only (a fresh optimizer and the source weights before every scene when
    episodic), on every ``stride``-th scene; the same-forward logits of the last step and a separate final
    prediction (frozen, same BN mode)."""
    source = tiny_model(**(heads or {}))
    model = copy.deepcopy(source)
    model.requires_grad_(False)
    params = list(model.backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = make_opt(params, optimizer, lr)
    out, taken = [], []
    for i in range(3):
        inp = inputs(i)
        if episodic:
            model.load_state_dict(source.state_dict())
            opt = make_opt(params, optimizer, lr)
        same, n = None, 0
        for step in range(steps if i % stride == 0 else 0):
            o = tiny_forward(model, inp.batch, bn, loss_heads)
            loss = loss_fn(o, inp, step)
            if loss is None:  # nothing to learn from on this scene: no step
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            same, n = o["seg"].detach() if "seg" in o else None, n + 1
        taken.append(n)
        with torch.no_grad():
            after = tiny_forward(model, inp.batch, bn)["seg"]
        out.append((same, after, snapshot(model)))
    return out, taken


def kd_loss(o, inp, step):
    """1 - cos(projected 3D features, lifted teacher features), mean over the points seen by a view."""
    m = inp.teacher_mask
    if not m.any():
        return None
    return (1 - F.cosine_similarity(o["kd"][m], inp.teacher_feat[m], dim=1)).mean()


def entropy_loss(o, inp, step):
    return entropy(o["seg"]).mean()


def mae_mask(inp: SceneInput, ratio: float, cell: float) -> torch.Tensor:
    """Whole grid cells of ``cell`` metres masked with probability ``ratio``: one uniform draw per occupied
    cell, the cells in lexicographic order of their (x, y, z) index, from the scene's generator."""
    cells, inv = torch.unique(torch.floor(inp.batch.coord / cell).long(), dim=0, return_inverse=True)
    return (torch.rand(len(cells), generator=inp.generator) < ratio)[inv]


def ref_ttt_mae(lr: float, steps: int, ratio: float = 0.5, cell: float = 0.4, optimizer: str = "adam",
                bn: str = "source"):
    """Episodic: per scene from the source weights with a fresh optimizer, ``steps`` steps, each on a new
    mask: the masked points' input features replaced by zeros, the loss the MSE between the reconstruction
    head's output and the input features on the masked points; backbone only; then the frozen prediction
    on the unmasked scene."""
    source = tiny_model(mae=True)
    model = copy.deepcopy(source)
    model.requires_grad_(False)
    params = list(model.backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    out = []
    for i in range(3):
        inp = scene_input(i)
        model.load_state_dict(source.state_dict())
        opt = make_opt(params, optimizer, lr)
        for _ in range(steps):
            m = mae_mask(inp, ratio, cell)
            feat = torch.where(m[:, None], torch.zeros_like(inp.batch.feat), inp.batch.feat)
            rec = tiny_forward(model, PointBatch(inp.batch.coord, feat, inp.batch.batch, 1), bn, ("mae",))["mae"]
            loss = F.mse_loss(rec[m], inp.batch.feat[m])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = tiny_forward(model, inp.batch, bn)["seg"]
        out.append((None, after, snapshot(model)))
    return out


def assert_ttt_moves_only_the_backbone(ref, **heads):
    """Backbone weights moved, heads and BN running statistics did not."""
    src = snapshot(tiny_model(**heads))
    final = ref[2][2]
    assert any(not torch.allclose(final[k], src[k], atol=1e-4) for k in final if k.startswith("backbone.")
               and "running" not in k)
    assert all(torch.equal(final[k], src[k]) for k in final if k.startswith("heads.") or "running" in k)


@pytest.mark.parametrize("steps", [1, 3])
def test_ttt_kd_matches_reference(steps):
    ref, taken = ref_ttt(kd_loss, lr=1e-2, steps=steps, episodic=True, bn="source", heads={"kd_dim": KD_DIM})
    assert taken == [steps] * 3
    assert_ttt_moves_only_the_backbone(ref, kd_dim=KD_DIM)
    assert METHODS.get("ttt_kd").config().optimizer == "adam"
    ours = run_method("ttt_kd", {"lr": 1e-2, "steps": steps}, heads={"kd_dim": KD_DIM}, inputs=kd_input)
    compare(ours, ref, buffers=True)


def test_ttt_kd_bn_test_matches_reference():
    ref, _ = ref_ttt(kd_loss, lr=1e-2, steps=3, episodic=True, bn="batch", heads={"kd_dim": KD_DIM})
    ours = run_method("ttt_kd", {"lr": 1e-2, "steps": 3, "bn": "test"}, heads={"kd_dim": KD_DIM}, inputs=kd_input)
    compare(ours, ref, buffers=True)


def test_ttt_kd_takes_no_step_without_seen_points():
    ours = run_method("ttt_kd", {"lr": 1e-2, "steps": 3}, n_scenes=1, heads={"kd_dim": KD_DIM},
                      inputs=lambda i: kd_input(i, seen=0.0))
    src = snapshot(tiny_model(kd_dim=KD_DIM))
    assert all(torch.equal(ours[0][2][k], src[k]) for k in src) and ours[0][0] is None


@pytest.mark.parametrize("steps,stride", [(1, 1), (3, 1), (1, 2), (3, 2)])
def test_ttt_kd_online_matches_reference(steps, stride):
    ref, taken = ref_ttt(kd_loss, lr=1e-2, steps=steps, episodic=False, bn="source", stride=stride,
                         heads={"kd_dim": KD_DIM})
    assert taken == [steps, 0 if stride == 2 else steps, steps]
    assert_ttt_moves_only_the_backbone(ref, kd_dim=KD_DIM)
    ours = run_method("ttt_kd_online", {"lr": 1e-2, "steps": steps, "stride": stride}, heads={"kd_dim": KD_DIM},
                      inputs=kd_input)
    if stride == 2:  # no step on the second scene: no adapting forward either
        assert ours[1][0] is None
    compare(ours, ref, buffers=True)


@pytest.mark.parametrize("steps", [1, 3])
def test_ttt_mae_matches_reference(steps):
    ref = ref_ttt_mae(lr=1e-2, steps=steps)
    assert_ttt_moves_only_the_backbone(ref, mae=True)
    ours = run_method("ttt_mae", {"lr": 1e-2, "steps": steps}, heads={"mae": True})
    assert all(s is None for s, _, _ in ours)
    compare(ours, ref, check_same=False, buffers=True)


@pytest.mark.parametrize("steps,bn", [(1, "test"), (3, "test"), (3, "source")])
def test_entropy_matches_reference(steps, bn):
    ref, _ = ref_ttt(entropy_loss, lr=1e-2, steps=steps, episodic=False, bn={"test": "batch"}.get(bn, bn),
                     inputs=scene_input, loss_heads=("seg",))
    assert_ttt_moves_only_the_backbone(ref)
    ours = run_method("entropy", {"lr": 1e-2, "steps": steps, "bn": bn})
    compare(ours, ref, buffers=True)


def _differ(a, b) -> bool:
    """Two reference runs differ beyond the comparison's tolerance somewhere after 1 or 3 scenes."""
    return any(not torch.allclose(x[2][k], y[2][k], rtol=100 * TOL, atol=100 * TOL) or
               not torch.allclose(x[1], y[1], rtol=100 * TOL, atol=100 * TOL)
               for i in (0, 2) for x, y in [(a[i], b[i])] for k in x[2])


def test_ttt_references_tell_the_breaks_apart():
    """The comparisons above can fail: one step fewer, the other BN mode while adapting, and SGD instead of
    Adam each change the reference's parameters and predictions by far more than the tolerance."""
    kd = dict(heads={"kd_dim": KD_DIM})
    base = ref_ttt(kd_loss, lr=1e-2, steps=3, episodic=True, bn="source", **kd)[0]
    assert _differ(base, ref_ttt(kd_loss, lr=1e-2, steps=2, episodic=True, bn="source", **kd)[0])
    assert _differ(base, ref_ttt(kd_loss, lr=1e-2, steps=3, episodic=True, bn="batch", **kd)[0])
    assert _differ(base, ref_ttt(kd_loss, lr=1e-2, steps=3, episodic=True, bn="source", optimizer="sgd", **kd)[0])
    mae = ref_ttt_mae(lr=1e-2, steps=3)
    for other in (ref_ttt_mae(lr=1e-2, steps=2), ref_ttt_mae(lr=1e-2, steps=3, bn="batch"),
                  ref_ttt_mae(lr=1e-2, steps=3, optimizer="sgd")):
        assert _differ(mae, other)
    ent = dict(lr=1e-2, episodic=False, inputs=scene_input, loss_heads=("seg",))
    base = ref_ttt(entropy_loss, steps=3, bn="batch", **ent)[0]
    for other in (ref_ttt(entropy_loss, steps=2, bn="batch", **ent)[0], ref_ttt(entropy_loss, steps=3, bn="source",
                  **ent)[0], ref_ttt(entropy_loss, steps=3, bn="batch", optimizer="sgd", **ent)[0]):
        assert _differ(base, other)


# ---------------------------------------------------------------- GIPSO (saltoricristiano/gipso-sfouda)

def ref_geometric(coord: torch.Tensor, k: int) -> torch.Tensor:
    """The 3D-indoor feature space of the gipso docstring, brute force: covariance of the k nearest points
    (the point itself included), its eigenvalues' linearity, planarity, scattering, |normal_z|, height."""
    d = ((coord[:, None, :] - coord[None, :, :]) ** 2).sum(-1)
    nb = coord[d.topk(k, dim=1, largest=False).indices]
    c = nb - nb.mean(1, keepdim=True)
    evals, evecs = torch.linalg.eigh(c.transpose(1, 2) @ c / k)
    l3, l2, l1 = evals[:, 0].clamp_min(0), evals[:, 1].clamp_min(0), evals[:, 2].clamp_min(0)
    z = coord[:, 2]
    return torch.stack([(l1 - l2) / l1, (l2 - l3) / l1, l3 / l1, evecs[:, 2, 0].abs(),
                        (z - z.min()) / (z.max() - z.min())], 1)


def ref_gipso(lr: float, top_p: float, k: int, mc: int, space: str, p: float = 0.5, eps: float = 0.25,
              wd: float = 1e-5, geo_k: int = 16):
    model = tiny_model()
    source = copy.deepcopy(model).eval()  # pseudo-labels from the frozen source model
    opt = torch.optim.Adam(list(model.backbone.parameters()) + list(model.heads["seg"].parameters()), lr=lr,
                           weight_decay=wd)
    out, stats, spread = [], [], []
    for i in range(3):
        x, g = scene_batch(i), gen(i)
        with torch.no_grad():  # MinkUNet18_MCMC: dropout on the backbone output, then the final layer
            f = source.backbone(x)
            samples = []
            for _ in range(mc):
                keep = torch.rand(f.shape, generator=g) >= p
                samples.append(F.softmax(source.heads["seg"](f * keep / (1 - p)), dim=-1).view(N_POINTS, 1, -1))
            out_source = torch.cat(samples, dim=1)
            uncertainty = out_source.std(dim=1).mean(dim=-1)
            pseudo = out_source.mean(dim=1).max(dim=-1).indices
            new_pseudo = -torch.ones(N_POINTS, dtype=torch.long)
            for c in torch.unique(pseudo):  # get_cbst_th
                vals, _ = torch.sort(uncertainty[pseudo == c], descending=False)
                th = vals[int(np.floor((vals.shape[0] - 1) * top_p))]
                new_pseudo[(pseudo == c) & (uncertainty < th)] = c
            feats = ref_geometric(x.coord, geo_k) if space == "geometric" else x.coord
            query = torch.where(new_pseudo != -1)[0]
            knn_all = []
            for c in torch.unique(new_pseudo[query]):  # geometric_propagation: k nearest of each seed, per class
                q = query[new_pseudo[query] == c]
                d = ((feats[q][:, None, :] - feats[None, :, :]) ** 2).sum(-1)
                nn_idx = d.topk(k, dim=1, largest=False).indices
                knn_all += [(j, int(c)) for j in nn_idx.flatten().tolist()]
            labels = new_pseudo.clone()
            reached: dict[int, list[int]] = {}
            for j, c in knn_all:
                reached.setdefault(j, []).append(c)
            for j, cs in reached.items():  # a non-seed point reached once takes the label; several times: none
                if new_pseudo[j] == -1 and len(cs) == 1:
                    labels[j] = cs[0]
            spread.append((int((new_pseudo >= 0).sum()), int((labels >= 0).sum()),
                           sum(len(cs) > 1 and new_pseudo[j] == -1 for j, cs in reached.items())))
        model.train()  # the whole network, BN with batch statistics; the stored ones move (momentum 0.1)
        out_seg = model(x)["seg"]
        # SoftDICELoss(neg_range=True, eps=0.25, powerize=True, use_tmask=True)
        valid = labels != -1
        output, target = out_seg[valid], labels[valid]
        onehot = F.one_hot(target, num_classes=NUM_CLASSES)
        soft = torch.where(onehot == 1, 1 - eps, eps / (NUM_CLASSES - 1))
        prob = F.softmax(output, dim=-1)
        intersection = (prob * soft).sum(dim=0)
        union = prob.pow(2).sum(dim=0) + soft.sum(dim=0) + 1e-12
        tmask = (onehot.sum(dim=0) > 0).int()
        loss = -((tmask * 2 * intersection / union).sum(dim=0) / (tmask.sum(dim=0) + 1e-12)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            after = model(x)["seg"]
        out.append((out_seg.detach(), after, snapshot(model)))
        stats.append({"seeds": int((new_pseudo >= 0).sum()) / N_POINTS, "labelled": int(valid.sum()) / N_POINTS,
                      "updated": 1.0})
    return out, stats, spread


def test_gipso_defaults_are_official():
    cfg = METHODS.get("gipso").config()
    assert (cfg.top_p, cfg.k, cfg.mc_samples, cfg.dropout, cfg.dice_eps, cfg.optimizer, cfg.lr, cfg.weight_decay,
            cfg.episodic, cfg.space) == (0.01, 10, 5, 0.5, 0.25, "adam", 1e-3, 1e-5, False, "geometric")


@pytest.mark.parametrize("space", ["geometric", "xyz"])
def test_gipso_matches_reference(space):
    kw = dict(top_p=0.1, k=6, mc=3)
    ref, ref_stats, spread = ref_gipso(lr=1e-2, space=space, **kw)
    # seeds are few, propagation labels more points, and some points reached by several seeds stay unlabelled
    assert all(0 < n_seed < n_lab < N_POINTS // 2 and n_multi > 0 for n_seed, n_lab, n_multi in spread), spread
    assert moved(ref, "backbone") and moved(ref, "heads.seg")
    stats: list[dict] = []
    ours = run_method("gipso", {"lr": 1e-2, "top_p": 0.1, "k": 6, "mc_samples": 3, "space": space}, stats=stats)
    compare(ours, ref, buffers=True)
    assert stats == ref_stats


def test_gipso_without_seeds_takes_no_step():
    """top_p = 0: every class's threshold is its smallest uncertainty, nothing lies strictly below it."""
    stats: list[dict] = []
    out = run_method("gipso", {"lr": 1e-2, "top_p": 0.0}, n_scenes=1, stats=stats)
    src = snapshot(tiny_model())
    assert all(torch.equal(out[0][2][k], src[k]) for k in src if "running" not in k)
    assert stats == [{"seeds": 0.0, "labelled": 0.0, "updated": 0.0}]


def test_reference_scenes_differ():
    """The three scenes are different inputs (a stream), so '3 scenes' is not one scene three times."""
    a, b = scene_batch(0), scene_batch(2)
    assert not torch.allclose(a.feat, b.feat) and math.isfinite(median_entropy())
