"""Typed records of what a study holds: one trial's figures, and the study's own settings.

Both are frozen dataclasses stored as JSON (Optuna user attributes) with a ``schema_version``.
A study file may come from someone else, so :meth:`TrialFigures.from_dict` and
:meth:`StudyMeta.from_dict` validate what they read like user input (types, finiteness) and raise
:class:`~hwtune.errors.StudyError` naming the field. Studies written by hwtune 0.1.0 (flat,
unversioned figures) load unchanged: every 0.1.0 key is a field here.

No torch, no Optuna: reports, export and tests read records loaded from JSON as well as from a
live study.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Self, cast

from hwtune._util import is_int, is_num, jsonable
from hwtune.errors import StudyError

__all__ = [
    "FIGURES_SCHEMA_VERSION",
    "META_SCHEMA_VERSION",
    "DeviceFigures",
    "StudyMeta",
    "TrialFigures",
    "VersionedRecord",
]

FIGURES_SCHEMA_VERSION = 2  # 1 = hwtune 0.1.0 (no version key stored)
META_SCHEMA_VERSION = 2

# Field kinds for validation: "int", "num" (finite), "str", "bool", "dict", "list", "any".
_KIND_CHECKS = {
    "int": is_int,
    "num": is_num,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, (list, tuple)),
    "any": lambda v: True,
}
_KIND_TEXT = {
    "int": "an integer",
    "num": "a finite number",
    "str": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "list": "a list",
}


def _check(where: str, name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "num" and is_int(value):
        return value
    if not _KIND_CHECKS[kind](value):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise StudyError(f"{where}: {name} must be {_KIND_TEXT[kind]} or null, got {shown}")
    if kind == "dict":
        return dict(value)
    if kind == "list":
        return list(value)
    return value


class VersionedRecord:
    """A frozen dataclass of what one run did, stored as ``{"schema_version": N, <field>: <value>, ...}``.

    One layout for the run summaries that travel with a study or a run directory
    (``TrainStats``, ``FinetuneStats``, ``ParentStats``, ``EvalResult``): the version key first, then
    the fields in declaration order (``dataclasses.asdict``). ``from_dict`` drops the version key and
    passes the rest to the constructor, so a key the class does not define is a ``TypeError``. A
    class whose stored layout changes sets its own ``SCHEMA_VERSION`` and reads the old one.
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.SCHEMA_VERSION, **asdict(cast(Any, self))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cast(Any, cls)(**{k: v for k, v in data.items() if k != "schema_version"})


class _Record:
    """Shared plumbing: a kind table, dict round trip and read-only mapping access for old callers."""

    _KINDS: Mapping[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access kept for callers written against 0.1.0's plain dicts."""
        if key in self._KINDS:
            v = getattr(self, key)
            return default if v is None else v
        return self.extra.get(key, default)  # type: ignore[attr-defined]

    def __getitem__(self, key: str) -> Any:
        if key in self._KINDS:
            return getattr(self, key)
        if key in self.extra:  # type: ignore[attr-defined]
            return self.extra[key]  # type: ignore[attr-defined]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def items(self) -> list[tuple[str, Any]]:
        return list(self.to_dict().items())

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._KINDS if getattr(self, k) is not None}
        out.update(self.extra)  # type: ignore[attr-defined]
        return jsonable(out)

    @classmethod
    def _parse(cls, data: Any, where: str) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise StudyError(f"{where}: expected a mapping, got {type(data).__name__}")
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in data.items():
            kind = cls._KINDS.get(str(k))
            if kind is None:
                extra[str(k)] = v  # a newer release's field: kept, round-tripped, not interpreted
            else:
                kw[str(k)] = _check(where, str(k), kind, v)
        kw["extra"] = extra
        return kw


_DEVICE_KINDS: dict[str, str] = {
    "device": "str",
    "latency_ms": "num",
    "latency_source": "str",
    "latency_label": "str",
    "latency": "dict",
    "runtime": "str",
    "peak_activation_bytes": "int",
    "weight_bytes": "int",
    "working_memory_bytes": "int",
    "working_memory_source": "str",
    "storage_bytes": "int",
    "fits": "dict",
    "constraints": "dict",
    "infeasible": "list",
}


@dataclass(frozen=True)
class DeviceFigures(_Record):
    """One candidate's device-dependent figures on one device (a multi-device study has one per device)."""

    _KINDS = _DEVICE_KINDS

    device: str | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    latency_label: str | None = None
    latency: dict[str, Any] | None = None
    runtime: str | None = None
    peak_activation_bytes: int | None = None
    weight_bytes: int | None = None
    working_memory_bytes: int | None = None
    working_memory_source: str | None = None
    storage_bytes: int | None = None
    fits: dict[str, Any] | None = None
    constraints: dict[str, float] | None = None
    infeasible: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(float(v) <= 0 for v in (self.constraints or {}).values())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "device figures") -> DeviceFigures:
        return cls(**cls._parse(data, where))


_FIGURE_KINDS: dict[str, str] = {
    "schema_version": "int",
    # identity of the candidate
    "candidate": "dict",
    "candidate_key": "str",
    "label": "str",
    "precision": "str",
    "stage_precision": "dict",
    "precision_plan": "any",
    # cheap profile (device-independent counts, then the primary device's figures)
    "macs": "int",
    "flops": "int",
    "params": "int",
    "weight_bytes": "int",
    "peak_activation_bytes": "int",
    "working_memory_bytes": "int",
    "working_memory_source": "str",
    "storage_bytes": "int",
    "latency_ms": "num",
    "latency_profile_ms": "num",
    "latency_source": "str",
    "latency_label": "str",
    "latency": "dict",
    "runtime": "str",
    "fits": "dict",
    "notes": "list",
    "profile_seconds": "num",
    "infeasible": "list",
    "per_device": "dict",
    # training and scoring
    "strategy": "str",
    "trained": "bool",
    "budget_epochs": "num",
    "epochs_trained": "num",
    "rung": "int",
    "max_rung": "int",
    "rungs": "list",
    "samples_seen": "int",
    "train_seconds": "num",
    "train_device": "str",
    "seed": "int",
    "val_accuracy": "num",
    "val_accuracy_fp32": "num",
    "accuracy_by_precision": "dict",
    "accuracy_source": "str",
    "quantization": "dict",
    "onnx_bytes": "int",
    "shipped_bytes": "int",
    "artifact_id": "str",
    "shipped_artifact_id": "str",
    "model_artifact_id": "str",
    "finalized": "dict",
    # bookkeeping
    "wall_seconds": "num",
    "worker": "dict",
    "continue_from": "int",
    "rung_target": "int",
    "retry_of": "int",
    "retried": "any",
    "duplicate_of": "int",
    "failure": "str",
    "failure_stage": "str",
}


@dataclass(frozen=True)
class TrialFigures(_Record):
    """Everything hwtune records about one trial (all optional: a failed trial has few).

    Figures of the primary device sit at the top level (``latency_ms``, ``peak_activation_bytes``...);
    a multi-device study adds ``per_device``: device id -> :class:`DeviceFigures`. Accuracy does not
    depend on the device. ``finalized`` holds the figures of a finalize run (longer training of the
    same candidate); the search figures stay as they were.
    """

    _KINDS = _FIGURE_KINDS

    schema_version: int | None = None
    candidate: dict[str, Any] | None = None
    candidate_key: str | None = None
    label: str | None = None
    precision: str | None = None
    stage_precision: dict[str, str] | None = None
    precision_plan: Any = None
    macs: int | None = None
    flops: int | None = None
    params: int | None = None
    weight_bytes: int | None = None
    peak_activation_bytes: int | None = None
    working_memory_bytes: int | None = None
    working_memory_source: str | None = None
    storage_bytes: int | None = None
    latency_ms: float | None = None
    latency_profile_ms: float | None = None
    latency_source: str | None = None
    latency_label: str | None = None
    latency: dict[str, Any] | None = None
    runtime: str | None = None
    fits: dict[str, Any] | None = None
    notes: list[str] | None = None
    profile_seconds: float | None = None
    infeasible: list[str] | None = None
    per_device: dict[str, Any] | None = None
    strategy: str | None = None
    trained: bool | None = None
    budget_epochs: float | None = None
    epochs_trained: float | None = None
    rung: int | None = None
    max_rung: int | None = None
    rungs: list[dict[str, Any]] | None = None
    samples_seen: int | None = None
    train_seconds: float | None = None
    train_device: str | None = None
    seed: int | None = None
    val_accuracy: float | None = None
    val_accuracy_fp32: float | None = None
    accuracy_by_precision: dict[str, float] | None = None
    accuracy_source: str | None = None
    quantization: dict[str, Any] | None = None
    onnx_bytes: int | None = None
    shipped_bytes: int | None = None
    artifact_id: str | None = None
    shipped_artifact_id: str | None = None
    model_artifact_id: str | None = None
    finalized: dict[str, Any] | None = None
    wall_seconds: float | None = None
    worker: dict[str, Any] | None = None
    continue_from: int | None = None
    rung_target: int | None = None
    retry_of: int | None = None
    retried: Any = None
    duplicate_of: int | None = None
    failure: str | None = None
    failure_stage: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def int8_scheme(self) -> dict[str, Any] | None:
        """The int8 scheme the trial shipped and why (``name``, ``source``, ``reason``), from its
        ``quantization`` record; None for float trials and for studies made before it was recorded."""
        scheme = (self.quantization or {}).get("int8_scheme")
        return dict(scheme) if isinstance(scheme, Mapping) else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "trial figures") -> TrialFigures:
        """Validate and read stored figures (0.1.0's flat dict or this release's)."""
        kw = cls._parse(_mapping(data, where), where)
        per = kw.get("per_device")
        if per is not None:
            kw["per_device"] = {
                str(d): DeviceFigures.from_dict(v, where=f"{where}: per_device.{d}") for d, v in per.items()
            }
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.per_device:
            out["per_device"] = {d: v.to_dict() for d, v in self.per_device.items()}
        out["schema_version"] = FIGURES_SCHEMA_VERSION
        return out

    def updated(self, **changes: Any) -> TrialFigures:
        """A copy with some fields changed (validated like stored data)."""
        for k, v in changes.items():
            if k in _FIGURE_KINDS:
                _check("trial figures", k, _FIGURE_KINDS[k], v)
        return replace(self, **changes)

    def device(self, device_id: str | None) -> DeviceFigures:
        """The figures on ``device_id`` (the primary device's when ``None`` or single-device)."""
        if device_id is not None and self.per_device and device_id in self.per_device:
            return self.per_device[device_id]
        return DeviceFigures(
            device=device_id,
            latency_ms=self.latency_ms,
            latency_source=self.latency_source,
            latency_label=self.latency_label,
            latency=self.latency,
            runtime=self.runtime,
            peak_activation_bytes=self.peak_activation_bytes,
            weight_bytes=self.weight_bytes,
            fits=self.fits,
            infeasible=self.infeasible,
        )

    def for_device(self, device_id: str) -> TrialFigures:
        """These figures with ``device_id``'s latency/memory at the top level (for fronts per device)."""
        if not self.per_device or device_id not in self.per_device:
            return self
        d = self.per_device[device_id]
        return replace(
            self,
            latency_ms=d.latency_ms,
            latency_profile_ms=d.latency_ms,
            latency_source=d.latency_source,
            latency_label=d.latency_label,
            latency=d.latency,
            runtime=d.runtime,
            peak_activation_bytes=d.peak_activation_bytes,
            weight_bytes=d.weight_bytes,
            fits=d.fits,
            infeasible=d.infeasible,
        )


_META_KINDS: dict[str, str] = {
    "schema_version": "int",
    "recipe": "dict",
    "device": "dict",
    "devices": "list",
    "objectives": "list",
    "constraints": "dict",
    "budget": "dict",
    "data": "dict",
    "storage": "str",
    "out_dir": "str",
    "artifact_dir": "str",
    "created": "str",
    "versions": "dict",
    "reference_point": "dict",
    "reference_points": "dict",
    "sampler": "str",
    "seed": "int",
    "strategy": "str",
    "parent": "dict",
    "source_model": "dict",
}


@dataclass(frozen=True)
class StudyMeta(_Record):
    """A study's own settings, stored once when it is created (the ``hwtune`` study attribute).

    Attributes:
        recipe: ``{"name", "path", "text", "space"}`` of the search-space recipe.
        device: the primary device profile (``DeviceProfile.to_dict()``); ``devices`` lists all profiles
            of a multi-device study (the primary first).
        objectives / constraints / budget / reference_point: the search settings.
        data: ``{"load": load_dataset kwargs or None, "sizes", "info"}``.
        storage / out_dir / artifact_dir: where things are.
        strategy: ``scratch`` or ``inherit``; ``parent`` the trained parent's artifact when inheriting;
        source_model: the user's model a compression study started from.
    """

    _KINDS = _META_KINDS

    schema_version: int | None = None
    recipe: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    devices: list[dict[str, Any]] | None = None
    objectives: list[str] | None = None
    constraints: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    storage: str | None = None
    out_dir: str | None = None
    artifact_dir: str | None = None
    created: str | None = None
    versions: dict[str, str] | None = None
    reference_point: dict[str, float] | None = None
    reference_points: dict[str, dict[str, float]] | None = None
    sampler: str | None = None
    seed: int | None = None
    strategy: str | None = None
    parent: dict[str, Any] | None = None
    source_model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "study settings") -> StudyMeta:
        kw = cls._parse(_mapping(data, where), where)
        ref = kw.get("reference_point")
        if ref is not None:
            for k, v in ref.items():
                if not is_num(v) or (isinstance(v, float) and not math.isfinite(v)):
                    raise StudyError(f"{where}: reference_point.{k} must be a finite number, got {v!r}")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["schema_version"] = META_SCHEMA_VERSION
        return out

    @property
    def device_ids(self) -> list[str]:
        """Device ids of the study, primary first."""
        if self.devices:
            return [str(d.get("id")) for d in self.devices]
        return [str((self.device or {}).get("id", "?"))]

    def updated(self, **changes: Any) -> StudyMeta:
        for k, v in changes.items():
            if k in _META_KINDS:
                _check("study settings", k, _META_KINDS[k], v)
        return replace(self, **changes)


def field_names(cls: type) -> list[str]:
    """Field names of a record class (for docs and tests)."""
    return [f.name for f in fields(cls) if f.name != "extra"]


def _mapping(data: Any, where: str) -> dict[str, Any]:
    """``data`` as a dict; anything but a mapping (or None) is a one-line StudyError naming ``where``."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise StudyError(f"{where}: expected a mapping, got {type(data).__name__}")
    return dict(data)
