"""Executors run cells and yield results as they finish, behind one interface.

``inprocess`` runs cells one after another in this process; ``pool`` runs them in a local process
pool (``--workers N``, each worker with cores/N torch threads); ``ray`` submits one Ray task per cell
to a local or remote cluster (``--address``), asking for ``num_gpus`` per task when the device is CUDA.
Only the driver writes results; workers share the cache folder (atomic writes, per-key locks).

``auto`` (the default) is ``pool`` with one single-threaded worker per core on CPU and ``inprocess``
on CUDA. Why: spconv's CPU path gathers and scatters on one thread, so a second thread barely helps
(``python -m bench profile``, spunet TTT-KD step on 20k points: 0.197 s on 1 thread, 0.193 s on 2) and
two single-threaded processes do about twice the work of one two-thread process. Results do not
depend on the executor beyond float summation order (the thread count), which the tests bound.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from bench.cache import cache_dir, set_cache_dir
from bench.errors import BenchError

log = logging.getLogger(__name__)


def _worker_init(cache: str, threads: int) -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # as the CLI does: library deprecation notes
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    import torch

    set_cache_dir(cache)
    os.environ["TTT_BENCH_NO_PROGRESS"] = "1"
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def _run_in_worker(cell: dict, cache: str, threads: int):
    _worker_init(cache, threads)
    from bench.cell import run_cell

    return run_cell(cell)


class Executor:
    workers = 1

    def run(self, cells: list[dict]) -> Iterator[tuple[dict, tuple[dict, list[dict]]]]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__.lower()


class InProcess(Executor):
    def describe(self) -> str:
        import torch

        return f"inprocess: {torch.get_num_threads()} torch threads"

    def run(self, cells):
        from bench.cell import run_cell

        for c in cells:
            yield c, run_cell(c)


class Pool(Executor):
    def __init__(self, workers: int):
        self.workers = workers

    def threads(self) -> int:
        return max(1, cpu_cores() // self.workers)

    def describe(self) -> str:
        return f"pool: {self.workers} processes x {self.threads()} torch threads"

    def run(self, cells):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = self.threads()
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_in_worker, c, str(cache_dir()), threads): c for c in cells}
            for f in as_completed(futs):
                yield futs[f], f.result()


class Ray(Executor):
    def __init__(self, address: str | None, workers: int | None, device: str):
        self.address, self.workers, self.device = address, workers, device

    def describe(self) -> str:
        return f"ray: {self.address or 'local'}, one task per cell, 1 torch thread each"

    def run(self, cells):
        try:
            import ray
        except ImportError as e:
            raise BenchError("--executor ray needs the 'ray' package: pip install 'ray[default]'") from e
        started = False
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {"num_cpus": self.workers or os.cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kw)
            started = True
        try:
            gpus = 1 if self.device.startswith("cuda") else 0
            task = ray.remote(num_cpus=1, num_gpus=gpus)(_run_in_worker)
            pending = {task.remote(c, str(cache_dir()), 1): c for c in cells}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started:
                ray.shutdown()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_executor(kind: str, workers: int = 0, address: str | None = None, device: str = "cpu",
                  n_cells: int | None = None) -> Executor:
    """The executor for ``kind``; ``workers`` 0 means one per core (pool, ray) or one (inprocess)."""
    if kind == "auto":
        kind = "inprocess" if device.startswith("cuda") else "pool"
        if kind == "pool":
            workers = min(workers or cpu_cores(), n_cells or cpu_cores())
    if kind == "inprocess":
        return InProcess() if workers <= 1 else Pool(workers)
    if kind == "pool":
        workers = workers or cpu_cores()
        return InProcess() if workers <= 1 else Pool(workers)
    if kind == "ray":
        return Ray(address, workers or None, device)
    raise BenchError(f"unknown executor '{kind}'; valid: auto, inprocess, pool, ray")
