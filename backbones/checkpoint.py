"""The checkpoint cache: a trained model is stored under a hash of everything that defines it.

A grid cell's checkpoint is named by the cell's ``model_key()`` (``bench.spec.Cell``: backbone and
its config, input features, recipe and its settings, teacher config, training data and its options,
train-scene count, seed, model code version); the stored key adds the training data's fingerprint and
the teacher's weights hash. Each checkpoint stores a sha256 of its tensors (``meta["sha256"]``:
name, dtype, shape and bytes of each), verified on every load. A checkpoint that cannot be read,
whose stored key does not match or whose tensors differ from their checksum is retrained with a
warning, never silently used; one written before checkpoints carried checksums is loaded as before
(readable, key matching, every tensor fitting the model) and its checksum is added then. Loading uses
``torch.load(weights_only=True)``. A file lock per key stops two workers training the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from backbones.model import ModelSpec, SegModel, build_model
from bench.cache import atomic_write, cache_dir, file_lock, stable_hash

log = logging.getLogger(__name__)


def get_or_train(key: dict, spec: ModelSpec, train_fn: Callable[[SegModel], dict], device,
                 root: Path | None = None, name: str | None = None) -> tuple[SegModel, dict]:
    """Load the model of ``key`` (a JSON-able dict with at least ``seed``) from the cache or train it
    with ``train_fn`` and store it. The file is ``NAME.pt`` (a grid cell passes its ``model_key()``;
    default: a hash of ``key``); a file whose stored key differs from ``key`` is retrained.

    Returns (model in eval mode, info with 'cache' = hit|miss|retrained and 'train_seconds')."""
    root = Path(root) if root else cache_dir() / "checkpoints"
    h = name or stable_hash(key, 24)
    path = root / f"{h}.pt"
    with file_lock(root / f".{h}.lock"):
        status = "miss"
        if path.is_file():
            model, meta, problem = _load(path, key, spec, device)
            if model is not None:
                return model, {"cache": "hit", "train_seconds": meta.get("train_seconds", 0.0), "path": str(path)}
            log.warning("checkpoint %s is unusable (%s); retraining", path, problem)
            status = "retrained"
        torch.manual_seed(key["seed"])
        model = build_model(spec, device)
        info = train_fn(model)
        meta = {"key": json.dumps(key, sort_keys=True, default=str), "train_seconds": float(info["train_seconds"]),
                "val_miou": float(info.get("val_miou", float("nan"))),
                "history": json.dumps(info.get("history", []))}
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        meta["sha256"] = state_checksum(state)
        atomic_write(path, lambda p: torch.save({"state_dict": state, "meta": meta}, p))
        model.eval()
        return model, {"cache": status, "train_seconds": meta["train_seconds"], "path": str(path)}


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's tensors in key order: name, dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load(path: Path, key: dict, spec: ModelSpec, device):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        if meta["key"] != json.dumps(key, sort_keys=True, default=str):
            return None, None, "its stored key differs from the requested model"
        state = ckpt["state_dict"]
        stored = meta.get("sha256")
        if stored is not None and stored != state_checksum(state):
            return None, None, "its tensors differ from their checksum (damaged or altered)"
        model = build_model(spec, "cpu")
        model.load_state_dict(state)
        if stored is None:  # written before checkpoints carried checksums: adopt it
            meta = {**meta, "sha256": state_checksum(state)}
            atomic_write(path, lambda p: torch.save({"state_dict": state, "meta": meta}, p))
    except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file is retrained
        return None, None, f"{type(e).__name__}: {e}"
    from backbones.model import to_device

    return to_device(model, device).eval(), meta, None
