"""The documentation stays true to the repository.

- Every relative link and ``#anchor`` in README.md, docs/*.md and results/README.md resolves (anchors by
  GitHub's rule for heading ids), every docs page is reachable from the README, and the README stays
  within its line budget.
- Every example of docs/extending.md runs: each fenced block whose first line is ``# FILE.py`` or
  ``# FILE.toml`` is written to a temporary folder, the modules are imported (registering their
  entries, as ``$TTT_BENCH_IMPORTS`` would), each new entry is exercised through its interface, and
  (slow) the example grid runs end to end in-process. The registries are restored afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_BUDGET = 250  # lines; the issue asks for "at most ~250"
DOCS = sorted((ROOT / "docs").glob("*.md"))
CHECKED = [README, ROOT / "results" / "README.md", *DOCS]
EXTENDING = ROOT / "docs" / "extending.md"

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# ------------------------------------------------------------------------------------- markdown
def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "``", line))
    return out


def _slug(heading: str) -> str:
    """GitHub's heading id: the rendered text, lower-cased, without punctuation but hyphens and
    underscores, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            slug = _slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``path`` whose file does not exist (or lies outside ``root``) or whose
    anchor is no heading of its target, as 'FILE:LINE: target (why)'."""
    bad = []
    for no, line in enumerate(_prose_lines(path.read_text(encoding="utf-8")), 1):
        for target in LINK.findall(line):
            if SCHEME.match(target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{no}: {target}"
            if root not in dest.parents and dest != root:
                bad.append(f"{where} (outside the repository)")
            elif not dest.exists():
                bad.append(f"{where} (no such file)")
            elif anchor and dest.suffix != ".md":
                bad.append(f"{where} (an anchor into a file that is not Markdown)")
            elif anchor and anchor not in anchors(dest):
                bad.append(f"{where} (no heading with id '{anchor}' in {dest.name})")
    return bad


def test_readme_stays_within_its_line_budget():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_BUDGET, f"README.md has {n} lines, the budget is {README_BUDGET}: move detail into docs/"


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert path.is_file()
    bad = broken_links(path)
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve()
              for line in _prose_lines(README.read_text(encoding="utf-8")) for t in LINK.findall(line)}
    assert DOCS, "docs/ has no pages"
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_link_checker_finds_broken_paths_and_anchors(tmp_path):
    """The checker itself: a missing file, a missing anchor (here and in another page), a link out of
    the repository are reported; good links, links in code and duplicate headings are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## Same\n\n## Same\n\n## `code` and (parens)\n")
    a = tmp_path / "a.md"
    a.write_text("\n".join([
        "# A heading", "",
        "[ok](docs/b.md) [ok](docs/b.md#same-1) [ok](docs/b.md#code-and-parens) [ok](#a-heading)",
        "[bad](docs/c.md) [bad](docs/b.md#nope) [bad](#nope) [bad](../outside.md)",
        "![img](docs/b.md) `[in code](missing.md)` [web](https://example.org/x#y)",
        "```", "[in a fence](missing.md)", "```",
    ]))
    bad = broken_links(a, root=tmp_path)
    assert [b.split(": ", 1)[1].split(" (")[0] for b in bad] == [
        "docs/c.md", "docs/b.md#nope", "#nope", "../outside.md"], bad


# ------------------------------------------------------------------------------ extending examples
def example_files(text: str) -> dict[str, str]:
    """{file name: code} of the fenced blocks whose first line is '# NAME.py' or '# NAME.toml'."""
    out, block, fenced = {}, None, False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if fenced and block:
                m = re.match(r"#\s*([\w.-]+\.(?:py|toml))\s*$", block[0])
                if m:
                    assert m.group(1) not in out, f"two examples named {m.group(1)}"
                    out[m.group(1)] = "\n".join(block) + "\n"
            fenced, block = not fenced, [] if not fenced else None
            continue
        if fenced:
            block.append(line)
    return out


def _registries():
    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.corrupt import CORRUPTIONS
    from bench.registry import load_all
    from methods import METHODS
    from teachers import TEACHERS

    load_all()
    return {"method": METHODS, "teacher": TEACHERS, "dataset": DATASETS, "backbone": BACKBONES,
            "recipe": RECIPES, "corruption": CORRUPTIONS}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The examples of docs/extending.md, written out and imported. Yields (folder, {kind: new entry
    name}, grid file); afterwards the registries, sys.modules and sys.path are as before."""
    folder = tmp_path_factory.mktemp("extending")
    files = example_files(EXTENDING.read_text(encoding="utf-8"))
    for name, code in files.items():
        (folder / name).write_text(code)
    regs = _registries()
    saved = {kind: dict(reg._entries) for kind, reg in regs.items()}  # the registry's own store
    modules = [Path(n).stem for n in files if n.endswith(".py")]
    sys.path.insert(0, str(folder))
    try:
        for mod in modules:
            importlib.import_module(mod)
        new = {kind: sorted(set(reg.names()) - set(saved[kind])) for kind, reg in regs.items()}
        grids = [folder / n for n in files if n.endswith(".toml")]
        yield folder, new, grids
    finally:
        for kind, reg in regs.items():
            reg._entries.clear()
            reg._entries.update(saved[kind])
        for mod in modules:
            sys.modules.pop(mod, None)
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def scene():
    from bench.data import get_dataset

    ds = get_dataset("synth-scannet")
    return ds.load(ds.scene_names("test", 1)[0])


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _entry(examples, kind: str):
    _, new, _ = examples
    regs = _registries()
    return regs[kind], regs[kind].get(new[kind][0])


def test_extending_has_one_example_of_every_kind(examples):
    _, new, grids = examples
    assert {kind: len(names) for kind, names in new.items()} == {kind: 1 for kind in new}, new
    assert len(grids) == 1, [g.name for g in grids]


@pytest.mark.parametrize("kind", ["method", "teacher", "dataset", "backbone", "recipe", "corruption"])
def test_example_keeps_the_config_contract(examples, kind):
    from bench.errors import BenchError
    from bench.params import declared_checks
    from bench.registry import make_config

    reg, entry = _entry(examples, kind)
    assert dataclasses.is_dataclass(entry.config), f"{kind} '{entry.name}': register it with config="
    cfg = make_config(entry, {}, reg.kind)
    assert make_config(entry, dataclasses.asdict(cfg), reg.kind) == cfg
    with pytest.raises(BenchError, match="valid parameters"):
        make_config(entry, {"no_such_parameter_xyz": 1}, reg.kind)
    params = inspect.signature(entry.factory).parameters
    assert "cfg" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())
    if kind in ("method", "recipe", "backbone"):
        checks = declared_checks(entry.config)
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            if isinstance(v, (int, float, tuple)) and not isinstance(v, bool):
                assert f.name in checks, f"{kind} '{entry.name}': '{f.name}' is not declared in CHECKS"


def test_example_method_adapts_only_what_it_declares_and_resets(examples, scene):
    """On a confident tiny model the example method takes steps, moves only the parameters it declares,
    and reset() restores every weight and buffer bit for bit."""
    from backbones import RECIPES
    from backbones.batch import make_batch
    from backbones.model import ModelSpec, build_model
    from bench.registry import make_config
    from methods.base import Needs, SceneInput

    _, entry = _entry(examples, "method")
    needs = getattr(entry.factory, "needs", Needs())
    recipe = RECIPES.get(needs.recipe)
    torch.manual_seed(0)
    kd = 8 if (needs.teacher or recipe.extra.get("teacher")) else 0
    model = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [16, 24]}, kd_dim=kd,
                                  mae=bool(recipe.extra.get("mae")))).eval()
    with torch.no_grad():
        model.heads["seg"][-1].weight.mul_(50.0)  # a confident model: most points far from uniform
    method = entry.factory(cfg=make_config(entry, {}, "method"), model=model)
    source = {k: v.detach().clone() for k, v in model.state_dict().items()}
    declared = {id(p) for p in method.params}

    def inp(i):
        x = SceneInput(make_batch([scene], ("color", "normal")), i, torch.Generator().manual_seed(i))
        x.teacher_feat = torch.randn(scene.num_points, 8, generator=torch.Generator().manual_seed(i))
        x.teacher_mask = torch.ones(scene.num_points, dtype=torch.bool)
        return x

    steps = [method.adapt(inp(i)) for i in range(2)]
    assert sum(steps) > 0, "the example method took no step on a confident model"
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), source[n])]
    assert moved, "steps were taken but no parameter moved"
    assert all(id(dict(model.named_parameters())[n]) in declared for n in moved), moved
    assert method.predict(inp(0)).shape == (scene.num_points, 12)
    method.reset()
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_example_teacher_gives_features_on_the_points_its_views_see(examples, scene):
    from bench.registry import make_config

    _, entry = _entry(examples, "teacher")
    teacher = entry.factory(cfg=make_config(entry, {}, "teacher"), device="cpu")
    feat, mask = teacher.point_features(scene, views=2)
    assert feat.shape == (scene.num_points, teacher.dim) and mask.shape == (scene.num_points,)
    assert mask.any() and np.isfinite(np.asarray(feat)).all()
    assert np.abs(np.asarray(feat)[np.asarray(mask)]).sum() > 0
    assert teacher.cache_key()["teacher"] and teacher.weights_id


def test_example_backbone_segments_a_scene(examples, scene):
    from backbones.batch import make_batch
    from backbones.model import ModelSpec, build_model

    _, entry = _entry(examples, "backbone")
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone=entry.name)).eval()
    with torch.no_grad():
        out = model(make_batch([scene], ("color", "normal")))
    assert out["seg"].shape == (scene.num_points, 12) and torch.isfinite(out["seg"]).all()
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules())


def test_example_corruption_is_deterministic_and_grows_with_severity(examples, scene):
    from bench.data.corrupt import corrupt

    _, entry = _entry(examples, "corruption")

    def effect(c):
        if c.num_points != scene.num_points:
            return abs(c.num_points - scene.num_points)
        return float(np.abs(c.coord - scene.coord).mean() + np.abs(c.color - scene.color).mean())

    effects = []
    for s in range(1, 6):
        a, b = corrupt(entry.name, scene, s, seed=3), corrupt(entry.name, scene, s, seed=3)
        a.validate(num_classes=12)
        assert a.num_points > 0 and np.array_equal(a.coord, b.coord) and np.array_equal(a.label, b.label)
        effects.append(effect(a))
    assert effects[0] > 0 and all(y >= x for x, y in zip(effects, effects[1:])), effects


def test_example_dataset_reads_scenes_written_by_write_scene(examples, scene, tmp_path):
    from bench.data import get_dataset
    from bench.data.scene import write_scene
    from bench.errors import BenchError

    _, entry = _entry(examples, "dataset")
    write_scene(scene, tmp_path / "test" / "room_a")
    ds = get_dataset(entry.name, root=str(tmp_path))
    assert ds.scene_names("test") == ["room_a"]
    got = ds.load("room_a")
    assert np.array_equal(got.label, scene.label) and np.allclose(got.coord, scene.coord)
    assert len(got.views) == len(scene.views) and ds.fingerprint()
    with pytest.raises(BenchError):
        ds.scene_names("test", 2)  # more scenes than there are
    with pytest.raises(BenchError):
        get_dataset(entry.name, root=str(tmp_path / "missing"))


@pytest.mark.slow
def test_example_grid_runs_end_to_end(examples, tmp_path):
    """The grid of docs/extending.md, with a data root of scenes written by write_scene and a weights
    file of random ResNet-18 weights, runs in-process with no cell in error, and its rows carry the new
    method, recipe, backbone, teacher, dataset and corruption."""
    import pandas as pd
    from torchvision.models import resnet18

    from bench.data import get_dataset
    from bench.data.scene import write_scene
    from bench.grid import Overrides, load_grid
    from bench.runner import run_grid

    _, new, (grid_file,) = examples
    src = get_dataset("synth-s3dis")
    root = tmp_path / "scans"
    for n in src.scene_names("test", 2):
        write_scene(src.load(n), root / "test" / n)
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(resnet18().state_dict(), weights)
    grid = load_grid(str(grid_file), Overrides(teacher_weights={new["teacher"][0]: str(weights)},
                                               data_roots={new["dataset"][0]: str(root)}))
    res = run_grid(grid, tmp_path / "run")
    assert res["errors"] == 0 and res["ran"] == len(grid.cells)
    cells = pd.read_csv(tmp_path / "run" / "cells.csv")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    assert new["method"][0] in set(cells["method"]) and new["recipe"][0] in set(cells["recipe"])
    assert set(cells["backbone"].astype(str).str.contains(new["backbone"][0])) == {True}
    assert cells["teacher"].astype(str).str.contains(new["teacher"][0]).any()
    targets = set(cells["target"].astype(str))
    assert any(t.startswith(new["dataset"][0]) for t in targets)
    assert any(f":{new['corruption'][0]}@" in t for t in targets)
