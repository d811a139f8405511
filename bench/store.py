"""The one results store: ``cells.parquet`` / ``cells.csv`` (a row per cell) and ``scenes.parquet``
(a row per cell and scene) in a results folder.

Rows are appended per cell, atomically: scene rows first, then the cell row, each table rewritten
to a temporary file and renamed into place. A cell counts as finished only once its cell row is
there; scene rows without a cell row (a run killed between the two writes) are dropped when read
and replaced when the cell runs again, so a killed run resumes with no row lost or doubled. A lock
file stops two runs from writing one folder at once (it is removed when the run ends).

A table that cannot be read (a disk fault, a hand edit) is a BenchError naming the file and the fix:
move it away and run again; a finished cell whose scene rows are gone runs again. A write that
fails (a full disk, a folder that is not writable) is a BenchError naming the file, before or after
which nothing half-written is left (every write is a rename).

A folder holding a ``REFERENCE`` marker is a committed reference output (``results/reference/GRID``,
written by ``bench run --reference``): a plain run refuses to resume or append there.

Layouts. A run folder (``bench run``) holds ``cells.parquet``, ``cells.csv`` (the same rows, for
reading by eye) and ``scenes.parquet``. A reference folder is written compactly: both parquet tables
zstd-compressed, no ``cells.csv``, and the scene columns that the per-scene confusion matrix
determines (``DERIVED``: ``miou``, ``miou_3d``, ``acc``) left out; nothing else is dropped, so the
reference stays a complete record. Reading fills those columns from ``conf`` again (by
``bench.metrics``' rule), so every reader sees one layout; ``compact`` rewrites an existing folder so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cache import atomic_write, not_a_folder
from bench.errors import BenchError
from bench.metrics import accuracy, miou

MARKER = "REFERENCE"
DERIVED = ("miou", "miou_3d", "acc")  # scene columns a compact folder leaves to ``conf``
COMPRESSION = "zstd"


def _fill_derived(scenes: pd.DataFrame) -> pd.DataFrame:
    """Scene rows with the ``DERIVED`` columns that a compact folder left out recomputed from ``conf``
    (the 3D prediction's confusion matrix: ``miou_3d`` = ``miou``)."""
    missing = [k for k in DERIVED if k not in scenes]
    if not missing or "conf" not in scenes or scenes.empty:
        return scenes
    confs = [np.asarray(c, dtype=np.int64) for c in scenes["conf"]]
    confs = [c.reshape(int(round(np.sqrt(c.size))), -1) for c in confs]
    scenes = scenes.copy()
    values = {"miou": [miou(c) for c in confs], "acc": [accuracy(c) for c in confs]}
    values["miou_3d"] = values["miou"]
    for k in missing:
        scenes[k] = values[k]
    return scenes


def _compact_scenes(scenes: pd.DataFrame) -> pd.DataFrame:
    return scenes.drop(columns=[k for k in DERIVED if k in scenes]) if "conf" in scenes else scenes


def _read_table(path: Path) -> pd.DataFrame:
    """Read a parquet table from one snapshot of its bytes.

    pyarrow may open a path more than once (footer, then row groups); a run renaming a new table into
    place between the two opens made a reader in another process (``bench status``, a report during a
    run) see the footer of one file and the pages of another. Reading the bytes once reads one file.
    """
    return pd.read_parquet(io.BytesIO(path.read_bytes()))


class ResultsStore:
    def __init__(self, out: Path, reference: bool = False):
        self.out = Path(out)
        self.reference = reference
        self.cells_path = self.out / "cells.parquet"
        self.scenes_path = self.out / "scenes.parquet"

    def is_reference(self) -> bool:
        return (self.out / MARKER).is_file()

    def check_writable(self) -> None:
        """The folder is (or can become) a folder this process may write, and a plain run never writes
        into a reference folder. Nothing is created here."""
        if (p := not_a_folder(self.out)) is not None:
            raise BenchError(f"results folder {self.out}: {p} is a file, not a folder; give a folder (--out of "
                             "bench run, --runs of bench select): a new one, e.g. runs/NAME, or an earlier "
                             "run's folder to resume it")
        existing = next((q for q in (self.out, *self.out.parents) if q.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise BenchError(f"results folder {self.out}: {existing} is not writable here; give --out a folder "
                             "you can write, e.g. runs/NAME")
        if self.is_reference() and not self.reference:
            raise BenchError(f"{self.out} holds reference results (it has a {MARKER} file), which a run never "
                             "resumes or appends to; run into a runs folder instead (the default, runs/GRID, or "
                             "--out runs/NAME) and compare with `python -m bench compare RUN " + str(self.out) +
                             "`; to regenerate the reference on purpose, add --reference")

    @contextlib.contextmanager
    def lock(self):
        self.check_writable()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.reference and not self.is_reference():
                self.write(self.out / MARKER, lambda p: p.write_text(
                    "Reference results: written by `python -m bench run --reference`; plain runs never write here.\n"))
            f = open(self.out / ".lock", "a+")
        except OSError as e:
            raise write_error(e, self.out) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise BenchError(f"{self.out} is being written by another run ({who}); wait for it to finish "
                             "or use another --out folder") from None
        try:
            try:
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()}")
                f.flush()
            except OSError as e:
                raise write_error(e, self.out / ".lock") from None
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out / ".lock")  # while still held: no other run can be inside
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def _table(self, path: Path, lost: str) -> pd.DataFrame:
        if not path.is_file():
            return pd.DataFrame()
        try:
            return _read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BenchError(f"{path}: unreadable results table ({type(e).__name__}: {first}); move it away "
                             f"(mv {path} {path}.bad) and run the same command again: {lost}") from None

    def cells(self) -> pd.DataFrame:
        return self._table(self.cells_path, "the cells it held run again (cells.csv beside it keeps a copy of "
                                            "their rows)")

    def all_scenes(self) -> pd.DataFrame:
        """Every scene row on disk, also those of cells without a cell row (a run killed in between)."""
        return self._table(self.scenes_path, "finished cells whose scene rows it held run again, the others "
                                             "are kept")

    def scenes(self) -> pd.DataFrame:
        df = self.all_scenes()
        if df.empty:
            return df
        df = _fill_derived(df)
        cells = self.cells()
        if cells.empty:
            return df.iloc[0:0]
        return df[df["cell_id"].isin(set(cells["cell_id"]))]

    def data_keys(self) -> dict[str, str]:
        """Cell id -> the data key its finished row recorded ("" for rows written before rows had one),
        for the cells finished with their scene rows (a cell whose scene rows were lost runs again)."""
        df = self.cells()
        if df.empty:
            return {}
        ok = df[df["status"] == "ok"]
        scenes = self.all_scenes()
        if not ok.empty:
            ok = ok[ok["cell_id"].isin(set(scenes["cell_id"]))] if not scenes.empty else ok.iloc[0:0]
        keys = ok["data_key"] if "data_key" in ok else pd.Series("", index=ok.index)
        return {c: (k if isinstance(k, str) else "") for c, k in zip(ok["cell_id"], keys)}

    def write(self, path: Path, write_fn) -> None:
        """``atomic_write`` that turns an OS error (full disk, no permission) into one BenchError."""
        try:
            atomic_write(path, write_fn)
        except OSError as e:
            raise write_error(e, path) from None

    def append(self, cell_row: dict, scene_rows: list[dict]) -> None:
        cid = cell_row["cell_id"]
        old = self.all_scenes()
        if not old.empty:
            old = old[old["cell_id"] != cid]
        new = pd.DataFrame(scene_rows)
        if self.reference:
            old, new = _compact_scenes(old), _compact_scenes(new)
        scenes = pd.concat([old, new], ignore_index=True) if not old.empty else new
        opts = {"compression": COMPRESSION} if self.reference else {}
        if not scenes.empty:
            self.write(self.scenes_path, lambda p: scenes.to_parquet(p, index=False, **opts))
        cells = self.cells()
        if not cells.empty:
            cells = cells[cells["cell_id"] != cid]
        row = pd.DataFrame([cell_row])
        cells = pd.concat([cells, row], ignore_index=True) if not cells.empty else row
        self.write(self.cells_path, lambda p: cells.to_parquet(p, index=False, **opts))
        if self.reference:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out / "cells.csv")  # a reference keeps no copy that could go stale
        else:
            self.write(self.out / "cells.csv", lambda p: cells.to_csv(p, index=False))


def compact(folder: Path) -> tuple[int, int]:
    """Rewrite a results folder's tables in the compact reference layout (module docstring); returns
    the tables' bytes before and after. Nothing is lost: the dropped columns are recomputed when read."""
    folder = Path(folder)
    paths = [folder / n for n in ("cells.parquet", "cells.csv", "scenes.parquet")]
    before = sum(p.stat().st_size for p in paths if p.is_file())
    cells = ResultsStore(folder).cells()
    if cells.empty:
        raise BenchError(f"{folder}: no results (cells.parquet missing or empty) to compact")
    atomic_write(folder / "cells.parquet", lambda p: cells.to_parquet(p, index=False, compression=COMPRESSION))
    if (folder / "scenes.parquet").is_file():
        scenes = _compact_scenes(_read_table(folder / "scenes.parquet"))
        atomic_write(folder / "scenes.parquet", lambda p: scenes.to_parquet(p, index=False, compression=COMPRESSION))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / "cells.csv")
    return before, sum(p.stat().st_size for p in paths if p.is_file())


def write_error(e: OSError, path: Path) -> BenchError:
    """One message for a write that failed: which file, why, and what to do (finished cells are kept)."""
    where = e.filename or path
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = ("no space left on its disk: free space there (or move --out, or --cache-dir for cache files, to "
               "another disk) and run the same command again; finished cells are kept")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "this folder cannot be written here; give --out a folder you can write, e.g. runs/NAME"
    else:
        fix = "check the disk and the folder, then run the same command again; finished cells are kept"
    return BenchError(f"cannot write {where} ({e.strerror or e}): {fix}")
