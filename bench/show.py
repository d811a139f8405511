"""``python -m bench show DATASET/SCENE``: a picture of a scene for a person to look at: the point cloud
from above coloured by RGB and by label, and each view with its depth and label map."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from bench.data.classes import CLASSES, NUM_CLASSES  # noqa: E402

PALETTE = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:NUM_CLASSES]
IGNORE_RGB = (0.15, 0.15, 0.15)  # points and pixels labelled -1 (ignore)
OUT_DIR = Path("runs") / "show"  # where `bench show` writes without --out (git ignores runs/)


def default_out(dataset: str, name: str) -> Path:
    """``runs/show/DATASET_SCENE.png`` under the working folder, e.g. runs/show/synth-scannet_test_0000.png."""
    return OUT_DIR / f"{dataset.replace(':', '_').replace('@', '')}_{name.replace('/', '_')}.png"


def label_rgb(label: np.ndarray) -> np.ndarray:
    out = np.ones(label.shape + (3,)) * np.array(IGNORE_RGB)
    ok = label >= 0
    out[ok] = PALETTE[label[ok]][..., :3]
    return out


def check_scene_name(ds, name: str) -> None:
    """Raise a BenchError listing the nearest valid names if ``ds`` has no scene ``name`` (so that a
    typo never generates a new scene into the cache)."""
    import difflib

    from bench.data.datasets import SPLITS
    from bench.errors import BenchError

    names: list[str] = []
    for split in SPLITS:
        try:
            names += ds.scene_names(split, 0) or ds.scene_names(split, None)
        except BenchError:
            continue
    if name in names:
        return
    split, _, idx = name.partition("_")  # generated datasets: SPLIT_NNNN beyond the default count
    if split in SPLITS and idx.isdigit():
        try:
            if name in ds.scene_names(split, int(idx) + 1):
                return
        except BenchError:
            pass
    names = list(dict.fromkeys(names))  # splits of some layouts list the same scenes
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"nearest: {', '.join(near)}" if near else f"e.g. {', '.join(names[:5])}"
    raise BenchError(f"dataset '{ds.name}' has no scene '{name}' ({hint}); scenes are named as its splits list them")


def show_scene(dataset: str, name: str, out: Path, max_views: int = 4, options: dict | None = None) -> Path:
    """Draw scene ``name`` of ``dataset`` into the PNG ``out``; ``options`` are the dataset's (e.g. root)."""
    from bench.data import get_dataset

    ds = get_dataset(dataset, **(options or {}))
    check_scene_name(ds, name)
    scene = ds.load(name)
    views = scene.views[:max_views]
    ncol = max(2, len(views))
    fig, axes = plt.subplots(4, ncol, figsize=(3.2 * ncol, 11), squeeze=False)
    order = np.argsort(scene.coord[:, 2])  # draw high points last (seen from above)
    c = scene.coord[order]
    axes[0, 0].scatter(c[:, 0], c[:, 1], c=scene.color[order], s=1, linewidths=0)
    axes[0, 0].set_title(f"{scene.dataset}/{scene.name}: {scene.num_points} points (RGB, top)", fontsize=8)
    axes[0, 1].scatter(c[:, 0], c[:, 1], c=label_rgb(scene.label[order]), s=1, linewidths=0)
    axes[0, 1].set_title("labels (top)", fontsize=8)
    for ax in axes[0, :2]:
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)", fontsize=7)
        ax.set_ylabel("y (m)", fontsize=7)
    for ax in axes[0, 2:]:
        ax.axis("off")
    for j in range(ncol):
        for i in (1, 2, 3):
            axes[i, j].axis("off")
    for j, v in enumerate(views):
        axes[1, j].imshow(v.image)
        axes[1, j].set_title(f"view {j}", fontsize=8)
        im = axes[2, j].imshow(v.depth, cmap="magma")
        fig.colorbar(im, ax=axes[2, j], fraction=0.035, label="depth (m)")
        if v.label is not None:
            axes[3, j].imshow(label_rgb(v.label))
    handles = [Patch(color=PALETTE[i][:3], label=c) for i, c in enumerate(CLASSES)]
    handles.append(Patch(color=IGNORE_RGB, label="ignore (unlabelled)"))
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["show_scene"]
