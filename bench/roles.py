"""A result row's role, decided once from the cell's configuration (never from label text).

- ``baseline``: the Source-Only row (method ``source`` on a ``source``-recipe model trained on the
  source): every change column and paired test compares against it (same backbone, pair and seed).
- ``control``: upper bounds that a real deployment cannot have: models trained on the target
  (``train_on = "target"``, the Oracle row) and rows whose teacher is the label-derived ``oracle``.
  Controls are shown, but never ranked or marked best.
- ``method``: everything else (adaptation methods and Joint-Train models).
"""

from __future__ import annotations

ROLES = ("baseline", "method", "control")


def role(method: str, recipe: str, train_on: str, teacher: str | None) -> str:
    """``teacher`` is the teacher's registered name (or a label starting with it), or empty/None."""
    if train_on == "target" or (teacher or "").split("(")[0].split(" ")[0] == "oracle":
        return "control"
    if method == "source" and recipe == "source":
        return "baseline"
    return "method"
