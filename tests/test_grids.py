"""Every shipped grid (``bench/grids/*.toml``) loads as a user gets it: with the selected-values file it
names or the latest one (``$TTT_BENCH_SELECTED``, which the test session sets to none, is unset here), every
name registered, every value checked, the selection's validation pairs clear of its targets, and each
cell with its own id. A method, dataset or parameter change that breaks a shipped grid fails here, by
the grid's name, without any test naming the grid."""

from __future__ import annotations

import pytest

from bench.grid import GRID_DIR, load_grid

GRIDS = sorted(p.stem for p in GRID_DIR.glob("*.toml"))


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
