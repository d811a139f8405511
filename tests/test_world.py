"""The synthetic world v5: domains as parameter sets, room types, styles, synth-val, inline grid domains,
and the ``bench world`` statistics (tiny scene counts; no timing or mIoU asserts)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

import numpy as np
import pytest

from bench.data.synth import (
    DOMAINS,
    ROOM_TYPES,
    STYLES,
    TEST_DOMAINS,
    VAL_DOMAIN,
    build_room,
    domain_from_spec,
    generate_scene,
    scene_room,
    scene_seed,
    with_overrides,
)
from bench.errors import BenchError


def test_every_room_type_builds_with_its_furniture():
    from bench.data.synth.room import ROOM_TYPES as TYPES

    dom = with_overrides(DOMAINS["synth-matterport"], {})
    for kind in ROOM_TYPES:
        room = build_room(with_overrides(dom, {"rooms": {kind: 1.0}}), np.random.default_rng(0))
        assert room.kind == kind
        assert TYPES[kind].x[0] * 0.9 <= max(room.lx, room.ly) or kind == "hallway"
        placed = Counter(c for c, _ in room.styles)
        openings = sum(len(v) for v in room.openings.values())  # doors and windows are wall openings (v5)
        assert sum(placed.values()) + openings >= 1, kind
    hall = build_room(with_overrides(dom, {"rooms": {"hallway": 1.0}}), np.random.default_rng(1))
    assert max(hall.lx, hall.ly) / min(hall.lx, hall.ly) > 1.8  # corridors are long and narrow


def test_domain_room_mix_and_styles_follow_parameters():
    """Room types and styles are drawn with the domain's probabilities (a zero weight is never drawn)."""
    only_office = with_overrides(DOMAINS["synth-s3dis"], {"rooms": {"office": 1.0},
                                                           "styles.chair": {"swivel": 1.0}})
    kinds, chair_styles = Counter(), Counter()
    for i in range(12):
        room = build_room(only_office, np.random.default_rng(i))
        kinds[room.kind] += 1
        chair_styles.update(s for c, s in room.styles if c == "chair")
    assert set(kinds) == {"office"}
    assert set(chair_styles) == {"swivel"} and chair_styles["swivel"] >= 12
    # two domains draw different styles of the same class
    def styles_of(name):
        c = Counter()
        for i in range(30):
            c.update(s for k, s in build_room(DOMAINS[name], np.random.default_rng(i)).styles if k == "chair")
        return c
    s3, mp = styles_of("synth-s3dis"), styles_of("synth-matterport")
    assert s3["swivel"] + s3["sled"] > s3["four_leg"] and mp["four_leg"] > mp["swivel"]
    assert set(STYLES["chair"]) >= {"four_leg", "sled", "swivel"}
    assert set(STYLES["table"]) >= {"rect", "round", "pedestal"}
    assert set(STYLES["sofa"]) == {"one_seat", "two_seat", "three_seat"}


def test_overrides_are_checked_and_unknown_parameters_listed():
    dom = with_overrides(DOMAINS["synth-s3dis"], {"sensor.noise": 0.02, "rooms": {"office": 0.8, "hallway": 0.2},
                                                  "lighting": {"falloff": 0.3}}, "my-office")
    assert dom.sensor.noise == 0.02 and dom.rooms == {"office": 0.8, "hallway": 0.2} and dom.lighting.falloff == 0.3
    assert dom.sensor.voxel == DOMAINS["synth-s3dis"].sensor.voxel and dom.name == "my-office"
    assert dom.key != DOMAINS["synth-s3dis"].key
    with pytest.raises(BenchError, match=r"unknown parameter 'sensor.nosie'; valid parameters: .*sensor.noise"):
        with_overrides(DOMAINS["synth-s3dis"], {"sensor.nosie": 0.02})
    with pytest.raises(BenchError, match=r"unknown room type.*'garage'.*valid: bedroom"):
        with_overrides(DOMAINS["synth-s3dis"], {"rooms": {"garage": 1.0}})
    with pytest.raises(BenchError, match=r"unknown chair style.*'throne'"):
        with_overrides(DOMAINS["synth-s3dis"], {"styles.chair": {"throne": 1.0}})
    with pytest.raises(BenchError, match="must be a number"):
        with_overrides(DOMAINS["synth-s3dis"], {"sensor.noise": "high"})
    with pytest.raises(BenchError, match="base = 'synth-nope' must be one of the built-in domains"):
        domain_from_spec({"base": "synth-nope"}, "x")


def test_scenes_are_pure_functions_of_parameters_and_val_is_disjoint():
    a = generate_scene("synth-val", "val", 0, 0)
    b = generate_scene(with_overrides(DOMAINS["synth-val"], {}), "val", 0, 0)
    np.testing.assert_array_equal(a.coord, b.coord)
    assert a.dataset == "synth-val"
    # synth-val shares no parameter set and no scene seed with the test domains
    val = DOMAINS[VAL_DOMAIN]
    assert VAL_DOMAIN not in TEST_DOMAINS
    for name in TEST_DOMAINS:
        assert DOMAINS[name].params() != val.params()
        assert {scene_seed(name, sp, i, 0) for sp in ("train", "val", "test") for i in range(50)}.isdisjoint(
            {scene_seed(VAL_DOMAIN, sp, i, 0) for sp in ("train", "val", "test") for i in range(50)})
    # any parameter change gives other scenes; the seed of the domain too
    other = with_overrides(val, {"seed": 1})
    assert scene_seed(other, "val", 0, 0) != scene_seed(val, "val", 0, 0)
    assert scene_room(val, "val", 0, 0).kind in ROOM_TYPES


def test_s3dis_relabels_cabinets_as_clutter():
    dom = with_overrides(DOMAINS["synth-s3dis"], {"rooms": {"storage": 1.0}})
    from bench.data.classes import CLASS_ID

    labels = set()
    for i in range(3):
        labels |= set(build_room(dom, np.random.default_rng(i)).boxes.label)
    assert CLASS_ID["cabinet"] not in labels and CLASS_ID["clutter"] in labels
    assert CLASS_ID["cabinet"] not in DOMAINS["synth-s3dis"].classes


def _wall_items(dom_name: str, cls: str, n: int = 12):
    """Boxes of class ``cls`` from ``n`` rooms of a domain, with each room's size (lx, ly)."""
    from bench.data.classes import CLASS_ID

    out = []
    for i in range(n):
        room = build_room(DOMAINS[dom_name], np.random.default_rng(100 + i))
        lab = np.array(room.boxes.label)
        centers, halves = np.array(room.boxes.center), np.array(room.boxes.half)
        emit = np.array(room.boxes.emit)
        sel = lab == CLASS_ID[cls]
        out.append((room, centers[sel], halves[sel], emit[sel]))
    return out


def _depth_behind_wall(room, c):
    """How far behind the nearest wall's inner surface a point (x, y) lies (> 0: inside the wall)."""
    return max(-c[0], -c[1], c[0] - room.lx, c[1] - room.ly)


def test_windows_are_recessed_glass_with_reveals_and_sills():
    """A window is an opening in the wall: its glass sits behind the wall's surface and is lit by daylight (emission),
    jambs line the opening and a sill stands out of the wall; the wall itself is split around the opening."""
    rooms = [r for r in _wall_items("synth-scannet", "window") if len(r[1])]
    assert rooms, "no window in 12 rooms"
    for room, c, h, emit in rooms:
        glass = c[emit > 0]
        assert len(glass) >= 1
        assert all(0.05 < _depth_behind_wall(room, g) < 0.2 for g in glass)  # recessed into the 0.2 m wall
        # the sill stands out into the room (a box's local y is the wall's normal: its front face is depth - half y)
        assert any(_depth_behind_wall(room, x) - hx[1] < -0.02 for x, hx in zip(c, h))
        assert sum(len(v) for v in room.openings.values()) >= 1


def test_doors_stand_in_framed_doorways_and_some_are_open():
    """Doors: casings proud of the wall, jambs through its depth, the leaf closed in the doorway or swung into the
    room (the domain's door_open share), a handle; the floor in front of a door is kept free for the swing."""
    from bench.data.synth.room import WALL

    opened = closed = 0
    for room, c, h, _ in _wall_items("synth-matterport", "door", 20):
        if not len(c):
            continue
        depths = np.array([_depth_behind_wall(room, x) for x in c])
        assert (depths > 0.02).any() and (depths <= WALL + 0.01).all()  # jambs in the wall's depth, none beyond it
        leaves = h.max(1) > 0.8  # the leaf: a box as high as the door
        # an open leaf stands well inside the room, a closed one inside the doorway
        if (depths[leaves] < -0.15).any():
            opened += 1
        else:
            closed += 1
    assert opened and closed


def test_every_labelled_class_occurs_in_each_test_domain():
    """Each class a test domain labels occurs in its scenes (synth-s3dis has sofas, as S3DIS does); shares are
    printed by `bench world`, not asserted."""
    from bench.data.classes import CLASSES

    for name in TEST_DOMAINS:
        dom = DOMAINS[name]
        seen = set()
        for i in range(40):
            room = build_room(dom, np.random.default_rng(1000 + i))
            seen |= {int(x) for x in room.boxes.label if x >= 0}
        missing = {CLASSES[c] for c in dom.classes} - {CLASSES[c] for c in seen}
        assert not missing, f"{name}: no {sorted(missing)} in 40 rooms"


def test_counts_scale_item_kinds_and_are_checked():
    base = with_overrides(DOMAINS["synth-s3dis"], {"rooms": {"office": 1.0}})
    more = with_overrides(base, {"counts": {"chair": 2.0}})
    none = with_overrides(base, {"counts": {"chair": 0.0}})
    n = lambda d: sum(c == "chair" for i in range(6)  # noqa: E731
                      for c, _ in build_room(d, np.random.default_rng(i)).styles)
    assert n(none) == 0 < n(base) < n(more)
    with pytest.raises(BenchError, match="counts has unknown item kind"):
        with_overrides(base, {"counts": {"chairs": 2.0}})
    with pytest.raises(BenchError, match="door_open"):
        with_overrides(base, {"door_open": 1.5})


def _grid(tmp_path, body: str):
    p = tmp_path / "g.toml"
    p.write_text(textwrap.dedent(body))
    return p


GRID = """
name = "inline"
backbones = [{name = "spunet"}]
methods = [{name = "source"}]
pairs = ["my-office->synth-val"]
train_scenes = 1
test_scenes = 1

[domains.my-office]
base = "synth-s3dis"
"sensor.noise" = 0.02
rooms = {office = 0.8, hallway = 0.2}
lighting.falloff = 0.2
"""


def test_grid_inline_domain_is_a_dataset_workers_can_rebuild(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from bench.data import get_dataset
    from bench.data.synth.dataset import INLINE_VAR
    from bench.grid import load_grid

    monkeypatch.setenv(INLINE_VAR, "{}")
    grid = load_grid(str(_grid(tmp_path, GRID)))
    (cell,) = grid.cells
    assert cell.source == "my-office"
    opts = cell.data_options["my-office"]
    assert opts["domain"]["sensor.noise"] == 0.02 and opts["domain"]["rooms"] == {"office": 0.8, "hallway": 0.2}
    ds = get_dataset("my-office", **opts)
    assert ds.domain.sensor.noise == 0.02 and ds.domain.lighting.falloff == 0.2
    assert ds.fingerprint()["domain"] != get_dataset("synth-s3dis").fingerprint()["domain"]
    # a fresh process that never read the grid rebuilds the same domain from the environment and the options
    code = ("import json,sys; from bench.spec import resolve; from bench.data import get_dataset; "
            "d=json.loads(sys.stdin.read()); c=resolve(d); "
            "print(get_dataset('my-office', **c.data_options['my-office']).domain.key)")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(cell.to_dict()), capture_output=True,
                         text=True, env={**os.environ}, check=True)
    assert out.stdout.strip().splitlines()[-1] == ds.domain.key


def test_grid_inline_domain_problems_are_collected(tmp_path):
    from bench.grid import load_grid

    bad = GRID.replace('"sensor.noise" = 0.02', '"sensor.nosie" = 0.02') + textwrap.dedent("""
        [domains.other]
        base = "synth-nope"
        """)
    with pytest.raises(BenchError) as e:
        load_grid(str(_grid(tmp_path, bad)))
    msg = str(e.value)
    assert "unknown parameter 'sensor.nosie'" in msg and "valid parameters" in msg and "synth-nope" in msg


def test_bench_world_writes_tables_and_bn_share(tmp_path):
    from bench.world import bn_share, markdown, measure_domain, run_world

    res = tmp_path / "res"
    res.mkdir()
    rows = [("Source-Only", 0.20), ("BN-Adapt", 0.30), ("Oracle", 0.60)]
    (res / "cells.csv").write_text("label,source,target,miou,seed\n" + "".join(
        f"{lab},synth-scannet,synth-s3dis,{m + s / 100},{s}\n" for lab, m in rows for s in (0, 1)) + "".join(
        f"{lab},synth-s3dis,synth-s3dis,0.5,0\n" for lab, _ in rows))  # the diagonal is left out
    (share,) = bn_share(res)
    assert share["bn_share"] == pytest.approx(0.25) and share["source_only"] == pytest.approx(20.5)
    st = measure_domain("synth-s3dis", 2)
    assert st.points > 1000 and st.views == 10 and 0 <= st.spread <= 1 and st.tv_real is not None
    assert abs(sum(st.shares.values()) - 1) < 1e-6 and st.shares["bed"] == 0 and sum(st.rooms.values()) == 2
    text, paths = run_world(["synth-val"], 2, tmp_path / "out", res)
    assert "synth-val" in text and "BN share" in text and "0.25" in text
    assert {p.name for p in paths} >= {"world.md", "world.json", "world.png"}
    blob = json.loads((tmp_path / "out" / "world.json").read_text())
    assert blob["domains"][0]["domain"] == "synth-val" and "old_world" in blob
    assert "| wall |" in markdown([st])
