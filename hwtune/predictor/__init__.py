"""Latency prediction for devices you do not have, with its error bars.

``predict`` lowers the model to the layers a runtime runs -- from its module structure, without
tracing (``_structure.py``; a module the structural lowering does not cover is traced once per
structure with ``hwtune.graph.trace_layers``) -- and evaluates the profile's latency model:

* a profile calibrated from a few whole-network measurements (``hwtune calibrate --networks``)
  holds the latency direction of the reference device (``_prior.py``: learned across 25 measured
  device settings) that beat FLOPs leave-one-out on those rows, refitted to them -- or the
  FLOPs-proportional form when none did (``_forms.py`` holds the forms); ``hwtune calibrate
  --suggest N`` says which networks to measure (``_suggest.py``);
* a profile calibrated from micro-benchmarks holds the per-op roofline (``_model.py``);
* a spec-only profile holds the mean CPU/phone direction of the prior priced at its datasheet
  peak, and states its rank correlation and error measured leave-device-out.

Every number comes with the profile's stated error, its rank correlation and FLOPs' rank
correlation on the same rows (:func:`predict_latency_detail` returns a :class:`LatencyPrediction`);
a profile without any calibration gets the uncalibrated roofline, labelled
``estimated (roofline, uncalibrated)``.

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
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import ModelError
from hwtune.precision import PrecisionPlan
from hwtune.predictor._calibration_api import (
    CalibrationReport,
    calibrate_microbench,
    calibrate_networks,
    calibrate_spec,
)
from hwtune.predictor._features import NO_LOWERING, LayerFeatures, Lowering, RawLayer, lower, raws_from_graph
from hwtune.predictor._forms import base_vector, layer_split
from hwtune.predictor._model import Coefficients, Hardware, predict_terms
from hwtune.predictor._prediction import LatencyPrediction, LayerPrediction, PredictedMilliseconds, Prediction
from hwtune.predictor._prior import DevicePrior, load_prior
from hwtune.predictor._profile_cal import (
    UNCALIBRATED_LABEL,
    ProfileCalibration,
    label,
    load_profile_cached,
    profile_calibration,
)
from hwtune.predictor._structure import StructureUnsupported, module_attrs, raws_from_structure
from hwtune.predictor._suggest import Suggestion, suggest_networks

if TYPE_CHECKING:
    from torch import nn

    from hwtune.device import DeviceProfile

__all__ = [
    "UNCALIBRATED_LABEL",
    "CalibrationReport",
    "DevicePrior",
    "LatencyPrediction",
    "LayerPrediction",
    "Prediction",
    "Suggestion",
    "calibrate_microbench",
    "calibrate_networks",
    "calibrate_spec",
    "load_prior",
    "model_features",
    "predict",
    "predict_features",
    "predict_latency",
    "predict_latency_detail",
    "profile_coefficients",
    "structure_key",
    "suggest_networks",
]


def profile_coefficients(device: str | Path | DeviceProfile) -> Coefficients:
    """The per-op roofline coefficients of a profile (spec priors when it has none)."""
    from hwtune.device import load_profile

    return profile_calibration(load_profile(device)).coefficients


# --------------------------------------------------------------------------------------------
# Features

_FEATURE_CACHE: OrderedDict[Any, tuple[tuple[LayerFeatures, ...], int]] = OrderedDict()
_UNIT_CACHE: OrderedDict[Any, list[RawLayer]] = OrderedDict()
_CACHE_SIZE = 512
_LOCK = threading.Lock()
_KEYS_BY_MODEL: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
# model object -> {(shape, plan, lowering): features}; a new object is lowered from structure
_BY_MODEL: weakref.WeakKeyDictionary[Any, dict[Any, tuple[tuple[LayerFeatures, ...], int]]] = \
    weakref.WeakKeyDictionary()


def structure_key(model: nn.Module) -> tuple[int, int]:
    """What determines a model's traced layers: its module tree and plain-Python attributes.

    Every module contributes its name, class, whether it has a bias, and its hyperparameters
    (``hwtune.predictor._structure.module_attrs``: ``__constants__`` of built-in torch modules,
    plain attributes of other classes, such as a NAS cell's edge list, which ``repr`` would not
    show). Weights are not part of the key. The key is the hash of all that plus the module
    count, computed once per model object (kept in a weak map), so a model mutated in place
    after its first prediction keeps its old key.
    """
    try:
        return _KEYS_BY_MODEL[model]
    except (KeyError, TypeError):
        pass
    parts: list[Any] = []
    stack: list[tuple[str, Any]] = [("", model)]
    while stack:
        name, mod = stack.pop()
        d = mod.__dict__
        params = d.get("_parameters") or {}
        parts.append((name, type(mod), params.get("bias") is not None, module_attrs(mod)))
        children = d.get("_modules")
        if children:
            prefix = name + "." if name else ""
            stack.extend((prefix + k, c) for k, c in reversed(children.items()) if c is not None)
    flat = tuple(parts)
    try:
        key = (hash(flat), len(flat))
    except TypeError:  # an unhashable hyperparameter (a list in a torch module): hash its repr
        key = (hash(repr(flat)), len(flat))
    try:
        _KEYS_BY_MODEL[model] = key
    except TypeError:  # not weak-referenceable: just do not remember it
        pass
    return key


def _traced_graph(model: nn.Module, shape: tuple[int, ...], plan: PrecisionPlan) -> Any:
    import torch

    from hwtune.graph import trace_layers

    return trace_layers(model, torch.zeros(shape), plan)


def _trace_unit(mod: nn.Module, shape: tuple[int, ...], plan: PrecisionPlan) -> list[RawLayer]:
    """One module the structural lowering does not cover, traced once per structure and shape."""
    key = (structure_key(mod), shape, plan)
    with _LOCK:
        hit = _UNIT_CACHE.get(key)
    if hit is None:
        hit = raws_from_graph(_traced_graph(mod, shape, plan).layers)
        with _LOCK:
            _UNIT_CACHE[key] = hit
            while len(_UNIT_CACHE) > _CACHE_SIZE:
                _UNIT_CACHE.popitem(last=False)
    return hit


def _features_by_trace(
    model: nn.Module, shape: tuple[int, ...], plan: PrecisionPlan, lowering: Lowering
) -> tuple[tuple[LayerFeatures, ...], int]:
    from hwtune.predictor._liveness import dead_by_producers, dead_layer_names

    key = (structure_key(model), shape, plan, lowering)
    with _LOCK:
        hit = _FEATURE_CACHE.get(key)
        if hit is not None:
            _FEATURE_CACHE.move_to_end(key)
            return hit
    graph = _traced_graph(model, shape, plan)
    dead: frozenset[str] | None = frozenset()
    if not lowering.eager:
        dead = dead_by_producers(graph.layers)
        if dead is None:
            dead = dead_layer_names(model) if graph.traced_with == "fx" else frozenset()
    value = (lower(raws_from_graph(graph.layers, dead), lowering), math.prod(shape))
    with _LOCK:
        _FEATURE_CACHE[key] = value
        while len(_FEATURE_CACHE) > _CACHE_SIZE:
            _FEATURE_CACHE.popitem(last=False)
    return value


def model_features(
    model: nn.Module,
    input_shape: Sequence[int],
    precision: str | PrecisionPlan = "fp32",
    *,
    lowering: Lowering = NO_LOWERING,
) -> tuple[tuple[LayerFeatures, ...], int]:
    """Latency features of the layers a runtime runs, and the input element count (cached).

    Lowered from the module structure (no trace; ``_structure.py``), or traced when the
    structure uses something the structural lowering does not cover. Dead ops (results that
    never reach the output) are pruned first unless ``lowering.eager``, then fusion is decided on
    what is left (``hwtune.predictor._features.lower``).

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
    key = (shape, plan, lowering)
    try:
        per_model = _BY_MODEL.get(model)
    except TypeError:
        per_model = None
    if per_model is not None and key in per_model:
        return per_model[key]
    try:
        raws = raws_from_structure(model, shape, plan, prune=not lowering.eager, trace_unit=_trace_unit)
    except StructureUnsupported:
        value = _features_by_trace(model, shape, plan, lowering)
    else:
        value = (lower(raws, lowering), math.prod(shape))
    try:
        _BY_MODEL.setdefault(model, {})[key] = value
    except TypeError:  # not weak-referenceable
        pass
    return value


# --------------------------------------------------------------------------------------------
# Prediction

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
    with _LOCK:
        hit = _PREDICTION_CACHE.get(key)
    if hit is not None and hit[0] is features and hit[1] is cal and hit[2] is profile:
        return hit[3]
    out = predict_features(features, n_in, profile, precision=precision, batch_size=int(input_shape[0]))
    with _LOCK:
        _PREDICTION_CACHE[key] = (features, cal, profile, out)
        while len(_PREDICTION_CACHE) > _CACHE_SIZE:
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
