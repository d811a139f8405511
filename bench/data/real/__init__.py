"""Readers for real datasets in Pointcept's preprocessed per-scene layout: ``scannet``, ``s3dis``,
``matterport3d``. Labels are mapped to the shared class list (``bench.data.classes``).

Data root: the dataset option ``root`` (grid ``[data_options.NAME] root = ...`` or
``--data-root NAME=PATH``) or the environment variable ``TTT_BENCH_DATA_<NAME>`` (e.g.
``TTT_BENCH_DATA_SCANNET``). Layouts::

    scannet:       ROOT/{train,val,test}/sceneXXXX_XX/{coord,color,normal,segment20}.npy
    matterport3d:  ROOT/{train,val,test}/SCENE/{coord,color,normal,segment}.npy
    s3dis:         ROOT/Area_N/ROOM/{coord,color,normal,segment}.npy   (test/val = Area_{test_area},
                                                                          train = the other areas)

A split list file ``ROOT/splits/{split}.txt`` (one scene path relative to ROOT per line) overrides
the folder convention. Scenes are taken in sorted order; ``count = 0`` takes all of a split.

Paired views: a scene folder may hold a ``views/`` folder in the harness's own layout (see
``bench.data.scene``); otherwise each reader reads its dataset's released image format (one module
each: ``scannet``, ``s3dis``, ``matterport``, registering at its foot). Options of each dataset are
the fields of its config dataclass (``ScanNetConfig``, ``S3DISConfig``, ``MatterportConfig``); an
unknown option raises a BenchError listing the valid ones.

Every reader skips and counts a bad frame of any kind (missing, unreadable or non-finite pose,
missing or unreadable image or depth, malformed camera-parameter line) and logs the files; it raises
a BenchError naming the file when it must stop (missing or malformed intrinsics, no usable frame).
Every scene with views is checked (``diagnostics``): the depth agreement of its poses and the colour
consistency of its images, logged, warned below their thresholds and recorded in
``Scene.diagnostics`` with the number of views, skipped frames and the labelled share of points. A
scene whose points are all labelled ignore is warned about by name.
"""

from bench.data.real.base import READER_VERSION, PointceptDataset, RealConfig, fit_view, select_for_coverage  # noqa: F401
from bench.data.real.diagnostics import (  # noqa: F401
    COLOR_CONSISTENCY_MIN,
    DEPTH_AGREEMENT_MIN,
    color_consistency,
    depth_agreement,
    diagnose,
)
from bench.data.real.matterport import (  # noqa: F401
    Matterport3D,
    MatterportConfig,
    parse_matterport_conf,
    read_matterport_scan,
)
from bench.data.real.s3dis import S3DIS, S3DISConfig, align_views, read_2d3ds_frames, rotation_about_centre  # noqa: F401
from bench.data.real.scannet import ScanNet, ScanNetConfig, read_scannet_frames  # noqa: F401
