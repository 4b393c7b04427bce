"""Check a precision plan's overrides against the module paths an export actually has."""

from __future__ import annotations

from collections.abc import Iterable

from hwtune.errors import ConfigError, did_you_mean
from hwtune.precision import PrecisionPlan

__all__ = ["check_overrides"]


def check_overrides(paths: Iterable[str], plan: PrecisionPlan, *, what: str) -> None:
    """Raise ConfigError (one line per override) when an override's prefix names none of ``paths``.

    Args:
        paths: Dotted module paths (``stages.0.1.conv``); every dotted prefix of them counts.
        plan: The precision plan; overrides equal to the default are ignored.
        what: What was searched, for the message (``"module of the model"``, ``".tflite op"``).
    """
    prefixes: set[str] = set()
    for path in paths:
        atoms = path.split(".") if path else []
        prefixes.update(".".join(atoms[: i + 1]) for i in range(len(atoms)))
    tops = ", ".join(sorted({p.split(".")[0] for p in prefixes})) or "none"
    problems = [
        f"precision override {prefix!r} -> {prec} matches no {what}{did_you_mean(prefix, sorted(prefixes))} "
        f"(top-level modules: {tops})"
        for prefix, prec in plan.overrides
        if prec != plan.default and prefix not in prefixes
    ]
    if problems:
        raise ConfigError("\n".join(problems))
