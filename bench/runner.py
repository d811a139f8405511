"""The runner: expand a grid, skip finished cells, run the rest on an executor, append each result."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.cache import stable_hash
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
             reference: bool = False, beside: bool = False) -> dict:
    """Run the grid's selected cells that are not finished yet into ``out``. Called as a library
    function it runs in this process by default (so methods and datasets registered by the caller
    are seen); ``python -m bench run`` defaults to ``executor="auto"``. Before anything is written,
    every dataset, scene count and teacher the cells need is checked (all problems in one error);
    ``reference=True`` marks ``out`` as a committed reference (only such runs may write there). A folder
    whose cells were run with other settings is refused (``check_settings``); ``beside=True`` writes
    into the folder beside it that ``check_settings`` names instead. Returns the cells run, errors,
    seconds and the folder written."""
    console = console or Console(stderr=True)
    store = ResultsStore(out, reference=reference)
    cells = select(grid, only)
    store.check_writable()
    other = check_settings(store, cells, beside)
    if other is not None:
        console.print(f"{out} holds cells of other settings: writing this run beside it, into {other}")
        out, store = other, ResultsStore(other, reference=reference)
        store.check_writable()
        check_settings(store, cells, False)
    done = fresh(store, cells, console)
    todo = [c for c in cells if c.cell_id not in done]
    preflight(todo, devices=not (executor == "ray" and address))  # a Ray cluster's nodes have their own devices
    with store.lock():
        device = cells[0].device if cells else "cpu"
        ex = make_executor(executor, workers, address, device, n_cells=len(todo))  # first: it may refuse (Ray)
        header = f"# written by ttt-bench on {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        header += f"# command: {command}\n# grid file: {grid.path}\n" if command else f"# grid file: {grid.path}\n"
        keep_config(out, grid.text)
        store.write(out / "config.toml", lambda p: p.write_text(header + grid.text))
        env = environment(device)
        env.update({"grid": grid.name, "command": command, "cells_in_grid": len(grid.all_cells or grid.cells),
                    "cells_selected": len(cells), "executor": ex.describe(), "resolved_grid": grid.raw})
        store.write(out / "env.json", lambda p: p.write_text(json.dumps(env, indent=2, default=str) + "\n"))
        console.print(f"[bold]{grid.name}[/]: {len(cells)} cells, {len(cells) - len(todo)} already finished, "
                      f"{len(todo)} to run -> {out}")
        from bench.cell import alias_rows

        t0 = time.perf_counter()
        started = datetime.now(UTC)
        run_state = {"pid": os.getpid(), "started": started.isoformat(timespec="seconds"), "grid": grid.name,
                     "command": command, "executor": ex.describe(), "cells_selected": len(cells),
                     "todo": [c.cell_id for c in todo]}
        store.write(out / STATUS, lambda p: p.write_text(json.dumps(run_state, indent=1) + "\n"))
        prepare_data(todo, cpu_cores())
        n_err = 0
        with progress(transient=False) as bar:
            task = bar.add_task("cells", total=len(todo), info="")
            # closed on every way out: a Ctrl-C that lands while a row is being appended (outside the
            # executor's generator) must still stop the workers now, not when the generator is collected
            with closing(ex.run(schedule(todo))) as results:
                for cell, (row, scenes) in results:
                    row["config"] = json.dumps(recorded_config(cell), sort_keys=True, default=str)
                    for alias_row, alias_scenes in alias_rows(cell, row, scenes):  # first: a crash leaves no
                        store.append(alias_row, alias_scenes)  # finished cell without its aliases' rows
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
        run_state["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        store.write(out / STATUS, lambda p: p.write_text(json.dumps(run_state, indent=1) + "\n"))
    summary(store, cells, console)
    console.print(f"ran {len(todo)} cells in {elapsed:.1f} s ({n_err} errors); results in {out}"
                  + (f" (each error in full: column 'error' of {out / 'cells.csv'})" if n_err else ""))
    return {"ran": len(todo), "errors": n_err, "seconds": elapsed, "out": out}


STATUS = "status.json"  # the latest run of a folder: when it started, its pid, the cells it set out to run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(out: Path) -> str:
    """What ``python -m bench status RUN`` prints: the folder's cells (finished, errors), and for its
    latest run whether it still runs, how many of the cells it set out to run are done, its errors and
    an ETA at the rate so far (cells finished per second since it started, training included)."""
    from bench.progress import _fmt_s

    out = Path(out)
    if not out.is_dir():
        raise BenchError(f"{out}: no such run folder; give the --out folder of a run (default runs/GRID)")
    store = ResultsStore(out)
    df = store.cells()
    store.all_scenes()  # a damaged scene table is reported here too
    lines = []
    if df.empty:
        lines.append(f"{out}: no finished cell yet")
    else:
        n_err = int((df["status"] != "ok").sum())
        lines.append(f"{out}: {len(df)} cells recorded, {len(df) - n_err} ok, {n_err} errors")
    state_path = out / STATUS
    if not state_path.is_file():
        lines.append("no record of a run started here (status.json is written by runs since this version)")
        return "\n".join(lines)
    try:
        state = json.loads(state_path.read_text())
        started = datetime.fromisoformat(state["started"])
        todo = set(state["todo"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{state_path}: unreadable ({e}); it is rewritten by the next run of this folder") from None
    def since(t) -> bool:
        try:
            return datetime.fromisoformat(str(t)) >= started
        except ValueError:
            return False

    mine = df[df["cell_id"].isin(todo) & df["started_at"].map(since)] if not df.empty else df
    done, errs = len(mine), (mine[mine["status"] != "ok"] if not mine.empty else mine)
    end = state.get("ended")
    running = end is None and _alive(int(state["pid"]))
    now = datetime.now(UTC)
    elapsed = ((datetime.fromisoformat(end) if end else now) - started).total_seconds()
    head = f"latest run (grid {state.get('grid')}, {state.get('executor')}) started {state['started']}"
    if running:
        lines.append(f"{head}: running for {_fmt_s(elapsed)} (pid {state['pid']})")
    elif end:
        lines.append(f"{head}: ended {end} after {_fmt_s(elapsed)}")
    else:
        lines.append(f"{head}: stopped before its end (pid {state['pid']} is gone); run the same command again to "
                     "resume")
    left = len(todo) - done
    eta = ""
    if running and done and left:
        eta = f", ETA {_fmt_s(elapsed / done * left)} at the rate so far"
    lines.append(f"cells: {done} of {len(todo)} done, {len(errs)} errors, {left} left{eta}")
    for _, r in errs.iterrows():
        lines.append(f"  error: {row_name(r['label'], json.loads(r['params']), r['teacher'] or None)} "
                     f"{r['source']} -> {r['target']}: {r['error']}")
    return "\n".join(lines)


# the plain-form keys a grid sets once for all its cells: cells that differ in one of them cannot be
# compared, so one run folder holds one value of each (axes: methods, parameters, pairs, seeds... may grow)
SETTINGS = ("train_scenes", "val_scenes", "test_scenes", "train_cfg", "features", "device", "lift_tol",
            "data_options")
# columns of rows written before rows carried their config: setting -> (column, column value -> setting value)
_LEGACY = {"train_scenes": ("n_train", int), "train_cfg": ("train_cfg", json.loads), "device": ("device", str),
           "features": ("features", lambda v: str(v).split(","))}


def _settings(plain: dict) -> dict[str, str]:
    return {k: json.dumps(plain[k], sort_keys=True, default=str) for k in SETTINGS if k in plain}


def recorded_config(cell: Cell) -> dict:
    """What a row records of its cell's configuration: the identity (typed configs) plus the grid-wide
    settings in their plain form (``SETTINGS``), by which a folder's rows are checked against a new run."""
    return {**cell.identity, **{k: cell.plain[k] for k in SETTINGS if k in cell.plain}}


def held_settings(df) -> dict[str, set[str]]:
    """Setting -> the values (JSON text) the rows of ``df`` (a cells table) were run with."""
    out: dict[str, set[str]] = {}
    for _, r in df.iterrows():
        config = r.get("config")
        if isinstance(config, str) and config:
            vals = _settings(json.loads(config))
        else:
            vals = {k: json.dumps(conv(r[col]), sort_keys=True, default=str) for k, (col, conv) in _LEGACY.items()
                    if col in r and r[col] is not None and r[col] == r[col]}
        for k, v in vals.items():
            out.setdefault(k, set()).add(v)
    return out


def check_settings(store: ResultsStore, cells: list[Cell], beside: bool) -> Path | None:
    """Refuse to add ``cells`` to a folder whose cells were run with other settings (``SETTINGS``: scene
    counts, [train], features, device, ...): a BenchError naming each key that differs with its values
    there and here. With ``beside``, return the folder beside it for this run's settings instead
    (``OUT+HASH``, the same for every run of these settings); None when the settings agree."""
    held = store.cells()
    if held.empty or not cells:
        return None
    there = held_settings(held)
    here: dict[str, set[str]] = {}
    for c in cells:
        for k, v in _settings(c.plain).items():
            here.setdefault(k, set()).add(v)
    differ = {k: (there[k], here[k]) for k in SETTINGS if k in there and k in here and here[k] - there[k]}
    if not differ:
        return None
    tag = stable_hash({k: sorted(v) for k, v in here.items()}, 8)
    other = store.out.with_name(f"{store.out.name}+{tag}")
    if beside:
        return other
    shown = "; ".join(f"{k} = {' or '.join(sorted(a))} there, {' or '.join(sorted(b))} now" for k, (a, b) in
                      differ.items())
    raise BenchError(f"{store.out} holds {len(held)} cells run with other settings than this run's ({shown}), and "
                     "cells of two settings in one folder cannot be compared. Run into a new folder (--out "
                     f"runs/NAME), or add --beside to write this run into {other} next to it (reported apart: "
                     f"python -m bench report --results {other})")


def keep_config(out: Path, text: str) -> None:
    """Keep the grid file of an earlier run of ``out`` when it differs from ``text``, the one about to be
    written (``config.toml`` -> ``config-N.toml``): every cell in the folder keeps the file it was run from."""
    cur = out / "config.toml"
    if not cur.is_file():
        return
    old = cur.read_text()
    if old.endswith(text) and all(line.startswith("# ") for line in old[: len(old) - len(text)].splitlines()):
        return
    n = 1
    while (out / f"config-{n}.toml").exists():
        n += 1
    os.replace(cur, out / f"config-{n}.toml")


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
        except BenchError as e:  # most of its messages name the teacher already ("teacher 'dinov2': ...")
            add(str(e) if str(e).startswith("teacher ") else f"teacher '{c.teacher['name']}': {e}")
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
    error of those cells in full, once per distinct message with the cells it hit."""
    df = store.cells()
    if df.empty:
        return
    df = df[df["cell_id"].isin({c.cell_id for c in cells} | {a.cell_id for c in cells for a in c.aliases})]
    t = Table(title="summary", show_lines=False)
    for col in ("method", "source -> target", "mIoU %", "steps/scene", "s/scene", "status"):
        t.add_column(col, justify="right" if col in ("mIoU %", "steps/scene", "s/scene") else "left")
    errors: dict[str, list[str]] = {}  # message -> the cells it hit
    for _, r in df.sort_values(["label", "source", "target"]).iterrows():
        name = row_name(r["label"], json.loads(r["params"]), r["teacher"] or None)
        ok = r["status"] == "ok"
        if not ok:
            errors.setdefault(str(r["error"]), []).append(f"{name} {r['source']} -> {r['target']}")
        t.add_row(escape(name), f"{r['source']} -> {r['target']}",
                  f"{100 * r['miou']:.1f}" if ok else "-", f"{r['steps_per_scene']:.1f}" if ok else "-",
                  f"{r['adapt_s_per_scene'] + r['infer_s_per_scene']:.2f}" if ok else "-",
                  "ok" if ok else f"error {list(errors).index(str(r['error'])) + 1} (below)")
    console.print(t)
    for i, (err, hit) in enumerate(errors.items(), 1):
        who = hit[0] if len(hit) == 1 else f"{len(hit)} cells ({', '.join(hit[:3])}{', ...' if len(hit) > 3 else ''})"
        console.print(f"[red]error {i}[/] {escape(who)}: {escape(err)}", soft_wrap=True)
