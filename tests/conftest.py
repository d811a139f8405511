import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("TTT_BENCH_NO_PROGRESS", "1")
os.environ.setdefault("TTT_BENCH_SELECTED", "none")  # tests fix their own values; bench/selected/ is for the grids


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One cache folder for the whole test session (scenes, features and checkpoints are shared)."""
    from bench.cache import set_cache_dir

    root = os.environ.get("TTT_BENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["TTT_BENCH_CACHE"] = root
    set_cache_dir(root)
    yield root


@pytest.fixture
def tiny_scene():
    """A small hand-made scene: a floor plane and a wall with two labels."""
    from bench.data.scene import Scene

    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(0, 2, (300, 2)), np.zeros(300)]
    wall = np.c_[rng.uniform(0, 2, 300), np.full(300, 2.0), rng.uniform(0, 2, 300)]
    coord = np.concatenate([floor, wall]).astype(np.float32)
    label = np.r_[np.ones(300), np.zeros(300)].astype(np.int64)
    color = np.where(label[:, None] == 1, [0.6, 0.4, 0.2], [0.9, 0.9, 0.85]).astype(np.float32)
    normal = np.where(label[:, None] == 1, [0, 0, 1], [0, -1, 0]).astype(np.float32)
    return Scene("tiny", "test", coord, color, label, normal)
