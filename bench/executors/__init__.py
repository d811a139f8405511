"""Executors run cells and yield results as they finish, behind one interface.

Every executor first groups the cells by the model they need and runs one *training job* per model
(which trains it, or finds it in the checkpoint cache), then that model's cells; so each model is
trained once, the log and the bar say "model i of n" with epochs and an ETA while it trains, and a
training that fails turns its cells into error rows without trying again for every cell.

``inprocess`` runs the jobs one after another in this process with an explicit torch thread count:
on CPU one less than the usable cores (at least one), so that a core stays free for the driver and
whatever else the machine runs; on CUDA the usable cores. Why: torch's CPU threads wait for each other
at every parallel operation, so when another process holds a core a two-thread cell stalls (one TENT
cell of the smoke grid on this 2-core machine under load: 44-68 s with 2 threads, 2.0-2.2 s with 1),
while a free machine gains little from the second thread (see ``auto`` below).

``pool`` runs them in local worker processes (``--workers N``, each with cores/N torch threads); a
worker that dies (out of memory, SIGKILL) is replaced, its job is retried once and then recorded as
an error row with the reason, and the run goes on. ``ray`` submits one Ray task per training and one
per cell, each cell task depending on its model's training task: Ray starts a cell when its model is
ready, and the trained checkpoint travels to the cell's node through Ray's object store (the
training task returns the file's bytes; ``bench.transfer``), so the nodes of a cluster need no
shared disk; Ray retries a task whose worker died once. On a cluster (``--address``), each node uses
its own cache folder ($TTT_BENCH_CACHE on that node, else ~/.cache/ttt-bench): generated scenes are
regenerated there (deterministic from their seeds, and cheaper than shipping them) and teacher
features are extracted there (deterministic given the teacher's weights, which, like real data, must
be present on every node anyway). A local Ray (no ``--address``) shares the driver's cache folder.
Only the driver writes results.

Ctrl-C stops at once: pool workers are terminated, Ray tasks cancelled; finished cells are already
written.

``auto`` (the default) is ``pool`` with one single-threaded worker per core on CPU and ``inprocess``
on CUDA. Why: spconv's CPU path gathers and scatters on one thread, so a second thread barely helps
(``python -m bench profile``, spunet TTT-KD step on 20k points: 0.197 s on 1 thread, 0.193 s on 2) and
two single-threaded processes do about twice the work of one two-thread process. Results do not
depend on the executor beyond float summation order (the thread count), which the tests bound.

Modules named in ``$TTT_BENCH_IMPORTS`` (comma-separated) are imported by every worker before it
runs a job, so methods or datasets registered by the caller's own modules exist in the workers too.

One module per executor (``inprocess``, ``pool``, ``ray``); what they share (the cell helpers, the
training job, worker set-up, the plan, the ``Executor`` interface, the usable cores) is ``base``;
``make_executor`` here picks one.
"""

from __future__ import annotations

from bench.errors import BenchError
from bench.executors import base
from bench.executors.base import (  # noqa: F401  (the names the runner, the CLI and tests use)
    IMPORTS_VAR,
    Executor,
    Result,
    cpu_cores,
    display,
    import_plugins,
    inprocess_threads,
    plan,
    row_name,
)
from bench.executors.inprocess import InProcess
from bench.executors.pool import Pool
from bench.executors.ray import Ray, connect_ray  # noqa: F401


def make_executor(kind: str, workers: int = 0, address: str | None = None, device: str = "cpu",
                  n_cells: int | None = None) -> Executor:
    """The executor for ``kind``; ``workers`` 0 means one per core (pool, ray) or one (inprocess)."""
    if kind == "auto":
        kind = "inprocess" if device.startswith("cuda") else "pool"
        if kind == "pool":
            workers = min(workers or base.cpu_cores(), n_cells or base.cpu_cores())
    if kind == "inprocess":
        return InProcess(device=device) if workers <= 1 else Pool(workers)
    if kind == "pool":
        workers = workers or base.cpu_cores()
        return InProcess(device=device) if workers <= 1 else Pool(workers)
    if kind == "ray":
        ex = Ray(address, workers or None, device)
        ex.connect()
        return ex
    raise BenchError(f"unknown executor '{kind}'; valid: auto, inprocess, pool, ray")
