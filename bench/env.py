"""The environment recorded beside every result: versions, device, CPU/GPU, git commit."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("ttt-bench", "torch", "torchvision", "spconv-cu120", "cumm-cu120", "timm", "open_clip_torch",
            "segment-anything", "numpy", "scipy", "pandas", "pyarrow", "matplotlib", "rich", "ray")


PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding the bench package


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: str = "cpu") -> dict:
    import os

    import torch

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    env = {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
           "git_commit": git_commit(), "device": device, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def versions() -> dict:
    """The versions recorded in every result row."""
    import torch

    return {"torch_version": torch.__version__, "git_commit": git_commit(),
            "torch_threads": torch.get_num_threads()}  # float summation order, hence last bits, depend on it
