"""The package's imports form a house of three storeys with no circles (read from the source with ``ast``).

Every module under ``bench/``, ``methods/``, ``backbones/`` and ``teachers/`` is parsed (never imported) and
each of its ``import`` statements becomes an edge to the project module it names (``from P import N`` names
the module ``P.N`` where that is a module, else ``P``; an import of ``A.B.C`` also runs the ``__init__`` of
the packages ``A`` and ``A.B``, so it is an edge to them too, unless the importer sits inside that package).

**What counts.** Every import statement counts, at module level or inside a function, for both checks:

- *No circles*: no two modules need each other, directly or through others. An import moved into a
  function only hides a circle from Python's import machinery; the two modules still cannot be
  understood, tested or split apart without each other (the two circles issue 28 found were both
  closed by function-level imports).
- *Nothing points up*: a module imports only modules of its own storey or of the storeys below.

**The storeys** (``STOREYS``, lowest first; the same list is in docs/extending.md, "Layout"):

1. *ground*: the harness's plumbing that everything may use and that imports nothing but itself:
   registry, params, errors, cache, env, metrics, stats, progress, memory, store, roles.
2. *plugins*: what the registries hold, ``methods/``, ``backbones/``, ``teachers/`` and ``bench/data/``
   (scene format, synthetic world, real readers, corruptions); they may import each other (a method
   uses ``backbones.batch``, a teacher ``bench.data.scene``) and the ground floor.
3. *harness*: every other module of ``bench/`` (grid loading and cells, the runner, executors, report,
   and the commands), which may import anything below. A new module of ``bench/`` is harness unless
   it is listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "backbones", "teachers")

GROUND = ("bench", "bench.registry", "bench.params", "bench.errors", "bench.cache", "bench.env", "bench.metrics",
          "bench.stats", "bench.progress", "bench.memory", "bench.store", "bench.roles")
PLUGINS = ("methods", "backbones", "teachers", "bench.data")  # packages: each one and everything under it
STOREYS = ("ground", "plugins", "harness")


def storey(module: str) -> str:
    if module in GROUND:
        return "ground"
    if any(module == p or module.startswith(p + ".") for p in PLUGINS):
        return "plugins"
    return "harness"


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Every module of the packages: dotted name -> (file, is a package's ``__init__``)."""
    found = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return found


def imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, list[int]]]:
    """importer -> imported project module -> the line numbers of the import statements."""

    def owner(name: str) -> str | None:  # the longest prefix of a dotted name that is a module of ours
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, list[int]]] = {m: {} for m in mods}
    for mod, (path, is_pkg) in mods.items():
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here[: len(here) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                target = owner(t)
                if target is None:
                    continue
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the packages whose __init__ the import runs, and the module
                    dep = ".".join(parts[:i])
                    if dep != mod and (i == len(parts) or not mod.startswith(dep + ".")) and dep in mods:
                        graph[mod].setdefault(dep, []).append(node.lineno)
    return graph


def circles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def upward(graph: dict[str, dict[str, list[int]]], mods: dict[str, tuple[Path, bool]], root: Path = ROOT) -> list[str]:
    """Every import from a lower storey into a higher one, as ``FILE:LINE: A (storey) -> B (storey)``."""
    rank = {s: i for i, s in enumerate(STOREYS)}
    out = []
    for a, deps in sorted(graph.items()):
        for b, lines in sorted(deps.items()):
            if rank[storey(b)] > rank[storey(a)]:
                where = mods[a][0].relative_to(root)
                out += [f"{where}:{n}: {a} ({storey(a)}) -> {b} ({storey(b)})" for n in sorted(set(lines))]
    return out


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    return mods, imports(mods)


def test_storey_lists_name_real_modules():
    """A renamed or removed module must not silently leave the ground floor or the plugins."""
    mods = modules()
    assert [m for m in GROUND if m not in mods] == []
    assert [p for p in PLUGINS if p not in mods] == []


def test_no_import_circles(graph):
    mods, g = graph
    found = circles(g)
    shown = []
    for comp in found:
        members = set(comp)
        shown.append(" <-> ".join(comp) + ": " + "; ".join(
            f"{a} -> {b} (line {', '.join(map(str, sorted(set(g[a][b]))))})"
            for a in comp for b in sorted(g[a]) if b in members))
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(shown)


def test_nothing_points_up(graph):
    mods, g = graph
    bad = upward(g, mods)
    assert not bad, f"{len(bad)} import(s) into a higher storey:\n" + "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """The reader finds a circle hidden in a function and an upward import on a made-up tree."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "bench" / "grid.py").write_text("from bench import errors\n\ndef f():\n    from bench.cell import x\n")
    (tmp_path / "bench" / "cell.py").write_text("from .grid import y\n")
    (tmp_path / "bench" / "errors.py").write_text("import bench.grid\n")
    (tmp_path / "methods" / "m.py").write_text("def g():\n    import bench.grid\n")
    mods = modules(tmp_path)
    g = imports(mods)
    assert g["bench.grid"] == {"bench.errors": [1], "bench.cell": [4]}
    assert circles(g) == [["bench.cell", "bench.errors", "bench.grid"]]
    assert upward(g, mods, tmp_path) == ["bench/errors.py:1: bench.errors (ground) -> bench.grid (harness)",
                                         "methods/m.py:2: methods.m (plugins) -> bench.grid (harness)"]
