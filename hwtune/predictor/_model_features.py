"""The latency features of a torch model: lowered from its module structure, or traced; cached.

``model_features`` is what every prediction and calibration starts from: the structural lowering
(``_structure.py``, no trace) when it covers the model, else one ``hwtune.graph.trace_layers``
trace with dead ops pruned (``_dead_ops.py``); a module the structural lowering does not cover is
traced once per structure (``structure_key``) and shape. Results are cached per model object and
per structure.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwtune.errors import ModelError
from hwtune.precision import PrecisionPlan
from hwtune.predictor._dead_ops import dead_by_producers, dead_layer_names
from hwtune.predictor._features import NO_LOWERING, LayerFeatures, Lowering, RawLayer, lower, raws_from_graph
from hwtune.predictor._structure import StructureUnsupported, module_attrs, raws_from_structure

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CACHE_LOCK", "CACHE_SIZE", "model_features", "structure_key"]

_FEATURE_CACHE: OrderedDict[Any, tuple[tuple[LayerFeatures, ...], int]] = OrderedDict()
_UNIT_CACHE: OrderedDict[Any, list[RawLayer]] = OrderedDict()
CACHE_SIZE = 512
CACHE_LOCK = threading.Lock()
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
    with CACHE_LOCK:
        hit = _UNIT_CACHE.get(key)
    if hit is None:
        hit = raws_from_graph(_traced_graph(mod, shape, plan).layers)
        with CACHE_LOCK:
            _UNIT_CACHE[key] = hit
            while len(_UNIT_CACHE) > CACHE_SIZE:
                _UNIT_CACHE.popitem(last=False)
    return hit


def _features_by_trace(
    model: nn.Module, shape: tuple[int, ...], plan: PrecisionPlan, lowering: Lowering
) -> tuple[tuple[LayerFeatures, ...], int]:
    key = (structure_key(model), shape, plan, lowering)
    with CACHE_LOCK:
        hit = _FEATURE_CACHE.get(key)
        if hit is not None:
            _FEATURE_CACHE.move_to_end(key)
            return hit
    graph = _traced_graph(model, shape, plan)
    dead: frozenset[str] = frozenset()
    if not lowering.eager:
        by_producers = dead_by_producers(graph.layers)
        if by_producers is not None:
            dead = by_producers
        elif graph.traced_with == "fx":
            dead = dead_layer_names(model)
    value = (lower(raws_from_graph(graph.layers, dead), lowering), math.prod(shape))
    with CACHE_LOCK:
        _FEATURE_CACHE[key] = value
        while len(_FEATURE_CACHE) > CACHE_SIZE:
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
