"""Progress bars (rich) for anything that takes more than a few seconds."""

from __future__ import annotations

import os
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress(transient: bool = True) -> Progress:
    disable = os.environ.get("TTT_BENCH_NO_PROGRESS") == "1" or not sys.stderr.isatty()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), transient=transient, disable=disable)
