"""The ``ray`` executor: one Ray task per model training and one per cell, each cell task depending on its
model's training task; the trained checkpoint travels to the cell's node through Ray's object store
(``bench.transfer``), so the nodes of a cluster need no shared disk. ``connect_ray`` turns connection
failures into BenchErrors that say what to do."""

from __future__ import annotations

import logging
import os

from bench.cache import cache_dir
from bench.errors import BenchError
from bench.executors import base
from bench.executors.base import INLINE_DOMAINS_VAR, Executor, _cell_id, _Model, _run_cell, _train_job, _worker_init
from bench.progress import Activity, set_reporter

log = logging.getLogger("bench.executors")


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
            self._ray, self._started = connect_ray(self.address, self.workers or base.cpu_cores())
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
