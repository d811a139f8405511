"""The one cache folder (generated scenes, teacher features, checkpoints) and atomic file helpers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import BenchError

ENV_VAR = "TTT_BENCH_CACHE"
_override: Path | None = None


def set_cache_dir(path: str | Path | None) -> None:
    """Use ``path`` as the cache folder (None: $TTT_BENCH_CACHE, else ~/.cache/ttt-bench). A path that
    exists but is not a folder raises a BenchError at once (nothing is created here)."""
    global _override
    _override = Path(path).expanduser() if path else None
    _check(_chosen())


def _chosen() -> Path:
    return _override or Path(os.environ.get(ENV_VAR, "~/.cache/ttt-bench")).expanduser()


def _source() -> str:
    return "--cache-dir" if _override else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default cache folder"


def not_a_folder(folder: Path) -> Path | None:
    """What stands in the way of ``folder`` being (or becoming) a folder: the nearest existing path of it
    and its parents if that is not a folder (a file, or a link to nothing), else None."""
    for q in (folder, *folder.parents):
        if q.exists() or q.is_symlink():
            return None if q.is_dir() else q
    return None


def _check(p: Path) -> None:
    if (q := not_a_folder(p)) is not None:
        raise BenchError(f"cache folder {p} ({_source()}): {q} is a file, not a folder; pass --cache-dir "
                         f"FOLDER or set ${ENV_VAR} to a folder")


def cache_dir() -> Path:
    """``--cache-dir`` if given, else $TTT_BENCH_CACHE, else ~/.cache/ttt-bench."""
    p = _chosen()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _check(p)
        raise BenchError(f"cache folder {p} ({_source()}) cannot be created ({e.strerror}); pass --cache-dir FOLDER "
                         f"or set ${ENV_VAR} to a writable folder") from None
    return p


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short hash of a JSON-able object (keys sorted), used for cache keys and cell ids."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_hash(path: Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def atomic_write(path: Path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename the temporary file onto ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are files like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True):
    """An exclusive advisory lock on ``path`` (created if absent). Yields True if acquired."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
