"""What every executor shares: the one place that knows cells (ids, model keys, how a cell runs and how
its error row reads), the training job, worker set-up (``$TTT_BENCH_IMPORTS``), the plan of models and
their cells, the ``Executor`` interface, and the usable cores. The executors themselves are
``inprocess``, ``pool`` and ``ray`` beside this module; ``bench.executors`` says how they differ."""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cache import set_cache_dir
from bench.errors import BenchError
from bench.progress import Activity

log = logging.getLogger("bench.executors")

IMPORTS_VAR = "TTT_BENCH_IMPORTS"
INLINE_DOMAINS_VAR = "TTT_BENCH_DOMAINS"  # bench.data.synth.dataset.INLINE_VAR: a grid's inline domains
Result = tuple[dict, list[dict]]


# ------------------------------------------------------------------ the one place that knows cells
def _cell_id(cell) -> str:
    return cell.cell_id


def _model_key(cell) -> str:
    return cell.model_key()


def _describe(cell) -> str:
    return display(cell)


def row_name(label: str, params: dict, teacher: str | None = None) -> str:
    """A row's name as the reports write it: ``TTT-KD (steps=3) [synth2d]``."""
    from bench.report.frame import _fmt

    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))
    return label + (f" ({shown})" if shown else "") + (f" [{teacher}]" if teacher else "")


def display(cell) -> str:
    """A cell in logs and summaries, named as the reports name its row, then backbone, pair and seed."""
    from bench.cell import row_params

    return (f"{row_name(cell.label, row_params(cell), cell.teacher['name'] if cell.teacher else None)} "
            f"{cell.backbone['name']} {cell.source}->{cell.target} s{cell.seed}")



def _train_model(cell) -> dict:
    """Train the cell's model (or find it in the checkpoint cache): its file, cache status, seconds."""
    from bench.models import get_model

    _, info = get_model(cell)
    return {"path": info["path"], "cache": info["cache"], "train_seconds": float(info["train_seconds"])}


def _run_cell(cell) -> Result:
    from bench.cell import run_cell

    return run_cell(cell)


def _error_row(cell, message: str) -> dict:
    """The row of a cell that could not run (as ``run_cell`` writes for a cell that raised)."""
    from bench.cell import error_row

    return error_row(cell, message)


# -------------------------------------------------------------------------------------------------


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"


def _train_job(cell, ship: bool) -> dict:
    """A training job (in a worker): never raises; ``ship`` adds the checkpoint's bytes for other nodes."""
    from bench.progress import progress

    with progress() as bar:  # says at once that the job started (scenes and teacher features come first)
        bar.add_task("preparing scenes and teacher features", total=None, info="")
    try:
        info = _train_model(cell)
        if ship:
            from bench.transfer import pack

            info["files"] = pack([Path(info["path"])])
        info["path"] = str(info["path"])
        return info
    except Exception as e:  # noqa: BLE001 - the driver records it on the model's cells
        log.debug("training for cell %s failed", _cell_id(cell), exc_info=True)
        return {"error": _message(e)}


def _worker_init(cache: str | None, threads: int) -> None:
    """Set up a worker process: cache folder (None: this machine's default), threads, quiet logs."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # as the CLI does: library deprecation notes
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    import torch

    set_cache_dir(cache)
    os.environ["TTT_BENCH_NO_PROGRESS"] = "1"
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    import_plugins()


def import_plugins() -> list[str]:
    """Import the modules named in $TTT_BENCH_IMPORTS (comma-separated): the caller's own methods,
    datasets or teachers, registered at their import, then exist in this process too."""
    mods = [m.strip() for m in os.environ.get(IMPORTS_VAR, "").split(",") if m.strip()]
    for mod in mods:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise BenchError(f"${IMPORTS_VAR} names module '{mod}', which cannot be imported here ({e}); "
                             "put its folder on PYTHONPATH (on every node for Ray) or remove it") from e
    return mods


@dataclass
class _Model:
    index: int
    key: str
    cells: list = field(default_factory=list)
    result: dict | None = None
    patched: bool = False

    @property
    def job(self) -> str:
        return f"train:{self.index}"


def plan(cells: list) -> list[_Model]:
    """The models the cells need, in order of first use, each with its cells (in the given order)."""
    models: dict[str, _Model] = {}
    for c in cells:
        k = _model_key(c)
        if k not in models:
            models[k] = _Model(len(models), k)
        models[k].cells.append(c)
    return list(models.values())


class Executor:
    workers = 1

    def run(self, cells: list) -> Iterator[tuple[dict, Result]]:
        """Yield (cell, (row, scene rows)) for every cell, as they finish."""
        import_plugins()  # a module that workers cannot import fails here, once, before any work
        models = plan(cells)
        activity = Activity()
        for m in models:
            activity.expect(m.job, f"model {m.index + 1}/{len(models)}")
        try:
            yield from self._execute(models, activity)
        finally:
            activity.close()

    def _execute(self, models: list[_Model], activity: Activity) -> Iterator[tuple[dict, Result]]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__.lower()

    # helpers shared by the executors
    @staticmethod
    def _trained(m: _Model, result: dict, activity: Activity) -> bool:
        m.result = result
        if "error" in result:
            activity.finish(m.job, f"training failed: {result['error']}")
            return False
        note = {"hit": "found in the checkpoint cache", "zoo": "a shipped reference model"}.get(
            result["cache"], f"trained in {result['train_seconds']:.1f} s")
        activity.finish(m.job, note + (f" on node {result['node'][:8]}" if result.get("node") else ""))
        return True

    @staticmethod
    def _result(m: _Model, cell, out: Result | str) -> tuple[dict, Result]:
        """A finished cell's (cell, (row, scenes)); ``out`` is the cell's result or why it has none. The
        first row of a model that its training job trained says so (``checkpoint_cache`` miss), as the
        cell that trained the model did before trainings became jobs of their own."""
        if isinstance(out, str):
            return cell, (_error_row(cell, out), [])
        row, scenes = out
        if (not m.patched and m.result and m.result.get("cache") in ("miss", "retrained")
                and row.get("checkpoint_cache") == "hit"):
            row["checkpoint_cache"] = m.result["cache"]
            m.patched = True
        return cell, (row, scenes)


def cpu_cores() -> int:
    """Usable cores: the CPU affinity mask, capped by a cgroup (container) CPU quota if there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def inprocess_threads(device: str = "cpu") -> int:
    """Torch threads of an in-process run: on CPU all usable cores but one (at least one), on CUDA all."""
    cores = cpu_cores()
    return cores if device.startswith("cuda") else max(1, cores - 1)
