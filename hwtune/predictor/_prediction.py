"""What a prediction returns: per-layer figures, the network total, and its error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["LatencyPrediction", "LayerPrediction", "Prediction"]


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class LayerPrediction:
    """Predicted latency of one layer, split into its three terms (milliseconds)."""

    name: str
    op_type: str
    key: str
    precision: str
    latency_ms: float
    overhead_ms: float
    compute_ms: float
    memory_ms: float

    @property
    def bound(self) -> str:
        """Which term dominates: ``compute``, ``memory`` or ``overhead``."""
        terms = {"overhead": self.overhead_ms, "compute": self.compute_ms, "memory": self.memory_ms}
        return max(terms, key=lambda k: terms[k])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "op_type": self.op_type, "key": self.key, "precision": self.precision,
            "latency_ms": self.latency_ms, "overhead_ms": self.overhead_ms, "compute_ms": self.compute_ms,
            "memory_ms": self.memory_ms, "bound": self.bound,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerPrediction:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Prediction:
    """A predicted latency, per layer and in total, and how much to trust it.

    Attributes:
        latency_ms: Predicted latency of one inference at the input shape's batch, milliseconds.
        per_layer: Per-layer predictions (pruned and free ops omitted), in execution order.
        run_overhead_ms: Fixed per-inference cost (runtime dispatch, input/output binding; a
            fitted form's intercept).
        boundary_ms: Quantize/dequantize (and layout) cost where precision changes.
        error_pct: The profile's stated median absolute % error (held-out when it was measured
            on networks the calibration never saw, else leave-one-out), None when unknown.
        source: Human label, ``predicted (calibrated: ...)`` or ``estimated (...)``.
        status: ``calibrated``, ``spec`` (spec-sheet coefficients) or ``uncalibrated``.
        method: Calibration method (``microbench``, ``networks``, ``spec``) or None.
        device: Profile id.
        precision: Precision label of the model.
        form: The model form that produced the number (``macs``, ``macs_memory_layers``,
            ``per_op``, or ``roofline`` for per-op coefficients from micro-benchmarks / priors).
        spearman: The profile's stated rank correlation with measured latency (same rows as
            ``error_pct``), None when unknown.
        executes: ``deployed`` (dead ops pruned, BN/activations folded) or ``eager``.
        batch_size: The input's batch.
        notes: Caveats (batch or precision outside the calibration, spec-only ...).
    """

    latency_ms: float
    per_layer: tuple[LayerPrediction, ...]
    run_overhead_ms: float
    boundary_ms: float
    error_pct: float | None
    source: str
    status: str
    method: str | None
    device: str
    precision: str
    schema_version: int = 2
    form: str = "roofline"
    spearman: float | None = None
    executes: str = "deployed"
    batch_size: int = 1
    notes: tuple[str, ...] = ()

    @property
    def latency_source(self) -> str:
        return "predicted" if self.status == "calibrated" else "estimated"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "source": self.source,
            "status": self.status,
            "method": self.method,
            "form": self.form,
            "executes": self.executes,
            "error_pct": self.error_pct,
            "spearman": self.spearman,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "run_overhead_ms": self.run_overhead_ms,
            "boundary_ms": self.boundary_ms,
            "notes": list(self.notes),
            "per_layer": [p.to_dict() for p in self.per_layer],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(
            latency_ms=float(data["latency_ms"]),
            per_layer=tuple(LayerPrediction.from_dict(p) for p in data.get("per_layer", ())),
            run_overhead_ms=float(data.get("run_overhead_ms", 0.0)),
            boundary_ms=float(data.get("boundary_ms", 0.0)),
            error_pct=_opt_float(data.get("error_pct")),
            source=str(data["source"]),
            status=str(data["status"]),
            method=data.get("method"),
            device=str(data["device"]),
            precision=str(data["precision"]),
            form=str(data.get("form", "roofline")),
            spearman=_opt_float(data.get("spearman")),
            executes=str(data.get("executes", "deployed")),
            batch_size=int(data.get("batch_size", 1)),
            notes=tuple(str(n) for n in data.get("notes", ())),
        )


@dataclass(frozen=True)
class LatencyPrediction:
    """One predicted latency with its error bars; ``float(p)`` is the latency in milliseconds.

    Attributes:
        latency_ms: The predicted latency, milliseconds.
        source: ``predicted`` (the profile was calibrated from measurements on the device) or
            ``estimated`` (spec-sheet numbers or uncalibrated priors).
        form: Model form that produced it (see ``Prediction.form``).
        error_pct: Median absolute % error the profile states, measured on networks its
            calibration did not fit (held-out, or leave-one-out over the calibration rows; see
            ``validation``), None when nobody measured it.
        spearman: Rank correlation with measured latency on those rows, None when unknown.
        flops_spearman: FLOPs' rank correlation on the same rows (the free baseline).
        within_10pct: Share of those rows predicted within +-10%.
        runtime: The profile's runtime (``onnxruntime``, ``tflite`` ...).
        device: Profile id.
        precision: Precision label.
        batch_size: Batch of the input shape.
        executes: ``deployed`` or ``eager`` lowering.
        validation: How ``error_pct`` and ``spearman`` were measured.
        notes: Caveats, e.g. a batch or precision the calibration did not cover.
        cpu_note: ``calibrated on <CPU>, not this CPU (...)`` when the profile describes this machine
            but was fitted on another CPU ('' otherwise); ``label`` carries it.

    Example:
        >>> p = LatencyPrediction(2.5, "predicted", "macs", 6.0, 0.97, 0.88, 0.8, "tflite", "pi", "fp32")
        >>> float(p), p.label
        (2.5, 'predicted 2.5 ms ±6% (Spearman 0.97 vs FLOPs 0.88; form macs)')
    """

    latency_ms: float
    source: str
    form: str
    error_pct: float | None
    spearman: float | None
    flops_spearman: float | None
    within_10pct: float | None
    runtime: str
    device: str
    precision: str
    batch_size: int = 1
    executes: str = "deployed"
    validation: str = ""
    notes: tuple[str, ...] = ()
    schema_version: int = 1
    cpu_note: str = ""

    def __float__(self) -> float:
        return float(self.latency_ms)

    @property
    def label(self) -> str:
        """``predicted 2.5 ms ±6% (Spearman 0.97 vs FLOPs 0.88; form macs)``."""
        err = f" ±{self.error_pct:.0f}%" if self.error_pct is not None and math.isfinite(self.error_pct) else \
            " (error not measured)"
        rho = ""
        if self.spearman is not None:
            rho = f"Spearman {self.spearman:.2f}"
            if self.flops_spearman is not None:
                rho += f" vs FLOPs {self.flops_spearman:.2f}"
            rho += "; "
        cpu = f"; {self.cpu_note}" if self.cpu_note else ""
        return f"{self.source} {self.latency_ms:.3g} ms{err} ({rho}form {self.form}{cpu})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "latency_ms": self.latency_ms, "source": self.source,
            "form": self.form, "error_pct": self.error_pct, "spearman": self.spearman,
            "flops_spearman": self.flops_spearman, "within_10pct": self.within_10pct, "runtime": self.runtime,
            "device": self.device, "precision": self.precision, "batch_size": self.batch_size,
            "executes": self.executes, "validation": self.validation, "notes": list(self.notes),
            "cpu_note": self.cpu_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPrediction:
        return cls(
            latency_ms=float(data["latency_ms"]), source=str(data["source"]), form=str(data["form"]),
            error_pct=_opt_float(data.get("error_pct")), spearman=_opt_float(data.get("spearman")),
            flops_spearman=_opt_float(data.get("flops_spearman")), within_10pct=_opt_float(data.get("within_10pct")),
            runtime=str(data.get("runtime", "")), device=str(data["device"]), precision=str(data["precision"]),
            batch_size=int(data.get("batch_size", 1)), executes=str(data.get("executes", "deployed")),
            validation=str(data.get("validation", "")), notes=tuple(str(n) for n in data.get("notes", ())),
            cpu_note=str(data.get("cpu_note", "")),
        )


class PredictedMilliseconds(float):
    """A predicted latency that is a ``float`` (milliseconds) and carries where it comes from.

    Returned by :func:`hwtune.predict_latency`: arithmetic, comparisons and ``isinstance(x, float)``
    keep working for callers written against a bare float, while ``x.source``, ``x.form``,
    ``x.error_pct``, ``x.spearman``, ``x.flops_spearman``, ``x.label`` ... read the
    :class:`LatencyPrediction` behind it (``x.detail``).
    """

    detail: LatencyPrediction

    def __new__(cls, detail: LatencyPrediction) -> Self:
        obj = super().__new__(cls, float(detail.latency_ms))
        obj.detail = detail
        return obj

    def __getattr__(self, name: str) -> Any:
        if name == "detail":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.detail, name)

    def __repr__(self) -> str:
        return f"{float(self)!r} ms ({self.detail.label})"
