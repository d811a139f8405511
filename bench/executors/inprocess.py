"""The ``inprocess`` executor: the jobs one after another in this process, with an explicit torch thread
count (see ``bench.executors`` for why one core is left free on CPU)."""

from __future__ import annotations

from bench.executors import base
from bench.executors.base import Executor, _cell_id, _run_cell, _train_job
from bench.progress import set_reporter


class InProcess(Executor):
    def __init__(self, threads: int | None = None, device: str = "cpu"):
        self.threads = threads or base.inprocess_threads(device)

    def describe(self) -> str:
        return f"inprocess: {self.threads} torch threads"

    def _execute(self, models, activity):
        import torch

        current = {"job": ""}
        prev_threads = torch.get_num_threads()
        prev_reporter = set_reporter(lambda r: activity.update(current["job"], r))
        torch.set_num_threads(self.threads)  # explicit: never more threads than usable cores
        try:
            for m in models:
                current["job"] = m.job
                ok = self._trained(m, _train_job(m.cells[0], ship=False), activity)
                for c in m.cells:
                    current["job"] = f"cell:{_cell_id(c)}"
                    yield self._result(m, c, _run_cell(c) if ok else m.result["error"])
        finally:
            set_reporter(prev_reporter)
            torch.set_num_threads(prev_threads)
