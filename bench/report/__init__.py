"""``python -m bench report``: tables (Markdown and LaTeX) and figures (PNG and SVG) from a results folder.

Everything is made from what the results hold, so one command serves every grid and a new method
needs no edit here: rows are identified by their configuration columns and their role
(``bench/report/frame.py``), tables are built once and rendered to both formats
(``bench/report/tables.py``), figures come from a registry of (applies, draw) entries
(``bench/report/figures.py``), statistics from ``bench/stats.py``.

Written under ``FOLDER/report/``: ``table_main`` (mIoU with the paired changes against Source-Only
and BN-Adapt, the not-significantly-worse group in bold, structure / object mIoU, ECE and mean
ranks), ``table_cost``, ``table_cost_matched`` (rows compared within bands of adaptation time),
``table_stats`` (bootstrap intervals and paired tests against Source-Only and BN-Adapt), and every
figure whose entry applies (a reliability diagram where the scenes carry calibration histograms);
where the rows allow them, ``table_visits`` (per-visit mIoU of streams that revisit a domain: recurring,
constant difficulty), ``table_shift_corruption`` and ``table_openset`` (open-set rows: known-class mIoU,
unknown-point AUROC and FPR95) and ``table_label_free`` (labelled vs label-free selection), in
``bench/report/scenarios.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bench.report.figures import figures
from bench.report.frame import Results, load
from bench.report.scenarios import label_free_table, openset_table, shift_corruption_table, table_visits
from bench.report.tables import (
    Table,
    column_stats,
    cost_matched_table,
    cost_table,
    main_table,
    modal_table,
    stats_table,
)
from bench.store import MARKER

log = logging.getLogger(__name__)


def write_table(table: Table, out: Path, name: str) -> list[Path]:
    md, tex = out / f"{name}.md", out / f"{name}.tex"
    md.write_text(table.to_markdown())
    tex.write_text(table.to_latex())
    return [md, tex]


def make_report(folder: Path) -> list[Path]:
    """Write every table and applicable figure for the results in ``folder`` under ``folder/report``.

    Figures are written as PNG and SVG, except in a committed reference folder (one holding the
    ``REFERENCE`` marker): there PNG only, and SVGs left from earlier reports are removed, to keep the
    repository small. A copy of a reference folder without its marker reports with SVGs again."""
    folder = Path(folder)
    res = load(folder)
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    cs = column_stats(res)
    tables = {"table_main": main_table(res, cs), "table_cost": cost_table(res),
              "table_cost_matched": cost_matched_table(res, cs), "table_stats": stats_table(res, cs),
              "table_modal": modal_table(res), "table_visits": table_visits(res),
              "table_shift_corruption": shift_corruption_table(res), "table_openset": openset_table(res),
              "table_label_free": label_free_table(res)}
    written: list[Path] = []
    for name, table in tables.items():
        if table is not None:
            written += write_table(table, out, name)
    reference = (folder / MARKER).exists()
    if reference:
        for old in out.glob("*.svg"):
            old.unlink()
    written += figures(res, out, ("png",) if reference else ("png", "svg"))
    log.debug("wrote %d report files under %s", len(written), out)
    return written


__all__ = ["Results", "Table", "column_stats", "cost_matched_table", "cost_table", "figures", "load", "main_table",
           "make_report", "stats_table", "write_table"]
