"""Moved to :mod:`hwtune.graph` (the tracer is shared by the predictor, runtimes and profiler);
this module re-exports it so imports written against hwtune 0.1 keep working."""

from __future__ import annotations

from hwtune.graph import (
    CANONICAL_OPS,
    FUSABLE_ACTIVATIONS,
    INT8_BIAS_BYTES,
    INT8_SCALE_BYTES,
    INT8_ZERO_POINT_BYTES,
    LayerGraph,
    LayerInfo,
    check_input,
    liveness_peak,
    trace_layers,
    weight_storage_bytes,
)

__all__ = [
    "CANONICAL_OPS",
    "FUSABLE_ACTIVATIONS",
    "INT8_BIAS_BYTES",
    "INT8_SCALE_BYTES",
    "INT8_ZERO_POINT_BYTES",
    "LayerGraph",
    "LayerInfo",
    "check_input",
    "liveness_peak",
    "trace_layers",
    "weight_storage_bytes",
]
