"""A cell's trained model: fetched from the checkpoint cache under the cell's ``model_key()``,
trained (and stored) when absent."""

from __future__ import annotations

import torch

from bench.resources import dataset_for, feature_cache, load_scene, train_val_names
from bench.spec import Cell


def model_spec(cell: Cell, kd_dim: int):
    from backbones.model import ModelSpec

    return ModelSpec(backbone=cell.backbone["name"],
                     backbone_cfg={k: v for k, v in cell.backbone.items() if k != "name"},
                     features=cell.features, kd_dim=kd_dim, mae=cell.recipe_mae)


def get_model(cell: Cell):
    """The cell's trained model (from the checkpoint cache, trained if absent) and cache info.

    The checkpoint file is named by ``cell.model_key()`` (the key the scheduler groups cells by); the
    data fingerprint and the teacher's weights are checked against the stored ones, so a changed
    generator or weights file retrains instead of reusing a stale model."""
    from backbones import RECIPES
    from backbones.checkpoint import get_or_train

    data_spec = cell.training_data()
    ds = dataset_for(cell, data_spec)
    fc = feature_cache(cell, training=True) if cell.recipe_teacher else None
    spec = model_spec(cell, fc.teacher.dim if fc else 0)
    key = {**cell.model_identity(), "data_fingerprint": ds.fingerprint(),
           "teacher_key": fc.teacher.cache_key() if fc else None}

    train = RECIPES.get(cell.recipe).factory(cfg=cell.recipe_cfg)

    def train_fn(model):
        names, vnames = train_val_names(cell, ds)
        ds.ensure(names + vnames, workers=torch.get_num_threads())
        scenes = [load_scene(ds, n, fc is not None) for n in names]
        val = [load_scene(ds, n, False) for n in vnames]
        teacher_fn = (lambda s: fc.get(ds.fingerprint(), s)) if fc else None
        return train(model, scenes, val, cell.model_seed, cell.device, teacher_fn,
                     desc=f"train {spec.backbone}/{cell.recipe} on {data_spec}")

    return get_or_train(key, spec, train_fn, cell.device, name=cell.model_key())
