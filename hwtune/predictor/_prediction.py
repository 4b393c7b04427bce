"""Prediction: the ``predict*`` verbs and what they return (per-layer figures, the total, its error bars).

``predict`` lowers the model (``_model_features.py``) and evaluates the profile's latency model as
its stored calibration says (``_stored_calibration.py``): a chosen form (``_forms.py``) or the
per-op roofline (``_model.py``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from hwtune.precision import PrecisionPlan
from hwtune.predictor._features import LayerFeatures
from hwtune.predictor._forms import base_vector, layer_split
from hwtune.predictor._model import Coefficients, Hardware, predict_terms
from hwtune.predictor._model_features import CACHE_LOCK, CACHE_SIZE, model_features
from hwtune.predictor._stored_calibration import (
    ProfileCalibration,
    label,
    load_profile_cached,
    profile_calibration,
)

if TYPE_CHECKING:
    from torch import nn

    from hwtune.device import DeviceProfile

__all__ = [
    "LatencyPrediction",
    "LayerPrediction",
    "PredictedMilliseconds",
    "Prediction",
    "predict",
    "predict_features",
    "predict_latency",
    "predict_latency_detail",
    "profile_coefficients",
]


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


def profile_coefficients(device: str | Path | DeviceProfile) -> Coefficients:
    """The per-op roofline coefficients of a profile (spec priors when it has none)."""
    from hwtune.device import load_profile

    return profile_calibration(load_profile(device)).coefficients


_PREDICTION_CACHE: OrderedDict[Any, tuple[Any, Any, Any, Prediction]] = OrderedDict()


def _notes(cal: ProfileCalibration, plan: PrecisionPlan, batch: int) -> tuple[str, ...]:
    notes = []
    batches = cal.batch_sizes or ((1,) if cal.status == "calibrated" else ())
    if batches and batch not in batches:
        notes.append(f"batch {batch} is outside the calibration's batch sizes ({', '.join(map(str, batches))}): "
                     f"scaled through the {cal.form_name} model (compute and traffic grow with the batch, "
                     "per-kernel and per-run costs do not); not validated at this batch")
    missing = [p for p in plan.precisions if cal.precisions and p not in cal.precisions]
    if missing:
        notes.append(f"{', '.join(missing)} not measured: extrapolated from {', '.join(cal.precisions)} "
                     "with the profile's peak-throughput ratio")
    if cal.status == "spec":
        notes.append("spec-only profile: no measurement on this device; error measured leave-device-out")
    if cal.hardware_note:
        notes.append(cal.hardware_note)
    if cal.cpu_note:
        notes.append(f"{cal.cpu_note}: predictions describe that CPU; hwtune calibrate --host fits this one")
    return tuple(notes)


def predict_features(
    features: Sequence[LayerFeatures],
    input_elements: int,
    device: str | Path | DeviceProfile,
    *,
    precision: str | PrecisionPlan = "fp32",
    coefficients: Coefficients | None = None,
    batch_size: int = 1,
) -> Prediction:
    """Predict from already-computed layer features (what ``predict`` does after lowering).

    ``coefficients`` forces the per-op roofline with those coefficients.
    """
    profile = load_profile_cached(device)
    plan = PrecisionPlan.coerce(precision)
    cal = profile_calibration(profile)
    if coefficients is not None:
        cal = ProfileCalibration(coefficients, "calibrated", "given", None, (), cal.lowering)
    hw = Hardware.from_profile(profile)
    if cal.form is not None:
        terms = [layer_split(cal.form, f, hw) for f in features]
        run_ms, io_ms = float(cal.form.coefficients.get("intercept_ms", 0.0)), 0.0
    else:
        terms, run_ms, io_ms = predict_terms(features, input_elements, hw, cal.coefficients)
    per_layer = tuple(
        LayerPrediction(f.name, f.op_type, f.key, f.precision, o + c + m, o, c, m)
        for f, (o, c, m) in zip(features, terms)
    )
    total = run_ms + io_ms + sum(p.latency_ms for p in per_layer)
    return Prediction(
        latency_ms=total, per_layer=per_layer, run_overhead_ms=run_ms, boundary_ms=io_ms, error_pct=cal.error_pct,
        source=label(cal, plan), status=cal.status, method=cal.method, device=profile.id, precision=plan.label,
        form=cal.form_name, spearman=cal.spearman, executes=cal.lowering.executes, batch_size=int(batch_size),
        notes=_notes(cal, plan, int(batch_size)),
    )


def predict(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
) -> Prediction:
    """Predict the latency of ``model`` on a device profile, per layer and in total.

    Args:
        model: A torch model (lowered once per object; weights do not matter).
        input_shape: Input shape including batch, e.g. ``(1, 3, 32, 32)``; a batch the
            calibration did not measure is scaled through the model and noted in ``notes``.
        device: A bundled profile id, a path to a profile TOML, or a ``DeviceProfile``.
        precision: ``fp32``, ``fp16``, ``int8`` or a ``PrecisionPlan`` for mixed precision.

    Returns:
        A ``Prediction``; its ``source``, ``form``, ``error_pct`` and ``spearman`` say how far
        to trust it.

    Raises:
        ModelError: the model rejects this input shape.
        UnknownNameError: unknown device id.
        CalibrationError: the profile's ``[calibration]`` table is malformed.

    Example:
        >>> import torch, hwtune
        >>> from hwtune.predictor import predict
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
        >>> p = predict(net, (1, 3, 32, 32), device="raspberry-pi-4")
        >>> p.latency_ms > 0, p.source.startswith(("predicted", "estimated"))
        (True, True)
    """
    profile = load_profile_cached(device)
    cal = profile_calibration(profile)
    features, n_in = model_features(model, input_shape, precision, lowering=cal.lowering)
    # keyed on object identity (hashing the feature tuple would cost more than predicting); the
    # entry holds the features and calibration, so their ids cannot be reused while it exists
    key = (id(features), id(cal), id(profile), PrecisionPlan.coerce(precision))
    with CACHE_LOCK:
        hit = _PREDICTION_CACHE.get(key)
    if hit is not None and hit[0] is features and hit[1] is cal and hit[2] is profile:
        return hit[3]
    out = predict_features(features, n_in, profile, precision=precision, batch_size=int(input_shape[0]))
    with CACHE_LOCK:
        _PREDICTION_CACHE[key] = (features, cal, profile, out)
        while len(_PREDICTION_CACHE) > CACHE_SIZE:
            _PREDICTION_CACHE.popitem(last=False)
    return out


def predict_latency_detail(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
) -> LatencyPrediction:
    """The predicted latency with its error bars, without the per-layer split (the fast path).

    Costs a structural lowering (no trace) for a model object it has not seen, a dictionary
    lookup for one it has.

    Example:
        >>> import torch, hwtune
        >>> from hwtune.predictor import predict_latency_detail
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
        >>> p = predict_latency_detail(net, (1, 3, 32, 32), device="pixel-3")
        >>> float(p) > 0, p.source, p.form in ("macs", "macs_memory_layers", "per_op"), p.spearman is not None
        (True, 'predicted', True, True)
    """
    profile = load_profile_cached(device)
    cal = profile_calibration(profile)
    plan = PrecisionPlan.coerce(precision)
    features, n_in = model_features(model, input_shape, plan, lowering=cal.lowering)
    hw = Hardware.from_profile(profile)
    if cal.form is not None:
        ms = cal.form.predict_base(base_vector(features, hw))
    else:
        terms, run_ms, io_ms = predict_terms(features, n_in, hw, cal.coefficients)
        ms = run_ms + io_ms + sum(o + c + m for o, c, m in terms)
    batch = int(input_shape[0])
    return LatencyPrediction(
        latency_ms=float(ms), source="predicted" if cal.status == "calibrated" else "estimated",
        form=cal.form_name, error_pct=cal.error_pct, spearman=cal.spearman, flops_spearman=cal.flops_spearman,
        within_10pct=cal.within_10pct, runtime=str(profile.runtime), device=profile.id, precision=plan.label,
        batch_size=batch, executes=cal.lowering.executes, validation=cal.validation,
        notes=_notes(cal, plan, batch), cpu_note=cal.cpu_note,
    )


def predict_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
) -> PredictedMilliseconds:
    """Predicted latency in milliseconds, a ``float`` that carries its provenance.

    ``float(x)`` is the milliseconds; ``x.source`` (``predicted`` / ``estimated``), ``x.form``,
    ``x.error_pct``, ``x.spearman`` (and FLOPs' ``x.flops_spearman``) and ``x.label`` say where it
    comes from and how far to trust it (:func:`predict_latency_detail` returns the record itself).

    Example:
        >>> import torch, hwtune
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
        >>> hwtune.predict_latency(net, (1, 3, 32, 32), device="pixel-3") > 0
        True
    """
    return PredictedMilliseconds(predict_latency_detail(model, input_shape, device=device, precision=precision))
