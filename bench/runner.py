"""The runner: expand a grid, skip finished cells, run the rest on an executor, append each result."""

from __future__ import annotations

import json
import logging
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.env import environment
from bench.errors import BenchError
from bench.executors import cpu_cores, display, make_executor, row_name
from bench.grid import Grid, filter_cells
from bench.progress import progress
from bench.resources import data_key
from bench.spec import Cell
from bench.store import ResultsStore

log = logging.getLogger(__name__)


def select(grid: Grid, only: list[str] | None) -> list[Cell]:
    """The grid's selected cells, further filtered by ``only`` (KEY=VALUE; ``bench.grid.filter_cells``)."""
    try:
        return filter_cells(grid.cells, list(only or []))
    except BenchError as e:
        raise BenchError(f"grid '{grid.name}': {e}; `python -m bench run --grid {grid.name} --dry-run` lists "
                         "the cells") from None


def schedule(cells: list[Cell]) -> list[Cell]:
    """Cells in run order: the first cell of each model first, then the rest in grid order. With a
    pool, the models are then trained side by side instead of workers queueing on one checkpoint's
    lock; in-process, the order does not change any result (cells are pure functions of config)."""
    first, rest, seen = [], [], set()
    for c in cells:
        k = c.model_key()
        (rest if k in seen else first).append(c)
        seen.add(k)
    return first + rest


def run_grid(grid: Grid, out: Path, only: list[str] | None = None, executor: str = "inprocess", workers: int = 1,
             address: str | None = None, console: Console | None = None, command: str = "",
             reference: bool = False) -> dict:
    """Run the grid's selected cells that are not finished yet into ``out``. Called as a library
    function it runs in this process by default (so methods and datasets registered by the caller
    are seen); ``python -m bench run`` defaults to ``executor="auto"``. Before anything is written,
    every dataset, scene count and teacher the cells need is checked (all problems in one error);
    ``reference=True`` marks ``out`` as a committed reference (only such runs may write there)."""
    console = console or Console(stderr=True)
    store = ResultsStore(out, reference=reference)
    cells = select(grid, only)
    store.check_writable()
    done = fresh(store, cells, console)
    todo = [c for c in cells if c.cell_id not in done]
    preflight(todo, devices=not (executor == "ray" and address))  # a Ray cluster's nodes have their own devices
    with store.lock():
        device = cells[0].device if cells else "cpu"
        ex = make_executor(executor, workers, address, device, n_cells=len(todo))  # first: it may refuse (Ray)
        header = f"# written by ttt-bench on {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        header += f"# command: {command}\n# grid file: {grid.path}\n" if command else f"# grid file: {grid.path}\n"
        store.write(out / "config.toml", lambda p: p.write_text(header + grid.text))
        env = environment(device)
        env.update({"grid": grid.name, "command": command, "cells_in_grid": len(grid.all_cells or grid.cells),
                    "cells_selected": len(cells), "executor": ex.describe(), "resolved_grid": grid.raw})
        store.write(out / "env.json", lambda p: p.write_text(json.dumps(env, indent=2, default=str) + "\n"))
        console.print(f"[bold]{grid.name}[/]: {len(cells)} cells, {len(cells) - len(todo)} already finished, "
                      f"{len(todo)} to run -> {out}")
        t0 = time.perf_counter()
        prepare_data(todo, cpu_cores())
        n_err = 0
        with progress(transient=False) as bar:
            task = bar.add_task("cells", total=len(todo), info="")
            # closed on every way out: a Ctrl-C that lands while a row is being appended (outside the
            # executor's generator) must still stop the workers now, not when the generator is collected
            with closing(ex.run(schedule(todo))) as results:
                for cell, (row, scenes) in results:
                    store.append(row, scenes)
                    n_err += row["status"] != "ok"
                    bar.update(task, advance=1, info=escape(display(cell)[:60]))
                    if row["status"] != "ok":  # the whole message: its useful part is often at the end
                        log.error("[%d/%d] %s: error: %s", bar.tasks[0].completed, len(todo), display(cell),
                                  row["error"])
                    elif bar.disable:  # no live bar (not a terminal): one log line per cell instead
                        log.info("[%d/%d] %s: mIoU %.1f", bar.tasks[0].completed, len(todo), display(cell),
                                 100 * row["miou"])
        elapsed = time.perf_counter() - t0
    summary(store, cells, console)
    console.print(f"ran {len(todo)} cells in {elapsed:.1f} s ({n_err} errors); results in {out}"
                  + (f" (each error in full: column 'error' of {out / 'cells.csv'})" if n_err else ""))
    return {"ran": len(todo), "errors": n_err, "seconds": elapsed}


def fresh(store: ResultsStore, cells: list[Cell], console: Console) -> set[str]:
    """Ids of the cells finished in ``store`` on the data they would read now. A finished row whose
    recorded data key differs from the cell's current one (another world version, other domain
    parameters or data) or that has none (written before rows recorded it) is run again and its row
    replaced, with a warning, so results of two versions of a dataset never sit in one run folder."""
    keys = store.data_keys()
    done, stale = set(), []
    for c in cells:
        if c.cell_id not in keys:
            continue
        try:
            now = data_key(c)
        except BenchError:
            now = None  # the data cannot be opened here: keep the row; preflight reports the problem if it runs
        if now is None or keys[c.cell_id] == now:
            done.add(c.cell_id)
        else:
            stale.append(c)
    if stale:
        console.print(f"[yellow]{len(stale)} finished cell(s) in {store.out} were run on other data than "
                      f"they would read now (another world version or dataset parameters, or rows from before "
                      f"data keys were recorded), e.g. {escape(display(stale[0]))}: running them again and "
                      "replacing their rows (use a new --out to keep the old ones)[/]")
    return done


def preflight(cells: list[Cell], devices: bool = True) -> None:
    """Check before any work that the cells' device exists on this machine (unless ``devices`` is
    False: cells that run elsewhere), that every dataset the cells read opens and has the scenes asked
    for (data roots, splits, scene counts), and that every teacher they use builds (weights files found
    and fitting). All problems are raised at once in one BenchError, one line each."""
    from bench.spec import check_device

    problems: list[str] = []

    def add(msg: str) -> None:
        if msg not in problems:
            problems.append(msg)

    for device in sorted({c.device for c in cells}) if devices else []:
        try:
            check_device(device)
        except BenchError as e:
            add(str(e))
    for msg in _scene_problems(cells):
        add(msg)
    teachers = {json.dumps(c.teacher, sort_keys=True): c for c in cells if c.teacher}
    for spec, c in teachers.items():
        try:
            from teachers import build_teacher

            build_teacher(json.loads(spec), "cpu")
        except BenchError as e:
            add(f"teacher {c.teacher['name']}: {e}")
    if problems:
        if len(problems) == 1:
            raise BenchError(problems[0])
        raise BenchError(f"{len(problems)} problems found before the run:\n" + "\n".join(f"  - {p}" for p in problems))


def _scene_problems(cells: list[Cell]) -> list[str]:
    """What stops the cells reading their scenes: a dataset that does not open or has too few scenes, a
    setting that gives a cell no scenes (named once, with the cells it concerns), and every scene file
    that cannot be read as the cells will read it (real datasets: shapes, dtypes, NaN, label range,
    truncated or missing files, normals the features need)."""
    from bench.resources import dataset_for, scenes_needed, stream_names, train_val_names

    problems: list[str] = []
    empty: dict[str, list[Cell]] = {}
    wanted: dict[int, tuple] = {}  # id(dataset) -> (dataset, names, normals needed)
    for c in cells:
        try:
            train = dataset_for(c, c.training_data())
            names, _ = train_val_names(c, train)
            if not names:
                empty.setdefault(f"train_scenes = {c.train_scenes} gives the model no training scenes of "
                                 f"{train.name}; set train_scenes = N >= 1 in the grid", []).append(c)
            for i, ds, seg_names in stream_names(c):
                if seg_names:
                    continue
                what = ("probe_scenes: the forgetting probe has no scenes" if i < 0 else
                        f"the target stream's segment {i + 1} ({ds.name}, {c.stream[i].split}) has no scenes")
                empty.setdefault(f"{what}; give it scenes = N >= 1", []).append(c)
            for ds, ds_names in scenes_needed(c):
                entry = wanted.setdefault(id(ds), (ds, set(), set()))
                entry[1].update(ds_names)
                if "normal" in c.features:
                    entry[2].update(ds_names)
        except BenchError as e:
            if str(e) not in problems:
                problems.append(str(e))
    for msg, cs in empty.items():
        problems.append(f"{msg} ({len(cs)} cell{'s' if len(cs) > 1 else ''}, e.g. {display(cs[0])})")
    for ds, names, normals in wanted.values():
        plain = sorted(names - normals)
        for group, need in ((plain, False), (sorted(normals), True)):
            if group:
                problems.extend(p for p in ds.check(group, normals=need) if p not in problems)
    return problems


def prepare_data(cells: list[Cell], workers: int) -> None:
    """Generate every scene the cells will read (synthetic datasets), all cores at once, before any
    cell starts (``preflight`` has checked that every dataset opens)."""
    from bench.resources import scenes_needed

    need: dict = {}
    for c in cells:
        for ds, names in scenes_needed(c):
            need.setdefault(id(ds), (ds, set()))[1].update(names)
    for ds, names in need.values():
        ds.ensure(sorted(names), workers=max(1, workers))


def summary(store: ResultsStore, cells: list[Cell], console: Console) -> None:
    """A table of the cells' results (mIoU in percent, rows named as the reports name them), then every
    error of those cells in full, one paragraph each."""
    df = store.cells()
    if df.empty:
        return
    df = df[df["cell_id"].isin({c.cell_id for c in cells})]
    t = Table(title="summary", show_lines=False)
    for col in ("method", "source -> target", "mIoU %", "steps/scene", "s/scene", "status"):
        t.add_column(col, justify="right" if col in ("mIoU %", "steps/scene", "s/scene") else "left")
    errors = []
    for _, r in df.sort_values(["label", "source", "target"]).iterrows():
        name = row_name(r["label"], json.loads(r["params"]), r["teacher"] or None)
        ok = r["status"] == "ok"
        if not ok:
            errors.append((name, f"{r['source']} -> {r['target']}", str(r["error"])))
        t.add_row(escape(name), f"{r['source']} -> {r['target']}",
                  f"{100 * r['miou']:.1f}" if ok else "-", f"{r['steps_per_scene']:.1f}" if ok else "-",
                  f"{r['adapt_s_per_scene'] + r['infer_s_per_scene']:.2f}" if ok else "-",
                  "ok" if ok else f"error {len(errors)} (below)")
    console.print(t)
    for i, (name, pair, err) in enumerate(errors, 1):
        console.print(f"[red]error {i}[/] {escape(name)} {escape(pair)}: {escape(err)}", soft_wrap=True)
