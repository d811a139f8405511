"""``python -m bench profile``: time one forward, one forward+backward and one TTT-KD step of each
backbone on a default synthetic scene, and report points/s and peak memory. Speed targets are
checked here and in tests/perf (pytest-benchmark), never by timed assertions in unit tests."""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def profile(device: str, repeats: int, console: Console) -> list[dict]:
    from backbones.batch import make_batch
    from backbones.losses import distill_loss
    from backbones.model import ModelSpec, build_model
    from bench.cell import PeakMemory
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    scene = ds.load(ds.scene_names("test", 1)[0], with_views=False)
    rows = []
    for bb in ("spunet", "pointnet2"):
        model = build_model(ModelSpec(backbone=bb, kd_dim=64), device)
        batch = make_batch([scene], model.spec.features).to(device)
        target = torch.randn(scene.num_points, 64, device=device)
        mask = torch.ones(scene.num_points, dtype=torch.bool, device=device)
        opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)

        def fwd(model=model, batch=batch):
            with torch.no_grad():
                model(batch)

        def step(model=model, batch=batch, target=target, mask=mask, opt=opt):
            loss = distill_loss(model(batch, ("kd",))["kd"], target, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()

        model.eval()
        tf = _time(fwd, repeats, device)
        with PeakMemory(device) as mem:
            ts = _time(step, repeats, device)
        rows.append({"backbone": bb, "points": scene.num_points, "forward_s": tf, "ttt_step_s": ts,
                     "points_per_s": scene.num_points / tf, "peak_mem_mb": mem.peak_mb, "mem_kind": mem.kind})
    t = Table(title=f"profile on {device} ({torch.get_num_threads()} threads)")
    for c in ("backbone", "points", "forward s", "TTT-KD step s", "points/s (fwd)", "peak MB"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["backbone"], str(r["points"]), f"{r['forward_s']:.3f}", f"{r['ttt_step_s']:.3f}",
                  f"{r['points_per_s']:.0f}", f"{r['peak_mem_mb']:.0f} ({r['mem_kind']})")
    console.print(t)
    return rows
