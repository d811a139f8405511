"""Real teacher checkpoints as users download them: one test per format, each built from random weights
in that format (open_clip's create_model, segment_anything's own constructor, DINOv2's official key
layout made from a timm model), loaded through the harness by the downloaded file name, and compared
with the reference model's features."""

import math
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from teachers import build_teacher, check_teacher
from teachers.foundation import IMAGENET, OPENAI_CLIP, SAM_PIXEL

torch.set_num_threads(1)


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights of a useful scale everywhere (layer scales and norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(("gamma", "lambda1")) or ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)
    return net.eval()


def _images(h: int, w: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8)


def _norm(images, mean_std, scale=255.0):
    mean, std = (torch.tensor(v)[:, None, None] for v in mean_std)
    return (images.permute(0, 3, 1, 2).float() / scale - mean) / std


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TTT_BENCH_WEIGHTS", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------------------------- DINOv2

def _timm_dino(registers: int, img_size: int = 224):
    import timm

    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    return _randomise(timm.create_model(name, pretrained=False, num_classes=0, depth=2, img_size=img_size))


def _official_layout(net, registers: int) -> dict:
    """facebookresearch/dinov2's DinoVisionTransformer state dict (keys and layout) holding ``net``'s weights:
    the inverse of timm's conversion (timm folds the class position into cls_token for register models)."""
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    dim = sd["cls_token"].shape[-1]
    sd["mask_token"] = torch.zeros(1, dim)
    if registers:
        pos0 = 0.05 * torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(1))
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - pos0
        sd["pos_embed"] = torch.cat([pos0, sd["pos_embed"]], 1)
    return sd


def _dino_reference(net, images, mean_std=IMAGENET):
    with torch.no_grad():
        tokens = net.forward_features(_norm(images, mean_std))[:, net.num_prefix_tokens:]
    gh, gw = images.shape[1] // 14, images.shape[2] // 14
    return tokens.transpose(1, 2).reshape(images.shape[0], -1, gh, gw)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_official_file_by_its_download_name(weights_dir, registers):
    net = _timm_dino(registers)
    name = f"dinov2_vits14{'_reg4' if registers else ''}_pretrain.pth"
    torch.save(_official_layout(net, registers), weights_dir / name)
    t = build_teacher({"name": "dinov2"})  # variant, registers and size from the file
    assert t.name == ("dinov2-s-reg4" if registers else "dinov2-s") and t.dim == 384
    imgs = _images(224, 224)  # the file's native 16x16 grid: no position resampling
    ref = _dino_reference(net, imgs)
    torch.testing.assert_close(t.feature_maps(imgs), ref, rtol=1e-4, atol=1e-4)
    torch.save(net.state_dict(), weights_dir / "timm.pth")  # timm's own layout (as on timm's hub) works too
    t = build_teacher({"name": "dinov2", "weights": str(weights_dir / "timm.pth")})
    torch.testing.assert_close(t.feature_maps(imgs), ref, rtol=1e-4, atol=1e-4)


def test_dinov2_giant_swiglu_layout(weights_dir):
    """ViT-g's official file has SwiGLU MLPs (mlp.w12 / mlp.w3): inferred as variant g (one block, small grid)."""
    import timm

    net = _randomise(timm.create_model("vit_giant_patch14_dinov2", pretrained=False, num_classes=0, depth=1,
                                       img_size=56, weight_init="skip"))
    sd = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in net.state_dict().items()}
    torch.save({**sd, "mask_token": torch.zeros(1, 1536)}, weights_dir / "dinov2_vitg14_pretrain.pth")
    t = build_teacher({"name": "dinov2", "short_side": 56})
    assert t.name == "dinov2-g" and t.dim == 1536
    imgs = _images(56, 56, n=1)
    torch.testing.assert_close(t.feature_maps(imgs), _dino_reference(net, imgs), rtol=1e-4, atol=1e-4)


def _official_resample(pos: torch.Tensor, h: int, w: int, registers: int) -> torch.Tensor:
    """facebookresearch/dinov2 ``interpolate_pos_encoding`` on the patch part (M*M, D) -> (h*w, D), with
    the hub settings: without registers offset 0.1 and no antialias; with registers size and antialias."""
    m, d = math.isqrt(pos.shape[0]), pos.shape[1]
    grid = pos.reshape(1, m, m, d).permute(0, 3, 1, 2)
    if registers:
        out = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
    else:
        out = F.interpolate(grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic", antialias=False)
    return out.permute(0, 2, 3, 1).reshape(h * w, d)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_position_embedding_resampled_as_the_official_model(weights_dir, registers):
    import timm

    net = _timm_dino(registers)
    torch.save(_official_layout(net, registers), weights_dir / "w.pth")
    t = build_teacher({"name": "dinov2", "weights": str(weights_dir / "w.pth"), "short_side": 168})
    imgs = _images(168, 252)  # grid 12 x 18 from the file's 16 x 16
    got = t.feature_maps(imgs)
    # reference: the same weights in a fixed-size timm model whose position table is the official resampling
    ref = timm.create_model(net.default_cfg["architecture"], pretrained=False, num_classes=0, depth=2,
                            img_size=(168, 252)).eval()
    sd = dict(net.state_dict())
    pre = 0 if registers else 1
    sd["pos_embed"] = torch.cat([sd["pos_embed"][:, :pre], _official_resample(sd["pos_embed"][0, pre:], 12, 18,
                                                                                registers)[None]], 1)
    ref.load_state_dict(sd)
    torch.testing.assert_close(got, _dino_reference(ref, imgs), rtol=1e-4, atol=1e-4)
    # timm's own dynamic resampling (antialiased, no offset) gives other features for the release without
    # registers: the choice matters
    dyn = timm.create_model(net.default_cfg["architecture"], pretrained=False, num_classes=0, depth=2,
                            img_size=224, dynamic_img_size=True).eval()
    dyn.load_state_dict(net.state_dict())
    if not registers:
        assert not torch.allclose(got, _dino_reference(dyn, imgs), atol=1e-4)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_hugging_face_snapshot(weights_dir, registers):
    from safetensors.torch import save_file

    net = _timm_dino(registers)
    off = _official_layout(net, registers)
    hf = {"embeddings.cls_token": off["cls_token"], "embeddings.mask_token": off["mask_token"],
          "embeddings.position_embeddings": off["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": off["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": off["patch_embed.proj.bias"],
          "layernorm.weight": off["norm.weight"], "layernorm.bias": off["norm.bias"]}
    if registers:
        hf["embeddings.register_tokens"] = off["register_tokens"]
    ren = {"norm1": "norm1", "norm2": "norm2", "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
           "attn.proj": "attention.output.dense", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for k, v in off.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", k)
        if m and ".qkv." in k:
            for name, part in zip(("query", "key", "value"), v.chunk(3, 0)):
                hf[f"encoder.layer.{m.group(1)}.attention.attention.{name}.{k.rsplit('.', 1)[1]}"] = part.contiguous()
        elif m:
            a = next(a for a in ren if m.group(2).startswith(a))
            hf[f"encoder.layer.{m.group(1)}.{ren[a]}{m.group(2)[len(a):]}"] = v
    folder = weights_dir / ("dinov2-with-registers-small" if registers else "dinov2-small")
    folder.mkdir()
    save_file(hf, str(folder / "model.safetensors"))
    t = build_teacher({"name": "dinov2"})
    assert t.registers == registers
    assert build_teacher({"name": "dinov2", "weights": str(folder)}).weights_id == t.weights_id  # a snapshot folder
    imgs = _images(224, 224)
    torch.testing.assert_close(t.feature_maps(imgs), _dino_reference(net, imgs), rtol=1e-4, atol=1e-4)


def test_dinov2_wrong_variant_prefix_and_bad_files(weights_dir):
    net = _timm_dino(0)
    off = _official_layout(net, 0)
    torch.save(off, weights_dir / "dinov2_vits14_pretrain.pth")
    with pytest.raises(BenchError, match=r"holds a ViT-s/14 \(embed dim 384, 2 blocks\).*variant='b'.*variant='s'"):
        build_teacher({"name": "dinov2", "variant": "b", "weights": str(weights_dir / "dinov2_vits14_pretrain.pth")})
    with pytest.raises(BenchError, match="registers=4"):
        build_teacher({"name": "dinov2", "registers": 4, "weights": str(weights_dir / "dinov2_vits14_pretrain.pth")})
    # a training checkpoint: wrapped, with DataParallel's module. prefix, blocks in FSDP chunks
    chunked = {("module." + k.replace("blocks.", "blocks.0.") if k.startswith("blocks.") else "module." + k): v
               for k, v in off.items()}
    torch.save({"model": chunked, "epoch": 3}, weights_dir / "train.pth")
    t = build_teacher({"name": "dinov2", "weights": str(weights_dir / "train.pth")})
    for k, v in net.state_dict().items():
        assert torch.equal(t.net.state_dict()[k], v), k
    # empty and truncated files name themselves; pickles that carry code are refused
    (weights_dir / "empty.pth").write_bytes(b"")
    with pytest.raises(BenchError, match=r"empty.pth is empty \(0 bytes\).*download it again"):
        build_teacher({"name": "dinov2", "weights": str(weights_dir / "empty.pth")})
    data = (weights_dir / "dinov2_vits14_pretrain.pth").read_bytes()
    (weights_dir / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(BenchError, match=r"cannot read .*cut.pth .*truncated.*download it again \(\w+"):
        build_teacher({"name": "dinov2", "weights": str(weights_dir / "cut.pth")})
    (weights_dir / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))  # e.g. an HTML error page
    with pytest.raises(BenchError, match=r"cannot read .*noise.pth \(4096 bytes\): the file is truncated or not a "
                                         "checkpoint"):
        build_teacher({"name": "dinov2", "weights": str(weights_dir / "noise.pth")})
    torch.save({"cls_token": torch.zeros(1), "hook": _Evil()}, weights_dir / "evil.pth")
    with pytest.raises(BenchError, match="evil.pth was refused: it pickles Python objects"):
        build_teacher({"name": "dinov2", "weights": str(weights_dir / "evil.pth")})
    # the TorchScript reader refuses the same (an archive with code and a pickle that calls os.system)
    with zipfile.ZipFile(weights_dir / "evil.pt", "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(_Evil(), protocol=2))
        z.writestr("evil/code/__torch__/m.py", "")
    with pytest.raises(BenchError, match="evil.pt was refused"):
        build_teacher({"name": "clip", "weights": str(weights_dir / "evil.pt")})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_missing_weights_list_every_accepted_name(monkeypatch, tmp_path):
    monkeypatch.setenv("TTT_BENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(BenchError) as e:
        check_teacher("dinov2")
    for name in ("dinov2_vits14_pretrain.pth", "dinov2_vitg14_reg4_pretrain.pth", "dinov2-base/model.safetensors",
                 str(tmp_path), "random-init"):
        assert name in str(e.value)
    with pytest.raises(BenchError, match="ViT-B-16.pt.*open_clip_pytorch_model.bin.*open_clip_model.safetensors"):
        check_teacher("clip")
    with pytest.raises(BenchError, match="sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth"):
        check_teacher("sam")
    assert check_teacher({"name": "clip", "weights": "random-init"}) == "random-init"
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"")  # found, but an interrupted download
    with pytest.raises(BenchError, match=r"sam_vit_h_4b8939.pth is empty \(0 bytes\)"):
        check_teacher("sam")
    assert check_teacher({"name": "oracle"}) is None


# --------------------------------------------------------------------------------------------- CLIP

def _clip_reference(visual, images):
    x = F.interpolate(_norm(images, OPENAI_CLIP), size=(224, 224), mode="bilinear", align_corners=False)
    visual.output_tokens = True
    with torch.no_grad():
        _, tokens = visual(x)
    g = math.isqrt(tokens.shape[1])
    return tokens.transpose(1, 2).reshape(images.shape[0], -1, g, g)


@pytest.mark.parametrize("fname", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_open_clip_checkpoint(weights_dir, fname):
    import open_clip
    from safetensors.torch import save_file

    model = _randomise(open_clip.create_model("ViT-S-32", pretrained=None))
    sd = model.state_dict()
    if fname.endswith(".bin"):
        torch.save(sd, weights_dir / fname)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(weights_dir / fname))
    t = build_teacher({"name": "clip"})
    assert t.name == "clip-ViT-S-32" and not t.quick_gelu and t.dim == 384
    imgs = _images(60, 80)
    torch.testing.assert_close(t.feature_maps(imgs), _clip_reference(model.visual, imgs), rtol=1e-4, atol=1e-4)
    with pytest.raises(BenchError, match="arch='ViT-B-16' is configured; set arch='ViT-S-32'"):
        build_teacher({"name": "clip", "arch": "ViT-B-16"})


def test_openai_torchscript_archive_runs_with_quick_gelu(weights_dir):
    """OpenAI's release files are TorchScript archives of a QuickGELU model: built here by open_clip with
    QuickGELU, traced and saved by torch.jit (small tower, so the test stays fast)."""
    import open_clip

    model = _randomise(open_clip.create_model("ViT-S-32", pretrained=None, force_quick_gelu=True))
    traced = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, 224, 224)}, check_trace=False)
    torch.jit.save(traced, str(weights_dir / "openai.pt"))
    t = build_teacher({"name": "clip", "weights": str(weights_dir / "openai.pt")})
    assert t.arch == "ViT-S-32" and t.quick_gelu and t.name == "clip-ViT-S-32-quickgelu"
    imgs = _images(60, 80)
    ref = _clip_reference(model.visual, imgs)
    torch.testing.assert_close(t.feature_maps(imgs), ref, rtol=1e-4, atol=1e-4)
    gelu = build_teacher({"name": "clip", "quick_gelu": False, "weights": str(weights_dir / "openai.pt")})
    assert (gelu.feature_maps(imgs) - ref).abs().max() > 1e-2  # what the old default silently did


# ---------------------------------------------------------------------------------------------- SAM

def test_sam_checkpoint_from_the_official_constructor(weights_dir):
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    sam = _randomise(_build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                                encoder_global_attn_indexes=[1], checkpoint=None))
    torch.save(sam.state_dict(), weights_dir / "sam_vit_b_01ec64.pth")
    t = build_teacher({"name": "sam"})
    assert t.name == "sam-d64x2" and t.dim == 256
    img = _images(1024, 1024, n=1)
    with torch.no_grad():
        ref = sam.image_encoder(sam.preprocess(img.permute(0, 3, 1, 2).float()))
    torch.testing.assert_close(t.feature_maps(img), ref, rtol=1e-4, atol=1e-4)
    assert torch.allclose(sam.pixel_mean.flatten(), torch.tensor(SAM_PIXEL[0]))
    with pytest.raises(BenchError, match="holds a SAM image encoder d64x2.*variant='vit_l'"):
        build_teacher({"name": "sam", "variant": "vit_l", "weights": str(weights_dir / "sam_vit_b_01ec64.pth")})
