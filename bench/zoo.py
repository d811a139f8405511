"""``python -m bench zoo {list,verify,train}``: the shipped reference source models (``backbones.zoo``).

Which models the zoo holds is decided by the shipped grids, not by a list: ``zoo_cells`` loads every
grid in ``bench/grids`` whose datasets are all synthetic and keeps one cell per distinct model key of the
shipped model seed (``model_seeds`` default), so the default grids find every model they need. ``zoo train``
trains each of them with the checkpoint cache's own training path (``bench.models.get_model`` with the zoo
switched off, into a folder of its own under the cache, so a rerun of an interrupted ``zoo train`` reuses
every model it finished; a model cut off mid-training starts over), packs it
(``backbones.zoo.pack``), measures the packed model's per-class IoU on ``EVAL_SCENES`` test scenes of every
synthetic test domain (its own domain: the in-distribution table; the others: the transfer matrix) and
writes the file and its manifest entry. ``--only KEY`` trains one model; without ``--replace`` it is not
written into the zoo but compared with the shipped one (in-domain mIoU and per-class IoU differences), the
check that a retrained model lands within seed noise of the shipped one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError

log = logging.getLogger(__name__)


def stdout_print(text: str) -> None:
    import sys

    sys.stdout.write(text)

EVAL_SCENES = 72  # test scenes per domain for the manifest's per-class IoU (the 3 seeds x 24 of id_ood)
EVAL_DOMAINS = ("synth-scannet", "synth-s3dis", "synth-matterport")
SKIP_GRIDS = ("id_ood_real",)  # grids on real data: their models cannot be trained here


def zoo_cells(grids: list[str] | None = None) -> dict[str, Any]:
    """One cell per distinct model key that the shipped synthetic grids need (model seed 0 only)."""
    from bench.data.datasets import DatasetSpec
    from bench.grid import GRID_DIR, load_grid

    names = grids or sorted(p.stem for p in GRID_DIR.glob("*.toml") if p.stem not in SKIP_GRIDS)
    cells: dict[str, Any] = {}
    for name in names:
        for cell in load_grid(name).cells:
            if getattr(cell, "model_seed", 0) != 0:
                continue
            base = DatasetSpec.parse(cell.training_data()).base
            if not base.startswith("synth-"):
                continue
            cells.setdefault(cell.model_key(), cell)
    return cells


def describe_model(cell) -> str:
    teacher = f" [{cell.teacher['name']}]" if cell.recipe_teacher and cell.teacher else ""
    bb = cell.backbone["name"]
    held = f" without {', '.join(cell.holdout)}" if getattr(cell, "holdout", ()) else ""
    return f"{bb}/{cell.recipe}{teacher} on {cell.training_data()}{held}"


def _plain(identity: dict) -> bool:
    """A shipped plain model of the acceptance bar: spunet, source recipe, the default 96 training scenes,
    every class learned (an open-set model, which holds classes out of training, is not one)."""
    return (identity["recipe"] == "source" and identity["backbone"] == "spunet" and identity["n_train"] == 96
            and not identity.get("holdout"))


def evaluate(model, cell, n: int = EVAL_SCENES) -> dict[str, dict]:
    """Per-class IoU and mIoU of ``model`` on ``n`` test scenes of each test domain (classes scored: those the
    training domain and the target both label that occur in the target's scenes)."""
    import torch

    from backbones.batch import make_batch
    from bench.data.classes import CLASSES, NUM_CLASSES, eval_classes
    from bench.metrics import confusion, iou_per_class
    from bench.resources import dataset

    source = dataset(cell.training_data())
    out = {}
    model.eval()
    for dom in EVAL_DOMAINS:
        ds = dataset(dom)
        names = ds.scene_names("test", n)
        ds.ensure(names, workers=1)
        classes = eval_classes(source.classes, ds.classes)
        conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        with torch.no_grad():
            for name in names:
                s = ds.load(name, with_views=False)
                pred = model(make_batch([s], model.spec.features).to(cell.device))["seg"].argmax(1).cpu().numpy()
                conf += confusion(pred, s.label, NUM_CLASSES, classes)
        iou = iou_per_class(conf)
        scored = [c for c in classes if conf[c].sum() > 0]
        share = conf.sum(1) / max(conf.sum(), 1)
        out[dom] = {"miou": round(float(np.mean(iou[scored])), 4),
                    "iou": {CLASSES[c]: round(float(iou[c]), 4) for c in scored},
                    "share": {CLASSES[c]: round(float(share[c]), 4) for c in scored}}
    return out


def _train_one(args) -> dict:
    """Worker: train (or resume from the zoo's training cache) the model of one cell; pack, evaluate."""
    cell_plain, key, root = args
    import torch

    from backbones import zoo
    from bench.env import cpu_name
    from bench.models import get_model
    from bench.spec import Cell

    torch.set_num_threads(int(os.environ.get("TTT_BENCH_ZOO_THREADS", "1")))
    cell = Cell.from_dict(cell_plain)
    t0 = time.perf_counter()
    model, info = get_model(cell, use_zoo=False, root=Path(root))
    float_eval = evaluate(model, cell)
    state = zoo.round_trip(model.state_dict())
    model.load_state_dict(state)
    packed_eval = evaluate(model, cell)
    dom = cell.training_data()
    ckpt = torch.load(info["path"], map_location="cpu", weights_only=True)
    meta = ckpt.get("meta", {})
    return {"key": key, "state": {k: v.clone() for k, v in model.state_dict().items()},
            "entry": {"model": describe_model(cell), "identity": cell.model_identity(),
                      "data_fingerprint": json.loads(meta["key"])["data_fingerprint"] if "key" in meta else None,
                      "teacher_key": json.loads(meta["key"])["teacher_key"] if "key" in meta else None,
                      "train_seconds": round(float(info["train_seconds"]), 1), "torch_threads": torch.get_num_threads(),
                      "machine": cpu_name(), "in_domain": packed_eval[dom],
                      "transfer": {d: v for d, v in packed_eval.items() if d != dom},
                      "pack_delta_miou": round(packed_eval[dom]["miou"] - float_eval[dom]["miou"], 4),
                      "val_curve": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                                    for h in json.loads(meta.get("history", "[]"))],
                      "seconds_total": round(time.perf_counter() - t0, 1)}}


def train(only: list[str] | None, replace: bool, workers: int, console) -> int:
    """Train the zoo's models (all, or the keys in ``only``) and write them (see the module docstring)."""
    from backbones import zoo
    from bench.cache import cache_dir

    cells = zoo_cells()
    if only:
        unknown = [k for k in only if k not in cells]
        if unknown:
            listing = "\n".join(f"  {k}  {describe_model(c)}" for k, c in sorted(cells.items()))
            raise BenchError(f"zoo train --only: no default grid needs a model with key {', '.join(unknown)}; "
                             f"the keys are:\n{listing}")
        cells = {k: cells[k] for k in dict.fromkeys(only)}  # trained in the order given
    write = replace or not only
    root = cache_dir() / "zoo-train"
    jobs = [(c.to_dict(), k, str(root)) for k, c in (cells.items() if only else sorted(cells.items()))]
    console.print(f"training {len(jobs)} model(s) with {workers} worker(s); checkpoints in {root}")
    shipped = zoo.read_manifest()
    done = 0
    with ProcessPoolExecutor(max(1, workers)) as ex:
        futures = [ex.submit(_train_one, job) for job in jobs]
        for fut in as_completed(futures):
            res = fut.result()
            key, entry = res["key"], res["entry"]
            console.print(f"{key}  {entry['model']}: in-domain mIoU {100 * entry['in_domain']['miou']:.1f} "
                          f"(trained in {entry['train_seconds']:.0f} s)", markup=False)
            if key in shipped and not write:
                _compare(console, key, shipped[key], entry)
            if write:  # each model is written as it finishes: a stopped batch keeps what it finished
                _write([res])
                done += 1
    if write:
        console.print(f"wrote {done} model(s) and {zoo.manifest_path()}")
    return 0


def _compare(console, key: str, old: dict, new: dict) -> None:
    a, b = old["in_domain"], new["in_domain"]
    console.print(f"  shipped {100 * a['miou']:.1f} -> retrained {100 * b['miou']:.1f} "
                  f"({100 * (b['miou'] - a['miou']):+.1f} points; a retrained model differs by seed noise, "
                  "not bit for bit)", markup=False)
    diffs = ", ".join(f"{c} {100 * (b['iou'].get(c, float('nan')) - v):+.1f}" for c, v in a["iou"].items())
    console.print(f"  per class: {diffs}", markup=False)


def _write(results: list[dict]) -> None:
    from backbones import zoo

    zoo.ZOO_DIR.mkdir(parents=True, exist_ok=True)
    path = zoo.manifest_path()
    data = json.loads(path.read_text()) if path.is_file() else {"format": zoo.FORMAT, "models": {}}
    for res in results:
        file = zoo.ZOO_DIR / f"{res['key']}.pt"
        zoo.write_model(file, res["key"], res["state"])
        entry = dict(res["entry"])
        entry.update({"file": file.name, "sha256": zoo.sha256(file), "bytes": file.stat().st_size})
        data["models"][res["key"]] = entry
    data["models"] = dict(sorted(data["models"].items()))
    data["total_bytes"] = sum(e["bytes"] for e in data["models"].values())
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    zoo.clear_cache()


# Source-Only transfer between the real datasets (mean mIoU of two backbones in the TTT-KD paper, arXiv
# 2403.11691): train rows, test columns ScanNet / S3DIS / Matterport3D.
REAL_TRANSFER = {"scannet": (73.2, 66.6, 48.7), "s3dis": (54.7, 64.6, 44.1), "matterport3d": (47.2, 58.9, 54.5)}
BAR_MIOU, BAR_SHARE, BAR_CLASS = 0.60, 0.01, 0.20  # the acceptance bar of the shipped plain models


def markdown(models: dict[str, dict]) -> str:
    """The shipped models as Markdown: a summary, the plain models' per-class IoU in their own domain and on
    the other domains (with the acceptance bar checked), and the transfer matrix beside the real datasets'."""
    from bench.data.classes import CLASSES

    short = {"synth-scannet": "s-scannet", "synth-s3dis": "s-s3dis", "synth-matterport": "s-matterport"}
    lines = ["| key | model | in-domain mIoU | train s (2-core) | MB | int8 delta |", "|---|---|---|---|---|---|"]
    for key, e in sorted(models.items(), key=lambda kv: kv[1]["model"]):
        lines.append(f"| `{key[:8]}` | {e['model']} | {100 * e['in_domain']['miou']:.1f} | {e['train_seconds']:.0f} | "
                     f"{e['bytes'] / 1e6:.2f} | {100 * e.get('pack_delta_miou', 0.0):+.2f} |")
    plain = {e["identity"]["data"]: e for e in models.values() if _plain(e["identity"])}
    doms = [d for d in EVAL_DOMAINS if d in plain]
    if doms:
        lines += ["", "Per-class IoU of the plain `spunet/source` models (rows: model -> test domain; "
                  f"{EVAL_SCENES} test scenes each; `-`: class not scored there; **bold**: a class with >= "
                  f"{100 * BAR_SHARE:.0f} % of the domain's points below {100 * BAR_CLASS:.0f} IoU in its own "
                  "model)", "",
                  "| model -> test | mIoU | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
        for d in doms:
            e = plain[d]
            for t in EVAL_DOMAINS:
                r = e["in_domain"] if t == d else e["transfer"].get(t)
                if r is None:
                    continue
                cells = []
                for c in CLASSES:
                    v = r["iou"].get(c)
                    bad = t == d and v is not None and r["share"].get(c, 0) >= BAR_SHARE and v < BAR_CLASS
                    cells.append("-" if v is None else (f"**{100 * v:.0f}**" if bad else f"{100 * v:.0f}"))
                lines.append(f"| {short[d]} -> {short[t]} | {100 * r['miou']:.1f} | " + " | ".join(cells) + " |")
        lines += ["", "Transfer matrix (mIoU of the plain models; rows train, columns test) beside the real datasets' "
                  "Source-Only pattern (TTT-KD paper, mean of two backbones):", "",
                  "| train \\ test | " + " | ".join(short[t] for t in EVAL_DOMAINS) + " | real: ScanNet | S3DIS | "
                  "Matterport3D |", "|---|" + "---|" * (len(EVAL_DOMAINS) + 3)]
        for d, real in zip(EVAL_DOMAINS, REAL_TRANSFER.values()):
            if d not in plain:
                continue
            e = plain[d]
            row = [100 * (e["in_domain"] if t == d else e["transfer"][t])["miou"] for t in EVAL_DOMAINS]
            lines.append(f"| {short[d]} | " + " | ".join(f"{v:.1f}" for v in row) + " | "
                         + " | ".join(f"{v:.1f}" for v in real) + " |")
    return "\n".join(lines) + "\n"


def bar_problems(models: dict[str, dict]) -> list[str]:
    """Where a shipped plain spunet model misses the acceptance bar (in-domain mIoU, classes >= 1 % of points)."""
    out = []
    for e in models.values():
        if not _plain(e["identity"]):
            continue
        r = e["in_domain"]
        if r["miou"] < BAR_MIOU:
            out.append(f"{e['model']}: in-domain mIoU {100 * r['miou']:.1f} < {100 * BAR_MIOU:.0f}")
        for c, v in r["iou"].items():
            if r["share"].get(c, 0) >= BAR_SHARE and v < BAR_CLASS:
                out.append(f"{e['model']}: {c} ({100 * r['share'][c]:.1f} % of points) IoU {100 * v:.1f}")
    return out


def cmd(args, console) -> int:
    from backbones import zoo

    if args.zoo_cmd == "verify":
        problems = zoo.verify()
        models = zoo.read_manifest()
        if problems:
            for p in problems:
                console.print(f"[red]{p}[/]", markup=True)
            raise BenchError(f"zoo verify: {len(problems)} problem(s) in {zoo.ZOO_DIR}")
        console.print(f"zoo verify: {len(models)} model(s) match the manifest ({zoo.manifest_path()})")
        return 0
    if args.zoo_cmd == "report":
        text = markdown(zoo.read_manifest())
        if args.out:
            args.out.write_text(text)
            console.print(f"wrote {args.out}")
        else:
            stdout_print(text)
        for p in bar_problems(zoo.read_manifest()):
            console.print(f"below the bar: {p}", markup=False)
        return 0
    if args.zoo_cmd == "list":
        models = zoo.read_manifest()
        needed = zoo_cells()
        for key, cell in sorted(needed.items(), key=lambda kv: describe_model(kv[1])):
            e = models.get(key)
            state = (f"shipped, in-domain mIoU {100 * e['in_domain']['miou']:.1f}, {e['bytes'] / 1e6:.2f} MB"
                     if e else "not shipped: trained on first use")
            console.print(f"{key}  {describe_model(cell)}: {state}", markup=False)
        return 0
    if args.workers < 0:
        raise BenchError(f"--workers {args.workers} must be >= 0 (0 = one per core)")
    workers = args.workers or (os.cpu_count() or 1)
    return train(args.only or None, args.replace, workers, console)


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="zoo_cmd", required=True)
    sub.add_parser("list", help="the models the default grids need and whether each is shipped")
    sub.add_parser("verify", help="check every shipped file against the manifest (sha256)")
    r = sub.add_parser("report", help="Markdown tables of the shipped models: per-class IoU, transfer matrix")
    r.add_argument("--out", type=Path, help="file to write (default: print)")
    t = sub.add_parser("train", help="train the shipped models (all, or --only KEY) and write them")
    t.add_argument("--only", action="append", default=[], metavar="KEY",
                   help="train only this model key (repeatable); without --replace it is compared with the shipped "
                        "one instead of replacing it")
    t.add_argument("--replace", action="store_true", help="with --only: write the retrained model into the zoo")
    t.add_argument("--workers", type=int, default=0, help="models trained at once (0 = one per core)")
