"""The model zoo: reference source models trained once and shipped inside the package.

``backbones/zoo/manifest.json`` lists every shipped model under its model key (``bench.spec.Cell.model_key``,
the same key the scheduler and the checkpoint cache use), with the identity it was trained from, the
training data's fingerprint and the teacher's weights hash, the file's sha256 and size, the training wall
time and machine, and the model's per-class IoU in its own domain and on the other domains. The harness
uses a shipped model whenever a cell's model key, data fingerprint and teacher match an entry
(``bench.models.get_model``); any other configuration trains as before.

Storage (``pack`` / ``unpack``): a shipped file holds the model's state in compact form. Every weight
matrix or convolution kernel with at least ``QUANT_MIN`` elements is stored as int8 with one float16 scale
per output channel (symmetric, ``scale = max |w| / 127`` over the channel); every other floating tensor
(normalisation parameters and statistics, biases, small heads) as float16; integer buffers as they are.
The stored values are the reference model: what ``unpack`` returns is what every reference run used, and
the per-class IoU in the manifest is measured on it, not on the float32 weights the training produced
(the difference is measured at packing time and recorded as ``pack_delta_miou``).

Verification: ``verify()`` checks every manifest entry against its file (present, sha256); loading a
shipped model checks the sha256 first. A missing or corrupt file raises one BenchError that names the
file and the two ways to restore it (``git checkout -- FILE`` from a clone, or retrain it with
``python -m bench zoo train --only KEY --replace``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
FORMAT = "ttt-bench-zoo-1"
QUANT_MIN = 4096  # tensors with fewer elements are kept in float16
BUDGET_BYTES = 40_000_000  # every shipped model file together (the repository must stay easy to clone)


def manifest_path(root: Path | None = None) -> Path:
    return Path(root or ZOO_DIR) / "manifest.json"


def read_manifest(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's entries by model key ({} when the zoo holds no model)."""
    return dict(_read_manifest(str(Path(root or ZOO_DIR))))


@lru_cache(maxsize=4)
def _read_manifest(root: str) -> dict[str, dict[str, Any]]:
    path = manifest_path(Path(root))
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        models = data["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not a table")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: not a readable zoo manifest ({e}); restore it with `git checkout -- {path}`") from e
    return models


def clear_cache() -> None:
    """Forget the manifests and verified files read so far (after the zoo was rewritten)."""
    _read_manifest.cache_clear()
    _verified.clear()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def restore_hint(path: Path, key: str) -> str:
    return (f"restore it with `git checkout -- {path}` (from a clone of the repository), or retrain it with "
            f"`python -m bench zoo train --only {key} --replace`")


_verified: dict[str, str] = {}


def check_file(entry: dict[str, Any], key: str, root: Path | None = None) -> Path:
    """The entry's file, after checking that it exists and has the manifest's sha256 (once per process)."""
    path = Path(root or ZOO_DIR) / entry["file"]
    if not path.is_file():
        raise BenchError(f"shipped model {key}: file {path} is missing; {restore_hint(path, key)}")
    if _verified.get(str(path)) != entry["sha256"]:
        got = sha256(path)
        if got != entry["sha256"]:
            raise BenchError(f"shipped model {key}: file {path} is corrupt (sha256 {got[:12]}... differs from the "
                             f"manifest's {entry['sha256'][:12]}...); {restore_hint(path, key)}")
        _verified[str(path)] = got
    return path


def verify(root: Path | None = None) -> list[str]:
    """Problems found checking every manifest entry against its file ([] when all match)."""
    problems = []
    models = read_manifest(root)
    for key, entry in sorted(models.items()):
        try:
            path = check_file(entry, key, root)
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") != FORMAT or state.get("key") != key:
                problems.append(f"{key}: {path} is not the zoo file of this key (format {state.get('format')!r}, "
                                f"key {state.get('key')!r})")
        except BenchError as e:
            problems.append(str(e))
    folder = Path(root or ZOO_DIR)
    listed = {e["file"] for e in models.values()}
    total = sum(f.stat().st_size for f in (folder / name for name in listed) if f.is_file())
    if total > BUDGET_BYTES:
        problems.append(f"{folder}: the model files take {total / 1e6:.1f} MB, over the zoo's budget "
                        f"of {BUDGET_BYTES / 1e6:.0f} MB (ship fewer models or store them more compactly)")
    for extra in sorted(p.name for p in folder.glob("*.pt") if p.name not in listed):
        problems.append(f"{extra}: a model file that the manifest does not list (delete it, or retrain the zoo)")
    return problems


# ------------------------------------------------------------------------------------- compact storage
def pack(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The compact form of a state dict (see the module docstring)."""
    out: dict[str, Any] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if t.is_floating_point() and t.dim() >= 2 and t.numel() >= QUANT_MIN:
            rows = t.reshape(t.shape[0], -1).double()
            scale = (rows.abs().amax(1) / 127.0).clamp_min(1e-12).to(torch.float16)
            q = torch.round(rows / scale.double()[:, None]).clamp(-127, 127).to(torch.int8)
            out[name] = {"q": q.reshape(t.shape), "scale": scale}
        elif t.is_floating_point():
            out[name] = {"h": t.to(torch.float16)}
        else:
            out[name] = {"i": t.clone()}
    return out


def unpack(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The float32 state dict of a compact form (the reference model's weights)."""
    state = {}
    for name, d in packed.items():
        if "q" in d:
            q = d["q"]
            state[name] = (q.reshape(q.shape[0], -1).float() * d["scale"].float()[:, None]).reshape(q.shape)
        elif "h" in d:
            state[name] = d["h"].float()
        else:
            state[name] = d["i"]
    return state


def round_trip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as the zoo stores it: the weights a shipped model has."""
    return unpack(pack(state))


def write_model(path: Path, key: str, state: dict[str, torch.Tensor]) -> None:
    from bench.cache import atomic_write

    payload = {"format": FORMAT, "key": key, "state": pack(state)}
    atomic_write(Path(path), lambda p: torch.save(payload, p))


def load_state(entry: dict[str, Any], key: str, root: Path | None = None) -> dict[str, torch.Tensor]:
    """The float32 state dict of a shipped model, after checking its file."""
    path = check_file(entry, key, root)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT or payload.get("key") != key:
            raise ValueError(f"format {payload.get('format')!r}, key {payload.get('key')!r}")
        return unpack(payload["state"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported with the fix
        raise BenchError(f"shipped model {key}: {path} cannot be read ({type(e).__name__}: {e}); "
                         f"{restore_hint(path, key)}") from e
