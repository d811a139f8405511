"""Label-free selection criteria (issue 30 item 7): each per-scene value against an independent
computation, the label-free choice, and the labelled-vs-label-free table."""

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch

from bench.criteria import agreement, choose, entropy, kd_loss, selection_table, snd
from bench.errors import BenchError


def test_entropy_uniform_and_confident():
    assert entropy(torch.zeros(5, 4)) == pytest.approx(math.log(4))
    assert entropy(torch.tensor([[50.0, 0, 0], [0, 50.0, 0]])) == pytest.approx(0.0, abs=1e-12)
    p = np.array([0.7, 0.2, 0.1])
    assert entropy(torch.tensor(np.log(p))[None]) == pytest.approx(-(p * np.log(p)).sum())


def test_agreement():
    assert agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def _snd_reference(logits: np.ndarray, t: float = 0.05) -> float:
    """SND by the paper's definition, point by point in float64 (no torch)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    n = len(p)
    ents = []
    for i in range(n):
        s = np.array([p[i] @ p[j] / t for j in range(n) if j != i])
        q = np.exp(s - s.max())
        q /= q.sum()
        ents.append(-(q * np.log(q)).sum())
    return float(np.mean(ents))


def test_snd_against_the_definition_and_its_direction():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (40, 5))
    assert snd(torch.tensor(logits, dtype=torch.float32), seed=1, points=1000) == pytest.approx(
        _snd_reference(logits.astype(np.float32).astype(np.float64)), rel=1e-6)
    # a subsample of 16 points is the definition on those points
    idx = np.sort(np.random.default_rng(3).choice(40, 16, replace=False))
    assert snd(torch.tensor(logits), seed=3, points=16) == pytest.approx(_snd_reference(logits[idx]), rel=1e-9)
    # outputs in two tight clusters are denser (higher SND) than spread-out ones
    tight = np.repeat(np.eye(5)[:2] * 10, 20, axis=0) + rng.normal(0, 0.01, (40, 5))
    assert snd(torch.tensor(tight), 0, 1000) > snd(torch.tensor(logits), 0, 1000)
    assert math.isnan(snd(torch.zeros(1, 3), 0))


class _KD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(3)
        self.heads = torch.nn.ModuleDict({"kd": torch.nn.Identity()})

    def forward(self, x, heads):
        return {"kd": self.bn(x)}


def test_kd_loss_is_the_distillation_loss_and_leaves_bn_statistics():
    from backbones.losses import distill_loss

    m = _KD().train()  # batch statistics that would update the running ones
    x = torch.randn(20, 3)
    feat, mask = torch.randn(20, 3), torch.rand(20) > 0.3
    before = m.bn.running_mean.clone()
    got = kd_loss(m, x, feat, mask, "cosine")
    assert torch.equal(m.bn.running_mean, before)
    m2 = _KD().train()
    with torch.no_grad():
        want = float(distill_loss(m2(x, ("kd",))["kd"], feat, mask, "cosine"))
    assert got == pytest.approx(want)
    assert math.isnan(kd_loss(m, x, feat, torch.zeros(20, dtype=torch.bool), "cosine"))
    assert math.isnan(kd_loss(m, x, None, None, "cosine"))


@dataclass
class _Cell:
    cell_id: str


@dataclass
class _Cand:
    method: str
    params: dict
    fixed: dict = field(default_factory=dict)
    cells: list = field(default_factory=list)


def _rows(values: dict[str, tuple[float, float, float]]):
    rows = [{"cell_id": k, "crit_entropy": e, "crit_snd": s, "steps_per_scene": st, "adapt_s_per_scene": 0.1,
             "miou": 0.5} for k, (e, s, st) in values.items()]
    return pd.DataFrame(rows).set_index("cell_id")


def test_choose_by_criterion_without_labels():
    cands = [_Cand("tent", {"lr": 1e-3, "steps": 3}, cells=[_Cell("a1"), _Cell("a2")]),
             _Cand("tent", {"lr": 1e-2, "steps": 1}, cells=[_Cell("b1"), _Cell("b2")]),
             _Cand("tent", {"lr": 1e-1, "steps": 1}, cells=[_Cell("c1"), _Cell("c2")])]
    rows = _rows({"a1": (0.2, 3.0, 3), "a2": (0.4, 3.0, 3), "b1": (0.3, 2.0, 1), "b2": (0.3, 2.0, 1),
                  "c1": (0.5, 1.0, 1), "c2": (np.nan, 1.0, 1)})
    r = choose(cands, rows, "entropy")["tent"]
    # a and b tie at 0.3 mean entropy: the fewer steps (b) wins
    assert r["selected"] == {"lr": 1e-2, "steps": 1} and r["score"] == pytest.approx(0.3)
    assert choose(cands, rows, "snd")["tent"]["selected"] == {"lr": 1e-3, "steps": 3}  # highest SND
    rows["miou"] = [0.9, 0.9, 0.1, 0.1, 0.1, 0.1]  # labels change nothing
    assert choose(cands, rows, "entropy")["tent"]["selected"] == {"lr": 1e-2, "steps": 1}
    out = choose(cands, rows, "kd_loss")["tent"]  # no crit_kd_loss column: nothing to choose by
    assert out["selected"] == {} and "no candidate" in out["outcome"]
    with pytest.raises(BenchError, match="--criterion 'accuracy' unknown"):
        choose(cands, rows, "accuracy")


def _cell(cid, params, split, miou, ent, seed=0):
    return {"cell_id": cid, "status": "ok", "method": "tent", "label": "TENT", "params": json.dumps(params),
            "stream": json.dumps([{"dataset": "d", "split": split, "scenes": 2}]), "miou": miou, "crit_entropy": ent,
            "crit_agreement": 1 - ent, "crit_snd": np.nan, "crit_kd_loss": np.nan, "seed": seed}


def test_selection_table_picks_and_gaps():
    a, b, c = {"lr": 1}, {"lr": 2}, {"lr": 3}
    cells = pd.DataFrame([
        _cell("va", a, "val", 0.50, 0.9), _cell("vb", b, "val", 0.40, 0.5), _cell("vc", c, "val", 0.30, 0.1),
        _cell("ta", a, "test", 0.30, 0.9), _cell("tb", b, "test", 0.45, 0.5), _cell("tc", c, "test", 0.20, 0.1),
        _cell("ta1", a, "test", 0.32, 0.9, 1), _cell("tb1", b, "test", 0.45, 0.5, 1),
        _cell("tc1", c, "test", 0.22, 0.1, 1),
    ])
    t = selection_table(cells).set_index("criterion")
    assert set(t.index) == {"labelled", "entropy", "agreement", "oracle"}  # snd / kd_loss: NaN throughout
    assert json.loads(t.at["labelled", "params"]) == a and json.loads(t.at["entropy", "params"]) == c
    assert json.loads(t.at["agreement", "params"]) == c and json.loads(t.at["oracle", "params"]) == b
    assert t.at["labelled", "test_miou"] == pytest.approx(0.31) and t.at["labelled", "gap"] == 0
    assert t.at["entropy", "gap"] == pytest.approx(0.31 - 0.21)
    assert t.at["oracle", "gap"] == pytest.approx(0.31 - 0.45)
    assert t.at["entropy", "validation"] == pytest.approx(0.1)
    assert selection_table(cells[cells["stream"].str.contains('"val"')]).empty  # no test cells


def test_select_refuses_an_unknown_criterion_before_any_work(tmp_path):
    from bench.select import run_selection

    with pytest.raises(BenchError, match="--criterion 'accuracy' unknown; valid: entropy, agreement, snd, kd_loss"):
        run_selection(runs=tmp_path / "runs", criterion="accuracy")
    assert not (tmp_path / "runs").exists()
