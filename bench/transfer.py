"""Moving cache files between machines that share no disk.

A file of the cache folder (a trained checkpoint) is packed as (path relative to the cache folder,
bytes); on another node it is unpacked into that node's own cache folder at the same relative path.
Ray carries the packed files through its object store: the training task returns them and every cell
task that depends on it receives them on its node. A file that is already present is kept (the cache
is content-addressed: the same relative path means the same key, and a loader still checks the key
stored inside), and writes are atomic, so two tasks unpacking on one node at once cannot tear it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bench.cache import atomic_write, cache_dir
from bench.errors import BenchError


def pack(paths: list[Path], root: Path | None = None) -> dict[str, bytes]:
    """{relative path: bytes} of cache files (each must lie inside the cache folder ``root``)."""
    root = (root or cache_dir()).resolve()
    out = {}
    for p in paths:
        p = Path(p).resolve()
        try:
            rel = p.relative_to(root)
        except ValueError:
            raise BenchError(f"{p} is not inside the cache folder {root}; only cache files can be sent "
                             "to other nodes") from None
        out[rel.as_posix()] = p.read_bytes()
    return out


def unpack(files: dict[str, bytes], root: Path | None = None) -> list[Path]:
    """Write the packed files into the cache folder ``root`` where absent; returns the paths written."""
    root = root or cache_dir()
    written = []
    for rel, blob in files.items():
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise BenchError(f"refusing to unpack '{rel}' outside the cache folder {root}")
        dest = root.joinpath(*parts)
        if dest.is_file():
            continue
        atomic_write(dest, lambda p, b=blob: p.write_bytes(b))
        written.append(dest)
    return written
