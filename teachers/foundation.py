"""Foundation-model teachers: DINOv2 (timm), CLIP image towers (open_clip), SAM image encoders.

Each returns the model's patch tokens reshaped to its patch grid, after the model's own input
normalisation. Weights load from a local file (``teachers.base.read_checkpoint``: data only, nothing
downloaded, no code run); the architecture is inferred from the file, so ``variant``/``arch`` can stay
``'auto'``; a configured value that the file contradicts is an error that names both.
``weights='random-init'`` builds the configured architecture with random weights (plumbing tests);
``model_kwargs`` overrides architecture arguments of such a random-init model (tests use tiny ones).

Accepted files (README "Teachers" has the table):
- DINOv2: the official ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` (facebookresearch/dinov2's
  ``DinoVisionTransformer`` state dict, also with block chunks), or a Hugging Face ``Dinov2Model`` /
  ``Dinov2WithRegistersModel`` snapshot (``model.safetensors`` / ``pytorch_model.bin``).
- CLIP: open_clip's ``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors``, or OpenAI's
  TorchScript ``ViT-B-16.pt`` & co. (tensors read from the archive without running it).
- SAM: ``sam_vit_{b,l,h}_*.pth`` (the full SAM state dict; the image encoder is used).
"""

from __future__ import annotations

import json
import logging
import math
import re
import types
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from teachers.base import (
    RANDOM_INIT,
    ImageTeacher,
    is_torchscript,
    load_into,
    normalise,
    read_checkpoint,
    resolve_weights,
    strip_prefix,
    weights_id,
)
from teachers.registry import TEACHERS

log = logging.getLogger(__name__)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
SAM_PIXEL = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))

# ---------------------------------------------------------------------------------------------------
# DINOv2

DINO_DIMS = {"s": 384, "b": 768, "l": 1024, "g": 1536}
DINO_TIMM = {"s": "vit_small_patch14_dinov2", "b": "vit_base_patch14_dinov2",
             "l": "vit_large_patch14_dinov2", "g": "vit_giant_patch14_dinov2"}
DINO_HF = {"s": "small", "b": "base", "l": "large", "g": "giant"}
DINO_SOURCE = "the DINOv2 release (facebookresearch/dinov2) or the Hugging Face facebook/dinov2-* repositories"


def dinov2_file_names(variant: str = "auto", registers: int | None = None) -> list[str]:
    """Every file name accepted in $TTT_BENCH_WEIGHTS for these settings, in lookup order."""
    out = []
    for v in (DINO_DIMS if variant == "auto" else [variant]):
        for reg in ([0, 4] if registers is None else [registers]):
            tag = "_reg4" if reg else ""
            out += [f"dinov2_vit{v}14{tag}_pretrain.pth"]
            if not reg:
                out += [f"dinov2_vit{v}14.pth"]
            hf = f"dinov2-with-registers-{DINO_HF[v]}" if reg else f"dinov2-{DINO_HF[v]}"
            out += [f"{hf}/model.safetensors", f"{hf}/pytorch_model.bin"]
    return out


@dataclass
class DinoV2Config:
    variant: str = "auto"  # auto (from the file), s, b, l, g (patch 14)
    registers: int | None = None  # None = as the file has them; 0 or 4 to require a file without / with
    weights: str | None = None  # path (file or HF snapshot folder), 'random-init', or None = $TTT_BENCH_WEIGHTS
    short_side: int = 224  # images are resized so the short side is this (rounded to the patch size)
    model_kwargs: dict = field(default_factory=dict)  # architecture overrides of a random-init model

    def weights_file(self) -> str | Path:
        """The file these settings load (BenchError if absent), without reading it."""
        if self.variant != "auto" and self.variant not in DINO_DIMS:
            raise BenchError(f"dinov2 variant '{self.variant}' unknown; valid: auto, {', '.join(DINO_DIMS)}")
        if self.registers not in (None, 0, 4):
            raise BenchError(f"dinov2 registers={self.registers!r}: DINOv2 releases have 0 or 4 registers")
        return resolve_weights("dinov2", self.weights, dinov2_file_names(self.variant, self.registers), DINO_SOURCE)


@dataclass
class DinoArch:
    """What a DINOv2 checkpoint holds."""

    dim: int
    depth: int
    patch: int
    grid: int  # side of the position-embedding grid (37 for the 518-px releases)
    registers: int
    swiglu: bool

    @property
    def variant(self) -> str:
        return next((v for v, d in DINO_DIMS.items() if d == self.dim), f"d{self.dim}")

    def describe(self) -> str:
        return (f"a ViT-{self.variant}/{self.patch} (embed dim {self.dim}, {self.depth} blocks"
                f"{f', {self.registers} registers' if self.registers else ''})")


def dinov2_official_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict in facebookresearch/dinov2's key layout, from the official file (plain or
    with block chunks ``blocks.C.I.``), a Hugging Face ``Dinov2Model`` state dict, or timm's own layout."""
    for prefix in ("backbone.", "dinov2."):
        sd = strip_prefix(sd, prefix)
    if "embeddings.cls_token" in sd:  # Hugging Face layout
        hf = sd
        sd = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
              "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
              "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
              "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"]}
        if "embeddings.mask_token" in hf:
            sd["mask_token"] = hf["embeddings.mask_token"]
        if "embeddings.register_tokens" in hf:
            sd["register_tokens"] = hf["embeddings.register_tokens"]
        names = {"norm1": "norm1", "norm2": "norm2", "layer_scale1.lambda1": "ls1.gamma",
                 "layer_scale2.lambda1": "ls2.gamma", "attention.output.dense": "attn.proj",
                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.w12", "mlp.weights_out": "mlp.w3"}
        layers = sorted({int(m.group(1)) for k in hf if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
        for i in layers:
            p = f"encoder.layer.{i}."
            for suffix in ("weight", "bias"):
                qkv = [hf.get(f"{p}attention.attention.{n}.{suffix}") for n in ("query", "key", "value")]
                if all(t is not None for t in qkv):
                    sd[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat(qkv, 0)
            for k, v in hf.items():
                if k.startswith(p):
                    rest = k[len(p):]
                    for a, b in names.items():
                        if rest.startswith(a + ".") or rest == a:
                            sd[f"blocks.{i}.{b}{rest[len(a):]}"] = v
        return sd
    if "reg_token" in sd and "register_tokens" not in sd:  # timm's own layout of the register models
        sd = dict(sd)
        sd["register_tokens"] = sd.pop("reg_token")
        sd["pos_embed"] = torch.cat([torch.zeros_like(sd["pos_embed"][:, :1]), sd["pos_embed"]], 1)
    # official layout; block chunks (FSDP training) keep the global block index as the second number
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}


def dinov2_arch(sd: dict[str, torch.Tensor], path: Path) -> DinoArch:
    if "cls_token" not in sd or "pos_embed" not in sd or "patch_embed.proj.weight" not in sd:
        raise BenchError(f"teacher 'dinov2': {path} is not a DINOv2 checkpoint (no cls_token / pos_embed / "
                         f"patch_embed; first keys: {list(sd)[:4]}); give the official "
                         "dinov2_vit*14*_pretrain.pth or a Hugging Face DINOv2 model.safetensors")
    dim = int(sd["cls_token"].shape[-1])
    depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    n = int(sd["pos_embed"].shape[1]) - 1
    grid = math.isqrt(n)
    if grid * grid != n:
        raise BenchError(f"teacher 'dinov2': {path} has a position embedding of {n} patches, not a square grid")
    regs = int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0
    return DinoArch(dim, depth, int(sd["patch_embed.proj.weight"].shape[-1]), grid, regs,
                    any(".mlp.w12." in k for k in sd))


def _official_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
    """timm's ``_pos_embed`` replaced by facebookresearch/dinov2's ``interpolate_pos_encoding``: the
    position grid is resampled bicubically, with the release's own settings (models without registers:
    no antialiasing and scale factor (n + 0.1) / M; with registers: antialiased, to size n)."""
    b, h, w, c = x.shape
    pe = self.pos_embed
    n_pre = 0 if self.no_embed_class else self.num_prefix_tokens
    patch_pe = pe[:, n_pre:]
    m = math.isqrt(patch_pe.shape[1])
    if (h, w) != (m, m):
        grid = patch_pe.float().reshape(1, m, m, c).permute(0, 3, 1, 2)
        if self.dino_interp_offset:
            kw = {"scale_factor": ((h + self.dino_interp_offset) / m, (w + self.dino_interp_offset) / m)}
        else:
            kw = {"size": (h, w)}
        grid = F.interpolate(grid, mode="bicubic", antialias=self.dino_interp_antialias, **kw)
        patch_pe = grid.permute(0, 2, 3, 1).reshape(1, h * w, c).to(pe.dtype)
    x = x.reshape(b, h * w, c)
    prefix = [self.cls_token.expand(b, -1, -1)]
    if self.reg_token is not None:
        prefix.append(self.reg_token.expand(b, -1, -1))
    if self.no_embed_class:  # timm's registers layout: cls already carries its position, registers none
        return torch.cat(prefix + [x + patch_pe], dim=1)
    return torch.cat(prefix + [x], dim=1) + torch.cat([pe[:, :n_pre], patch_pe], dim=1)


class DinoV2(ImageTeacher):
    def __init__(self, cfg: DinoV2Config, device: str = "cpu"):
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        w = cfg.weights_file()
        if w == RANDOM_INIT:
            variant = "s" if cfg.variant == "auto" else cfg.variant
            regs = cfg.registers or 0
            kw = dict(cfg.model_kwargs)
            arch = None
        else:
            sd = dinov2_official_layout(read_checkpoint(w, "dinov2"))
            arch = dinov2_arch(sd, w)
            sd.setdefault("mask_token", torch.zeros(1, arch.dim))  # timm converts the official layout by it
            variant, regs = arch.variant, arch.registers
            if cfg.variant != "auto" and cfg.variant != variant:
                raise BenchError(f"teacher 'dinov2': {w} holds {arch.describe()}, but variant='{cfg.variant}' "
                                 f"is configured; set variant='{variant}' (or 'auto' to take it from the file)")
            if cfg.registers is not None and cfg.registers != regs:
                raise BenchError(f"teacher 'dinov2': {w} holds {arch.describe()}, but registers={cfg.registers} "
                                 f"is configured; set registers={regs} (or leave it unset)")
            kw = {"embed_dim": arch.dim, "depth": arch.depth, "patch_size": arch.patch,
                  "img_size": arch.grid * arch.patch, "num_heads": max(1, arch.dim // 64),
                  "weight_init": "skip"}  # the file overwrites every weight
        base = DINO_TIMM.get(variant, DINO_TIMM["g" if arch is not None and arch.swiglu else "s"])
        if regs:
            kw.update(reg_tokens=regs, no_embed_class=True)
        net = timm.create_model(base, pretrained=False, num_classes=0, dynamic_img_size=True, **kw)
        if arch is not None:
            load_into(net, checkpoint_filter_fn(sd, net), w, "dinov2",
                      f"The file holds {arch.describe()}; leave variant='auto' to build that architecture.")
        # the official release's position-embedding interpolation (see _official_pos_embed)
        net.dino_interp_antialias, net.dino_interp_offset = (True, 0.0) if regs else (False, 0.1)
        net._pos_embed = types.MethodType(_official_pos_embed, net)
        self.cfg, self.patch, self.registers = cfg, net.patch_embed.patch_size[0], regs
        name = f"dinov2-{variant}" + (f"-reg{regs}" if regs else "")
        super().__init__(net, name, net.num_features, weights_id(w), device)

    def feature_maps(self, images):
        h, w = images.shape[1:3]
        s = self.cfg.short_side / min(h, w)
        th = max(self.patch, round(h * s / self.patch) * self.patch)
        tw = max(self.patch, round(w * s / self.patch) * self.patch)
        x = F.interpolate(normalise(images, *IMAGENET), size=(th, tw), mode="bilinear", align_corners=False)
        return self.tokens_to_grid(self.net.forward_features(x), th // self.patch, tw // self.patch)

    def tokens_to_grid(self, tokens: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """(B, prefix + gh*gw, D) -> (B, D, gh, gw): drops the class token and any register tokens."""
        patches = tokens[:, self.net.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)


@TEACHERS.register("dinov2", config=DinoV2Config)
def build_dinov2(*, cfg: DinoV2Config, device: str = "cpu") -> DinoV2:
    """DINOv2 ViT (timm), patch tokens on the 14-px grid; the TTT-KD paper's default teacher"""
    return DinoV2(cfg, device)


# ---------------------------------------------------------------------------------------------------
# CLIP

OPENAI_FILES = ("ViT-B-32.pt", "ViT-B-16.pt", "ViT-L-14.pt", "ViT-L-14-336px.pt")
OPEN_CLIP_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")
CLIP_SOURCE = "OpenAI's CLIP release (ViT-*.pt) or an open_clip checkpoint (open_clip_pytorch_model.bin)"
OPENAI_META = ("input_resolution", "context_length", "vocab_size")


def clip_file_names(arch: str = "auto") -> list[str]:
    if arch == "auto":
        return [*OPENAI_FILES, *OPEN_CLIP_FILES]
    base = arch.removesuffix("-quickgelu")
    openai = [f"{base}.pt", f"{base}px.pt"] if base.endswith("-336") else [f"{base}.pt"]
    return [*dict.fromkeys([*openai, *OPEN_CLIP_FILES, f"clip_{arch}.pt"])]


@dataclass
class ClipConfig:
    arch: str = "auto"  # an open_clip model name, or auto (inferred from the file; ViT-B-16 for random-init)
    weights: str | None = None  # path, 'random-init', or None = $TTT_BENCH_WEIGHTS
    quick_gelu: bool | None = None  # None = by the rule in README "Teachers" (OpenAI weights use QuickGELU)
    model_kwargs: dict = field(default_factory=dict)

    def weights_file(self) -> str | Path:
        import open_clip

        if self.arch != "auto" and self.arch not in open_clip.list_models():
            raise BenchError(f"clip arch '{self.arch}' unknown to open_clip; e.g. ViT-B-16, ViT-L-14, or auto")
        return resolve_weights("clip", self.weights, clip_file_names(self.arch), CLIP_SOURCE)


def clip_vision_shape(sd: dict[str, torch.Tensor], path: Path) -> dict:
    """The vision tower's shape as open_clip's ``vision_cfg`` names it, plus the joint ``embed_dim``."""
    if "visual.conv1.weight" not in sd or "visual.positional_embedding" not in sd:
        raise BenchError(f"teacher 'clip': {path} has no ViT image tower in the OpenAI/open_clip layout "
                         f"(visual.conv1.weight; first keys: {list(sd)[:4]}); only ViT CLIP models are supported")
    conv = sd["visual.conv1.weight"]
    grid = math.isqrt(int(sd["visual.positional_embedding"].shape[0]) - 1)
    layers = len({m.group(1) for k in sd if (m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k))})
    return {"width": int(conv.shape[0]), "patch_size": int(conv.shape[-1]), "image_size": grid * int(conv.shape[-1]),
            "layers": layers, "embed_dim": int(sd["visual.proj"].shape[1]) if "visual.proj" in sd else None}


def _arch_shape(arch: str) -> dict | None:
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    v = cfg.get("vision_cfg", {})
    if v.get("timm_model_name") or not all(k in v for k in ("width", "layers", "patch_size", "image_size")):
        return None
    size = v["image_size"] if isinstance(v["image_size"], int) else v["image_size"][0]
    return {"width": v["width"], "patch_size": v["patch_size"], "image_size": size, "layers": v["layers"],
            "embed_dim": cfg.get("embed_dim")}


def infer_clip_arch(shape: dict) -> list[str]:
    """open_clip model names whose image tower has this shape, plainest first."""
    import open_clip

    out = [a for a in open_clip.list_models() if _arch_shape(a) == shape]
    extra = lambda a: len(open_clip.get_model_config(a).get("vision_cfg", {}))  # noqa: E731
    return sorted(out, key=lambda a: (a.endswith("-quickgelu"), extra(a), len(a), a))


def clip_uses_quick_gelu(cfg: ClipConfig, path: Path | None, openai_format: bool) -> tuple[bool, str]:
    """The QuickGELU rule: an explicit ``quick_gelu`` wins; else an arch named ``*-quickgelu``; else OpenAI's
    own files (a TorchScript archive, OpenAI's release file names ViT-*.pt, or a state dict with OpenAI's
    metadata entries input_resolution/context_length/vocab_size); else an
    ``open_clip_config.json`` beside the file that says ``quick_gelu``; else GELU (open_clip's default)."""
    if cfg.quick_gelu is not None:
        return cfg.quick_gelu, "set in the config"
    if cfg.arch.endswith("-quickgelu"):
        return True, f"arch {cfg.arch}"
    if openai_format:
        return True, "OpenAI's own checkpoint format"
    if path is not None and (path.parent / "open_clip_config.json").is_file():
        try:
            meta = json.loads((path.parent / "open_clip_config.json").read_text())
            qg = meta.get("model_cfg", {}).get("quick_gelu")
        except (OSError, ValueError, AttributeError):
            qg = None
        if qg is not None:
            return bool(qg), f"{path.parent / 'open_clip_config.json'}"
    return False, "open_clip's default (GELU); set quick_gelu=true for OpenAI weights saved in open_clip's format"


class Clip(ImageTeacher):
    def __init__(self, cfg: ClipConfig, device: str = "cpu"):
        import open_clip

        w = cfg.weights_file()
        sd, arch, openai_format = None, ("ViT-B-16" if cfg.arch == "auto" else cfg.arch), False
        if w != RANDOM_INIT:
            sd = read_checkpoint(w, "clip")
            openai_format = is_torchscript(Path(w)) or any(k in sd for k in OPENAI_META) or Path(w).name in OPENAI_FILES
            shape = clip_vision_shape(sd, w)
            fits = infer_clip_arch(shape)
            desc = (f"a ViT image tower of width {shape['width']}, {shape['layers']} layers, patch "
                    f"{shape['patch_size']}, {shape['image_size']} px, embed dim {shape['embed_dim']}")
            if cfg.arch == "auto":
                if not fits:
                    raise BenchError(f"teacher 'clip': {w} holds {desc}, which matches no open_clip model; "
                                     "set arch= to the open_clip model name it was trained with")
                arch = fits[0]
            elif cfg.arch not in fits:
                raise BenchError(f"teacher 'clip': {w} holds {desc}, but arch='{cfg.arch}' is configured; set "
                                 f"arch='{fits[0] if fits else '<its open_clip name>'}' (or 'auto')")
        qg, why = clip_uses_quick_gelu(cfg, None if w == RANDOM_INIT else Path(w), openai_format)
        log.info("teacher clip: %s with %s (%s)", arch, "QuickGELU" if qg else "GELU", why)
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=qg, **cfg.model_kwargs)
        visual = model.visual
        if sd is not None:
            vis = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
            load_into(visual, vis, w, "clip", "Set arch='auto' to take the architecture from the file.")
        visual.output_tokens = True
        self.size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
        self.patch = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        self.cfg, self.arch, self.quick_gelu = cfg, arch, qg
        name = f"clip-{arch}" + ("-quickgelu" if qg and not arch.endswith("-quickgelu") else "")
        super().__init__(visual, name, visual.transformer.width, weights_id(w), device)

    def feature_maps(self, images):
        x = F.interpolate(normalise(images, *OPENAI_CLIP), size=self.size, mode="bilinear", align_corners=False)
        _, tokens = self.net(x)
        gh, gw = self.size[0] // self.patch[0], self.size[1] // self.patch[1]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


@TEACHERS.register("clip", config=ClipConfig)
def build_clip(*, cfg: ClipConfig, device: str = "cpu") -> Clip:
    """CLIP image tower (open_clip), patch tokens at the model's input size"""
    return Clip(cfg, device)


# ---------------------------------------------------------------------------------------------------
# SAM

SAM_VARIANTS = {"vit_b": (768, 12, 12, (2, 5, 8, 11)), "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
                "vit_h": (1280, 32, 16, (7, 15, 23, 31))}
SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
SAM_SOURCE = "the segment-anything release (facebookresearch/segment-anything)"


@dataclass
class SamConfig:
    variant: str = "auto"  # auto (from the file; vit_b for random-init), vit_b, vit_l, vit_h
    weights: str | None = None  # path, 'random-init', or None = $TTT_BENCH_WEIGHTS/sam_vit_*.pth
    model_kwargs: dict = field(default_factory=dict)  # e.g. img_size, depth, embed_dim for random-init tests

    def weights_file(self) -> str | Path:
        if self.variant != "auto" and self.variant not in SAM_VARIANTS:
            raise BenchError(f"sam variant '{self.variant}' unknown; valid: auto, {', '.join(SAM_VARIANTS)}")
        names = list(SAM_FILES.values()) if self.variant == "auto" else [SAM_FILES[self.variant]]
        return resolve_weights("sam", self.weights, names, SAM_SOURCE)


def sam_encoder_kwargs(sd: dict[str, torch.Tensor], path: Path) -> dict:
    """``ImageEncoderViT`` arguments read off an image-encoder state dict."""
    if "patch_embed.proj.weight" not in sd or "pos_embed" not in sd:
        raise BenchError(f"teacher 'sam': {path} is not a SAM checkpoint (no image_encoder.patch_embed; first "
                         f"keys: {list(sd)[:4]}); give the official sam_vit_*.pth")
    dim, patch = int(sd["patch_embed.proj.weight"].shape[0]), int(sd["patch_embed.proj.weight"].shape[-1])
    grid = int(sd["pos_embed"].shape[1])
    depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    rel = {i: sd.get(f"blocks.{i}.attn.rel_pos_h") for i in range(depth)}
    use_rel = all(r is not None for r in rel.values())
    head_dim = int(rel[0].shape[1]) if use_rel and depth else 64
    glob = tuple(i for i, r in rel.items() if r is not None and r.shape[0] == 2 * grid - 1)
    windows = {(int(r.shape[0]) + 1) // 2 for i, r in rel.items() if r is not None and i not in glob}
    return dict(depth=depth, embed_dim=dim, img_size=grid * patch, patch_size=patch, num_heads=dim // head_dim,
                mlp_ratio=sd["blocks.0.mlp.lin1.weight"].shape[0] / dim if depth else 4, qkv_bias=True,
                use_rel_pos=use_rel, global_attn_indexes=glob, window_size=windows.pop() if windows else 14,
                out_chans=int(sd["neck.0.weight"].shape[0]) if "neck.0.weight" in sd else 256)


class Sam(ImageTeacher):
    def __init__(self, cfg: SamConfig, device: str = "cpu"):
        from segment_anything.modeling import ImageEncoderViT

        w = cfg.weights_file()
        if w == RANDOM_INIT:
            variant = "vit_b" if cfg.variant == "auto" else cfg.variant
            dim, depth, heads, glob = SAM_VARIANTS[variant]
            kw = dict(depth=depth, embed_dim=dim, img_size=1024, mlp_ratio=4, num_heads=heads, patch_size=16,
                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=glob, window_size=14, out_chans=256)
            kw.update(cfg.model_kwargs)
            sd = None
        else:
            sd = read_checkpoint(w, "sam")
            sd = {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")} or sd
            kw = sam_encoder_kwargs(sd, w)
            variant = next((v for v, (d, n, _, _) in SAM_VARIANTS.items() if (d, n) == (kw["embed_dim"], kw["depth"])),
                           f"d{kw['embed_dim']}x{kw['depth']}")
            if cfg.variant != "auto" and cfg.variant != variant:
                raise BenchError(f"teacher 'sam': {w} holds a SAM image encoder {variant} (embed dim "
                                 f"{kw['embed_dim']}, {kw['depth']} blocks), but variant='{cfg.variant}' is "
                                 f"configured; set variant='{variant}' (or 'auto' to take it from the file)")
        net = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **kw)
        if sd is not None:
            load_into(net, sd, w, "sam", "Leave variant='auto' to take the architecture from the file.")
        self.cfg, self.img_size, self.patch = cfg, kw["img_size"], kw["patch_size"]
        super().__init__(net, f"sam-{variant}", kw["out_chans"], weights_id(w), device)

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
def build_sam(*, cfg: SamConfig, device: str = "cpu") -> Sam:
    """SAM image encoder (segment_anything), 256-d neck features on the 16-px grid"""
    return Sam(cfg, device)
