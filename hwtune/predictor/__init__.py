"""Latency prediction for devices you do not have: a calibrated per-op roofline.

``predict`` traces the model once (``hwtune.profiler.graph.trace_layers``; the features are
cached per model structure, input shape and precision), drops the ops a runtime would prune,
and sums per-layer latencies from the profile's peak throughput, bandwidth and the calibrated
per-op coefficients in its ``[calibration]`` table (see ``_model.py`` for the formula). A
profile without a calibration still gets a number from the generic spec priors, labelled
``estimated (roofline, uncalibrated)`` -- never passed off as a prediction with a known error.

Calibrate a profile from micro-benchmarks run on the device (``scripts/profile_device.py``)
with :func:`calibrate_microbench`, or from a few whole-network measurements with
:func:`calibrate_networks`; both write the ``[calibration]`` table into a profile TOML and
report the held-out error they measured.

Example:
    >>> import hwtune
    >>> model = hwtune.create_model("nb201", {"arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"}, num_classes=10, in_channels=3, input_size=32)
    >>> ms = hwtune.predict_latency(model, (1, 3, 32, 32), device="raspberry-pi-4", precision="fp32")
    >>> ms > 0
    True
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import CalibrationError, ConfigError, ModelError
from hwtune.precision import PrecisionPlan
from hwtune.predictor._features import NO_LOWERING, LayerFeatures, Lowering, lower, raws_from_graph
from hwtune.predictor._model import Coefficients, Hardware, predict_terms

if TYPE_CHECKING:
    from torch import nn

    from hwtune.device import DeviceProfile

__all__ = [
    "UNCALIBRATED_LABEL",
    "CalibrationReport",
    "LayerPrediction",
    "Prediction",
    "calibrate_microbench",
    "calibrate_networks",
    "calibrate_spec",
    "model_features",
    "predict",
    "predict_features",
    "predict_latency",
    "profile_coefficients",
]

UNCALIBRATED_LABEL = "estimated (roofline, uncalibrated)"


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
    """A predicted batch-1 latency and how much to trust it.

    Attributes:
        latency_ms: Predicted latency of one inference (batch 1), milliseconds.
        per_layer: Per-layer predictions (pruned and free ops omitted), in execution order.
        run_overhead_ms: Fixed per-inference cost (runtime dispatch, input/output binding).
        boundary_ms: Quantize/dequantize (and layout) cost where precision changes.
        error_pct: The calibration's held-out median absolute % error, None when unknown.
        source: Human label, ``predicted (calibrated: ...)`` or ``estimated (roofline, uncalibrated)``.
        status: ``calibrated``, ``spec`` (spec-sheet coefficients) or ``uncalibrated``.
        method: Calibration method (``microbench``, ``networks``, ``spec``) or None.
        device: Profile id.
        precision: Precision label of the model.
        latency_source: ``predicted`` when calibrated from measurements, else ``estimated``.
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
    schema_version: int = 1

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
            "error_pct": self.error_pct,
            "device": self.device,
            "precision": self.precision,
            "run_overhead_ms": self.run_overhead_ms,
            "boundary_ms": self.boundary_ms,
            "per_layer": [p.to_dict() for p in self.per_layer],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(
            latency_ms=float(data["latency_ms"]),
            per_layer=tuple(LayerPrediction.from_dict(p) for p in data.get("per_layer", ())),
            run_overhead_ms=float(data.get("run_overhead_ms", 0.0)),
            boundary_ms=float(data.get("boundary_ms", 0.0)),
            error_pct=data.get("error_pct"),
            source=str(data["source"]),
            status=str(data["status"]),
            method=data.get("method"),
            device=str(data["device"]),
            precision=str(data["precision"]),
        )


# --------------------------------------------------------------------------------------------
# Calibration status of a profile


@dataclass(frozen=True)
class _Calibrated:
    coefficients: Coefficients
    status: str
    method: str | None
    error_pct: float | None
    precisions: tuple[str, ...]
    lowering: Lowering = NO_LOWERING


_COEFF_CACHE: dict[tuple[str, str], _Calibrated] = {}
# profile object id -> (profile, its _Calibrated): skips repr() of the table on repeated calls;
# the profile is held so its id cannot be reused while the entry exists
_CAL_BY_OBJECT: dict[int, tuple[Any, _Calibrated]] = {}


def _profile_calibration(profile: DeviceProfile) -> _Calibrated:
    from hwtune.predictor._calibrate import coefficients_from_table

    quick = _CAL_BY_OBJECT.get(id(profile))
    if quick is not None and quick[0] is profile:
        return quick[1]
    table = profile.calibration
    key = (profile.id + str(profile.path), repr(table))
    hit = _COEFF_CACHE.get(key)
    if hit is not None:
        _remember_calibration(profile, hit)
        return hit
    if not table:
        out = _Calibrated(Coefficients.spec(), "uncalibrated", None, None, ())
    else:
        where = str(profile.path or profile.id)
        coeffs = coefficients_from_table(table, where) if table.get("coefficients") else Coefficients.spec()
        method = str(table.get("method"))
        err = table.get("error_pct")
        status = "spec" if method == "spec" else "calibrated"
        precs = tuple(table.get("precisions") or ())
        out = _Calibrated(coeffs, status, method, float(err) if err is not None else None, precs,
                          Lowering.from_table(table))
    _COEFF_CACHE[key] = out
    _remember_calibration(profile, out)
    return out


def _remember_calibration(profile: Any, cal: _Calibrated) -> None:
    if len(_CAL_BY_OBJECT) > 64:
        _CAL_BY_OBJECT.clear()
    _CAL_BY_OBJECT[id(profile)] = (profile, cal)


def profile_coefficients(device: str | Path | DeviceProfile) -> Coefficients:
    """The coefficients ``predict`` uses for a profile (spec priors when it has no calibration)."""
    from hwtune.device import load_profile

    return _profile_calibration(load_profile(device)).coefficients


def _label(cal: _Calibrated, precision: PrecisionPlan) -> str:
    if cal.status == "uncalibrated":
        return UNCALIBRATED_LABEL
    err = f"median error {cal.error_pct:.1f}%" if cal.error_pct is not None else "error not measured"
    if cal.status == "spec":
        return f"estimated (spec-derived coefficients, uncalibrated; typical {err})"
    extra = ""
    missing = [p for p in precision.precisions if cal.precisions and p not in cal.precisions]
    if missing:
        extra = f"; {', '.join(missing)} extrapolated from {', '.join(cal.precisions)}"
    return f"predicted (calibrated: {cal.method}, {err}{extra})"


# --------------------------------------------------------------------------------------------
# Features, cached per model structure

_FEATURE_CACHE: OrderedDict[Any, tuple[tuple[LayerFeatures, ...], int]] = OrderedDict()
_CACHE_SIZE = 512
_LOCK = threading.Lock()
_TORCH_STATE = frozenset({
    "training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_backward_pre_hooks", "_backward_hooks",
    "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_modules", "_compiled_call_impl",
})
_SIMPLE = (str, int, float, bool, type(None))
_NOT_SIMPLE = object()
_KEYS_BY_MODEL: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
# Per class: the attribute names that describe a built-in torch module (its ``__constants__``:
# channels, kernel, stride, padding, groups ...), or None for classes defined elsewhere, whose
# plain attributes are all read (a NAS cell keeps its wiring in plain lists).
_CLASS_ATTRS: dict[type, tuple[str, ...] | None] = {}


def _freeze(v: Any, depth: int = 0) -> Any:
    """A hashable copy of a plain-Python value, or ``_NOT_SIMPLE``."""
    if type(v) in _SIMPLE:
        return v
    if type(v) in (tuple, list) and depth < 4:
        out = tuple(_freeze(x, depth + 1) for x in v)
        return _NOT_SIMPLE if _NOT_SIMPLE in out else out
    return _NOT_SIMPLE


def _class_attrs(cls: type) -> tuple[str, ...] | None:
    try:
        return _CLASS_ATTRS[cls]
    except KeyError:
        pass
    attrs = None
    constants = getattr(cls, "__constants__", None)
    if cls.__module__.startswith("torch.nn.") and isinstance(constants, (list, tuple)):
        attrs = tuple(sorted(str(a) for a in constants))
    _CLASS_ATTRS[cls] = attrs
    return attrs


def structure_key(model: nn.Module) -> tuple[int, int]:
    """What determines a model's traced layers: its module tree and plain-Python attributes.

    Every module contributes its name, class, whether it has a bias, and its hyperparameters:
    for built-in torch modules the attributes their class declares in ``__constants__``
    (channels, kernel sizes, strides ...), for other classes every plain attribute in their
    ``__dict__`` (wiring kept in plain attributes, such as a NAS cell's edge list, which
    ``repr`` would not show). Weights are not part of the key: they do not change latency.
    The key is the hash of all that plus the module count (cheap to store and compare; the
    chance that two structures of one process collide in 64 bits is negligible). It is
    computed once per model object (kept in a weak map), so a model mutated in place after its
    first prediction keeps its old key. Walking the tree without tracing costs ~1 ms for a
    250-module network.
    """
    try:
        return _KEYS_BY_MODEL[model]
    except (KeyError, TypeError):
        pass
    parts: list[Any] = []
    stack: list[tuple[str, Any]] = [("", model)]
    simple, state, not_simple = _SIMPLE, _TORCH_STATE, _NOT_SIMPLE
    while stack:
        name, mod = stack.pop()
        d = mod.__dict__
        cls = type(mod)
        names = _class_attrs(cls)
        if names is not None:
            attrs: Any = tuple(map(d.get, names))
        else:
            attrs = []
            for k, v in d.items():
                if type(v) in simple:
                    attrs.append((k, v))
                elif k not in state:
                    f = _freeze(v)
                    if f is not not_simple:
                        attrs.append((k, f))
            attrs = tuple(attrs)
        params = d.get("_parameters") or {}
        parts.append((name, cls, params.get("bias") is not None, attrs))
        children = d.get("_modules")
        if children:
            prefix = name + "." if name else ""
            stack.extend((prefix + k, c) for k, c in reversed(children.items()) if c is not None)
    flat = tuple(parts)
    try:
        key = (hash(flat), len(flat))
    except TypeError:  # an unhashable hyperparameter (a list in a torch module): freeze everything
        key = (hash(tuple((n, c, b, _freeze(a)) for n, c, b, a in parts)), len(flat))
    try:
        _KEYS_BY_MODEL[model] = key
    except TypeError:  # not weak-referenceable: just do not remember it
        pass
    return key


def model_features(
    model: nn.Module,
    input_shape: Sequence[int],
    precision: str | PrecisionPlan = "fp32",
    *,
    lowering: Lowering = NO_LOWERING,
) -> tuple[tuple[LayerFeatures, ...], int]:
    """Latency features of the layers a runtime runs, and the input element count (cached).

    Dead ops (results that never reach the output) are pruned first, then fusion is decided
    on what is left (``hwtune.predictor._features.lower``).

    Raises:
        ModelError: the model is not an ``nn.Module`` or rejects the input shape.
    """
    try:
        from torch import nn
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise ModelError("predicting a model's latency needs torch") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"predict needs a torch nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ModelError(f"input_shape must be positive integers like (1, 3, 32, 32), got {tuple(input_shape)!r}")
    plan = PrecisionPlan.coerce(precision)
    key = (structure_key(model), shape, plan, lowering)
    with _LOCK:
        hit = _FEATURE_CACHE.get(key)
        if hit is not None:
            _FEATURE_CACHE.move_to_end(key)
            return hit
    import torch

    from hwtune.predictor._liveness import dead_by_producers, dead_layer_names
    from hwtune.profiler.graph import trace_layers

    graph = trace_layers(model, torch.zeros(shape), plan)
    dead = dead_by_producers(graph.layers)
    if dead is None:
        dead = dead_layer_names(model) if graph.traced_with == "fx" else frozenset()
    feats = lower(raws_from_graph(graph.layers, dead), lowering)
    value = (feats, math.prod(shape))
    with _LOCK:
        _FEATURE_CACHE[key] = value
        while len(_FEATURE_CACHE) > _CACHE_SIZE:
            _FEATURE_CACHE.popitem(last=False)
    return value


# --------------------------------------------------------------------------------------------
# Prediction


_PROFILE_CACHE: dict[Any, Any] = {}
_PREDICTION_CACHE: OrderedDict[Any, tuple[Any, Any, Any, Prediction]] = OrderedDict()


def _load_profile_cached(device: str | Path | DeviceProfile) -> DeviceProfile:
    """``load_profile`` memoised on the file's path and modification time (TOML parsing costs ~1 ms)."""
    from hwtune.device import DeviceProfile, load_profile

    if isinstance(device, DeviceProfile):
        return device
    text = str(device)
    hit = _PROFILE_CACHE.get(text)
    if hit is not None:
        profile, mtime = hit
        try:
            if profile.path is not None and Path(profile.path).stat().st_mtime_ns == mtime and not profile.detected:
                return profile
        except OSError:
            pass
    profile = load_profile(device)
    if profile.path is not None and not profile.detected:
        _PROFILE_CACHE[text] = (profile, Path(profile.path).stat().st_mtime_ns)
    return profile


def predict_features(
    features: Sequence[LayerFeatures],
    input_elements: int,
    device: str | Path | DeviceProfile,
    *,
    precision: str | PrecisionPlan = "fp32",
    coefficients: Coefficients | None = None,
) -> Prediction:
    """Predict from already-computed layer features (what ``predict`` does after tracing)."""
    profile = _load_profile_cached(device)
    plan = PrecisionPlan.coerce(precision)
    cal = _profile_calibration(profile)
    if coefficients is not None:
        cal = _Calibrated(coefficients, "calibrated", "given", None, (), cal.lowering)
    hw = Hardware.from_profile(profile)
    terms, run_ms, io_ms = predict_terms(features, input_elements, hw, cal.coefficients)
    per_layer = tuple(
        LayerPrediction(f.name, f.op_type, f.key, f.precision, o + c + m, o, c, m)
        for f, (o, c, m) in zip(features, terms)
    )
    total = run_ms + io_ms + sum(p.latency_ms for p in per_layer)
    return Prediction(
        latency_ms=total, per_layer=per_layer, run_overhead_ms=run_ms, boundary_ms=io_ms, error_pct=cal.error_pct,
        source=_label(cal, plan), status=cal.status, method=cal.method, device=profile.id, precision=plan.label,
    )


def predict(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
) -> Prediction:
    """Predict the batch-1 latency of ``model`` on a device profile, per layer and in total.

    Args:
        model: A torch model (traced once per structure; weights do not matter).
        input_shape: Input shape including batch, e.g. ``(1, 3, 32, 32)``.
        device: A bundled profile id, a path to a profile TOML, or a ``DeviceProfile``.
        precision: ``fp32``, ``fp16``, ``int8`` or a ``PrecisionPlan`` for mixed precision.

    Returns:
        A ``Prediction``; its ``source`` says whether the profile was calibrated and with what error.

    Raises:
        ModelError: the model cannot be traced with this input shape.
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
    profile = _load_profile_cached(device)
    cal = _profile_calibration(profile)
    features, n_in = model_features(model, input_shape, precision, lowering=cal.lowering)
    # keyed on object identity (hashing the feature tuple would cost more than predicting); the
    # entry holds the features and calibration, so their ids cannot be reused while it exists
    key = (id(features), id(cal), id(profile), PrecisionPlan.coerce(precision))
    with _LOCK:
        hit = _PREDICTION_CACHE.get(key)
    if hit is not None and hit[0] is features and hit[1] is cal and hit[2] is profile:
        return hit[3]
    out = predict_features(features, n_in, profile, precision=precision)
    with _LOCK:
        _PREDICTION_CACHE[key] = (features, cal, profile, out)
        while len(_PREDICTION_CACHE) > _CACHE_SIZE:
            _PREDICTION_CACHE.popitem(last=False)
    return out


def predict_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | Path | DeviceProfile = "host",
    precision: str | PrecisionPlan = "fp32",
) -> float:
    """Predicted batch-1 latency in milliseconds (see :func:`predict` for the details).

    Example:
        >>> import torch, hwtune
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
        >>> hwtune.predict_latency(net, (1, 3, 32, 32), device="pixel-3") > 0
        True
    """
    return predict(model, input_shape, device=device, precision=precision).latency_ms


# --------------------------------------------------------------------------------------------
# Calibration entry points


@dataclass(frozen=True)
class CalibrationReport:
    """What a calibrate call wrote.

    Attributes:
        path: The profile TOML written.
        table: The ``[calibration]`` table (as written).
        heldout_pred_ms: Held-out prediction per calibration row (cross-validation / leave-one-out).
        measured_ms: Measured latency per calibration row.
        names: Row names (micro-benchmark ids or network names).
    """

    path: Path
    table: Mapping[str, Any]
    heldout_pred_ms: tuple[float, ...] = ()
    measured_ms: tuple[float, ...] = ()
    names: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "table": dict(self.table), "heldout_pred_ms": list(self.heldout_pred_ms),
                "measured_ms": list(self.measured_ms), "names": list(self.names)}


def _round(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def _coeff_tables(coeffs: Coefficients, precisions: Sequence[str]) -> dict[str, Any]:
    keys = sorted(next(iter(coeffs.ops.values()), {}).keys()) if coeffs.ops else []
    ops = {
        p: {k: {n: _round(v) for n, v in coeffs.op(k, p).to_dict().items()} for k in keys}
        for p in precisions
    }
    return {
        "run_overhead_us": {p: _round(coeffs.run_overhead_ms(p) * 1000.0) for p in precisions},
        "io_overhead_us": {p: _round(coeffs.io_overhead_ms(p) * 1000.0) for p in precisions},
        "eff_io": {p: _round(1.0 / coeffs.io_inv_eff(p)) for p in precisions},
        "coefficients": ops,
    }


def _write_profile(base: DeviceProfile, out_path: str | Path, table: Mapping[str, Any]) -> Path:
    """Copy the base profile's TOML to ``out_path`` (if different) with ``[calibration]`` replaced."""
    from hwtune.device import load_profile
    from hwtune.predictor._toml import replace_table

    if base.path is None:
        raise ConfigError(f"profile {base.id!r} has no file to copy; pass a bundled id or a .toml path as --base")
    out = Path(out_path)
    try:
        text = Path(base.path).read_text()
    except OSError as exc:
        raise ConfigError(f"{base.path}: cannot read base profile ({exc.strerror or exc})") from exc
    new_text = replace_table(text, "calibration", table)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(new_text)
    try:
        load_profile(tmp)  # never leave an unloadable profile behind
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    _COEFF_CACHE.clear()
    _CAL_BY_OBJECT.clear()
    return out


def _today() -> str:
    return time.strftime("%Y-%m-%d")


def calibrate_microbench(
    results_path: str | Path,
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    description: str | None = None,
    statistic: str = "median",
) -> CalibrationReport:
    """Fit per-op coefficients from ``scripts/profile_device.py`` results; write them into a profile.

    Args:
        results_path: The results JSON (or CSV) from ``scripts/profile_device.py``.
        base_profile: Profile whose hardware numbers (peak, bandwidth, threads) the fit uses and
            whose TOML is copied to ``out_path``.
        out_path: Profile TOML to write (may be the base profile's own file).
        description: One line for the table (default: device and date from the results).
        statistic: Which measured statistic to fit: ``median`` (quiet device) or ``min``
            (fastest run: steadier when other jobs share the machine; predictions then estimate
            the undisturbed latency). Written to the table so validation compares like with like.

    Raises:
        CalibrationError: the results file is malformed or too small.
    """
    from hwtune.device import load_profile
    from hwtune.predictor._calibrate import (
        choose_lowering,
        detect_lowering,
        fit_microbench,
        microbench_samples,
        read_microbench,
    )

    base = load_profile(base_profile)
    rows, device = read_microbench(results_path, statistic)
    hw = Hardware.from_profile(base)
    prior = _profile_calibration(base).coefficients if base.calibration and base.calibration.get("method") == "spec" else None
    lowering, pad_errors = choose_lowering(rows, hw, detect_lowering(rows), prior=prior)
    samples = microbench_samples(rows, lowering)
    y = [r["latency_ms"] for r in rows]
    fit = fit_microbench(samples, y, hw, prior=prior)
    precs = sorted({r["precision"] for r in rows})
    threads = device.get("threads")
    if threads is not None and int(threads) != base.threads:
        note = f" Measured on {threads} thread(s) but the profile runs {base.threads}: re-run with --threads {base.threads}."
    else:
        note = ""
    kinds = {"chain": 0, "block": 0}
    for r in rows:
        if r["op"] in kinds:
            kinds[r["op"]] += 1
    n_single = len(rows) - sum(kinds.values())
    table: dict[str, Any] = {
        "method": "microbench",
        "description": description or (
            f"Fitted to {len(rows)} ONNX Runtime micro-benchmarks ({n_single} single ops, {kinds['chain']} chains of "
            f"one op repeated, {kinds['block']} network blocks; scripts/profile_device.py) measured on "
            f"{device.get('cpu_model') or device.get('hostname') or 'the device'}, {threads or '?'} thread(s), "
            f"onnxruntime {device.get('runtime_version', '?')}.{note}"),
        "created": _today(),
        "source": Path(results_path).name,
        "n_samples": fit.n_samples,
        "error_pct": _round(fit.error_pct, 3),
        "within_10pct": _round(fit.within_10pct, 3),
        "spearman": _round(fit.spearman, 4),
        "validation": fit.validation + " (micro-benchmark graphs; whole-network error is measured by "
                                       "benchmarks/bench_predictor.py)",
        "precisions": precs,
        "statistic": statistic,
        **lowering.table(),
        "pad_channels_cv_error_pct": pad_errors,
    }
    if threads is not None:
        table["threads"] = int(threads)
    table.update(_coeff_tables(fit.coefficients, [p for p in base.precisions]))
    path = _write_profile(base, out_path, table)
    return CalibrationReport(path, table, fit.heldout_pred_ms, tuple(y), tuple(str(r["id"]) for r in rows))


def network_samples(
    rows: Sequence[Any], lowering: Lowering = NO_LOWERING
) -> list[tuple[tuple[LayerFeatures, ...], int]]:
    """Trace each measured network (built from its family and knobs) into features."""
    from hwtune.families import create_model

    out = []
    for r in rows:
        try:
            model = create_model(r.family, dict(r.knobs), num_classes=r.num_classes, in_channels=r.input_shape[1],
                                 input_size=r.input_shape[2])
        except ConfigError as exc:
            raise CalibrationError(f"network {r.name!r}: {exc}") from exc
        out.append(model_features(model, r.input_shape, r.precision, lowering=lowering))
    return out


def calibrate_networks(
    csv_path: str | Path,
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    description: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CalibrationReport:
    """Fit global scales (compute; overhead and memory when they earn it) from a few whole-network latencies.

    The per-op ratios stay those of the base profile's calibration (or the spec priors), so ten
    measurements are enough; the error written is leave-one-out over those measurements.

    Args:
        csv_path: Measurements, one network per row (see ``read_networks_csv`` for columns).
        base_profile: Profile to start from (hardware numbers, prior coefficients, TOML to copy).
        out_path: Profile TOML to write.
        description: One line for the table.
        extra: More keys for the table (e.g. a held-out validation summary).

    Raises:
        CalibrationError: the CSV is malformed, has too few rows, or a network cannot be built.
    """
    from hwtune.device import load_profile
    from hwtune.predictor._calibrate import fit_scales, read_networks_csv

    base = load_profile(base_profile)
    rows = read_networks_csv(csv_path)
    prior_cal = _profile_calibration(base)
    samples = network_samples(rows, prior_cal.lowering)
    hw = Hardware.from_profile(base)
    # networks calibration refines a micro-benchmark fit when there is one; never compounds scales
    prior = prior_cal.coefficients if prior_cal.method == "microbench" else Coefficients.spec()
    fit = fit_scales(samples, [r.latency_ms for r in rows], hw, prior=prior)
    precs = sorted({r.precision for r in rows})
    table: dict[str, Any] = {
        "method": "networks",
        "description": description or (
            f"Global scales ({', '.join(fit.selected)}) fitted to {len(rows)} whole-network measurements ({Path(csv_path).name}) over "
            f"{'micro-benchmark' if prior is not Coefficients.spec() and prior_cal.method == 'microbench' else 'spec'} "
            "per-op priors."),
        "created": _today(),
        "source": Path(csv_path).name,
        "n_samples": fit.n_samples,
        "error_pct": _round(fit.error_pct, 3),
        "within_10pct": _round(fit.within_10pct, 3),
        "spearman": _round(fit.spearman, 4),
        "validation": fit.validation,
        "precisions": precs,
        "scales": {k: _round(v) for k, v in (fit.scales or {}).items()},
        "scales_fitted": list(fit.selected),
    }
    if prior_cal.lowering != NO_LOWERING:  # the runtime's fusions and channel blocks stay those measured
        table.update(prior_cal.lowering.table())
    table.update(dict(extra or {}))
    table.update(_coeff_tables(fit.coefficients, list(base.precisions)))
    path = _write_profile(base, out_path, table)
    return CalibrationReport(path, table, fit.heldout_pred_ms, tuple(r.latency_ms for r in rows),
                             tuple(r.name for r in rows))


def calibrate_spec(
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    error_pct: float | None = None,
    description: str | None = None,
) -> CalibrationReport:
    """Write the generic spec-derived coefficients (no measurements) into a profile.

    Predictions for such a profile are labelled ``estimated (spec-derived ...)``; ``error_pct``
    (when given) is the typical error of spec coefficients measured on other devices.
    """
    from hwtune.device import load_profile

    base = load_profile(base_profile)
    table: dict[str, Any] = {
        "method": "spec",
        "description": description or (
            "Generic CPU priors (hwtune.predictor._model.SPEC_PRIORS) over this profile's datasheet peak throughput "
            "and bandwidth; no measurements on this device."),
        "created": _today(),
        "n_samples": 0,
    }
    if error_pct is not None:
        table["error_pct"] = _round(float(error_pct), 3)
        table["validation"] = "typical error of uncalibrated spec coefficients on measured devices (benchmarks/bench_predictor.py)"
    table.update(_coeff_tables(Coefficients.spec(), list(base.precisions)))
    return CalibrationReport(_write_profile(base, out_path, table), table)



