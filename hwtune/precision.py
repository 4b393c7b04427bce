"""Numeric precisions and per-module precision plans (mixed precision). No torch here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hwtune.errors import ConfigError

__all__ = ["ELEMENT_BYTES", "PRECISIONS", "PrecisionPlan", "check_precision"]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# Bytes per stored element. int8 weights additionally carry one fp32 scale (and an int8 zero
# point) per output channel; that overhead is added by the byte accounting, not here.
ELEMENT_BYTES: Mapping[str, int] = {"fp32": 4, "fp16": 2, "int8": 1}


def check_precision(value: str, *, where: str = "precision") -> str:
    """Return ``value`` if it names a known precision, else raise ``ConfigError``."""
    if value not in ELEMENT_BYTES:
        raise ConfigError(f"{where} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class PrecisionPlan:
    """Which precision each module runs at.

    ``default`` applies to every module; ``overrides`` maps a module-name prefix (as in
    ``model.named_modules()``, e.g. ``"stem"`` or ``"stages.0"``) to another precision. The
    longest matching prefix wins. A plan with no overrides is a uniform precision.
    """

    default: str = "fp32"
    overrides: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_precision(self.default, where="precision plan default")
        for prefix, prec in self.overrides:
            check_precision(prec, where=f"precision plan override {prefix!r}")

    @classmethod
    def uniform(cls, precision: str) -> PrecisionPlan:
        return cls(default=check_precision(precision))

    @classmethod
    def coerce(cls, value: str | PrecisionPlan) -> PrecisionPlan:
        """Accept a precision name or a plan."""
        return value if isinstance(value, PrecisionPlan) else cls.uniform(value)

    def for_module(self, name: str) -> str:
        """Precision of the module called ``name`` (dotted path)."""
        best, best_len = self.default, -1
        for prefix, prec in self.overrides:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = prec, len(prefix)
        return best

    @property
    def is_mixed(self) -> bool:
        return any(prec != self.default for _, prec in self.overrides)

    @property
    def precisions(self) -> tuple[str, ...]:
        """Every precision this plan uses, default first."""
        seen = [self.default]
        for _, prec in self.overrides:
            if prec not in seen:
                seen.append(prec)
        return tuple(seen)

    @property
    def label(self) -> str:
        """Short human label: ``int8`` or ``mixed(int8; fp32: stem, head)``."""
        if not self.is_mixed:
            return self.default
        groups: dict[str, list[str]] = {}
        for prefix, prec in self.overrides:
            if prec != self.default:
                groups.setdefault(prec, []).append(prefix)
        rest = "; ".join(f"{p}: {', '.join(names)}" for p, names in groups.items())
        return f"mixed({self.default}; {rest})"

    def to_dict(self) -> dict[str, object]:
        return {"default": self.default, "overrides": {k: v for k, v in self.overrides}}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PrecisionPlan:
        overrides = data.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"precision plan overrides must be a table, got {overrides!r}")
        return cls(default=str(data.get("default", "fp32")), overrides=tuple((str(k), str(v)) for k, v in overrides.items()))
