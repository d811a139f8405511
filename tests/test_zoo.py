"""The model zoo: compact storage, the manifest check, the corrupt-file error, lookup by model key, and that the
shipped zoo covers every model the default grids need."""

from __future__ import annotations

import json

import pytest
import torch

from backbones import zoo
from backbones.model import ModelSpec, build_model
from bench.errors import BenchError
from bench.grid import GRID_DIR
from bench.zoo import SKIP_GRIDS


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [16, 24]})).state_dict()


def test_pack_is_compact_and_close():
    state = small_state()
    back = zoo.round_trip(state)
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype)
        if v.is_floating_point() and v.numel():
            # int8 per output channel: error at most half a quantisation step of the channel's range
            rows = v.reshape(v.shape[0], -1) if v.dim() >= 2 else v.reshape(1, -1)
            step = rows.abs().amax(1, keepdim=True) / 127 if v.numel() >= zoo.QUANT_MIN and v.dim() >= 2 else None
            err = (back[k] - v).reshape(rows.shape).abs()
            if step is not None:
                assert (err <= step * 0.5 + 1e-3 * step + 1e-8).all(), k
            else:
                assert torch.allclose(back[k], v, rtol=1e-3, atol=1e-4), k
        else:
            assert torch.equal(back[k], v)
    # packing a packed model changes nothing (the stored values are the reference model)
    again = zoo.round_trip(back)
    for k in back:
        assert torch.allclose(again[k], back[k], rtol=0, atol=1e-6), k


def _write_zoo(root, key="k" * 24, state=None):
    root.mkdir(parents=True, exist_ok=True)
    f = root / f"{key}.pt"
    zoo.write_model(f, key, state or small_state())
    manifest = {"format": zoo.FORMAT, "models": {key: {"file": f.name, "sha256": zoo.sha256(f),
                                                      "bytes": f.stat().st_size}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    zoo.clear_cache()
    return key, f


def test_verify_passes_then_names_corrupt_and_missing_files(tmp_path):
    key, f = _write_zoo(tmp_path)
    assert zoo.verify(tmp_path) == []
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    zoo.clear_cache()
    problems = zoo.verify(tmp_path)
    assert len(problems) == 1 and str(f) in problems[0] and "corrupt" in problems[0]
    assert f"zoo train --only {key} --replace" in problems[0] and "git checkout" in problems[0]
    with pytest.raises(BenchError, match="corrupt"):
        zoo.load_state(zoo.read_manifest(tmp_path)[key], key, tmp_path)
    f.unlink()
    zoo.clear_cache()
    problems = zoo.verify(tmp_path)
    assert len(problems) == 1 and "missing" in problems[0] and str(f) in problems[0]


def test_verify_names_a_zoo_over_its_size_budget(tmp_path, monkeypatch):
    key, f = _write_zoo(tmp_path)
    monkeypatch.setattr(zoo, "BUDGET_BYTES", f.stat().st_size - 1)
    problems = zoo.verify(tmp_path)
    assert len(problems) == 1 and "over the zoo's budget" in problems[0]
    monkeypatch.setattr(zoo, "BUDGET_BYTES", f.stat().st_size)
    assert zoo.verify(tmp_path) == []


def test_the_shipped_zoo_verifies_within_its_budget():
    """Every committed model file matches the manifest and the files together stay within 40 MB."""
    assert zoo.verify() == []


def test_load_state_returns_the_packed_weights(tmp_path):
    state = small_state(3)
    key, _ = _write_zoo(tmp_path, state=state)
    got = zoo.load_state(zoo.read_manifest(tmp_path)[key], key, tmp_path)
    want = zoo.round_trip(state)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_unreadable_manifest_is_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    zoo.clear_cache()
    with pytest.raises(BenchError, match="manifest.json.*git checkout"):
        zoo.read_manifest(tmp_path)
    zoo.clear_cache()


# every shipped grid on synthetic data (bench.zoo.SKIP_GRIDS are on real data): a fresh clone trains nothing for them
MUST_SHIP = tuple(sorted(p.stem for p in GRID_DIR.glob("*.toml") if p.stem not in SKIP_GRIDS))


@pytest.mark.parametrize("grid", MUST_SHIP)
def test_every_model_of_the_main_grids_is_shipped(grid):
    from bench.zoo import describe_model, zoo_cells

    shipped = zoo.read_manifest()
    missing = [f"{k} {describe_model(c)}" for k, c in zoo_cells([grid]).items() if k not in shipped]
    fix = "python -m bench zoo train --only KEY --replace"
    assert not missing, f"{grid} needs models the zoo does not ship ({fix}):\n" + "\n".join(missing)


def test_a_cell_with_a_shipped_key_uses_the_zoo_and_trains_nothing(tmp_path, monkeypatch):
    """The smoke grid's Source-Only cell loads the shipped model (checkpoint_cache = zoo) with an empty
    checkpoint cache, and its weights are the shipped ones."""
    from bench.grid import load_grid
    from bench.models import get_model

    monkeypatch.setenv("TTT_BENCH_CACHE", str(tmp_path))
    cell = next(c for c in load_grid("smoke").cells if c.method == "source")
    entry = zoo.read_manifest()[cell.model_key()]
    model, info = get_model(cell, use_zoo=True, root=tmp_path / "checkpoints")
    assert info["cache"] == "zoo" and not (tmp_path / "checkpoints").exists()
    state = zoo.load_state(entry, cell.model_key())
    assert all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in state.items())


def test_shipped_plain_models_meet_the_bar_and_open_set_models_stay_apart():
    """Every shipped plain spunet model meets the acceptance bar (in-domain mIoU >= 60, every class with
    >= 1 % of the points >= 20 IoU); a model trained without a class (open-set mode) is not a plain model:
    the per-class table and the transfer matrix read the plain one of its domain."""
    from bench.zoo import _plain, bar_problems, markdown

    models = zoo.read_manifest()
    assert bar_problems(models) == []
    held = [e for e in models.values() if e["identity"].get("holdout")]
    assert held and all("without" in e["model"] for e in held)  # the openset grid's models are shipped
    text = markdown(models)
    for e in models.values():
        if _plain(e["identity"]):
            d = e["identity"]["data"].replace("synth-", "s-")
            assert f"| {d} -> {d} | {100 * e['in_domain']['miou']:.1f} |" in text
    with_held = {k: {**e, "identity": {**e["identity"], "holdout": []}} for k, e in models.items()}
    assert bar_problems(with_held)  # counted as plain, a model without sofa misses the bar (sofa 0 IoU)
