"""A procedural world of indoor rooms with paired RGB-D views and domains that really differ.

Every object is a set of boxes (rotated about z). A scene is scanned the way real indoor datasets
are made: a sensor at a few positions sweeps the room, every scan pixel is ray-cast against the same
boxes, given metric depth with the domain's sensor noise, back-projected through a slightly wrong pose
(registration noise) and fused on a voxel grid into the point cloud. Occluded surfaces therefore
leave holes, glass has no depth on consumer sensors, and the colours of points and of the paired
views come from one shading model. The paired views (K posed pinhole cameras) are rendered from the
same geometry with the same shading, so a point projected into a view lands on a pixel of matching
depth and label.

Domains (see ``DOMAINS``) mirror the character of the three indoor datasets of the TTT-KD paper:

* ``synth-scannet`` - ScanNet: small homes and offices (bedrooms, living rooms), no ceiling (ScanNet
  reconstructions mostly lack it and ScanNet-20 has no ceiling class), warm tungsten light,
  saturated consumer furniture colours, a consumer RGB-D sensor: depth noise growing with distance,
  frequent holes, no depth on glass, registration drift between frames, sparse fused points.
* ``synth-s3dis`` - S3DIS: large office and conference rooms with ceilings, many chairs around long
  tables, bookcases, no beds (S3DIS has none), cool fluorescent light with strong ambient, dull
  grey/desaturated surfaces, a survey-grade scanner: little noise, no drift, dense points.
* ``synth-matterport`` - Matterport3D: rooms of whole homes of any kind with ceilings, beds, sofas and
  cabinets, rich palettes, daylight with strong fall-off, a tripod panorama camera: medium noise,
  stitching errors, coarser fused points.

Each scene is a pure function of (domain, split, index, seed): its generator is seeded by a hash of
those four values, so splits never share scenes.

Modules, bottom up: ``domains`` (the parameters of each domain), ``room`` (boxes and furniture
placement), ``render`` (ray casting and shading; camera geometry is ``bench.data.geometry``),
``generate`` (one scene) and ``dataset`` (the registered datasets and their scene cache).
"""

from bench.data.geometry import intrinsic_for, look_at  # noqa: F401
from bench.data.synth.dataset import (  # noqa: F401  (registers the domains)
    SynthDataset,
    SynthDatasetConfig,
    register_inline_domain,
)
from bench.data.synth.domains import (  # noqa: F401
    DOMAINS,
    ROOM_TYPES,
    TEST_DOMAINS,
    VAL_DOMAIN,
    WORLD_VERSION,
    Domain,
    domain_from_spec,
    with_overrides,
)
from bench.data.synth.generate import (  # noqa: F401
    GENERATOR_VERSION,
    SPLIT_SIZES,
    SynthConfig,
    generate_scene,
    scene_room,
    scene_seed,
    with_config,
)
from bench.data.synth.render import Lighting, camera_rays, kelvin_rgb, raycast, render, shade, visible_boxes  # noqa: F401
from bench.data.synth.room import STYLES, Boxes, build_room  # noqa: F401
