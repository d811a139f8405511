"""One synthetic scene: a room scanned and fused into points, plus its paired posed RGB-D views.

Each scene is a pure function of (the domain's parameters, split, index, seed) and the sizes in
``SynthConfig``: its generator is seeded by a hash of the domain's parameter key (which includes the
world version), the split, the index and the seed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np

from bench.data.classes import IGNORE, NUM_CLASSES
from bench.data.geometry import intrinsic_for, look_at
from bench.data.scene import Scene, View
from bench.data.synth.domains import DOMAINS, WORLD_VERSION, C, Domain
from bench.data.synth.render import Lighting, camera_rays, kelvin_rgb, render
from bench.data.synth.room import _Room, build_room

GENERATOR_VERSION = WORLD_VERSION  # bump (in domains.py) when the generator changes: cached scenes are keyed by it


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the generated data (the same for every domain)."""

    views: int = 10  # paired views per scene
    view_hw: tuple[int, int] = (96, 128)
    view_fov_deg: float = 70.0
    scan_hw: tuple[int, int] = (48, 64)
    scan_fov_deg: float = 80.0
    scan_positions: int = 2
    scan_yaws: int = 8
    max_points: int = 20000


SPLIT_SIZES = {"train": 10_000, "val": 10_000, "test": 10_000}


def as_domain(domain: str | Domain) -> Domain:
    if isinstance(domain, Domain):
        return domain
    if domain not in DOMAINS:
        from bench.errors import BenchError

        raise BenchError(f"unknown synthetic domain '{domain}'; built-in: {', '.join(DOMAINS)}")
    return DOMAINS[domain]


def scene_seed(domain: str | Domain, split: str, index: int, seed: int) -> int:
    """The generator seed of one scene: a hash of the domain's parameters (its ``key``), split, index, seed."""
    key = as_domain(domain).key
    h = hashlib.sha256(f"{key}|{split}|{index}|{seed}|v{GENERATOR_VERSION}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def scene_room(domain: str | Domain, split: str, index: int, seed: int = 0):
    """The room of a scene (type, boxes, placed styles) without scanning it: the generator's first step."""
    dom = as_domain(domain)
    return build_room(dom, np.random.default_rng(scene_seed(dom, split, index, seed)))


def _free_spot(room: _Room, rng, z: float):
    for _ in range(50):
        x, y = rng.uniform(0.4, room.lx - 0.4), rng.uniform(0.4, room.ly - 0.4)
        if room.free(x - 0.15, y - 0.15, x + 0.15, y + 0.15, margin=0.0):
            return np.array([x, y, z])
    return np.array([room.lx / 2, room.ly / 2, z])


def _rot(rng, deg: float) -> np.ndarray:
    a = rng.normal(0, math.radians(deg), 3)
    (cx, cy, cz), (sx, sy, sz) = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _blob_mask(rng, hw, rate: float) -> np.ndarray:
    """Pixels lost in blobs (specular, dark or far surfaces), about ``rate`` of the image."""
    h, w = hw
    low = rng.random((-(-h // 8), -(-w // 8)))
    up = np.kron(low, np.ones((8, 8)))[:h, :w]
    return up < rate


def generate_scene(domain: str | Domain, split: str, index: int, seed: int = 0,
                   cfg: SynthConfig = SynthConfig()) -> Scene:
    """Generate one scene: a pure function of (the domain's parameters, split, index, seed) and the config."""
    dom = as_domain(domain)
    rng = np.random.default_rng(scene_seed(dom, split, index, seed))
    room = build_room(dom, rng)
    sensor, lit = dom.sensor, dom.lighting
    boxes = room.boxes.tensors()
    light = Lighting(
        ambient=rng.uniform(*lit.ambient),
        lamp_pos=np.array([rng.uniform(0.3, 0.7) * room.lx, rng.uniform(0.3, 0.7) * room.ly, room.h - 0.2]),
        lamp=rng.uniform(*lit.lamp), falloff=lit.falloff,
        tint=kelvin_rgb(rng.uniform(*lit.kelvin)), texture=lit.texture,
    )
    center = np.array([room.lx / 2, room.ly / 2, 0.0])

    # ---- scan: sweep the room from a few positions, fuse back-projected depth into points
    k_scan = intrinsic_for(cfg.scan_hw, cfg.scan_fov_deg)
    pts_all, col_all, nrm_all, lab_all = [], [], [], []
    for _ in range(cfg.scan_positions):
        eye = _free_spot(room, rng, rng.uniform(1.2, 1.6))
        for j in range(cfg.scan_yaws):
            for pitch in sensor.pitches:
                yaw = 2 * math.pi * (j + rng.random() * 0.5) / cfg.scan_yaws
                tgt = eye + np.array([math.cos(yaw), math.sin(yaw), math.tan(pitch)])
                pose = look_at(eye, tgt)
                col, depth, label, pts, n, b, hit = render(boxes, light, k_scan, pose, cfg.scan_hw)
                keep = hit.numpy() & ~_blob_mask(rng, cfg.scan_hw, sensor.hole_rate).reshape(-1)
                if sensor.glass_depth < 1:  # glass returns depth only on frames and dirty patches
                    seen = ~_blob_mask(rng, cfg.scan_hw, 1.0 - sensor.glass_depth).reshape(-1)
                    keep &= (label.numpy() != C["window"]) | seen
                keep &= depth.numpy() < sensor.max_range
                if sensor.top > 0:
                    keep &= pts.numpy()[:, 2] < sensor.top
                idx = np.nonzero(keep)[0]
                dd = depth.numpy()[idx]
                dd = dd + rng.normal(0, 1, len(dd)) * sensor.noise * dd ** 2
                o, dirs, zpt = camera_rays(k_scan, pose, cfg.scan_hw)
                q = o.numpy()[idx] + dirs.numpy()[idx] * (dd / zpt.numpy()[idx])[:, None]
                # registration error: the frame is fused with a slightly wrong pose
                r_err = _rot(rng, sensor.reg_rot_deg)
                t_err = rng.normal(0, sensor.reg_trans, 3)
                q = (q - eye) @ r_err.T + eye + t_err
                pts_all.append(q), col_all.append(col.numpy()[idx]), nrm_all.append(n.numpy()[idx] @ r_err.T)
                lab_all.append(label.numpy()[idx])
    pts = np.concatenate(pts_all).astype(np.float32)
    col = np.concatenate(col_all)
    nrm = np.concatenate(nrm_all).astype(np.float32)
    lab = np.concatenate(lab_all)
    col = np.clip(col + rng.normal(0, 0.015, col.shape), 0, 1).astype(np.float32)  # sensor colour noise
    # fuse on the domain's voxel grid: one point per occupied voxel (a random one of its samples)
    vox = np.floor(pts / sensor.voxel).astype(np.int64)
    vox -= vox.min(0)
    key = (vox[:, 0] * (vox[:, 1].max() + 1) + vox[:, 1]) * (vox[:, 2].max() + 1) + vox[:, 2]
    order = rng.permutation(len(pts))
    _, first = np.unique(key[order], return_index=True)
    sel = np.sort(order[first])
    if len(sel) > cfg.max_points:
        sel = np.sort(rng.choice(sel, cfg.max_points, replace=False))
    pts, col, nrm, lab = pts[sel], col[sel], nrm[sel], lab[sel]
    allowed = np.zeros(NUM_CLASSES + 1, dtype=bool)
    allowed[list(dom.classes)] = True
    lab = np.where((lab >= 0) & allowed[np.clip(lab, 0, None)], lab, IGNORE).astype(np.int64)

    # ---- paired views: K posed cameras looking into the room
    k_view = intrinsic_for(cfg.view_hw, cfg.view_fov_deg)
    views = []
    for v in range(cfg.views):
        eye = _free_spot(room, rng, rng.uniform(1.0, 1.7))
        tgt = center + np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.0)])
        if np.linalg.norm((tgt - eye)[:2]) < 0.5:
            tgt = eye + np.array([math.cos(v), math.sin(v), -0.3])
        pose = look_at(eye, tgt)
        colv, depth, label, *_ = render(boxes, light, k_view, pose, cfg.view_hw)
        h, w = cfg.view_hw
        img = np.clip(colv.numpy() + rng.normal(0, 0.01, colv.shape), 0, 1).reshape(h, w, 3)
        labv = label.numpy().reshape(h, w)
        labv = np.where((labv >= 0) & allowed[np.clip(labv, 0, None)], labv, IGNORE)
        views.append(View(image=(img * 255 + 0.5).astype(np.uint8), intrinsic=k_view, cam_to_world=pose,
                          depth=depth.numpy().reshape(h, w).astype(np.float32), label=labv.astype(np.int64)))
    name = f"{split}_{index:04d}"
    return Scene(name, dom.name, pts, col, lab, nrm, views).validate(num_classes=NUM_CLASSES)


def with_config(**kw) -> SynthConfig:
    return replace(SynthConfig(), **kw)
