"""Declared ranges and choices of config parameters, checked whenever a config is built.

A config dataclass that derives from ``Checked`` declares the values each parameter may take in a
class variable (not a field, so not a parameter)::

    CHECKS: ClassVar[dict[str, Check]] = {"steps": AT_LEAST_0, "lr": POSITIVE, "bn": one_of("source", "test")}

``__post_init__`` checks every declared parameter and raises one ValueError that names each bad
value and what is valid (``bench.registry.make_config`` turns it into a BenchError naming the method,
recipe or backbone; a grid reports it before any work starts). Declarations merge along the class
hierarchy: a subclass inherits its parents' checks, also for the fields it redeclares with another
default, and may add or replace some. Every key must be a field. Types are checked earlier, by
``make_config``; ``None`` (an unset optional value) always passes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar


class Check:
    """A constraint on one parameter's value; ``str()`` says what is valid."""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Range(Check):
    """lo <= value <= hi (``lo_open`` / ``hi_open``: strict), a finite number: an unbounded side means
    no bound, never that an infinite value is valid (``lr = inf`` would train to garbage and end "ok")."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo == -math.inf:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


@dataclass(frozen=True)
class OneOf(Check):
    """One of a fixed set of values."""

    choices: tuple

    def ok(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def __str__(self) -> str:
        if len(self.choices) == 1:
            return repr(self.choices[0])
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class Either(Check):
    """Valid if any of ``checks`` is (e.g. -1 or >= 1)."""

    checks: tuple[Check, ...]

    def ok(self, value: Any) -> bool:
        return any(c.ok(value) for c in self.checks)

    def __str__(self) -> str:
        return " or ".join(str(c) for c in self.checks)


@dataclass(frozen=True)
class Each(Check):
    """A non-empty list or tuple whose every value passes ``check``."""

    check: Check

    def ok(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(self.check.ok(v) for v in value)

    def __str__(self) -> str:
        return f"a non-empty list, each value {self.check}"


def one_of(*choices: Any) -> OneOf:
    return OneOf(tuple(choices))


POSITIVE = Range(0, lo_open=True)  # learning rates, sizes, temperatures
AT_LEAST_0 = Range(0)  # step counts (0 = no adaptation), loss weights, thresholds
AT_LEAST_1 = Range(1)  # counts of things that must exist: epochs, copies, neighbours
UNIT = Range(0, 1)  # probabilities, fractions, momenta and EMA weights


def declared_checks(cls: type) -> dict[str, Check]:
    """The checks of ``cls``: its own ``CHECKS`` over those of its bases."""
    out: dict[str, Check] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("CHECKS", {}))
    return out


def problems_of(cfg: Any) -> list[str]:
    """One line per declared parameter of the dataclass ``cfg`` whose value is not valid."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    out = []
    for name, check in declared_checks(type(cfg)).items():
        if name not in fields:
            raise TypeError(f"{type(cfg).__name__}.CHECKS names '{name}', which is not one of its fields")
        value = getattr(cfg, name)
        if value is not None and not check.ok(value):
            finite = "a finite number, " if isinstance(value, float) and math.isinf(value) else ""
            out.append(f"parameter '{name}' = {value!r} must be {finite}{check}")
    return out


class Checked:
    """Base of config dataclasses with declared ranges and choices (see the module docstring)."""

    CHECKS: ClassVar[dict[str, Check]] = {}

    def __post_init__(self) -> None:
        bad = problems_of(self)
        if bad:
            raise ValueError("; ".join(bad))
