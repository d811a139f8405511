"""A cell's trained model: a shipped reference model (``backbones.zoo``) when the cell's ``model_key()``,
training data and teacher match one; else fetched from the checkpoint cache under that key, trained (and
stored) when absent."""

from __future__ import annotations

import json
import logging

import torch

from bench.resources import dataset_for, feature_cache, load_scene, train_val_names
from bench.spec import Cell

log = logging.getLogger(__name__)


def model_spec(cell: Cell, kd_dim: int):
    from backbones.model import ModelSpec

    return ModelSpec(backbone=cell.backbone["name"],
                     backbone_cfg={k: v for k, v in cell.backbone.items() if k != "name"},
                     features=cell.features, kd_dim=kd_dim, mae=cell.recipe_mae)


def get_model(cell: Cell, use_zoo: bool = True, root=None):
    """The cell's trained model and where it came from (``info["cache"]``: zoo | hit | miss | retrained).

    A shipped model is used when the zoo's manifest lists ``cell.model_key()`` with the same training-data
    fingerprint and teacher (``use_zoo=False`` skips the zoo: ``bench zoo train`` trains with it off). Else
    the checkpoint file is named by ``cell.model_key()`` (the key the scheduler groups cells by) in the
    checkpoint cache (or ``root``); the data fingerprint and the teacher's weights are checked against the
    stored ones, so a changed generator or weights file retrains instead of reusing a stale model."""
    from backbones import RECIPES
    from backbones.checkpoint import get_or_train
    from bench.openset import held_out_scenes

    data_spec = cell.training_data()
    ds = dataset_for(cell, data_spec)
    fc = feature_cache(cell, training=True) if cell.recipe_teacher else None
    spec = model_spec(cell, fc.teacher.dim if fc else 0)
    key = {**cell.model_identity(), "data_fingerprint": ds.fingerprint(),
           "teacher_key": fc.teacher.cache_key() if fc else None}
    if use_zoo:
        shipped = shipped_model(cell, key, spec)
        if shipped is not None:
            return shipped

    train = RECIPES.get(cell.recipe).factory(cfg=cell.recipe_cfg)

    def train_fn(model):
        names, vnames = train_val_names(cell, ds)
        ds.ensure(names + vnames, workers=torch.get_num_threads())
        scenes = [load_scene(ds, n, fc is not None) for n in names]
        val = [load_scene(ds, n, False) for n in vnames]
        if cell.holdout:  # open-set mode: the held-out classes are ignore in training (bench.openset)
            scenes, val = held_out_scenes(scenes, cell.holdout_ids), held_out_scenes(val, cell.holdout_ids)
        teacher_fn = (lambda s: fc.get(ds.fingerprint(), s)) if fc else None
        return train(model, scenes, val, cell.model_seed, cell.device, teacher_fn,
                     desc=f"train {spec.backbone}/{cell.recipe} on {data_spec}")

    return get_or_train(key, spec, train_fn, cell.device, root=root, name=cell.model_key())


def shipped_model(cell: Cell, key: dict, spec):
    """The shipped model of the cell's model key (None when the zoo has none, or one trained on other data or
    with another teacher, which is logged: the cell then trains its own)."""
    from backbones import zoo
    from backbones.model import build_model, to_device

    name = cell.model_key()
    entry = zoo.read_manifest().get(name)
    if entry is None:
        return None
    for field in ("data_fingerprint", "teacher_key"):
        if entry.get(field) != json.loads(json.dumps(key[field], default=str)):
            log.warning("shipped model %s was trained with another %s (%s, now %s); training this cell's model "
                        "instead", name, field, entry.get(field), key[field])
            return None
    state = zoo.load_state(entry, name)
    model = build_model(spec, "cpu")
    model.load_state_dict(state)
    model = to_device(model, cell.device).eval()
    return model, {"cache": "zoo", "train_seconds": float(entry.get("train_seconds", 0.0)), "path": entry["file"]}
