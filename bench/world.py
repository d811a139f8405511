"""``python -m bench world``: the synthetic world's own statistics, beside the real datasets'.

Per domain it measures, on ``scenes`` generated scenes of one split (single-threaded, uncached, so
the seconds are the generator's cost on one core):

* the room-type mix (drawn, and the real dataset's where published: S3DIS room counts);
* the class histogram (share of labelled points per shared class) beside the real dataset's
  (``bench.data.real_stats``) and their total-variation distance on the classes the real dataset
  labels. Matterport3D publishes no class frequencies (see ``real_stats``), so ``synth-matterport``
  and ``synth-val`` are compared with ScanNet-20's (both NYU-40-derived labels of home scans), marked
  as a proxy;
* the per-scene composition spread: the mean total-variation distance of a scene's class histogram
  from its domain's (how much one scene's statistics differ from the domain's: what test-batch
  normalisation has to cope with), beside the previous world's (v3, measured on its code, below);
* points and views per scene and generation seconds per scene;
* if a results folder is given (``--results results/reference/id_ood``), the *BN share of the gap*
  per source->target pair: (BN-Adapt - Source-Only) / (Oracle - Source-Only), mean over seeds.

It writes ``world.md`` (the tables), ``world.json`` (every number) and ``world.png``/``world.svg``
(class histograms beside the real ones, and the room-type mixes) into ``out``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.cache import not_a_folder
from bench.data.classes import CLASSES, NUM_CLASSES
from bench.data.real_stats import room_type_shares, shared_class_shares, tv_to_real
from bench.errors import BenchError

log = logging.getLogger(__name__)

# the real dataset each domain is compared with, and whether that comparison is a proxy
REAL: dict[str, tuple[str, bool]] = {
    "synth-scannet": ("scannet", False),
    "synth-s3dis": ("s3dis", False),
    "synth-matterport": ("scannet", True),
    "synth-val": ("scannet", True),
}
REAL_ROOMS = {"synth-s3dis": "s3dis", "synth-scannet": "scannet", "synth-matterport": "matterport3d"}

# The previous world (generator v3, main at 08e104b), measured before it was replaced with the same
# code as ``measure_domain`` (8 test scenes per domain, seed 0): per-scene composition spread,
# total-variation distance to the real dataset's class shares, points per scene.
OLD_WORLD: dict[str, dict[str, float | None]] = {
    "synth-scannet": {"spread": 0.100, "tv_real": 0.261, "points": 18919},
    "synth-s3dis": {"spread": 0.073, "tv_real": 0.235, "points": 20000},
    "synth-matterport": {"spread": 0.116, "tv_real": None, "points": 19264},
}


@dataclass
class DomainStats:
    domain: str
    scenes: int
    rooms: dict[str, int] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # class -> share of labelled points
    spread: float = 0.0  # mean TV distance of a scene's class histogram from the domain's
    points: float = 0.0
    views: float = 0.0
    seconds: float = 0.0  # generation CPU seconds per scene (one thread)
    seconds_max: float = 0.0
    real: str | None = None
    real_proxy: bool = False
    tv_real: float | None = None
    styles: dict[str, dict[str, int]] = field(default_factory=dict)


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def measure_domain(domain: str, scenes: int = 12, split: str = "test", seed: int = 0,
                   options: dict | None = None) -> DomainStats:
    """Generate ``scenes`` scenes of a synthetic dataset (no cache) and measure them."""
    import torch

    from bench.data import get_dataset
    from bench.data.synth import SynthDataset, generate_scene, scene_room

    ds = get_dataset(domain, **(options or {}))
    if not isinstance(ds, SynthDataset):
        raise BenchError(f"bench world: '{domain}' is not a synthetic domain; use one of the synth-* datasets")
    dom = ds.domain
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    hists, secs, pts, views, rooms, styles = [], [], [], [], Counter(), {}
    try:
        for i in range(scenes):
            t0 = time.process_time()
            s = generate_scene(dom, split, i, ds.seed)
            secs.append(time.process_time() - t0)
            room = scene_room(dom, split, i, ds.seed)
            rooms[room.kind] += 1
            for cls, style in room.styles:
                styles.setdefault(cls, Counter())[style] += 1
            lab = s.label[s.label >= 0]
            hists.append(np.bincount(lab, minlength=NUM_CLASSES).astype(np.float64))
            pts.append(s.num_points)
            views.append(len(s.views))
    finally:
        torch.set_num_threads(threads)
    total = np.sum(hists, 0)
    p = total / max(total.sum(), 1.0)
    spread = float(np.mean([_tv(h / max(h.sum(), 1.0), p) for h in hists]))
    real, proxy = REAL.get(domain, ("scannet", True))
    shares = {c: float(p[i]) for i, c in enumerate(CLASSES)}
    return DomainStats(domain, scenes, dict(rooms), shares, spread, float(np.mean(pts)), float(np.mean(views)),
                       float(np.mean(secs)), float(np.max(secs)), real, proxy, tv_to_real(real, shares),
                       {k: dict(v) for k, v in styles.items()})


def results_csv(results: Path) -> Path:
    """The cells.csv of a run or reference folder (or the file itself), else its cells.parquet (a compact
    reference folder has no csv); a BenchError if there is neither."""
    path = Path(results)
    csv_path = path / "cells.csv" if path.is_dir() else path
    if path.is_dir() and not csv_path.is_file() and (path / "cells.parquet").is_file():
        csv_path = path / "cells.parquet"
    if not csv_path.is_file():
        raise BenchError(f"bench world --results {results}: no cells.csv (or cells.parquet) there; give a run or "
                         "reference folder (e.g. results/reference/id_ood)")
    return csv_path


def check_domains(domains: list[str]) -> None:
    """Every domain is a registered synthetic dataset (the world measures generated scenes only)."""
    from bench.data import DATASETS
    from bench.data.synth import DOMAINS, SynthDatasetConfig

    for d in domains:
        try:
            entry = DATASETS.get(d)
        except BenchError as e:
            raise BenchError(f"bench world --domains {d}: {e}") from None
        if entry.config is not SynthDatasetConfig:
            raise BenchError(f"bench world --domains {d}: '{d}' is not a synthetic domain; the world measures "
                             "generated scenes (each shown beside its real dataset's published statistics): use "
                             f"{', '.join(DOMAINS)}")


def bn_share(results: Path) -> list[dict]:
    """Per cross-domain source->target pair: Source-Only, BN-Adapt and Oracle mIoU in % (mean over seeds)
    and the BN share of the gap."""
    csv_path = results_csv(results)
    if csv_path.suffix == ".parquet":
        import pandas as pd

        records = pd.read_parquet(csv_path).to_dict("records")
        rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in records]
    else:
        rows = list(csv.DictReader(csv_path.open()))
    need = {"label", "source", "target", "miou"}
    if rows and not need <= set(rows[0]):
        raise BenchError(f"{csv_path}: needs columns {', '.join(sorted(need))}")
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r["label"] in ("Source-Only", "BN-Adapt", "Oracle") and r["miou"] not in ("", "nan"):
            acc.setdefault((r["label"], r["source"], r["target"]), []).append(float(r["miou"]))
    pairs = sorted({(s, t) for _, s, t in acc if s != t})  # cross-domain pairs only
    scale = 100.0 if all(v <= 1.0 for vals in acc.values() for v in vals) else 1.0  # mIoU as a fraction -> %
    acc = {k: [v * scale for v in vals] for k, vals in acc.items()}
    out = []
    for s, t in pairs:
        m = {lab: float(np.mean(acc[(lab, s, t)])) if (lab, s, t) in acc else None
             for lab in ("Source-Only", "BN-Adapt", "Oracle")}
        so, bn, orc = m["Source-Only"], m["BN-Adapt"], m["Oracle"]
        share = (bn - so) / (orc - so) if None not in (so, bn, orc) and abs(orc - so) > 1e-9 else None
        out.append({"source": s, "target": t, "source_only": so, "bn_adapt": bn, "oracle": orc, "bn_share": share})
    return out


def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def markdown(stats: list[DomainStats], bn: list[dict] | None = None) -> str:
    lines = ["### Domains", "",
             "| domain | scenes | room types (drawn) | points/scene | views/scene | gen. s/scene (max) | "
             "composition spread (old world) | TV to real (old world) |",
             "|---|---|---|---|---|---|---|---|"]
    for st in stats:
        rooms = ", ".join(f"{k} {v}" for k, v in sorted(st.rooms.items(), key=lambda kv: -kv[1]))
        old = OLD_WORLD.get(st.domain, {})
        real = f"{st.real}{' (proxy)' if st.real_proxy else ''}"
        lines.append(f"| {st.domain} | {st.scenes} | {rooms} | {st.points:.0f} | {st.views:.0f} | "
                     f"{st.seconds:.2f} ({st.seconds_max:.2f}) | {_f(st.spread)} ({_f(old.get('spread'))}) | "
                     f"{_f(st.tv_real)} vs {real} ({_f(old.get('tv_real'))}) |")
    lines += ["", "### Class shares (share of labelled points; real dataset in brackets)", "",
              "| class | " + " | ".join(st.domain for st in stats) + " |",
              "|---|" + "---|" * len(stats)]
    reals = {st.domain: shared_class_shares(st.real) if st.real else None for st in stats}
    for c in CLASSES:
        cells = []
        for st in stats:
            r = (reals[st.domain] or {}).get(c)
            cells.append(f"{st.shares[c]:.3f}" + (f" ({r:.3f})" if r is not None else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "### Room-type mix (drawn share; real where published)", "",
              "| room type | " + " | ".join(st.domain for st in stats) + " |",
              "|---|" + "---|" * len(stats)]
    from bench.data.synth import ROOM_TYPES

    for rt in ROOM_TYPES:
        cells = []
        for st in stats:
            real = room_type_shares(REAL_ROOMS[st.domain]) if st.domain in REAL_ROOMS else None
            r = (real or {}).get(rt)
            cells.append(f"{st.rooms.get(rt, 0) / max(st.scenes, 1):.2f}" + (f" ({r:.2f})" if r is not None else ""))
        lines.append(f"| {rt} | " + " | ".join(cells) + " |")
    if bn is not None:
        lines += ["", "### BN share of the gap: (BN-Adapt - Source-Only) / (Oracle - Source-Only)", "",
                  "| source -> target | Source-Only | BN-Adapt | Oracle | BN share |", "|---|---|---|---|---|"]
        for r in bn:
            lines.append(f"| {r['source']} -> {r['target']} | {_f(r['source_only'], 1)} | {_f(r['bn_adapt'], 1)} | "
                         f"{_f(r['oracle'], 1)} | {_f(r['bn_share'], 2)} |")
    return "\n".join(lines) + "\n"


def figure(stats: list[DomainStats], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.data.synth import ROOM_TYPES

    fig, axes = plt.subplots(2, len(stats), figsize=(4.2 * len(stats), 6.5), squeeze=False)
    x = np.arange(NUM_CLASSES)
    for j, st in enumerate(stats):
        ax = axes[0, j]
        ax.bar(x - 0.2, [st.shares[c] for c in CLASSES], 0.4, label="world")
        real = shared_class_shares(st.real) if st.real else None
        if real:
            ax.bar(x + 0.2, [real.get(c, 0.0) for c in CLASSES], 0.4,
                   label=f"{st.real}{' (proxy)' if st.real_proxy else ''}")
        ax.set_xticks(x, CLASSES, rotation=70, fontsize=7)
        ax.set_title(f"{st.domain}: TV {_f(st.tv_real, 2)}", fontsize=9)
        ax.legend(fontsize=7)
        ax2 = axes[1, j]
        ax2.bar(np.arange(len(ROOM_TYPES)), [st.rooms.get(r, 0) / max(st.scenes, 1) for r in ROOM_TYPES])
        ax2.set_xticks(np.arange(len(ROOM_TYPES)), ROOM_TYPES, rotation=70, fontsize=7)
        ax2.set_title(f"room types ({st.scenes} scenes), spread {st.spread:.2f}", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out / f"world.{ext}"
        fig.savefig(p, dpi=110)
        paths.append(p)
    plt.close(fig)
    return paths


def run_world(domains: list[str], scenes: int, out: Path, results: Path | None = None, split: str = "test",
              seed: int = 0) -> tuple[str, list[Path]]:
    """Measure every domain, write world.md, world.json and the figure into ``out``; returns the Markdown."""
    if scenes < 2:
        raise BenchError(f"bench world --scenes {scenes}: need at least 2 scenes per domain for a spread")
    check_domains(domains)  # every input first: measuring takes about a minute
    if results is not None:
        results_csv(results)
    if (p := not_a_folder(out)) is not None:
        raise BenchError(f"bench world --out {out}: {p} is a file, not a folder; give a folder")
    stats = []
    for d in domains:
        log.info("world: measuring %s on %d scenes", d, scenes)
        stats.append(measure_domain(d, scenes, split, seed))
    bn = bn_share(results) if results is not None else None
    text = markdown(stats, bn)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.md").write_text(text)
    blob = {"scenes": scenes, "split": split, "seed": seed, "domains": [st.__dict__ for st in stats],
            "old_world": OLD_WORLD, "bn_share": bn}
    (out / "world.json").write_text(json.dumps(blob, indent=1))
    paths = [out / "world.md", out / "world.json", *figure(stats, out)]
    return text, paths
