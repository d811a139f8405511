"""Progress bars (rich) for anything that takes more than a few seconds, and progress reports from workers.

Long work (training a model, extracting teacher features) opens ``progress()`` and calls ``add_task`` /
``update`` as with a rich ``Progress``. Outside a run that draws a rich bar. During a run the executor
installs a *reporter* (``set_reporter``) in every process that does work: ``progress()`` then returns a
``Reporting`` object that forwards (description, done, total, info, elapsed) to it, throttled, so a
pool worker sends it through its pipe, a Ray worker to an inbox actor, and in-process the call goes
straight to the display. The main process shows these reports with ``Activity``: one extra line per
running job in the run's bar (``model 1/2: train spunet/source on synth-scannet  3/6  epoch 3/6 ...``)
and a log line at the start, at most every ``log_every`` seconds while it runs (with an ETA), and at
the end, so neither the bar nor the log sits silent while models train.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger(__name__)
T = TypeVar("T")
Reporter = Callable[[dict], None]

_reporter: Reporter | None = None
_live: Progress | None = None  # the bar being drawn in this process, if any (Activity adds its lines there)


class _Bar(Progress):
    """A rich Progress that registers itself as this process's live bar while it is shown."""

    def start(self) -> None:
        global _live
        super().start()
        if not self.disable:
            _live = self

    def stop(self) -> None:
        global _live
        super().stop()
        if _live is self:
            _live = None


def set_reporter(fn: Reporter | None) -> Reporter | None:
    """Send progress of this process to ``fn`` (a dict per report) instead of drawing bars; returns the
    previous reporter (``None`` restores bars)."""
    global _reporter
    prev, _reporter = _reporter, fn
    return prev


def progress(transient: bool = True) -> Progress | Reporting:
    """A progress bar, or, inside a run's worker (a reporter is set), a ``Reporting`` with the same calls."""
    if _reporter is not None:
        return Reporting(_reporter)
    disable = os.environ.get("TTT_BENCH_NO_PROGRESS") == "1" or not sys.stderr.isatty()
    return _Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), transient=transient, disable=disable)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` showing (or reporting) progress, e.g. teacher features of the training scenes."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress() as bar:
        task = bar.add_task(description, total=total, info="")
        for it in items:
            yield it
            bar.update(task, advance=1)


class Reporting:
    """The calls of a rich Progress that the harness uses, forwarded as dicts to a reporter: at most one
    report per ``every`` seconds per task, plus the first and the last."""

    def __init__(self, reporter: Reporter, every: float = 0.5):
        self.reporter, self.every = reporter, every
        self.tasks: dict[int, dict] = {}
        self.disable = True  # nothing is drawn here

    def __enter__(self) -> Reporting:
        return self

    def __exit__(self, *exc) -> None:
        for tid in list(self.tasks):
            self._send(tid, force=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = {"desc": description, "total": total, "done": completed,
                           "info": str(fields.get("info", "")), "t0": time.perf_counter(), "sent": 0.0}
        self._send(tid, force=True)
        return tid

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        t = self.tasks[task_id]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["done"] = completed
        if advance:
            t["done"] += advance
        if description is not None:
            t["desc"] = description
        if "info" in fields:
            t["info"] = str(fields["info"])
        self._send(task_id, force=t["total"] is not None and t["done"] >= t["total"])

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _send(self, task_id: int, force: bool = False) -> None:
        t = self.tasks[task_id]
        now = time.perf_counter()
        if not force and now - t["sent"] < self.every:
            return
        state = (t["desc"], t["done"], t["total"], t["info"])
        if force and state == t.get("last"):
            return  # the final state was sent already
        t["sent"], t["last"] = now, state
        try:
            self.reporter({"task": task_id, "desc": t["desc"], "done": t["done"], "total": t["total"],
                           "info": t["info"], "elapsed": now - t["t0"]})
        except Exception as e:  # noqa: BLE001 - a lost progress report must never fail the work
            log.debug("progress report lost: %s", e)


def eta(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the rate so far (None before the first unit of work or without a total)."""
    if not total or done <= 0:
        return None
    return max(0.0, elapsed / done * (total - done))


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class Activity:
    """What the workers are doing now, shown in the main process: a line per running job in the run's
    bar (if one is drawn) and log lines. Jobs are announced with ``expect(job, label)`` and then fed the
    workers' reports with ``update(job, report)``; ``finish(job, note)`` removes the line."""

    def __init__(self, log_every: float = 15.0):
        self.log_every = log_every
        self.labels: dict[str, str] = {}
        self.lines: dict[tuple[str, int], int] = {}  # (job, worker's task id) -> bar task
        self.logged: dict[str, float] = {}
        self.last: dict[str, str] = {}

    def expect(self, job: str, label: str) -> None:
        self.labels[job] = label

    def start(self, job: str, note: str = "started") -> None:
        self.logged[job] = time.perf_counter()
        log.info("%s: %s", self.labels.get(job, job), note)

    def update(self, job: str, report: dict) -> None:
        label = self.labels.get(job, job)
        key = (job, int(report.get("task", 0)))
        desc, done, total, info = report["desc"], report["done"], report["total"], report.get("info", "")
        left = eta(done, total, report.get("elapsed", 0.0))
        bar = _live
        if bar is not None:
            line = f"{label}: {desc}"[:70]
            if key not in self.lines:
                self.lines[key] = bar.add_task(line, total=total, info=info)
            bar.update(self.lines[key], completed=done, total=total, info=info, description=line)
        now = time.perf_counter()
        finished = total is not None and done >= total
        if job not in self.logged:
            self.logged[job] = 0.0
        if finished or now - self.logged[job] >= self.log_every or desc != self.last.get(job):
            self.logged[job], self.last[job] = now, desc
            count = f" {done:g}/{total:g}" if total else ""
            tail = f", ETA {_fmt_s(left)}" if left is not None and not finished else ""
            log.info("%s: %s%s%s%s", label, desc, count, f" ({info})" if info else "", tail)

    def finish(self, job: str, note: str = "") -> None:
        bar = _live
        for key in [k for k in self.lines if k[0] == job]:
            tid = self.lines.pop(key)
            if bar is not None:
                bar.remove_task(tid)
        if note:
            log.info("%s: %s", self.labels.get(job, job), note)
        self.logged.pop(job, None)
        self.last.pop(job, None)

    def close(self) -> None:
        for job in {k[0] for k in self.lines}:
            self.finish(job)
