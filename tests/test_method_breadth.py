"""Reference tests for the further baselines (MEMO, SHOT-IM, LAME, T3A, DeYO, RoTTA, ROID).

Each test writes the algorithm straight from the paper / official code in plain torch (no project
method class), runs it beside the registered method on the same tiny spunet and the same tiny
scenes, and compares the adapted parameters and the predictions after 1 and 3 scenes. Both sides
run the same arithmetic in a possibly different order, and the order of a float sum also differs
between CPU types and thread counts (BLAS kernels), so the tests compute in float64 (the tiny
model is initialised in float32, as before, and converted; the scenes' float32 values are exact in
float64), where rounding stays many orders below the tolerance, 1e-5 absolute plus 1e-5 relative on
parameters and logits (logits reach ~20 where a test sharpens the model), on any CPU: in float32 an
entropy filter or a pseudo-label flips on a rounding difference on another CPU (as MM-TTA's did on an
AMD EPYC). The adaptations move parameters by 1e-3 or more with the test learning rates, so a
semantic drift shows far above it. T3A alone stays in float32: the method builds its one-hot
supports with ``.float()``; its supports and prototypes are sums of 0/1 weights times features, and
its test learns nothing by gradient.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbones.batch import PointBatch, make_batch
from backbones.model import ModelSpec, build_model
from bench.data.scene import Scene
from bench.registry import make_config
from methods import METHODS, SceneInput
from methods.augment import augment_batch
from methods.base import BN

ATOL, RTOL = 1e-5, 1e-5
FEATURES = ("color", "normal")


@pytest.fixture(autouse=True)
def float64(request):
    """Compute in float64 (see the module docstring); the tests in ``FLOAT32`` keep float32."""
    old = torch.get_default_dtype()
    DTYPE[0] = torch.float32 if request.node.name in FLOAT32 else torch.float64
    torch.set_default_dtype(DTYPE[0])
    yield
    torch.set_default_dtype(old)
    DTYPE[0] = torch.float32


DTYPE = [torch.float32]  # the dtype the current test computes in
FLOAT32 = {"test_t3a_matches_reference"}  # module docstring


def _batch(i: int) -> PointBatch:
    """Scene i as a batch in the test's dtype."""
    b = make_batch([SCENES[i]], FEATURES)
    return PointBatch(b.coord.to(DTYPE[0]), b.feat.to(DTYPE[0]), b.batch, b.num_scenes)


def _scene(seed: int) -> Scene:
    """A small room corner: a floor, a wall and a box, random colours per part (about 700 points)."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(0, 2, (300, 2)), np.zeros(300)]
    wall = np.c_[rng.uniform(0, 2, 250), np.full(250, 2.0), rng.uniform(0, 1.5, 250)]
    box = np.c_[rng.uniform(0.5, 1.0, (150, 2)), rng.uniform(0, 0.5, 150)]
    coord = np.concatenate([floor, wall, box]).astype(np.float32)
    label = np.r_[np.ones(300), np.zeros(250), np.full(150, 5)].astype(np.int64)
    base = rng.uniform(0, 1, (3, 3))
    color = (base[np.r_[np.zeros(300, int), np.ones(250, int), np.full(150, 2)]]
             + rng.normal(0, 0.05, (700, 3))).clip(0, 1).astype(np.float32)
    normal = np.where(label[:, None] == 1, [0, 0, 1], np.where(label[:, None] == 0, [0, -1, 0], [1, 0, 0]))
    return Scene(f"s{seed}", "test", coord, color, label, normal.astype(np.float32))


SCENES = [_scene(s) for s in range(3)]


def _model(sharpen: float = 1.0):
    """Tiny spunet (channels 8, 16) with non-trivial BN running statistics; ``sharpen`` scales the
    last label layer so an untrained model makes confident predictions (for entropy filters)."""
    torch.manual_seed(0)
    m = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]}, features=FEATURES))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, BN):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        m.heads["seg"][2].weight.mul_(sharpen)
        m.heads["seg"][2].bias.mul_(sharpen)
    return m.to(DTYPE[0]).eval()


def _input(i: int) -> SceneInput:
    return SceneInput(_batch(i), i, torch.Generator().manual_seed(100 + i))


def _gen(i: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + i)


def _method(name, model, **params):
    entry = METHODS.get(name)
    return entry.factory(model=model, cfg=make_config(entry, params, "method"))


def _bn(model, mode: str):
    """Plain BN switch for the references: 'batch' statistics without touching the stored ones, or 'eval'."""
    for m in model.modules():
        if isinstance(m, BN):
            m.train(mode == "batch")
            m.track_running_stats = mode != "batch"


def _assert_close(a: torch.nn.Module, b: torch.nn.Module, what: str):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(sa[k], sb[k], atol=ATOL, rtol=RTOL), f"{what}: {k} differs by " \
                f"{(sa[k] - sb[k]).abs().max():.2e}"


def _run_pair(name, params, ref_init, ref_scene, sharpen=1.0, moved=True):
    """Run the registered method and the reference on scenes 0, 1, 2 (resetting before each scene
    when the method is episodic, as the runner does); compare after scenes 1 and 3."""
    model = _model(sharpen)
    source = copy.deepcopy(model.state_dict())
    ref = ref_init(copy.deepcopy(model))  # a dict holding at least the reference's "model"
    method = _method(name, model, **params)
    for i in range(3):
        if method.cfg.episodic:
            method.reset()
        inp = _input(i)
        method.adapt(inp)
        pred = method.predict(inp)
        ref_pred = ref_scene(ref, i)
        if i in (0, 2):  # logits scaled by `sharpen` carry float-order differences scaled alike
            assert torch.allclose(pred, ref_pred, atol=ATOL * sharpen, rtol=RTOL), \
                f"{name} scene {i}: predictions differ by {(pred - ref_pred).abs().max():.2e}"
            _assert_close(model, ref["model"], f"{name} scene {i}")
    if moved:  # the comparison is not vacuous: the method changed the model
        assert any(not torch.equal(v, source[k]) for k, v in model.state_dict().items())
    return method, ref


# ---------------------------------------------------------------- MEMO
def test_memo_matches_reference():
    lr, n_aug = 0.05, 3

    def init(model):
        return {"model": model, "source": copy.deepcopy(model.state_dict())}

    def scene(ref, i):
        model = ref["model"]
        model.load_state_dict(ref["source"])  # episodic
        params = list(model.backbone.parameters()) + list(model.heads["seg"].parameters())
        opt = torch.optim.SGD(params, lr=lr)  # official: plain SGD
        _bn(model, "batch")
        b, g = _batch(i), _gen(i)
        copies = [augment_batch(b, FEATURES, g) for _ in range(n_aug)]
        big = PointBatch(torch.cat([c.coord for c in copies]), torch.cat([c.feat for c in copies]),
                         torch.cat([torch.full_like(c.batch, k) for k, c in enumerate(copies)]), n_aug)
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            probs = model(big)["seg"].softmax(1).view(n_aug, b.coord.shape[0], -1)
            p_bar = probs.mean(0)  # the marginal over augmentations, per point
            loss = -(p_bar * p_bar.log()).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return model(b)["seg"]

    _run_pair("memo", {"lr": lr, "n_aug": n_aug, "steps": 1}, init, scene)


# ---------------------------------------------------------------- SHOT-IM
def test_shot_im_matches_reference():
    lr = 0.5

    def init(model):  # SHOT: backbone at 0.1 x lr, bottleneck at lr, classifier frozen
        backbone, bottleneck = list(model.backbone.parameters()), list(model.heads["seg"][0].parameters())
        for p in backbone + bottleneck:
            p.requires_grad_(True)
        opt = torch.optim.SGD([{"params": backbone, "lr": lr * 0.1}, {"params": bottleneck, "lr": lr}],
                              lr=lr, momentum=0.9, weight_decay=1e-3, nesterov=True)
        return {"model": model, "opt": opt}

    def scene(ref, i):
        model, opt = ref["model"], ref["opt"]
        b = _batch(i)
        for m in model.modules():  # SHOT: BN in train mode, running statistics updated
            if isinstance(m, BN):
                m.train()
                m.track_running_stats, m.momentum = True, 0.1
        with torch.enable_grad():
            p = model(b)["seg"].softmax(1)
            ent = -(p * torch.log(p + 1e-5)).sum(1).mean()
            p_bar = p.mean(0)
            loss = ent + (p_bar * torch.log(p_bar + 1e-5)).sum()  # entropy - diversity
            opt.zero_grad()
            loss.backward()
            opt.step()
        _bn(model, "eval")
        with torch.no_grad():
            return model(b)["seg"]

    method, _ = _run_pair("shot_im", {"lr": lr}, init, scene)
    # the classifier (last label layer) stayed frozen
    assert torch.equal(method.model.heads["seg"][2].weight, _model().heads["seg"][2].weight)


# ---------------------------------------------------------------- LAME
def _penultimate(model, b):
    return model.heads["seg"][:-1](model.backbone(b))


def test_lame_matches_reference():
    knn, lam = 5, 1.0

    def init(model):
        return {"model": model}

    def scene(ref, i):  # the official algorithm with a dense affinity, on the distinct feature rows
        model = ref["model"]
        _bn(model, "eval")
        with torch.no_grad():
            z = _penultimate(model, _batch(i))
            nodes, inv = torch.unique(z, dim=0, return_inverse=True)
            unary = -torch.log(model.heads["seg"][-1](nodes).softmax(1) + 1e-10)
            x = F.normalize(nodes, p=2, dim=-1)
            dist = torch.norm(x.unsqueeze(0) - x.unsqueeze(1), dim=-1, p=2)
            idx = dist.topk(knn + 1, -1, largest=False).indices[:, 1:]
            kernel = torch.zeros(len(x), len(x)).scatter_(-1, idx, 1.0)
            y, old = (-unary).softmax(-1), float("inf")
            for it in range(100):
                pairwise = lam * kernel.matmul(y)
                y = (-unary + pairwise).softmax(-1)
                e = (unary * y - lam * pairwise * y + y * torch.log(y.clip(1e-20))).sum().item()
                if it > 1 and abs(e - old) <= 1e-8 * abs(old):
                    break
                old = e
            return torch.log(y.clip(1e-20))[inv]

    method, ref = _run_pair("lame", {"knn": knn, "lam": lam}, init, scene, moved=False)
    # the adjustment is not vacuous: LAME changes some labels of the source model
    inp = _input(2)
    with torch.no_grad():
        source_pred = method.model(inp.batch)["seg"].argmax(1)
    assert (method.predict(inp).argmax(1) != source_pred).any()
    # stateless: adapting changes nothing, the prediction depends on the scene alone
    before = method.predict(inp)
    assert method.adapt(_input(0)) == 0 and torch.equal(method.predict(inp), before)


# ---------------------------------------------------------------- T3A
def test_t3a_matches_reference():
    filter_k = 4

    def ent(logits):
        return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)

    def init(model):  # official: warm-up supports are the classifier's weight rows
        fc = model.heads["seg"][-1]
        with torch.no_grad():
            w = fc.weight.clone()
            p = fc(w)
        return {"model": model, "s": w, "y": F.one_hot(p.argmax(1), 12).float(), "e": ent(p)}

    def scene(ref, i):
        model, fc = ref["model"], ref["model"].heads["seg"][-1]
        _bn(model, "eval")
        with torch.no_grad():
            z = _penultimate(model, _batch(i))
            nodes = torch.unique(z, dim=0)
            p = fc(nodes)
            s = torch.cat([ref["s"], nodes])
            y = torch.cat([ref["y"], F.one_hot(p.argmax(1), 12).float()])
            e = torch.cat([ref["e"], ent(p)])
            y_hat, keep = y.argmax(1), []
            for c in range(12):  # per class, the filter_k supports of lowest entropy
                idx = torch.where(y_hat == c)[0]
                keep.append(idx[torch.sort(e[idx], stable=True).indices][:filter_k])
            keep = torch.cat(keep)
            ref["s"], ref["y"], ref["e"] = s[keep], y[keep], e[keep]
            w = F.normalize(ref["s"], dim=1).T @ ref["y"]
            return z @ F.normalize(w, dim=0)

    method, ref = _run_pair("t3a", {"filter_k": filter_k}, init, scene, moved=False)
    assert torch.equal(method.supports, ref["s"])
    # supports came from the scenes, and at most filter_k per class were kept
    assert method.supports.shape[0] > 12 and method.labels.sum(0).max() <= filter_k


# ---------------------------------------------------------------- DeYO
def test_deyo_column_shuffle_keeps_columns_rigid():
    from methods.deyo import shuffle_columns

    b = _batch(0)
    out = shuffle_columns(b, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out.coord[:, 2], b.coord[:, 2]) and torch.equal(out.feat, b.feat)
    moved = (out.coord[:, :2] - b.coord[:, :2]).abs().sum(1) > 1e-6
    assert moved.float().mean() > 0.5  # most columns moved
    # each column is translated rigidly: one offset per column
    lo, size = b.coord[:, :2].min(0).values, (b.coord[:, :2].max(0).values - b.coord[:, :2].min(0).values) / 4
    cell = ((b.coord[:, :2] - lo) / size).floor().long().clamp(0, 3)
    cid = cell[:, 0] * 4 + cell[:, 1]
    off = out.coord[:, :2] - b.coord[:, :2]
    for c in cid.unique():
        assert torch.allclose(off[cid == c], off[cid == c][0:1].expand_as(off[cid == c]), atol=1e-5)


def test_deyo_matches_reference():
    lr, patch_len = 0.05, 4
    margin, margin_e0, plpd_thr = 0.5 * math.log(12), 0.4 * math.log(12), 0.3 * (11 / 12) / (999 / 1000)
    kept = []

    def shuffled(b, g):  # columns of the xy bounding box, column c moved onto column perm[c]
        xy = b.coord[:, :2]
        lo = xy.min(0).values
        size = (xy.max(0).values - lo) / patch_len
        cell = ((xy - lo) / size).floor().long().clamp(0, patch_len - 1)
        perm = torch.argsort(torch.rand(patch_len ** 2, generator=g))
        dest = perm[cell[:, 0] * patch_len + cell[:, 1]]
        dest_xy = torch.stack([dest // patch_len, dest % patch_len], 1)
        coord = b.coord.clone()
        coord[:, :2] = xy + (dest_xy.float() * size - cell.float() * size)
        return PointBatch(coord, b.feat, b.batch, 1)

    def init(model):
        # official collect_params (as SAR's): the norm layers except the top ones; 3D rule: the last 25% of
        # the BN layers in the order a forward pass first calls them stay frozen
        order = []
        hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod) if mod not in order else None)
                 for m in model.backbone.modules() if isinstance(m, BN)]
        with torch.no_grad():
            model.backbone(_batch(0))  # in the test's dtype
        for h in hooks:
            h.remove()
        assert len(order) == sum(isinstance(m, BN) for m in model.backbone.modules())
        frozen = round(0.25 * len(order))
        assert frozen > 0
        params = [p for m in order[:len(order) - frozen] for p in (m.weight, m.bias)]
        for p in params:
            p.requires_grad_(True)
        return {"model": model, "opt": torch.optim.Adam(params, lr=lr), "frozen": order[len(order) - frozen:],
                "frozen_init": [m.weight.detach().clone() for m in order[len(order) - frozen:]]}

    def scene(ref, i):
        model, opt = ref["model"], ref["opt"]
        _bn(model, "batch")
        b, g = _batch(i), _gen(i)
        with torch.enable_grad():
            out = model(b)["seg"]
            ent = -(out.softmax(1) * out.log_softmax(1)).sum(1)
            f1 = torch.where(ent < margin)[0]
            with torch.no_grad():
                out_prime = model(shuffled(b, g))["seg"]
            p, p_prime = out[f1].softmax(1), out_prime[f1].softmax(1)
            c = p.argmax(1).reshape(-1, 1)
            plpd = (torch.gather(p, 1, c) - torch.gather(p_prime, 1, c)).reshape(-1)
            f2 = torch.where(plpd > plpd_thr)[0]
            kept.append((len(b.coord), len(f1), len(f2)))
            if len(f2):
                e, d = ent[f1][f2], plpd[f2].detach()
                coeff = 1.0 / torch.exp(e.detach() - margin_e0) + 1.0 / torch.exp(-1.0 * d)
                opt.zero_grad()
                (e * coeff).mean(0).backward()
                opt.step()
        with torch.no_grad():
            return model(b)["seg"]

    method, ref = _run_pair("deyo", {"lr": lr}, init, scene, sharpen=20.0)
    # both filters select: some points pass the entropy filter, and PLPD removes some of those
    assert any(0 < f2 < f1 for n, f1, f2 in kept), kept
    # the top layers stayed frozen on both sides, the others moved
    assert all(torch.equal(m.weight, w) for m, w in zip(ref["frozen"], ref["frozen_init"]))
    assert len(method.frozen_top) == len(ref["frozen"])


# ---------------------------------------------------------------- RoTTA
class _RefRBN(torch.nn.BatchNorm1d):
    """RoTTA's RobustBN1d as in the official code (global statistics replaced after each train forward)."""

    def forward(self, x):
        if self.training:
            b_var, b_mean = torch.var_mean(x, dim=0, unbiased=False, keepdim=False)
            mean = (1 - self.momentum) * self.running_mean + self.momentum * b_mean
            var = (1 - self.momentum) * self.running_var + self.momentum * b_var
            self.running_mean, self.running_var = copy.deepcopy(mean.detach()), copy.deepcopy(var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean.view(1, -1)) / torch.sqrt(var.view(1, -1) + self.eps) * self.weight + self.bias


def test_rotta_matches_reference():
    lr, cap, freq, nu, alpha, block = 0.05, 6, 4, 0.2, 0.05, 0.5
    updates = []

    def score(age, unc):  # official heuristic, lambda_t = lambda_u = 1
        return 1 / (1 + math.exp(-age / cap)) + unc / math.log(12)

    def remove_from(mem, classes, base):
        best = None
        for c in classes:
            for j, it in enumerate(mem[c]):
                sc = score(it["age"], it["unc"])
                if best is None or sc >= best[0]:
                    best = (sc, c, j)
        if best is None:
            return True
        if best[0] > base:
            mem[best[1]].pop(best[2])
            return True
        return False

    def add_instance(mem, x, cls, unc):
        base = score(0, unc)
        if len(mem[cls]) < cap / 12:
            if sum(len(m) for m in mem) < cap:
                ok = True
            else:
                most = max(len(m) for m in mem)
                ok = remove_from(mem, [c for c in range(12) if len(mem[c]) == most], base)
        else:
            ok = remove_from(mem, [cls], base)
        if ok:
            mem[cls].append({"x": x, "unc": unc, "age": 0})
        for m in mem:
            for it in m:
                it["age"] += 1

    def init(model):
        for m in model.modules():
            if isinstance(m, BN):
                m.__class__ = _RefRBN
                m.momentum = alpha
        params = [p for m in model.modules() if isinstance(m, BN) for p in (m.weight, m.bias)]
        for p in params:
            p.requires_grad_(True)
        teacher = copy.deepcopy(model)
        return {"model": model, "teacher": teacher, "opt": torch.optim.Adam(params, lr=lr),
                "mem": [[] for _ in range(12)], "count": 0}

    def update(ref, g):
        model, teacher = ref["model"], ref["teacher"]
        items = [it for m in ref["mem"] for it in m]
        bank = PointBatch(torch.cat([it["x"].coord for it in items]), torch.cat([it["x"].feat for it in items]),
                          torch.cat([torch.full((len(it["x"].coord),), k) for k, it in enumerate(items)]), len(items))
        strong = augment_batch(bank, FEATURES, g)
        model.train()
        teacher.train()
        with torch.no_grad():
            t_out = teacher(bank)["seg"]
        with torch.enable_grad():
            s_out = model(strong)["seg"]
            ce = -(t_out.softmax(1) * s_out.log_softmax(1)).sum(1)
            per = torch.stack([ce[bank.batch == k].mean() for k in range(len(items))])
            ages = torch.tensor([it["age"] / cap for it in items])
            loss = (per * (torch.exp(-ages) / (1 + torch.exp(-ages)))).mean()
            ref["opt"].zero_grad()
            loss.backward()
            ref["opt"].step()
        with torch.no_grad():
            for tp, p in zip(teacher.parameters(), model.parameters()):
                tp.data = (1 - nu) * tp.data + nu * p.data
        model.eval()
        teacher.eval()

    def scene(ref, i):
        teacher = ref["teacher"]
        b, g = _batch(i), _gen(i)
        with torch.no_grad():
            p = teacher(b)["seg"].softmax(1)
            pl, ent = p.argmax(1), -(p * torch.log(p + 1e-6)).sum(1)
        cell = ((b.coord[:, :2] - b.coord[:, :2].min(0).values) / block).floor().long()
        for c in torch.unique(cell, dim=0):  # lexicographic (x, y) order
            pts = torch.where((cell == c).all(1))[0]
            if len(pts) < 16:
                continue
            x = PointBatch(b.coord[pts], b.feat[pts], torch.zeros(len(pts), dtype=torch.long), 1)
            add_instance(ref["mem"], x, int(torch.bincount(pl[pts], minlength=12).argmax()), ent[pts].mean().item())
            ref["count"] += 1
            if ref["count"] % freq == 0:
                update(ref, g)
                updates.append(i)
        with torch.no_grad():
            return teacher(b)["seg"]

    params = {"lr": lr, "memory_size": cap, "update_frequency": freq, "nu": nu, "alpha": alpha, "block_size": block}
    method, ref = _run_pair("rotta", params, init, scene)
    _assert_close(method.teacher, ref["teacher"], "rotta teacher")
    assert len(updates) >= 3 and method.memory.occupancy() == sum(len(m) for m in ref["mem"])
    # the bank is full and class-balanced eviction has run
    assert method.memory.occupancy() <= cap and method.seen > cap


# ---------------------------------------------------------------- ROID
def test_roid_matches_reference():
    lr, m_src, m_probs, temp = 0.05, 0.99, 0.9, 1 / 3
    masked = []

    def init(model):
        params = [p for m in model.backbone.modules() if isinstance(m, BN) for p in (m.weight, m.bias)]
        for p in params:
            p.requires_grad_(True)
        return {"model": model, "opt": torch.optim.Adam(params, lr=lr), "params": params,
                "src": [p.detach().clone() for p in params], "ema": torch.ones(12) / 12}

    def correct(out):  # official prior correction
        prior = out.softmax(1).mean(0)
        smooth = max(1 / out.shape[0], 1 / out.shape[1]) / torch.max(prior)
        return out * ((prior + smooth) / (1 + smooth * out.shape[1]))

    def scene(ref, i):
        model = ref["model"]
        _bn(model, "batch")
        b, g = _batch(i), _gen(i)
        with torch.enable_grad():
            out = model(b)["seg"]
            with torch.no_grad():
                wd = 1 - F.cosine_similarity(ref["ema"].unsqueeze(0), out.softmax(1), dim=1)
                wd = (wd - wd.min()) / (wd.max() - wd.min())
                mask = wd < wd.mean()
                wc = (out.softmax(1) * out.log_softmax(1)).sum(1)  # minus the entropy
                wc = (wc - wc.min()) / (wc.max() - wc.min())
                w = torch.exp(wd * wc / temp)
                w[mask] = 0.0
                ref["ema"] = m_probs * ref["ema"] + (1 - m_probs) * out.softmax(1).mean(0)
            pr = torch.clamp(out.softmax(1), min=0.0, max=0.99)
            slr = -(pr * torch.log(pr / (torch.ones_like(pr) - pr) + 1e-5)).sum(1)
            loss = (slr * w)[~mask].sum() / len(out)
            aug = model(augment_batch(b, FEATURES, g))["seg"][~mask]
            o = out[~mask]
            sce = -0.5 * (o.softmax(1) * aug.log_softmax(1)).sum(1) - 0.5 * (aug.softmax(1) * o.log_softmax(1)).sum(1)
            loss = loss + (sce * w[~mask]).sum() / len(out)
            ref["opt"].zero_grad()
            loss.backward()
            ref["opt"].step()
            masked.append(float(mask.float().mean()))
        with torch.no_grad():
            for p, s in zip(ref["params"], ref["src"]):
                p.data = m_src * p.data + (1 - m_src) * s
            return correct(model(b)["seg"])

    method, ref = _run_pair("roid", {"lr": lr}, init, scene)
    assert torch.allclose(method.probs_ema, ref["ema"], atol=ATOL)
    assert all(0 < f < 1 for f in masked)  # the diversity mask selects part of the scene
