"""What every teacher provides: per-point features of a scene (and for image teachers, dense 2D maps).

Also the one way checkpoints are found and read: ``resolve_weights`` finds a file by the names users
download (in ``$TTT_BENCH_WEIGHTS`` or at a given path), ``read_checkpoint`` reads it without running
any code it may carry (torch files with ``weights_only=True``, safetensors, and TorchScript archives
such as OpenAI's CLIP ``.pt`` files through a restricted unpickler), and ``load_into`` checks keys and
shapes before loading so a wrong file gives the harness's own message.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import file_hash
from bench.data.scene import Scene
from bench.errors import BenchError
from teachers.lift import lift, select_views

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
WEIGHTS_ENV = "TTT_BENCH_WEIGHTS"
WRAPPER_KEYS = ("state_dict", "model", "module", "teacher", "model_state_dict")


class Teacher:
    """A frozen feature extractor. ``point_features`` returns (features (N,D), mask of points it covers)."""

    name: str
    dim: int
    weights_id: str = ""  # identifies the weights (hash of the file, or 'random-init')

    @property
    def label(self) -> str:
        return self.name + (" (random-init)" if self.weights_id == RANDOM_INIT else "")

    def point_features(self, scene: Scene, views: int | str = "all", tol: float = 0.1):
        raise NotImplementedError

    def cache_key(self) -> dict:
        return {"teacher": self.name, "weights": self.weights_id, "dim": self.dim}


class ImageTeacher(Teacher):
    """A 2D network: dense features of the views, lifted onto the points."""

    device: str = "cpu"
    batch_size: int = 8

    def __init__(self, net: nn.Module, name: str, dim: int, weights_id: str, device: str = "cpu"):
        self.net, self.name, self.dim = net.eval().to(device), name, dim
        self.weights_id, self.device = weights_id, device
        for p in self.net.parameters():
            p.requires_grad_(False)

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B,H,W,3) uint8 -> (B,D,h,w) features on the model's patch grid."""
        raise NotImplementedError

    @torch.no_grad()
    def dense(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Per-pixel features: (B,H,W,3) uint8 -> (B,D,H,W), the patch grid upsampled bilinearly."""
        images = torch.as_tensor(images)
        fm = self.feature_maps(images.to(self.device))
        return F.interpolate(fm, size=images.shape[1:3], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def point_features(self, scene: Scene, views: int | str = "all", tol: float = 0.1):
        if not scene.views:
            raise BenchError(f"scene {scene.dataset}/{scene.name} has no paired views, so teacher '{self.name}' "
                             "cannot lift features onto it; use a dataset with images or a method without a "
                             "teacher (real datasets: the README's 'Real data' section says where each reader "
                             "looks for images)")
        chosen = [scene.views[i] for i in select_views(scene.views, views)]
        maps = []
        for i in range(0, len(chosen), self.batch_size):
            imgs = torch.from_numpy(np.stack([v.image for v in chosen[i:i + self.batch_size]]))
            maps.extend(self.feature_maps(imgs.to(self.device)).float().cpu())
        return lift(scene.coord, chosen, maps, tol)


def normalise(images: torch.Tensor, mean, std, scale: float = 255.0) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / scale
    return (x - torch.tensor(mean, device=x.device)[:, None, None]) / torch.tensor(std, device=x.device)[:, None, None]


# ---------------------------------------------------------------------------------------------------
# finding the file


def weights_root() -> Path | None:
    root = os.environ.get(WEIGHTS_ENV)
    return Path(root).expanduser() if root else None


def resolve_weights(teacher: str, weights: str | None, accepted: Sequence[str], source: str) -> str | Path:
    """The weights to load: 'random-init', an explicit path, or the first of ``accepted`` (file names,
    possibly inside a sub-folder, as users download them) found in ``$TTT_BENCH_WEIGHTS``.

    An explicit path may be a folder (a Hugging Face snapshot): then the accepted base names are looked
    up inside it."""
    if weights == RANDOM_INIT:
        return RANDOM_INIT
    names = ", ".join(accepted)
    if weights:
        p = Path(weights).expanduser()
        if p.is_dir():
            for name in dict.fromkeys(Path(a).name for a in accepted):
                if (p / name).is_file():
                    return not_empty(p / name, teacher)
            raise BenchError(f"teacher '{teacher}': folder {p} holds none of the accepted checkpoint files "
                             f"({', '.join(dict.fromkeys(Path(a).name for a in accepted))}); point weights= "
                             f"at the checkpoint file itself (from {source}).")
        if not p.is_file():
            raise BenchError(f"teacher '{teacher}': weights file {p} not found. Give an existing checkpoint "
                             f"(accepted names: {names}; from {source}).")
        return not_empty(p, teacher)
    root = weights_root()
    if root is not None:
        for name in accepted:
            if (root / name).is_file():
                return not_empty(root / name, teacher)
    raise BenchError(
        f"teacher '{teacher}' needs pretrained weights and none can be downloaded here. Put one of these "
        f"files (from {source}) into the folder named by ${WEIGHTS_ENV}"
        f"{f' (now {root}, which has none of them)' if root else ' (not set)'}: {names}; "
        f"or pass a file as weights=PATH in the grid / --teacher-weights NAME=PATH, "
        f"or use weights='{RANDOM_INIT}' for a plumbing smoke test (results are labelled random-init).")


def not_empty(path: Path, teacher: str) -> Path:
    if path.stat().st_size == 0:
        raise BenchError(f"teacher '{teacher}': {path} is empty (0 bytes), probably an interrupted download; "
                         "download it again")
    return path


# ---------------------------------------------------------------------------------------------------
# reading the file without running code


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a TorchScript class (``__torch__.*``) while unpickling: it only keeps its state."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


class _ArchiveUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's ``data.pkl``: tensors, dicts, lists and plain values only. Every
    class the pickle names is either one of the harmless builders below or becomes a ``_ScriptObject``
    that stores its state; nothing from the archive is imported or executed."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return lambda x: x
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda x, _tag: x
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, stype, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self.zf.read(f"{self.prefix}data/{key}"))
        t = torch.frombuffer(raw, dtype=stype.dtype) if raw else torch.empty(0, dtype=stype.dtype)
        return t[:numel]


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, _ScriptObject):
        _flatten(obj.state, prefix, out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str):
                _flatten(v, f"{prefix}{k}.", out)


def read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive (``torch.jit.save``) by attribute path, read without
    executing the archive's code."""
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkl:
            raise BenchError(f"{path} is a zip archive without data.pkl: not a torch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        with zf.open(pkl[0]) as f:
            root = _ArchiveUnpickler(f, zf, prefix).load()
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/__torch__/" in n for n in zf.namelist())


def reader_reason(e: BaseException) -> str:
    """What a checkpoint reader's exception says about the file, without its advice: PyTorch's
    weights-only refusal suggests ``weights_only=False`` (running whatever code the file carries), which
    is never the fix here; its one useful part is the unpickler's own error. Else the first sentence."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0].strip()
        return f"torch's data-only reader: {detail or 'refused'}"
    first = text.splitlines()[0]
    return first.split(". ")[0].rstrip(".")


def read_checkpoint(path: Path, teacher: str) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` state dict from ``path``. Safetensors and torch files are read as data
    only (a pickle that carries code is refused); TorchScript archives through ``read_torchscript``.
    Wrapper dicts (``state_dict``/``model``/...) are unwrapped and a common ``module.`` prefix (from
    DataParallel / DDP training checkpoints) is stripped."""
    path = not_empty(Path(path), teacher)
    size = path.stat().st_size
    fix = ("the file is truncated or not a checkpoint; download it again (compare its size with the "
           "published one)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif is_torchscript(path):
            log.info("teacher %s: %s is a TorchScript archive; reading its tensors without running its code",
                     teacher, path)
            sd = read_torchscript(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except BenchError:
        raise
    except pickle.UnpicklingError as e:
        msg = reader_reason(e)
        pickled = zipfile.is_zipfile(path) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04",
                                                                                     b"\x05"))
        refused = any(w in str(e).lower() for w in ("weights only", "refusing", "unsupported global"))
        if refused and pickled:  # a real pickle (torch zip or protocol 2-5) with objects; else not a checkpoint
            raise BenchError(f"teacher '{teacher}': {path} was refused: it pickles Python objects other than "
                             "tensors (code that would run on loading), and checkpoints are loaded as data only. "
                             "Save its state dict with torch.save(model.state_dict(), ...) from code you trust, "
                             f"or use the official release file ({msg})") from e
        raise BenchError(f"teacher '{teacher}': cannot read {path} ({size} bytes): {fix} ({msg})") from e
    except Exception as e:  # noqa: BLE001  (torch/zip/safetensors raise many kinds for a bad file)
        msg = reader_reason(e)
        raise BenchError(f"teacher '{teacher}': cannot read {path} ({size} bytes): {fix} ({type(e).__name__}: "
                         f"{msg})") from e
    while isinstance(sd, dict):
        inner = next((sd[k] for k in WRAPPER_KEYS if isinstance(sd.get(k), dict)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, dict):
        raise BenchError(f"teacher '{teacher}': {path} holds a {type(sd).__name__}, not a state dict of tensors")
    sd = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise BenchError(f"teacher '{teacher}': {path} holds no tensors; {fix}")
    return strip_prefix(sd, "module.")


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_into(net: nn.Module, sd: dict, path: Path, teacher: str, hint: str = "") -> None:
    """Load ``sd`` into ``net``; missing keys or different shapes raise the harness's message."""
    own = net.state_dict()
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
             if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if wrong or missing:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors of another shape (e.g. {'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]})")
        raise BenchError(f"teacher '{teacher}': {path} does not fit the chosen architecture: {', '.join(parts)}. "
                         + (hint or "Check that the variant matches the checkpoint, or leave variant='auto'."))
    net.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)
    if unexpected:
        log.info("teacher %s: ignored %d unused keys of %s", teacher, len(unexpected), path)


def weights_id(w) -> str:
    return RANDOM_INIT if w == RANDOM_INIT else file_hash(Path(w))
