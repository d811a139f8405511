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
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cache import cache_dir, set_cache_dir
from bench.errors import BenchError
from bench.progress import Activity, set_reporter

log = logging.getLogger(__name__)

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


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"


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


class InProcess(Executor):
    def __init__(self, threads: int | None = None, device: str = "cpu"):
        self.threads = threads or inprocess_threads(device)

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


# ------------------------------------------------------------------------------------ process pool
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
        return max(1, cpu_cores() // self.workers)

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


# --------------------------------------------------------------------------------------------- Ray
def _ray_train(cell, job: str, inbox, cache: str | None, threads: int) -> dict:
    import ray

    _worker_init(cache, threads)
    set_reporter(lambda r: inbox.push.remote(job, r))
    try:
        out = _train_job(cell, ship=True)
    finally:
        set_reporter(None)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def _ray_cell(cell, trained: dict, cache: str | None, threads: int) -> dict:
    import ray

    _worker_init(cache, threads)
    node = ray.get_runtime_context().get_node_id()
    if "error" in trained:  # the driver records the training's error on this cell
        return {"out": None, "node": node}
    from bench.transfer import unpack

    unpack(trained.get("files", {}))
    return {"out": _run_cell(cell), "node": node, "cache": str(cache_dir())}


class _Inbox:
    """A Ray actor that collects the workers' progress reports until the driver fetches them."""

    def __init__(self):
        self.items: list = []

    def push(self, job: str, report: dict) -> None:
        self.items.append((job, report))

    def drain(self) -> list:
        out, self.items = self.items, []
        return out


def connect_ray(address: str | None, num_cpus: int | None):
    """Connect to the Ray cluster at ``address`` (or start a local one); returns (ray, started_here).
    Failures become BenchErrors that say what to do."""
    try:
        import ray
    except ImportError as e:
        raise BenchError("--executor ray needs the 'ray' package: pip install 'ray[default]'") from e
    if ray.is_initialized():
        return ray, False
    import warnings

    if address and address.startswith("ray://"):  # Ray Client: options go to the server's ray.init
        kw = {"address": address, "log_to_driver": False}
    else:
        kw = {"address": address} if address else {"num_cpus": num_cpus}
        kw.update(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.init(**kw)
    except ray.exceptions.AuthenticationError as e:
        raise BenchError(
            f"the Ray cluster at {address} refused this machine's authentication token ({e}). Ray 2.60+ "
            "clusters use token authentication: copy the token from the head node (`ray get-auth-token` "
            "there) and set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> here (or put it in "
            "~/.ray/auth_token), or run the command on the head node with --address auto") from None
    except ConnectionError as e:
        if address == "auto":
            raise BenchError(
                "--address auto: no running Ray cluster found on this machine. Start one first (`ray start "
                "--head` here, `ray start --address HEAD_IP:6379` on each worker node), or leave out "
                "--address to run Ray on this machine only") from None
        if address and address.startswith("ray://"):
            raise BenchError(
                f"could not connect to the Ray cluster at {address} ({e}). Check that the head node runs "
                "with its client server on that port (`ray start --head --ray-client-server-port 10001`) "
                "and that the port is reachable from here. Ray 2.60+ clusters use token authentication, "
                "which refuses a client without the token (and then only times out): set "
                "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<output of `ray get-auth-token` on the head> "
                "here. Simpler: run the command on the head node with --address auto") from None
        raise BenchError(f"could not connect to the Ray cluster at {address}: {e}. Check the address "
                         "(HOST:6379, auto, or ray://HOST:10001) and that the cluster runs") from None
    except (RuntimeError, ValueError) as e:
        raise BenchError(f"could not start or reach Ray (--address {address or 'local'}): {e}") from None
    return ray, True


class Ray(Executor):
    retries = 1  # Ray re-runs a task once when its worker process dies

    def __init__(self, address: str | None, workers: int | None, device: str):
        self.address, self.workers, self.device = address, workers, device
        self.trainings: list[dict] = []  # what each model's training job reported (status, node)
        self.nodes: dict[str, dict] = {}  # cell id -> node that ran it and that node's cache folder
        self._ray, self._started = None, False

    def connect(self):
        """Connect now (make_executor does, so a bad address fails before any work starts)."""
        if self._ray is None:
            self._ray, self._started = connect_ray(self.address, self.workers or cpu_cores())
        return self._ray

    def describe(self) -> str:
        return (f"ray: {self.address or 'local'}, one task per model training and per cell, "
                "1 torch thread each")

    def _execute(self, models, activity):
        ray, started = self.connect(), self._started
        # a Ray started here (no address) shares this machine's cache folder; a cluster's nodes use their own
        cache = str(cache_dir()) if started and not self.address else None
        gpus = 1 if self.device.startswith("cuda") else 0
        opts = {"num_cpus": 1, "num_gpus": gpus, "max_retries": self.retries, "retry_exceptions": False}
        shared = {k: os.environ[k] for k in (INLINE_DOMAINS_VAR,) if os.environ.get(k)}
        if shared:  # a grid's inline domains: workers on other nodes do not inherit this environment
            opts["runtime_env"] = {"env_vars": shared}
        train_task = ray.remote(**opts)(_ray_train)
        cell_task = ray.remote(**opts)(_ray_cell)
        inbox = ray.remote(num_cpus=0)(_Inbox).remote()
        pending: dict = {}
        trefs: dict = {}
        try:
            for m in models:
                trefs[m.index] = ref = train_task.remote(m.cells[0], m.job, inbox, cache, 1)
                pending[ref] = (m, None)
            for m in models:
                for c in m.cells:
                    pending[cell_task.remote(c, trefs[m.index], cache, 1)] = (m, c)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for job, report in ray.get(inbox.drain.remote()):
                    activity.update(job, report)
                for ref in done:
                    if ref not in pending:
                        continue  # a training already handled for one of its cells
                    m, c = pending.pop(ref)
                    self._training_done(ray, m, trefs[m.index], pending, activity)
                    if c is None:
                        continue
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        err = m.result.get("error") if m.result else None
                        yield self._result(m, c, err or self._crash(ray, e))
                        continue
                    if out["out"] is None:  # its model's training failed
                        yield self._result(m, c, m.result["error"])
                    else:
                        self.nodes[_cell_id(c)] = {"node": out["node"], "cache": out["cache"]}
                        yield self._result(m, c, out["out"])
        finally:
            for ref in pending:  # Ctrl-C or an error: stop what still runs
                try:
                    ray.cancel(ref, force=True)
                except Exception as e:  # noqa: BLE001 - already finished or gone
                    log.debug("cancel: %s", e)
            try:
                ray.kill(inbox)
            except Exception as e:  # noqa: BLE001
                log.debug("inbox: %s", e)
            if started:
                ray.shutdown()
                self._ray, self._started = None, False

    def _training_done(self, ray, m: _Model, tref, pending: dict, activity: Activity) -> None:
        """Record the model's training (once, before any of its cells: their rows depend on it)."""
        if m.result is not None:
            return
        pending.pop(tref, None)
        try:
            out = ray.get(tref)
        except ray.exceptions.RayError as e:
            out = {"error": f"{self._crash(ray, e)} while training this cell's model"}
        self.trainings.append({"model": m.index, "key": m.key, **{k: v for k, v in out.items() if k != "files"}})
        self._trained(m, out, activity)

    def _crash(self, ray, e: BaseException) -> str:
        cause = getattr(e, "cause", None) or e
        text = str(cause).strip()
        first = text.splitlines()[0] if text else ""
        return f"Ray worker died ({type(cause).__name__}: {first}); tried {self.retries + 1} times"


# -------------------------------------------------------------------------------------------------
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


def make_executor(kind: str, workers: int = 0, address: str | None = None, device: str = "cpu",
                  n_cells: int | None = None) -> Executor:
    """The executor for ``kind``; ``workers`` 0 means one per core (pool, ray) or one (inprocess)."""
    if kind == "auto":
        kind = "inprocess" if device.startswith("cuda") else "pool"
        if kind == "pool":
            workers = min(workers or cpu_cores(), n_cells or cpu_cores())
    if kind == "inprocess":
        return InProcess(device=device) if workers <= 1 else Pool(workers)
    if kind == "pool":
        workers = workers or cpu_cores()
        return InProcess(device=device) if workers <= 1 else Pool(workers)
    if kind == "ray":
        ex = Ray(address, workers or None, device)
        ex.connect()
        return ex
    raise BenchError(f"unknown executor '{kind}'; valid: auto, inprocess, pool, ray")
