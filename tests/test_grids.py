"""Every shipped grid (``bench/grids/*.toml``) loads as a user gets it: with the selected-values file it
names or the latest one (``$TTT_BENCH_SELECTED``, which the test session sets to none, is unset here), every
name registered, every value checked, the selection's validation pairs clear of its targets, and each
cell with its own id. A method, dataset or parameter change that breaks a shipped grid fails here, by
the grid's name, without any test naming the grid."""

from __future__ import annotations

import tomllib

import pytest

from bench.grid import GRID_DIR, Overrides, load_grid
from bench.selection import Selection, check_grid

GRIDS = sorted(p.stem for p in GRID_DIR.glob("*.toml"))
SELECTION_GRID = GRID_DIR / "select.toml"
TEST_GRIDS = [g for g in GRIDS if "select" not in tomllib.loads((GRID_DIR / f"{g}.toml").read_text())]


def test_there_are_shipped_grids():
    assert "smoke" in GRIDS and "id_ood" in GRIDS


@pytest.mark.parametrize("name", GRIDS)
def test_shipped_grid_loads(name, monkeypatch):
    monkeypatch.delenv("TTT_BENCH_SELECTED", raising=False)
    grid = load_grid(name)
    assert grid.cells, f"grid {name} expands to no cell"
    ids = [c.cell_id for c in grid.cells]
    assert len(set(ids)) == len(ids), f"grid {name}: two cells share an id"
    assert all(c.grid == grid.name for c in grid.cells)


def test_default_selection_grid_validates_on_val_splits_only():
    raw = tomllib.loads(SELECTION_GRID.read_text())
    assert raw["select"]["for_grids"] == "all"
    assert any(seg["dataset"] == "synth-val" for v in raw["streams"] for seg in v["target"])
    assert all(seg["split"] == "val" for v in raw["streams"] for seg in v["target"])
    assert len(TEST_GRIDS) >= 5 and "select" not in TEST_GRIDS


@pytest.mark.parametrize("name", TEST_GRIDS)
def test_shipped_grid_reads_no_validation_pair_of_the_selection_grid(name):
    """The default selection grid's validation pairs conflict with no shipped test grid (what load_grid
    checks for every grid once a selection file exists); synth-val may not be registered yet, so the
    rules run on the selection grid file's streams, before any selection is made."""
    raw = tomllib.loads(SELECTION_GRID.read_text())
    validation = [{"source": s["source"], "target": s["target"]} for s in raw["streams"]]
    fake = Selection(SELECTION_GRID, "v0", "now", validation, raw["seeds"], {"tent": {"lr": 0.01}})
    g = load_grid(name, Overrides(selected="none"))
    check_grid(fake, g.all_cells, g.name)
