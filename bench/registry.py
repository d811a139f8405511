"""One registry mechanism for methods, backbones, teachers, recipes, datasets and corruptions.

A registry maps a short name to a factory plus a one-line description and its defaults. Entries are
added with the ``register`` decorator when the defining module is imported; ``load_all`` imports
every module that registers something, so ``python -m bench list`` sees all of them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
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


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value converted to ``tp``): ints are accepted for floats, lists for tuples; bools are not
    numbers; annotations this does not understand accept anything."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or origin is list) else None
        out = []
        for v in value:
            ok, v = _coerce(v, item) if item is not None else (True, v)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp is tuple:
        return isinstance(value, (list, tuple)), tuple(value) if isinstance(value, (list, tuple)) else value
    if isinstance(tp, type) and tp.__module__ == "pathlib":
        return isinstance(value, (str, tp)), value
    return True, value  # an annotation we do not check


def config_fields(entry: Entry) -> dict[str, Any]:
    """The entry's parameters and their types: its config dataclass's fields, or (for entries not yet
    on the config contract) the keyword parameters of its factory, typed ``Any``."""
    if entry.config is not None and dataclasses.is_dataclass(entry.config):
        try:
            hints = typing.get_type_hints(entry.config)
        except Exception:  # noqa: BLE001 - an annotation that does not evaluate: skip type checks
            hints = {}
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(entry.config) if f.init}
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        return {}
    return {k: Any for k, p in sig.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k not in ("cfg", "self")}


def open_ended(entry: Entry) -> bool:
    """An entry without a config whose factory takes ``**kwargs``: its options cannot be checked."""
    if entry.config is not None:
        return False
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values())
    except (TypeError, ValueError):
        return False


def make_config(entry: Entry, params: dict[str, Any], what: str):
    """Build ``entry.config`` from ``params``: unknown keys and values of the wrong type raise a
    BenchError naming the entry and the parameter and listing the valid parameters. Entries without
    a config dataclass are checked against their factory's keyword parameters and get a plain dict."""
    fields = config_fields(entry)
    if open_ended(entry):
        fields = {**{k: Any for k in params}, **fields}
    bad = sorted(set(params) - set(fields))
    if bad:
        if not fields:
            raise BenchError(f"{what} '{entry.name}' takes no parameters, got {', '.join(repr(b) for b in bad)}")
        raise BenchError(
            f"{what} '{entry.name}' has no parameter {', '.join(repr(b) for b in bad)}; "
            f"valid parameters: {', '.join(sorted(fields))}"
        )
    values = {}
    for k, v in params.items():
        ok, conv = _coerce(v, fields[k])
        if not ok:
            raise BenchError(f"{what} '{entry.name}': parameter '{k}' = {v!r} has the wrong type; "
                             f"expected {_type_name(fields[k])}")
        values[k] = conv
    if entry.config is None or not dataclasses.is_dataclass(entry.config):
        return dict(values)
    try:
        return entry.config(**values)
    except (TypeError, ValueError) as e:
        raise BenchError(f"{what} '{entry.name}': {e}") from e


MODULES = ("methods", "backbones", "teachers", "bench.data")


def load_all() -> None:
    """Import every package whose modules register entries."""
    for mod in MODULES:
        importlib.import_module(mod)
