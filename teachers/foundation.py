"""Foundation-model teachers: DINOv2 (timm), CLIP image towers (open_clip), SAM image encoders.

Each returns the model's patch tokens reshaped to its patch grid, after the model's own input
normalisation. Weights load from a local file with ``torch.load(weights_only=True)``; nothing is
downloaded. ``weights='random-init'`` builds the architecture with random weights (plumbing tests);
``model_kwargs`` overrides architecture arguments (tests use tiny depths and widths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from teachers.base import RANDOM_INIT, ImageTeacher, load_into, load_state_dict, normalise, resolve_weights, weights_id
from teachers.registry import TEACHERS

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
SAM_PIXEL = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


@dataclass
class DinoV2Config:
    variant: str = "s"  # s, b, l, g (patch 14)
    weights: str | None = None  # path, 'random-init', or None = $TTT_BENCH_WEIGHTS/dinov2_vit{v}14.pth
    short_side: int = 224  # images are resized so the short side is this (rounded to the patch size)
    device: str = "cpu"
    model_kwargs: dict = field(default_factory=dict)


DINO_NAMES = {"s": "vit_small_patch14_dinov2", "b": "vit_base_patch14_dinov2",
              "l": "vit_large_patch14_dinov2", "g": "vit_giant_patch14_dinov2"}


class DinoV2(ImageTeacher):
    def __init__(self, cfg: DinoV2Config):
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        if cfg.variant not in DINO_NAMES:
            raise BenchError(f"dinov2 variant '{cfg.variant}' unknown; valid: {', '.join(DINO_NAMES)}")
        w = resolve_weights("dinov2", cfg.weights, f"dinov2_vit{cfg.variant}14.pth",
                            "the DINOv2 release (facebookresearch/dinov2) or timm's hub copy")
        net = timm.create_model(DINO_NAMES[cfg.variant], pretrained=False, num_classes=0, dynamic_img_size=True,
                                **cfg.model_kwargs)
        if w != RANDOM_INIT:
            load_into(net, checkpoint_filter_fn(load_state_dict(w, "dinov2"), net), w, "dinov2")
        self.cfg, self.patch = cfg, 14
        super().__init__(net, f"dinov2-{cfg.variant}", net.num_features, weights_id(w), cfg.device)

    def feature_maps(self, images):
        h, w = images.shape[1:3]
        s = self.cfg.short_side / min(h, w)
        th = max(self.patch, round(h * s / self.patch) * self.patch)
        tw = max(self.patch, round(w * s / self.patch) * self.patch)
        x = F.interpolate(normalise(images, *IMAGENET), size=(th, tw), mode="bilinear", align_corners=False)
        tokens = self.net.forward_features(x)[:, self.net.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, th // self.patch, tw // self.patch)


@TEACHERS.register("dinov2", config=DinoV2Config)
def build_dinov2(cfg: DinoV2Config) -> DinoV2:
    """DINOv2 ViT (timm), patch tokens on the 14-px grid; the TTT-KD paper's default teacher"""
    return DinoV2(cfg)


@dataclass
class ClipConfig:
    arch: str = "ViT-B-16"  # an open_clip model name
    weights: str | None = None  # path, 'random-init', or None = $TTT_BENCH_WEIGHTS/clip_{arch}.pt
    device: str = "cpu"
    model_kwargs: dict = field(default_factory=dict)


class Clip(ImageTeacher):
    def __init__(self, cfg: ClipConfig):
        import open_clip

        if cfg.arch not in open_clip.list_models():
            raise BenchError(f"clip arch '{cfg.arch}' unknown to open_clip; e.g. ViT-B-16, ViT-L-14")
        w = resolve_weights("clip", cfg.weights, f"clip_{cfg.arch}.pt", "open_clip's released checkpoints")
        model = open_clip.create_model(cfg.arch, pretrained=None, **cfg.model_kwargs)
        if w != RANDOM_INIT:
            load_into(model, load_state_dict(w, "clip"), w, "clip")
        visual = model.visual
        visual.output_tokens = True
        self.size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
        self.patch = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        self.cfg = cfg
        dim = visual.transformer.width
        super().__init__(visual, f"clip-{cfg.arch}", dim, weights_id(w), cfg.device)

    def feature_maps(self, images):
        x = F.interpolate(normalise(images, *OPENAI_CLIP), size=self.size, mode="bilinear", align_corners=False)
        _, tokens = self.net(x)
        gh, gw = self.size[0] // self.patch[0], self.size[1] // self.patch[1]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


@TEACHERS.register("clip", config=ClipConfig)
def build_clip(cfg: ClipConfig) -> Clip:
    """CLIP image tower (open_clip), patch tokens at the model's input size"""
    return Clip(cfg)


SAM_VARIANTS = {"vit_b": (768, 12, 12, (2, 5, 8, 11)), "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
                "vit_h": (1280, 32, 16, (7, 15, 23, 31))}
SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


@dataclass
class SamConfig:
    variant: str = "vit_b"
    weights: str | None = None  # path, 'random-init', or None = $TTT_BENCH_WEIGHTS/<official file name>
    device: str = "cpu"
    model_kwargs: dict = field(default_factory=dict)  # e.g. img_size, depth, embed_dim for tests


class Sam(ImageTeacher):
    def __init__(self, cfg: SamConfig):
        from segment_anything.modeling import ImageEncoderViT

        if cfg.variant not in SAM_VARIANTS:
            raise BenchError(f"sam variant '{cfg.variant}' unknown; valid: {', '.join(SAM_VARIANTS)}")
        w = resolve_weights("sam", cfg.weights, SAM_FILES[cfg.variant], "the segment-anything release")
        dim, depth, heads, glob = SAM_VARIANTS[cfg.variant]
        kw = dict(depth=depth, embed_dim=dim, img_size=1024, mlp_ratio=4, num_heads=heads, patch_size=16,
                  qkv_bias=True, use_rel_pos=True, global_attn_indexes=glob, window_size=14, out_chans=256,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
        kw.update(cfg.model_kwargs)
        net = ImageEncoderViT(**kw)
        if w != RANDOM_INIT:
            sd = load_state_dict(w, "sam")
            sd = {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")} or sd
            load_into(net, sd, w, "sam")
        self.cfg, self.img_size, self.patch = cfg, kw["img_size"], kw["patch_size"]
        super().__init__(net, f"sam-{cfg.variant}", kw["out_chans"], weights_id(w), cfg.device)

    def feature_maps(self, images):
        h, w = images.shape[1:3]
        s = self.img_size / max(h, w)
        nh, nw = round(h * s), round(w * s)
        x = normalise(images, *SAM_PIXEL, scale=1.0)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, self.img_size - nw, 0, self.img_size - nh))  # SAM pads bottom/right
        fm = self.net(x)
        gh, gw = -(-nh // self.patch), -(-nw // self.patch)
        return fm[:, :, :gh, :gw]  # the part of the grid that covers the image


@TEACHERS.register("sam", config=SamConfig)
def build_sam(cfg: SamConfig) -> Sam:
    """SAM image encoder (segment_anything), 256-d neck features on the 16-px grid"""
    return Sam(cfg)
