"""``python -m bench ARGS`` called in this process: ``bench.cli.main(ARGS)`` with its output captured.

Starting the CLI as a subprocess costs seconds of imports per call; tests whose point is what a command
says or writes call it here instead. Tests whose point is the process itself (piped output, another
working folder, signals, killed workers, tests/test_faults.py) still start a subprocess.

The result looks like ``subprocess.run``'s: ``returncode`` (main's return value, or argparse's exit
status), ``stdout`` and ``stderr`` (console output and every log record of level INFO and above, as the
CLI's log handler would print them).
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess


def bench(*args) -> subprocess.CompletedProcess:
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse: usage errors and --help
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["bench", *map(str, args)], code, out.getvalue(), err.getvalue())
