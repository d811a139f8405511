"""Executors run cells and yield results as they finish, behind one interface.

``inprocess`` (default) runs cells one after another in this process; ``pool`` runs them in a local
process pool (``--workers N``); ``ray`` submits one Ray task per cell to a local or remote cluster
(``--address``), asking for ``num_gpus`` per task when the device is CUDA. Only the driver writes
results; workers share the cache folder (atomic writes, per-key locks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from bench.cache import cache_dir, set_cache_dir
from bench.errors import BenchError

log = logging.getLogger(__name__)


def _worker_init(cache: str, threads: int) -> None:
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
    def run(self, cells: list[dict]) -> Iterator[tuple[dict, tuple[dict, list[dict]]]]:
        raise NotImplementedError


class InProcess(Executor):
    def run(self, cells):
        from bench.cell import run_cell

        for c in cells:
            yield c, run_cell(c)


class Pool(Executor):
    def __init__(self, workers: int):
        self.workers = workers

    def run(self, cells):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_in_worker, c, str(cache_dir()), threads): c for c in cells}
            for f in as_completed(futs):
                yield futs[f], f.result()


class Ray(Executor):
    def __init__(self, address: str | None, workers: int | None, device: str):
        self.address, self.workers, self.device = address, workers, device

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


def make_executor(kind: str, workers: int = 1, address: str | None = None, device: str = "cpu") -> Executor:
    if kind == "inprocess":
        return InProcess() if workers <= 1 else Pool(workers)
    if kind == "pool":
        return Pool(max(1, workers))
    if kind == "ray":
        return Ray(address, workers if workers > 1 else None, device)
    raise BenchError(f"unknown executor '{kind}'; valid: inprocess, pool, ray")
