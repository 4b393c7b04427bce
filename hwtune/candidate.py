"""A candidate: one point of a recipe's search space (a family, its knob values and a precision).

Frozen, hashable and JSON-serializable; what a study stores per trial (``to_dict``) and what
``hwtune.space.SearchSpace.candidate`` returns. No torch here.

Example:
    >>> from hwtune.candidate import Candidate
    >>> c = Candidate("convnet", {"width": [8, 16], "depth": [1, 1]}, precision="int8")
    >>> Candidate.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hwtune.errors import ConfigError, UnknownNameError, did_you_mean, unknown_key_problems
from hwtune.precision import PRECISIONS, PrecisionPlan

__all__ = ["Candidate"]

SCHEMA_VERSION = 1  # of Candidate.to_dict()


def _freeze(value: Any, where: str) -> Any:
    """Lists become tuples; anything that is not a JSON scalar (or tuple of them) is rejected."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, where) for v in value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return value
    raise ConfigError(f"{where} must be a JSON scalar (str, int, float, bool) or a list of them, got {value!r}")


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _stage_order(stage: str) -> tuple[int, int, str]:
    if stage == "stem":
        return (0, 0, stage)
    if stage == "head":
        return (2, 0, stage)
    if stage.startswith("stage") and stage[5:].isdigit():
        return (1, int(stage[5:]), stage)
    return (1, 10**6, stage)


def _main_precision(stage_precision: tuple[tuple[str, str], ...]) -> str:
    """The precision most body stages run at (ties: the earlier stage's); stem/head only
    count when there are no body stages. It becomes the plan default, the rest overrides."""
    body = [p for s, p in stage_precision if s not in ("stem", "head")] or [p for _, p in stage_precision]
    return max(dict.fromkeys(body), key=body.count)


@dataclass(frozen=True)
class Candidate:
    """One point of a search space: a family, its knob values and a precision.

    Frozen, hashable and JSON-serializable (``to_dict``/``from_dict``); ``key`` is a stable,
    file-name-safe id.

    Attributes:
        family: Registered family name.
        knobs: ``(name, value)`` pairs sorted by name; per-stage values are tuples. A mapping
            is accepted and normalised.
        precision: ``fp32``/``fp16``/``int8`` (uniform) or the name of a mixed policy
            (``mixed``), in which case ``stage_precision`` says what each stage runs at.
        stage_precision: ``(stage, precision)`` for every stage under a mixed policy, stage
            order (``stem``, ``stage1``..., ``head``); empty for a uniform precision.

    Example:
        >>> c = Candidate("convnet", {"width": [8, 16], "depth": [1, 1]}, precision="int8")
        >>> c.knob("width")
        (8, 16)
    """

    family: str
    knobs: tuple[tuple[str, Any], ...] = ()
    precision: str = "fp32"
    stage_precision: tuple[tuple[str, str], ...] = ()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ConfigError(f"candidate family must be a non-empty string, got {self.family!r}")
        raw = self.knobs.items() if isinstance(self.knobs, Mapping) else self.knobs
        knobs = []
        for pair in raw:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ConfigError(f"candidate knobs must be (name, value) pairs or a mapping, got {pair!r}")
            knobs.append((pair[0], _freeze(pair[1], f"candidate knob {pair[0]!r}")))
        names = [k for k, _ in knobs]
        if len(set(names)) != len(names):
            raise ConfigError(f"candidate knobs name a knob twice: {sorted(names)}")
        object.__setattr__(self, "knobs", tuple(sorted(knobs)))
        raw_sp = self.stage_precision.items() if isinstance(self.stage_precision, Mapping) else self.stage_precision
        sp = tuple(sorted(((str(s), str(p)) for s, p in raw_sp), key=lambda item: _stage_order(item[0])))
        object.__setattr__(self, "stage_precision", sp)
        problems = []
        if not isinstance(self.precision, str) or not self.precision:
            problems.append(f"candidate precision must be a non-empty string, got {self.precision!r}")
        for stage, prec in sp:
            if prec not in PRECISIONS:
                problems.append(
                    f"candidate stage_precision[{stage!r}] must be one of {', '.join(PRECISIONS)}, got {prec!r}"
                )
        if self.precision in PRECISIONS:
            if any(prec != self.precision for _, prec in sp):
                problems.append(
                    f"candidate precision {self.precision!r} is uniform but stage_precision differs: {dict(sp)}; "
                    "use a policy name such as 'mixed'"
                )
        elif isinstance(self.precision, str) and not sp:
            problems.append(
                f"candidate precision {self.precision!r} is not one of {', '.join(PRECISIONS)}; a mixed policy needs "
                "stage_precision"
            )
        if self.schema_version != SCHEMA_VERSION:
            problems.append(f"candidate schema_version must be {SCHEMA_VERSION}, got {self.schema_version!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    # ---- access ----
    def knob(self, name: str) -> Any:
        """Value of knob ``name``.

        Raises:
            UnknownNameError: the candidate has no such knob.
        """
        for key, value in self.knobs:
            if key == name:
                return value
        names = [k for k, _ in self.knobs]
        raise UnknownNameError(f"candidate has no knob {name!r}{did_you_mean(name, names)} (knobs: {', '.join(names)})")

    @property
    def knob_dict(self) -> dict[str, Any]:
        """Knobs as a dict (values as stored: tuples for per-stage knobs)."""
        return dict(self.knobs)

    @property
    def is_mixed(self) -> bool:
        return len({p for _, p in self.stage_precision}) > 1

    def precision_plan(self, prefixes: Mapping[str, str] | None = None) -> PrecisionPlan:
        """The module-level precision plan, given the family's ``stage -> module prefix`` map.

        The most common stage precision becomes the plan default and every other stage an
        override on its module prefix. ``prefixes`` defaults to the family's own
        ``stage_prefixes`` (imports the family registry, hence torch).

        Raises:
            ConfigError: a stage of ``stage_precision`` has no prefix.
        """
        if not self.stage_precision:
            return PrecisionPlan.uniform(self.precision)
        if prefixes is None:
            from hwtune.families import get_family

            prefixes = get_family(self.family).stage_prefixes(self)
        default = _main_precision(self.stage_precision)
        missing = [s for s, _ in self.stage_precision if s not in prefixes]
        if missing:
            raise ConfigError(
                f"candidate stage_precision names stages {missing} that have no module prefix "
                f"(known: {', '.join(prefixes)})"
            )
        overrides = tuple((prefixes[s], p) for s, p in self.stage_precision if p != default)
        return PrecisionPlan(default=default, overrides=overrides)

    # ---- identity ----
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``from_dict`` inverts it exactly."""
        return {
            "schema_version": self.schema_version,
            "family": self.family,
            "knobs": {k: _thaw(v) for k, v in self.knobs},
            "precision": self.precision,
            "stage_precision": dict(self.stage_precision),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Build from ``to_dict`` output (or hand-written JSON).

        Raises:
            ConfigError: unknown keys, missing family, bad values (all listed).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"candidate must be a JSON object, got {data!r}")
        known = ("schema_version", "family", "knobs", "precision", "stage_precision")
        problems = unknown_key_problems(data, known, "candidate")
        if "family" not in data:
            problems.append("candidate: missing required key 'family'")
        for key in ("knobs", "stage_precision"):
            if key in data and not isinstance(data[key], Mapping):
                problems.append(f"candidate: {key} must be an object, got {data[key]!r}")
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(
            family=data["family"],
            knobs=tuple(dict(data.get("knobs", {})).items()),
            precision=data.get("precision", "fp32"),
            stage_precision=tuple(dict(data.get("stage_precision", {})).items()),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal candidates give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable, file-name-safe id: ``convnet-1f3a9c0b2d4e`` (family + 12 hex of SHA-256)."""
        return f"{self.family}-{hashlib.sha256(self.to_json().encode()).hexdigest()[:12]}"

    @property
    def label(self) -> str:
        """Readable one-liner: ``convnet depth=1,2 width=8,16 @ int8``."""
        parts = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in self.knobs]
        prec = self.precision
        if self.stage_precision:
            default = _main_precision(self.stage_precision)
            counts: dict[str, list[str]] = {}
            for stage, p in self.stage_precision:
                counts.setdefault(p, []).append(stage)
            others = "; ".join(f"{p}: {', '.join(s)}" for p, s in counts.items() if p != default)
            prec = f"{self.precision}({default}; {others})" if others else f"{self.precision}({default})"
        return f"{self.family} {' '.join(parts)} @ {prec}"
