"""``python -m bench profile``: where a TTT step and a training step spend their time.

On a default synthetic scene it times, for each backbone, one forward and one TTT-KD step (the step of
``methods/ttt_kd.py``: backbone parameters, Adam, cosine distillation loss), and breaks down

- the spunet TTT-KD step into voxelisation, rulebook (spconv's indice-pair generation), convolution
  (sparse-conv modules less the rulebook built inside them), BatchNorm, the rest of the forward (heads,
  activations, loss), backward and optimizer;
- a training step (``backbones/train.py``'s loop) into data (augmentation, batching), forward (with
  the loss), backward and optimizer (clipping, step, schedule);

measures the step's arithmetic floor: the sparse convolutions' forward and backward products timed as
dense GEMMs of the same shapes (no gather or scatter), which bounds what any faster sparse-convolution
kernel could save on this core;

and compares, interleaved (off, on, on, off, ...) in the same conditions, a TTT-KD scene (5 steps and the
"after" prediction on one batch) and a repeated no-grad forward with spunet's rulebook reuse off and on
(``backbones.spunet.rulebook_reuse``), in wall and CPU (process) seconds: CPU seconds are less
disturbed by other processes on a shared machine. The breakdown is measured with reuse on (the
harness default), so its rulebook part is what is still built per step (the strided convolutions').

Module times come from forward hooks, function times from timing wrappers installed only while
profiling (both synchronise CUDA when on CUDA), so the parts add up to the measured step. Every
number is the median over ``repeats`` runs after a warm-up, with its spread (25-75 % range).

Threads: in-process timings are only meaningful without oversubscription, so the profile runs with
one torch thread unless told otherwise, and never with more threads than the cores left free by
other work (cores minus the 1-minute load average, rounded). Speed is tracked in tests/perf with
pytest-benchmark, never by timed assertions in unit tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from bench.errors import BenchError

# torch and numpy are imported inside the functions, so that building the CLI parser stays cheap

log = logging.getLogger(__name__)

STEP_PARTS = ("voxelise", "rulebook", "conv", "bn", "forward_other", "backward", "optimizer")
TRAIN_PARTS = ("data", "forward", "backward", "optimizer")


# ------------------------------------------------------------------------------------------ threads

def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores not busy with other work: cores minus the 1-minute load average (rounded), at least 1."""
    cores = cpu_cores()
    try:
        busy = int(round(os.getloadavg()[0]))
    except OSError:
        busy = 0
    return max(1, cores - busy)


def choose_threads(requested: int | None = None) -> int:
    """The torch thread count for in-process timing: ``requested`` (default 1), lowered to the free cores."""
    threads = 1 if requested is None else int(requested)
    if threads < 1:
        raise BenchError(f"--threads {threads}: give at least 1")
    free = free_cores()
    if threads > free:
        log.warning("profile: %d threads requested but only %d of %d cores are free (load %.1f); using %d so "
                    "that timings are not distorted by oversubscription", threads, free, cpu_cores(),
                    os.getloadavg()[0], free)
        threads = free
    return threads


# ------------------------------------------------------------------------------------------- timing

def spread(ts: list[float]) -> dict:
    """Median and spread of repeated timings (seconds)."""
    import numpy as np

    a = np.asarray(ts, dtype=float)
    return {"median": float(np.median(a)), "p25": float(np.percentile(a, 25)), "p75": float(np.percentile(a, 75)),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


class Timer:
    """Accumulates seconds per named part; CUDA is synchronised at every boundary."""

    def __init__(self, device: str):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def part(self, name: str):
        t = self.now()
        try:
            yield
        finally:
            self.seconds[name] += self.now() - t

    def wrap(self, fn, name: str):
        def timed(*a, **k):
            with self.part(name):
                return fn(*a, **k)
        return timed


@contextmanager
def spunet_breakdown(model, timer: Timer):
    """Time spunet's voxelisation, rulebook, sparse convolutions and BatchNorm while inside the block."""
    import spconv.pytorch as spconv
    import torch
    from spconv.pytorch import ops

    import backbones.spunet as sp

    patched = [(sp, "voxelize"), (sp, "scatter_mean"), (ops, "get_indice_pairs"),
               (ops, "get_indice_pairs_implicit_gemm")]
    names = {"voxelize": "voxelise", "scatter_mean": "voxelise", "get_indice_pairs": "rulebook",
             "get_indice_pairs_implicit_gemm": "rulebook"}
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in patched if hasattr(mod, attr)]
    starts: dict[int, float] = {}
    handles = []

    def pre(m, _inp):
        starts[id(m)] = timer.now()

    def post(kind):
        def hook(m, _inp, _out):
            timer.seconds[kind] += timer.now() - starts.pop(id(m))
        return hook

    for m in model.modules():
        kind = ("conv_all" if isinstance(m, spconv.conv.SparseConvolution)
                else "bn" if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) else None)
        if kind:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post(kind))]
    try:
        for mod, attr, fn in saved:
            setattr(mod, attr, timer.wrap(fn, names[attr]))
        yield
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
        for h in handles:
            h.remove()


def _repeat(fn, repeats: int, device: str) -> list[float]:
    timer = Timer(device)
    fn()  # warm-up (allocator, spconv kernels)
    out = []
    for _ in range(repeats):
        t = timer.now()
        fn()
        out.append(timer.now() - t)
    return out


# ------------------------------------------------------------------------------------------ profile

def _scenes(n_train: int):
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    test = ds.load(ds.scene_names("test", 1)[0], with_views=False)
    names = ds.scene_names("train", n_train)
    ds.ensure(names, workers=1)
    return test, [ds.load(n, with_views=False) for n in names]


def spunet_spec(voxel_size: float | None = None, **kw):
    """The profiled spunet's ModelSpec: the default architecture, at ``voxel_size`` metres when given."""
    from backbones.model import ModelSpec

    return ModelSpec(backbone="spunet", backbone_cfg={} if voxel_size is None else {"voxel_size": voxel_size}, **kw)


def ttt_step_fn(model, batch, target, mask, opt, steps: int = 1):
    from backbones.losses import distill_loss

    def step():
        for _ in range(steps):
            loss = distill_loss(model(batch, ("kd",))["kd"], target, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return step


def profile_ttt_step(scene, device: str, repeats: int, voxel_size: float | None = None) -> dict:
    """The spunet TTT-KD step, broken into parts (median and spread of each over the repeats)."""
    import torch

    from backbones.batch import make_batch
    from backbones.losses import distill_loss
    from backbones.model import build_model

    model = build_model(spunet_spec(voxel_size, kd_dim=64), device).eval()
    batch = make_batch([scene], model.spec.features).to(device)
    g = torch.Generator().manual_seed(0)
    target = torch.randn(scene.num_points, 64, generator=g).to(device)
    mask = torch.ones(scene.num_points, dtype=torch.bool, device=device)
    opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)
    ttt_step_fn(model, batch, target, mask, opt)()  # warm-up
    parts: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        timer = Timer(device)
        t0 = timer.now()
        with spunet_breakdown(model, timer), timer.part("forward_all"):
            loss = distill_loss(model(batch, ("kd",))["kd"], target, mask)
        with timer.part("backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            opt.step()
        total = timer.now() - t0
        s = timer.seconds
        s["conv"] = s["conv_all"] - s["rulebook"]
        s["forward_other"] = s["forward_all"] - s["voxelise"] - s["conv_all"] - s["bn"]
        for p in STEP_PARTS:
            parts[p].append(s[p])
        parts["total"].append(total)
    return {p: spread(v) for p, v in parts.items()}


def conv_gemms(model, batch) -> list[tuple[int, int, int, bool]]:
    """``(pairs, c_in, c_out, grad_input)`` of every sparse convolution in one spunet forward on ``batch``:
    the rows its gather-GEMM-scatter multiplies (input-output pairs summed over the kernel offsets; the
    voxels for a 1x1 convolution) and whether the backward also needs the input's gradient. spconv keeps
    a submanifold rulebook for one half of the offsets only (a pair of offset k is the swapped pair of
    its mirror) and applies the centre offset to every voxel, so there the pairs are the voxels plus twice
    the stored pairs."""
    import spconv.pytorch as spconv
    import torch

    shapes: list[tuple[int, int, int, bool]] = []

    def hook(m, inp, out):
        x = inp[0]
        n = x.features.shape[0]
        stored = 0 if m.conv1x1 else int(out.indice_dict[m.indice_key].indice_pair_num.sum())
        pairs = n if m.conv1x1 else n + 2 * stored if m.subm else stored
        shapes.append((pairs, m.in_channels, m.out_channels, bool(x.features.requires_grad)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, spconv.conv.SparseConvolution)]
    try:
        with torch.enable_grad():
            model(batch, ("kd",))
    finally:
        for h in handles:
            h.remove()
    return shapes


def profile_gemm_floor(scene, device: str, repeats: int, voxel_size: float | None = None) -> dict:
    """The arithmetic floor of a spunet TTT-KD step's sparse convolutions: their forward and backward
    products (input x weight, the weight's gradient, the input's gradient where needed) timed as plain
    dense GEMMs of the same shapes on random data, i.e. the same multiply-adds without the rulebook's
    gather and scatter. ``floor_s`` over the measured step bounds what a faster sparse-convolution kernel
    could save; ``gflop`` counts multiply-adds twice; ``peak_gflops`` is the rate of a large square product
    on the same device, the best any arrangement of the same arithmetic could hope for."""
    import torch

    from backbones.batch import make_batch
    from backbones.model import build_model

    model = build_model(spunet_spec(voxel_size, kd_dim=64), device).eval()
    model.requires_grad_(True)
    batch = make_batch([scene], model.spec.features).to(device)
    shapes = conv_gemms(model, batch)
    g = torch.Generator().manual_seed(0)
    mats = [(torch.randn(p, ci, generator=g).to(device), torch.randn(ci, co, generator=g).to(device),
             torch.randn(p, co, generator=g).to(device), grad_in) for p, ci, co, grad_in in shapes]

    def gemms():
        for a, w, d, grad_in in mats:
            a @ w  # forward
            a.t() @ d  # the weight's gradient
            if grad_in:
                d @ w.t()  # the input's gradient

    flop = sum(2 * p * ci * co * (3 if grad_in else 2) for p, ci, co, grad_in in shapes)
    big = torch.randn(1024, 1024, generator=g).to(device)
    peak = spread(_repeat(lambda: big @ big, repeats, device))  # a large square product: the core's dense rate
    return {"gflop": flop / 1e9, "convs": len(shapes), "floor_s": spread(_repeat(gemms, repeats, device)),
            "peak_gflops": 2 * 1024 ** 3 / peak["median"] / 1e9}


def profile_reuse_ab(scene, device: str, repeats: int, steps: int = 5, voxel_size: float | None = None) -> dict:
    """Interleaved A/B of rulebook reuse off/on: a TTT-KD scene (``steps`` steps + a no-grad prediction on
    one batch, as the harness runs it) and one no-grad forward on a batch already seen; wall and CPU seconds."""
    import copy

    import torch

    from backbones.batch import make_batch
    from backbones.model import build_model
    from backbones.spunet import rulebook_reuse

    base = build_model(spunet_spec(voxel_size, kd_dim=64), device).eval()
    g = torch.Generator().manual_seed(0)
    target = torch.randn(scene.num_points, 64, generator=g).to(device)
    mask = torch.ones(scene.num_points, dtype=torch.bool, device=device)
    timer = Timer(device)

    def scene_work():
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)
        batch = make_batch([scene], model.spec.features).to(device)
        w, c = timer.now(), time.process_time()
        ttt_step_fn(model, batch, target, mask, opt, steps)()
        with torch.no_grad():
            model(batch)
        out = (timer.now() - w, time.process_time() - c)
        w, c = timer.now(), time.process_time()
        with torch.no_grad():
            model(batch)
        return out + (timer.now() - w, time.process_time() - c)

    res: dict[bool, list] = {False: [], True: []}
    for reuse in (False, True):  # warm-up
        with rulebook_reuse(reuse):
            scene_work()
    for r in range(repeats):
        for reuse in ((False, True) if r % 2 == 0 else (True, False)):
            with rulebook_reuse(reuse):
                res[reuse].append(scene_work())
    out = {}
    for reuse, rows in res.items():
        cols = list(zip(*rows))
        out["on" if reuse else "off"] = {k: spread(list(v)) for k, v in
                                         zip(("scene_wall", "scene_cpu", "forward_wall", "forward_cpu"), cols)}
    out["steps"] = steps
    return out


def profile_train_step(train_scenes, device: str, repeats: int, voxel_size: float | None = None) -> dict:
    """One training step of backbones/train.py (source recipe defaults), broken into parts."""
    import numpy as np
    import torch

    from backbones.batch import make_batch, scene_features
    from backbones.model import build_model
    from backbones.train import TrainConfig, augment

    cfg = TrainConfig()
    model = build_model(spunet_spec(voxel_size), device).train()
    features = model.spec.features
    feats = [scene_features(s, features) for s in train_scenes]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=repeats + 2, pct_start=0.1)
    rng = np.random.default_rng(0)
    parts: dict[str, list[float]] = defaultdict(list)
    for r in range(repeats + 1):  # the first is a warm-up
        timer = Timer(device)
        t0 = timer.now()
        with timer.part("data"):
            idx = rng.permutation(len(train_scenes))[: cfg.scenes_per_step]
            chosen = [train_scenes[j] for j in idx]
            aug = [augment(train_scenes[j], feats[j], features, rng) for j in idx]
            batch = make_batch(chosen, features, [a[0] for a in aug], [a[1] for a in aug]).to(device)
            label = torch.from_numpy(np.concatenate([s.label for s in chosen])).to(device)
        with timer.part("forward"):
            loss = torch.nn.functional.cross_entropy(model(batch)["seg"], label, ignore_index=-1)
        with timer.part("backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with timer.part("optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
        total = timer.now() - t0
        if r:
            for p in TRAIN_PARTS:
                parts[p].append(timer.seconds[p])
            parts["total"].append(total)
    return {p: spread(v) for p, v in parts.items()}


def profile(device: str = "cpu", repeats: int = 5, console: Console | None = None, threads: int | None = None,
            backbones: tuple[str, ...] = ("spunet", "pointnet2"), breakdown: bool = True,
            voxel_size: float | None = None) -> dict:
    """Time forward and TTT-KD step per backbone, and the step/training breakdowns; print tables.
    ``voxel_size`` (metres) replaces spunet's default voxel size everywhere (the cost of a coarser grid)."""
    import torch

    from backbones.batch import make_batch
    from backbones.model import ModelSpec, build_model
    from backbones.spunet import SpUNetConfig, voxelize
    from bench.cell import PeakMemory

    if repeats < 1:
        raise BenchError(f"--repeats {repeats}: give at least 1")
    if voxel_size is not None and not SpUNetConfig.CHECKS["voxel_size"].ok(voxel_size):  # the backbone's own bound
        raise BenchError(f"--voxel-size {voxel_size}: give a positive size in metres "
                         f"(spunet's default is {SpUNetConfig.voxel_size})")
    console = console or Console()
    if torch.device(device).type == "cpu":
        threads = choose_threads(threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    test, train_scenes = _scenes(2 if breakdown else 0)
    rows = []
    for bb in backbones:
        spec = spunet_spec(voxel_size, kd_dim=64) if bb == "spunet" else ModelSpec(backbone=bb, kd_dim=64)
        model = build_model(spec, device).eval()
        batch = make_batch([test], model.spec.features).to(device)
        voxels = voxelize(batch, model.backbone.cfg.voxel_size)[0].shape[0] if bb == "spunet" else None
        target = torch.randn(test.num_points, 64, generator=torch.Generator().manual_seed(0)).to(device)
        mask = torch.ones(test.num_points, dtype=torch.bool, device=device)
        opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)

        def fwd(model=model, batch=batch):
            with torch.no_grad():
                model(batch)

        tf = spread(_repeat(fwd, repeats, device))
        with PeakMemory(device) as mem:
            ts = spread(_repeat(ttt_step_fn(model, batch, target, mask, opt), repeats, device))
        rows.append({"backbone": bb, "points": test.num_points, "voxels": voxels, "forward_s": tf, "ttt_step_s": ts,
                     "points_per_s": test.num_points / tf["median"], "peak_mem_mb": mem.peak_mb, "mem_kind": mem.kind})
    out = {"device": device, "threads": threads, "cores": cpu_cores(), "repeats": repeats, "backbones": rows}
    if breakdown:
        out["ttt_step"] = profile_ttt_step(test, device, repeats, voxel_size)
        out["gemm_floor"] = profile_gemm_floor(test, device, repeats, voxel_size)
        out["train_step"] = profile_train_step(train_scenes, device, repeats, voxel_size)
        out["reuse_ab"] = profile_reuse_ab(test, device, repeats, voxel_size=voxel_size)
    print_profile(out, console)
    return out


def _fmt(s: dict) -> str:
    return f"{s['median']:.4f} ({s['p25']:.4f}-{s['p75']:.4f})"


def print_profile(out: dict, console: Console) -> None:
    head = f"on {out['device']}, {out['threads']} torch thread(s) of {out['cores']} cores, median (25-75 %) of " \
           f"{out['repeats']} repeats, seconds"
    t = Table(title=f"profile {head}")
    for c in ("backbone", "points", "voxels", "forward s", "TTT-KD step s", "points/s (fwd)", "peak MB"):
        t.add_column(c)
    for r in out["backbones"]:
        t.add_row(r["backbone"], str(r["points"]), "-" if r.get("voxels") is None else str(r["voxels"]),
                  _fmt(r["forward_s"]), _fmt(r["ttt_step_s"]),
                  f"{r['points_per_s']:.0f}", f"{r['peak_mem_mb']:.0f} ({r['mem_kind']})")
    console.print(t)
    for key, parts, title in (("ttt_step", STEP_PARTS, "spunet TTT-KD step"),
                              ("train_step", TRAIN_PARTS, "spunet training step (2 scenes)")):
        if key not in out:
            continue
        b = out[key]
        tt = Table(title=f"{title}: where the time goes")
        for c in ("part", "median s (25-75 %)", "share of step"):
            tt.add_column(c)
        total = b["total"]["median"]
        for p in parts:
            tt.add_row(p, _fmt(b[p]), f"{100 * b[p]['median'] / total:.1f} %" if total > 0 else "")
        tt.add_row("total (measured)", _fmt(b["total"]), f"{100 * sum(b[p]['median'] for p in parts) / total:.1f} % "
                   "summed" if total > 0 else "")
        console.print(tt)
        if key == "ttt_step" and "gemm_floor" in out:
            f, step = out["gemm_floor"], b["total"]["median"]
            floor = f["floor_s"]["median"]
            if floor > 0 and step > 0:
                console.print(f"sparse-convolution arithmetic of the step: {f['gflop']:.2f} GFLOP in {f['convs']} "
                              f"convolutions (forward and backward); as dense GEMMs of the same shapes: "
                              f"{_fmt(f['floor_s'])} s ({f['gflop'] / floor:.0f} GFLOP/s), "
                              f"{100 * floor / step:.0f} % of the measured step; at this core's dense rate "
                              f"({f['peak_gflops']:.0f} GFLOP/s, a 1024^3 product) the products would take "
                              f"{f['gflop'] / f['peak_gflops']:.3f} s")
    if "reuse_ab" in out:
        ab = out["reuse_ab"]
        tt = Table(title=f"spunet rulebook reuse, interleaved A/B: a TTT-KD scene ({ab['steps']} steps + prediction) "
                         "and a repeated no-grad forward")
        for c in ("measure", "reuse off", "reuse on", "on/off (medians)"):
            tt.add_column(c)
        for k in ("scene_wall", "scene_cpu", "forward_wall", "forward_cpu"):
            off, on = ab["off"][k], ab["on"][k]
            tt.add_row(k.replace("_", " ") + " s", _fmt(off), _fmt(on),
                       f"{on['median'] / off['median']:.3f}" if off["median"] > 0 else "")
        console.print(tt)


# -------------------------------------------------------------------------------------------- CLI

def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """The ``profile`` sub-command."""
    from bench.spec import check_device

    check_device(args.device, "--device")
    profile(args.device, args.repeats, console or Console(), getattr(args, "threads", None),
            breakdown=getattr(args, "breakdown", True), voxel_size=getattr(args, "voxel_size", None))
    return 0

