"""One registry mechanism for methods, backbones, teachers, recipes, datasets and corruptions.

A registry maps a short name to a factory plus a one-line description and its defaults. Entries are
added with the ``register`` decorator when the defining module is imported; ``load_all`` imports
every module that registers something, so ``python -m bench list`` sees all of them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str
    config: type | None = None  # a dataclass of the entry's parameters, if it has one
    extra: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The entry's parameters and their defaults (from its config dataclass, else its signature)."""
        if self.config is not None and dataclasses.is_dataclass(self.config):
            out = {}
            for f in dataclasses.fields(self.config):
                if f.default is not dataclasses.MISSING:
                    out[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    out[f.name] = f.default_factory()  # type: ignore[misc]
            return out
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return {}
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and p.kind is p.KEYWORD_ONLY
        }


class Registry:
    """A named dict of factories, filled by the ``register`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, description: str | None = None, config: type | None = None, **extra):
        def deco(factory):
            if name in self._entries and self._entries[name].factory is not factory:
                raise BenchError(f"{self.kind} '{name}' is registered twice; pick another name")
            doc = description or (inspect.getdoc(factory) or "").strip().splitlines()[0:1]
            if isinstance(doc, list):
                doc = doc[0] if doc else ""
            self._entries[name] = Entry(name, factory, doc, config, dict(extra))
            return factory

        return deco

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise BenchError(
                f"unknown {self.kind} '{name}'; valid names: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        return self._entries[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name).factory(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entries(self) -> list[Entry]:
        return [self._entries[k] for k in self.names()]


def make_config(entry: Entry, params: dict[str, Any], what: str):
    """Build ``entry.config`` from ``params``; unknown keys raise a BenchError listing the valid ones."""
    cfg_cls = entry.config
    if cfg_cls is None:
        if params:
            raise BenchError(f"{what} '{entry.name}' takes no parameters, got {sorted(params)}")
        return None
    valid = {f.name for f in dataclasses.fields(cfg_cls)}
    bad = sorted(set(params) - valid)
    if bad:
        raise BenchError(
            f"{what} '{entry.name}' has no parameter {', '.join(repr(b) for b in bad)}; "
            f"valid parameters: {', '.join(sorted(valid))}"
        )
    # TOML has no tuples: list values become tuples (config dataclasses declare sequences as tuples)
    return cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


MODULES = ("methods", "backbones", "teachers", "bench.data")


def load_all() -> None:
    """Import every package whose modules register entries."""
    for mod in MODULES:
        importlib.import_module(mod)
