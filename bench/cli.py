"""Command line: ``python -m bench {list,run,select,report,compare,show,world,zoo,profile}``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.errors import BenchError

RUNS = Path("runs")
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def stdout_console() -> Console:
    """Standard output: fitted to a terminal; piped into a file, lines are never wrapped nor tables cut."""
    return Console() if sys.stdout.isatty() else Console(width=1000, soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description="ttt-bench: test-time adaptation of 3D "
                                 "semantic segmentation, crossed with teachers, backbones and dataset pairs")
    ap.add_argument("--cache-dir", help="cache folder (default $TTT_BENCH_CACHE or ~/.cache/ttt-bench)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser("list", help="print every registered method, backbone, recipe, teacher, dataset, corruption")

    r = sub.add_parser("run", help="run a grid")
    r.add_argument("--grid", required=True, help="grid name (bench/grids/NAME.toml) or path to a .toml")
    r.add_argument("--out", type=Path, help="run folder (default runs/NAME; git ignores runs/)")
    r.add_argument("--reference", action="store_true",
                   help="write a committed reference output (e.g. --out results/reference/NAME) and mark the folder "
                        "so that plain runs never resume or append there")
    r.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    r.add_argument("--beside", action="store_true",
                   help="when --out holds cells run with other settings (scene counts, [train], features, ...), "
                        "write this run into OUT+HASH beside it instead of refusing")
    r.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="run only cells matching (repeatable): any cell setting (method, label, source, target, "
                        "backbone, teacher, seed, recipe, views, predict, reset_every, order, probe_every, ...) or "
                        "method parameter; numbers compare as numbers (lr=1e-4 is lr=0.0001)")
    r.add_argument("--executor", default="auto", choices=["auto", "inprocess", "pool", "ray"],
                   help="auto (default): on CPU a process pool with one single-threaded worker per core, on CUDA "
                        "in-process")
    r.add_argument("--workers", type=int, default=0, help="processes (pool) or CPUs (local ray); 0 = one per core")
    r.add_argument("--address", help="Ray cluster address (with --executor ray)")
    r.add_argument("--device", help="override the grid's device (cpu, cuda, cuda:1)")
    r.add_argument("--teacher-weights", action="append", default=[], metavar="TEACHER=PATH",
                   help="local checkpoint for a teacher, e.g. dinov2=/data/dinov2_vits14.pth")
    r.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="root of a real dataset, e.g. scannet=/data/scannet")
    r.add_argument("--selected", metavar="none|latest|vN|FILE",
                   help="selected hyper-parameters for the parameters the grid does not set (default: the grid's "
                        "'selected' key, else the latest bench/selected/vN.toml); none = defaults only")

    sel = sub.add_parser("select", help="choose each method's hyper-parameters on validation pairs (never test pairs)")
    sel.add_argument("--grid", default="select", help="selection grid (default bench/grids/select.toml)")
    sel.add_argument("--out", type=Path, help="file to write (default: the next version bench/selected/vN.toml)")
    sel.add_argument("--runs", type=Path, help="run folder of the validation cells (default runs/select/NAME)")
    sel.add_argument("--budget-s", type=float, help="exclude candidates that adapt longer than this per scene (s)")
    sel.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                     help="select only for matching cells (repeatable), e.g. method=ttt_kd")
    sel.add_argument("--dry-run", action="store_true", help="check the validation pairs, print the plan and exit")
    sel.add_argument("--criterion", help="choose by a label-free criterion instead of labelled mIoU: entropy, "
                     "agreement, snd or kd_loss (bench/criteria.py); writes RUNS/criterion-NAME.toml")
    sel.add_argument("--executor", default="auto", choices=["auto", "inprocess", "pool", "ray"])
    sel.add_argument("--workers", type=int, default=0, help="processes (pool) or CPUs (ray); 0 = one per core")
    sel.add_argument("--address", help="Ray cluster address (with --executor ray)")
    sel.add_argument("--device", help="override the grid's device (cpu, cuda, cuda:1)")

    st = sub.add_parser("status", help="a run's progress, also from another terminal: cells done, errors, ETA")
    st.add_argument("run", type=Path, nargs="?", help="run folder (default: the newest folder under runs/)")

    rep = sub.add_parser("report", help="turn a run or reference folder into tables and figures")
    rep.add_argument("--grid", default="id_ood", help="grid name: reads runs/NAME if it has results, else "
                     "results/reference/NAME (here or in the repository holding the package; default id_ood)")
    rep.add_argument("--results", type=Path, help="run or reference folder (overrides --grid)")

    cmp_ = sub.add_parser("compare", help="does a run agree with a reference within the reference's seed spread?")
    cmp_.add_argument("run", type=Path, help="run folder, e.g. runs/id_ood")
    cmp_.add_argument("reference", type=Path, nargs="?",
                      help="reference folder (default results/reference/GRID of the run's grid)")

    s = sub.add_parser("show", help="draw a scene: points from above, its views and their label maps")
    s.add_argument("scene", help="DATASET/SCENE, e.g. synth-scannet/test_0000 or synth-s3dis:jitter@3/test_0001")
    s.add_argument("--out", type=Path, help="PNG to write (default runs/show/DATASET_SCENE.png under the working "
                   "folder, e.g. runs/show/synth-scannet_test_0000.png)")
    s.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="root of a real dataset, e.g. scannet=/data/scannet")

    w = sub.add_parser("world", help="the synthetic world's statistics per domain beside the real datasets'")
    w.add_argument("--scenes", type=int, default=8, help="scenes per domain (default 8, about a minute)")
    w.add_argument("--domains", nargs="+", default=None,
                   help="synthetic domains (default: synth-scannet synth-s3dis synth-matterport synth-val)")
    w.add_argument("--out", type=Path, default=RUNS / "world",
                   help="folder for world.md, world.json and the figure (default runs/world; the committed "
                        "reference, made with --scenes 24, is results/reference/world)")
    w.add_argument("--results", type=Path, help="a run or reference folder (e.g. results/reference/id_ood): "
                   "adds the BN share of the gap per pair")
    w.add_argument("--split", default="test", choices=["train", "val", "test"])
    w.add_argument("--seed", type=int, default=0, help="world seed")

    z = sub.add_parser("zoo", help="the shipped reference source models: list, verify, train")
    from bench.zoo import add_arguments as zoo_arguments

    zoo_arguments(z)

    p = sub.add_parser("profile", help="time the forward/backward and TTT-KD step of each backbone")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after a warm-up (median and spread)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1; lowered to the cores not busy with other work)")
    p.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                   help="only forward and TTT-KD step per backbone")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="spunet's voxel size in metres (default: the backbone's, 0.08): what a coarser grid costs")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[_rich_handler()])
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # a deprecation note on every import
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        from bench.cache import set_cache_dir

        set_cache_dir(args.cache_dir)
        if args.cmd == "status":
            return cmd_status(args)
        return {"list": cmd_list, "run": cmd_run, "select": cmd_select, "report": cmd_report, "compare": cmd_compare,
                "show": cmd_show, "profile": cmd_profile, "world": cmd_world, "zoo": cmd_zoo}[args.cmd](args)
    except BenchError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from bench.store import write_error

        where = Path(e.filename) if e.filename else Path(".")
        console.print(f"[bold red]error:[/] {escape(str(write_error(e, where)))}")
        return 2
    except KeyboardInterrupt:
        _stop_children()
        console.print("interrupted: finished cells are saved; run the same command again to resume")
        return 130


def _stop_children() -> None:
    """After Ctrl-C, end every worker process still alive: multiprocessing joins non-daemonic children
    at exit, so one that missed the executor's own shutdown would keep the command waiting."""
    import multiprocessing as mp

    children = mp.active_children()
    for c in children:
        c.terminate()
    for c in children:
        c.join(2)
        if c.is_alive():
            c.kill()
            c.join(1)


def _rich_handler():
    from rich.logging import RichHandler

    return RichHandler(console=console, show_time=False, show_path=False, markup=False)


def cmd_list(args) -> int:
    from rich.table import Table

    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.classes import mapping_table
    from bench.data.corrupt import CORRUPTIONS
    from methods import METHODS
    from teachers import TEACHERS

    out = Console(width=None if sys.stdout.isatty() else 150)
    for reg in (METHODS, BACKBONES, RECIPES, TEACHERS, DATASETS, CORRUPTIONS):
        t = Table(title=f"{reg.kind}s", show_lines=False, expand=False)
        t.add_column("name", style="bold")
        t.add_column("description")
        t.add_column("defaults")
        for e in reg.entries():
            d = e.defaults()
            t.add_row(e.name, e.description, ", ".join(f"{k}={v}" for k, v in d.items()))
        out.print(t)
    out.print(mapping_table())
    return 0


def _kv(items: list[str], what: str, example: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k or not v:
            raise BenchError(f"{what} '{it}' must be NAME=PATH, e.g. {what} {example}")
        out[k] = v
    return out


def _check_executor_args(args) -> None:
    """``--workers`` and ``--address`` make sense with the executor chosen (before any work starts)."""
    if args.workers < 0:
        raise BenchError(f"--workers {args.workers} must be >= 0 (0 = one per core)")
    if args.address and args.executor != "ray":
        raise BenchError(f"--address {args.address} names a Ray cluster, which only --executor ray uses (the executor "
                         f"is {args.executor}); add --executor ray to run on that cluster, or drop --address to run "
                         "on this machine")


def cmd_run(args) -> int:
    from bench.executors import display
    from bench.grid import Overrides, load_grid
    from bench.runner import run_grid

    _check_executor_args(args)
    overrides = Overrides(device=args.device, only=list(args.only), selected=args.selected,
                          teacher_weights=_kv(args.teacher_weights, "--teacher-weights", "dinov2=/w/dinov2_vits14.pth"),
                          data_roots=_kv(args.data_root, "--data-root", "scannet=/data/scannet"))
    from bench.executors import import_plugins

    import_plugins()  # users' own methods/datasets named in $TTT_BENCH_IMPORTS, before the grid names them
    grid = load_grid(args.grid, overrides)
    if args.dry_run:
        out = stdout_console()
        for c in grid.cells:
            out.print(f"{c.cell_id}  {display(c)}", markup=False, highlight=False)
        out.print(f"{len(grid.cells)} cells")
        return 0
    out_dir = args.out or RUNS / grid.name
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = run_grid(grid, out_dir, None, args.executor, args.workers, args.address, console, command,
                   reference=args.reference, beside=args.beside)
    return 1 if res["errors"] else 0


def cmd_select(args) -> int:
    from bench.executors import import_plugins
    from bench.select import run_selection

    _check_executor_args(args)
    import_plugins()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_selection(args.grid, args.out, args.runs, args.budget_s, args.executor, args.workers, args.address,
                  list(args.only), args.device, args.dry_run, console, command, args.criterion)
    return 0


def _results_folder(grid: str) -> Path:
    """runs/GRID if it has results, else the reference folder that ``compare`` would use (results/reference/GRID
    under the working folder or the repository holding the package)."""
    from bench.compare import reference_candidates
    from bench.grid import GRID_DIR

    tried = [RUNS / grid, *reference_candidates(grid)]
    for cand in tried:
        if (cand / "cells.parquet").is_file():
            return cand
    looked = ", ".join(str(p) for p in tried)
    known = sorted(p.stem for p in GRID_DIR.glob("*.toml"))
    if grid not in known:
        raise BenchError(f"report --grid {grid}: no grid '{grid}' (grids: {', '.join(known)}) and no results for it "
                         f"(looked in {looked}); check the name, or pass --results FOLDER")
    raise BenchError(f"report --grid {grid}: no results (cells.parquet) in {looked}; run `python -m bench run --grid "
                     f"{grid}` first, or pass --results FOLDER")


def cmd_report(args) -> int:
    from bench.report import make_report

    folder = args.results or _results_folder(args.grid)
    written = make_report(folder)
    Console().print(f"wrote {len(written)} files under {folder / 'report'}")
    return 0


def cmd_status(args) -> int:
    from bench.runner import STATUS, run_status

    run = args.run
    if run is None:
        found = sorted(RUNS.glob(f"**/{STATUS}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise BenchError(f"no run folder with a {STATUS} under {RUNS}/; give the folder: python -m bench status "
                             "RUN")
        run = found[-1].parent
    stdout_console().print(run_status(run), markup=False, highlight=False)
    return 0


def cmd_compare(args) -> int:
    from bench.compare import compare

    if not (args.run / "cells.parquet").is_file():
        raise BenchError(f"{args.run}: no results (cells.parquet) to compare; run a grid into it first")
    return compare(args.run, args.reference, stdout_console())


def cmd_show(args) -> int:
    from bench.show import show_scene

    if "/" not in args.scene:
        raise BenchError(f"scene '{args.scene}' must be DATASET/SCENE, e.g. synth-scannet/test_0000")
    ds, name = args.scene.split("/", 1)  # a real dataset's scene names may hold its split folder (val/scene0000_00)
    roots = _kv(args.data_root, "--data-root", "scannet=/data/scannet")
    from bench.data.datasets import DatasetSpec

    base = DatasetSpec.parse(ds).base
    for d, root in roots.items():
        if d != base:
            raise BenchError(f"--data-root {d}=...: the scene is from dataset '{base}', not '{d}'; pass "
                             f"--data-root {base}=PATH")
        if not Path(root).expanduser().is_dir():
            raise BenchError(f"--data-root {d}={root}: {root} is not a folder")
    from bench.show import default_out

    out = args.out or default_out(ds, name)
    if out.suffix.lower() != ".png":
        raise BenchError(f"show --out {out}: give a .png file name, e.g. --out {out.with_suffix('.png')}")
    show_scene(ds, name, out, options={"root": roots[base]} if base in roots else None)
    stdout_console().print(f"wrote {out.resolve()}", markup=False, highlight=False)
    return 0


def cmd_world(args) -> int:
    from bench.data.synth import DOMAINS
    from bench.world import run_world

    text, paths = run_world(args.domains or list(DOMAINS), args.scenes, args.out, args.results, args.split, args.seed)
    console.print(text, markup=False, highlight=False)
    for p in paths:
        console.print(f"wrote {p}", markup=False)
    return 0


def cmd_zoo(args) -> int:
    from bench.zoo import cmd

    return cmd(args, console)


def cmd_profile(args) -> int:
    from bench.profile import run

    return run(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
