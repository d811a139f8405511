"""Consistency of the published real-dataset statistics (bench/data/real_stats.py)."""

import math

import pytest

from bench.data import real_stats as rs
from bench.data.classes import CLASSES, MAPPINGS, mapped_classes
from bench.errors import BenchError


def test_every_dataset_has_an_entry_in_every_table():
    assert set(rs.CLASS_FREQUENCIES) == set(rs.DATASETS) == set(MAPPINGS)
    assert set(rs.SENSORS) == set(rs.DATASETS)
    assert set(rs.ROOM_TYPE_COUNTS) == set(rs.DATASETS)


@pytest.mark.parametrize("dataset", rs.DATASETS)
def test_class_names_follow_the_mapping_order(dataset):
    names = [raw for raw, _ in rs.CLASS_FREQUENCIES[dataset].shares]
    assert names == [raw for raw, _ in MAPPINGS[dataset]]


def test_scannet_weights_invert_to_shares_that_sum_to_one():
    # The PointNet++ weights were computed from shares normalised over the 20 classes, so the
    # inverted shares must sum to 1 (up to the 7-digit rounding of the published weights).
    shares = [s for _, s in rs.CLASS_FREQUENCIES["scannet"].shares]
    assert len(shares) == 20 and all(0 < s < 1 for s in shares)
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    by_name = dict(rs.CLASS_FREQUENCIES["scannet"].shares)
    assert by_name["wall"] > by_name["floor"] > by_name["chair"] > by_name["sink"]


def test_s3dis_shares_are_the_published_counts_normalised():
    shares = dict(rs.CLASS_FREQUENCIES["s3dis"].shares)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    total = sum(rs.S3DIS13_RANDLA_POINT_COUNTS)
    assert total == 18_610_642
    assert shares["wall"] == pytest.approx(4919229 / total)


def test_matterport_frequencies_are_unknown_not_invented():
    freq = rs.CLASS_FREQUENCIES["matterport3d"]
    assert not freq.complete and all(s is None for _, s in freq.shares)
    assert rs.shared_class_shares("matterport3d") is None
    assert rs.mapped_fraction("matterport3d") is None
    assert rs.tv_to_real("matterport3d", {"wall": 1.0}) is None


@pytest.mark.parametrize("dataset", ["scannet", "s3dis"])
def test_shared_shares_sum_to_one_on_the_mapped_classes(dataset):
    shared = rs.shared_class_shares(dataset)
    assert shared is not None
    assert math.isclose(sum(shared.values()), 1.0, abs_tol=1e-12)
    expected = {CLASSES[i] for i in mapped_classes(MAPPINGS[dataset])}
    assert set(shared) == expected
    assert list(shared) == [c for c in CLASSES if c in shared]  # shared-class order


def test_scannet_desk_is_merged_into_table_and_ignored_classes_are_dropped():
    raw = dict(rs.CLASS_FREQUENCIES["scannet"].shares)
    kept = sum(s for (name, s), (_, shared) in zip(rs.CLASS_FREQUENCIES["scannet"].shares,
                                                   MAPPINGS["scannet"]) if shared is not None)
    shared = rs.shared_class_shares("scannet")
    assert shared["table"] == pytest.approx((raw["table"] + raw["desk"]) / kept)
    assert "ceiling" not in shared and "clutter" not in shared
    assert rs.mapped_fraction("scannet") == pytest.approx(kept / sum(raw.values()))
    assert 0.5 < rs.mapped_fraction("scannet") < 1.0


def test_tv_to_real_is_zero_for_the_real_histogram_and_ignores_unlabelled_classes():
    real = rs.shared_class_shares("scannet")
    assert rs.tv_to_real("scannet", real) == pytest.approx(0.0, abs=1e-12)
    # counts instead of shares, plus a class ScanNet does not label: same distance
    counts = {c: 1000 * v for c, v in real.items()} | {"ceiling": 5000.0}
    assert rs.tv_to_real("scannet", counts) == pytest.approx(0.0, abs=1e-12)
    only_walls = rs.tv_to_real("scannet", {"wall": 1.0})
    assert only_walls == pytest.approx(1.0 - real["wall"])


def test_bad_inputs_raise_bench_error():
    with pytest.raises(BenchError, match="unknown dataset"):
        rs.shared_class_shares("scannet++")
    with pytest.raises(BenchError, match="unknown class"):
        rs.tv_to_real("s3dis", {"lamp": 1.0})
    with pytest.raises(BenchError, match="no points"):
        rs.tv_to_real("s3dis", {"bed": 1.0})
    with pytest.raises(BenchError, match="non-negative"):
        rs.tv_to_real("s3dis", {"wall": -1.0})


def test_s3dis_room_listing():
    per_area = {a: sum(t.values()) for a, t in rs.S3DIS_ROOMS.items()}
    assert per_area == {"Area_1": 44, "Area_2": 40, "Area_3": 23, "Area_4": 49, "Area_5": 68,
                        "Area_6": 48}
    counts = rs.ROOM_TYPE_COUNTS["s3dis"]
    assert sum(counts.values()) == 272 and len(counts) == 11
    assert counts["office"] == 156 and counts["hallway"] == 61
    assert set(rs.S3DIS_TO_HARNESS_ROOM) == set(counts)


def test_room_type_shares():
    shares = rs.room_type_shares("s3dis")
    assert sum(shares.values()) == pytest.approx(1.0)
    assert set(shares) <= set(rs.HARNESS_ROOM_TYPES)
    assert "bedroom" not in shares
    assert shares["office"] == pytest.approx(156 / (272 - 5))  # copy rooms, auditoriums, open space
    assert rs.room_type_shares("scannet") is None and rs.room_type_shares("matterport3d") is None
    for mapping in (rs.S3DIS_TO_HARNESS_ROOM, rs.SCANNET_TO_HARNESS_ROOM,
                    rs.MATTERPORT_TO_HARNESS_ROOM):
        assert {v for v in mapping.values() if v is not None} <= set(rs.HARNESS_ROOM_TYPES)


def test_scene_and_region_vocabularies():
    types = rs.SCANNET_SCENE_TYPES
    assert len(types) == len(set(types)) == 21
    # ids (1-based position) of the 13 types ScanNet's scene-type benchmark evaluates
    ids = [types.index(t) + 1 for t in rs.SCANNET_BENCHMARK_SCENE_TYPES]
    assert ids == [1, 2, 3, 4, 8, 9, 13, 14, 15, 16, 18, 20, 21]
    assert set(rs.SCANNET_TO_HARNESS_ROOM) == set(types)
    assert len(rs.MATTERPORT_REGION_TYPES) == 31  # 30 region labels + '-' (no label)
    assert set(rs.MATTERPORT_TO_HARNESS_ROOM) <= set(rs.MATTERPORT_REGION_TYPES)


def test_sensor_facts():
    assert rs.SENSORS["scannet"].color_size == (1296, 968)
    assert rs.SENSORS["scannet"].depth_size == (640, 480)
    assert rs.SENSORS["matterport3d"].depth_size == (1280, 1024)
    assert rs.SENSORS["matterport3d"].depth_unit_m == pytest.approx(1 / 4000)
    assert rs.SENSORS["s3dis"].depth_unit_m == pytest.approx(1 / 512)
    assert rs.STRUCTURED_LIGHT_NOISE_K_PER_M * 5.0**2 == pytest.approx(0.04)
    for facts in rs.SENSORS.values():
        assert facts.source and facts.device
