"""A procedural world of indoor rooms with paired RGB-D views and domains that really differ.

Every object is a set of boxes (rotated about z). A scene is scanned the way real indoor datasets
are made: a sensor at a few positions sweeps the room, every scan pixel is ray-cast against the same
boxes, given metric depth with the domain's sensor noise, back-projected through a slightly wrong pose
(registration noise) and fused on a voxel grid into the point cloud. Occluded surfaces therefore
leave holes, glass has no depth on consumer sensors, and the colours of points and of the paired
views come from one shading model. The paired views (K posed pinhole cameras) are rendered from the
same geometry with the same shading, so a point projected into a view lands on a pixel of matching
depth and label.

Domains (see ``DOMAINS``) are parameter sets (``domains.Domain``: room-type mix, object-style
probabilities, sensor, lighting, palette, ceiling, labelled classes, seed) that mirror the documented
content and capture of the three indoor datasets of the TTT-KD paper:

* ``synth-scannet`` - ScanNet: rooms of homes and offices (bedrooms, living rooms, kitchens,
  bathrooms, offices), no ceiling, warm tungsten light, saturated consumer colours, a hand-held
  consumer RGB-D sensor: depth noise growing with distance, holes, little depth on glass, drift,
  upper walls missed, sparse fused points.
* ``synth-s3dis`` - S3DIS: offices, hallways, storage and conference rooms of one university in the
  proportions of S3DIS' 272 rooms, ceilings, swivel and sled-base chairs, cabinets annotated as
  clutter, cool fluorescent light, dull surfaces, a survey-grade tripod scanner: dense clean points.
* ``synth-matterport`` - Matterport3D: whole homes region by region, ceilings, dining and arm chairs,
  rich palettes, daylight with strong fall-off, a tripod panorama camera: medium noise, coarse points.
* ``synth-val`` - the validation domain for hyper-parameter selection, sharing no parameter set and
  no scene with the three test domains (``TEST_DOMAINS``).

A grid can define more domains from these (``[domains.NAME]``, see ``dataset.register_inline_domain``).
Each scene is a pure function of (domain parameters, split, index, seed): its generator is seeded by a
hash of those values and the world version, so splits and domains never share scenes.

Modules, bottom up: ``domains`` (the parameters of each domain), ``room`` (room types, object styles,
boxes and furniture placement), ``render`` (ray casting and shading; camera geometry is ``bench.data.geometry``),
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
