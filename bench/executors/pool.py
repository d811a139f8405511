"""The ``pool`` executor: local worker processes, each with cores/N torch threads. A worker that dies
(out of memory, SIGKILL) is replaced, its job retried once and then recorded as an error row with the
reason, and the run goes on. Ctrl-C terminates the workers."""

from __future__ import annotations

import logging
import signal
from collections import deque
from dataclasses import dataclass

from bench.cache import cache_dir
from bench.executors import base
from bench.executors.base import Executor, _cell_id, _describe, _Model, _run_cell, _train_job, _worker_init
from bench.progress import Activity, set_reporter

log = logging.getLogger("bench.executors")


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"


def _pool_main(conn, cache: str, threads: int) -> None:
    """A pool worker: run jobs sent over ``conn`` until told to stop; progress goes back the same way."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it terminates the workers
    _worker_init(cache, threads)
    set_reporter(lambda r: conn.send(("progress", r)))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        kind, cell = job
        out = _train_job(cell, ship=False) if kind == "train" else _run_cell(cell)
        try:
            conn.send(("done", out))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Job:
    kind: str  # "train" | "cell"
    cell: dict
    model: _Model
    attempts: int = 0

    @property
    def id(self) -> str:
        return self.model.job if self.kind == "train" else f"cell:{_cell_id(self.cell)}"


class _Worker:
    def __init__(self, ctx, cache: str, threads: int):
        self.conn, child = ctx.Pipe()
        # not daemonic: a worker may start its own process pool (scene generation with threads > 1);
        # the executor stops every worker itself, on every way out
        self.proc = ctx.Process(target=_pool_main, args=(child, cache, threads), daemon=False)
        self.proc.start()
        child.close()
        self.job: _Job | None = None

    def stop(self, now: bool) -> None:
        if self.proc.is_alive() and not now:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(1)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1)
        self.conn.close()


class Pool(Executor):
    """Local worker processes. Not concurrent.futures: a worker that dies must cost only its own job
    (a ProcessPoolExecutor breaks as a whole), and Ctrl-C must end running jobs, not wait for them."""

    retries = 1

    def __init__(self, workers: int):
        self.workers = workers

    def threads(self) -> int:
        return max(1, base.cpu_cores() // self.workers)

    def describe(self) -> str:
        return f"pool: {self.workers} processes x {self.threads()} torch threads"

    def _execute(self, models, activity):
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        cache, threads = str(cache_dir()), self.threads()
        ready = deque(_Job("train", m.cells[0], m) for m in models)
        left = sum(len(m.cells) for m in models)
        pool = [_Worker(ctx, cache, threads) for _ in range(min(self.workers, left))]
        clean = False
        try:
            while left:
                for i, w in enumerate(pool):
                    if w.job is None and ready and not w.proc.is_alive():  # died while idle
                        w.stop(now=True)
                        pool[i] = w = _Worker(ctx, cache, threads)
                    if w.job is None and ready:
                        w.job = ready.popleft()
                        w.job.attempts += 1
                        w.conn.send((w.job.kind, w.job.cell))
                busy = [w for w in pool if w.job is not None]
                if not busy:
                    raise RuntimeError("process pool: cells left but no job to run (a scheduling bug)")
                wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
                for i, w in enumerate(pool):
                    if w.job is None:
                        continue
                    done = None
                    try:
                        while w.job is not None and w.conn.poll():
                            kind, payload = w.conn.recv()
                            if kind == "progress":
                                activity.update(w.job.id, payload)
                            else:
                                done, w.job = (w.job, payload), None
                    except (EOFError, OSError):
                        pass
                    if done is not None:
                        job, out = done
                        if job.kind == "train":
                            if self._trained(job.model, out, activity):
                                ready.extend(_Job("cell", c, job.model) for c in job.model.cells)
                            else:
                                for c in job.model.cells:
                                    left -= 1
                                    yield self._result(job.model, c, out["error"])
                        else:
                            left -= 1
                            yield self._result(job.model, job.cell, out)
                    elif not w.proc.is_alive():
                        w.proc.join()
                        job, reason = w.job, _death_reason(w.proc.exitcode)
                        w.job = None
                        w.stop(now=True)
                        pool[i] = _Worker(ctx, cache, threads)
                        for out in self._died(job, reason, ready, activity):
                            left -= 1
                            yield out
            clean = True
        finally:
            for w in pool:
                w.stop(now=not clean)

    def _died(self, job: _Job, reason: str, ready: deque, activity: Activity):
        what = f"training of model {job.model.index + 1}" if job.kind == "train" else _describe(job.cell)
        if job.attempts <= self.retries:
            log.warning("worker process %s while running %s; retrying it once", reason, what)
            ready.appendleft(job)
            return
        msg = f"worker process {reason} while running this cell, twice (tried {job.attempts} times)"
        if job.kind == "train":
            msg = f"worker process {reason} while training this cell's model, twice (tried {job.attempts} times)"
            activity.finish(job.model.job, f"training failed: {msg}")
            job.model.result = {"error": msg}
            log.error("%s: %s; its %d cells are recorded as errors", what, msg, len(job.model.cells))
            for c in job.model.cells:
                yield self._result(job.model, c, msg)
        else:
            log.error("%s: %s; recorded as an error", what, msg)
            yield self._result(job.model, job.cell, msg)
