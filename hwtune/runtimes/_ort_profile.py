"""ONNX Runtime's per-op times: its profiler's kernel events, and their attribution to traced layers."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hwtune._tempdirs import work_dir
from hwtune.onnx_export import clean_node_name, onnx_node_module
from hwtune.runtimes._timing import OpTime

__all__ = ["attribute_op_times", "collect_op_times"]

# ORT op type -> the canonical op types (hwtune.graph.CANONICAL_OPS) a layer of that kind has.
_ORT_TO_CANONICAL = {
    "Conv": ("conv", "dwconv", "pwconv"),
    "FusedConv": ("conv", "dwconv", "pwconv"),
    "Gemm": ("linear",),
    "MatMul": ("matmul", "linear"),
    "FusedMatMul": ("matmul", "linear"),
    "Add": ("add",),
    "Sum": ("add",),
    "Mul": ("mul",),
    "Concat": ("cat",),
    "Relu": ("relu",),
    "Clip": ("relu6",),
    "HardSwish": ("hardswish",),
    "Sigmoid": ("sigmoid",),
    "MaxPool": ("maxpool",),
    "AveragePool": ("avgpool",),
    "GlobalAveragePool": ("gap",),
    "ReduceMean": ("gap",),
    "Flatten": ("flatten",),
    "Reshape": ("flatten",),
    "Softmax": ("softmax",),
    "BatchNormalization": ("bn",),
}


def collect_op_times(
    session_for: Callable[[Path], Any],
    feed_for: Callable[[Any], dict[str, Any]],
    *,
    runs: int = 20,
    warmup_runs: int = 3,
) -> list[OpTime]:
    """Per-node times from ONNX Runtime's profiler (median over ``runs``), in execution order.

    Args:
        session_for: Builds a profiling session whose trace file starts with the given prefix.
        feed_for: The input feed for that session.
        runs: Profiled runs the medians are over (after ``warmup_runs`` dropped runs).

    Node names are those of the optimized graph: fused nodes are named after their fused output, e.g.
    ``/features/features.0/features.0.2/Clip`` for conv+bn+relu6 (see :func:`attribute_op_times`).
    """
    with work_dir("ortprof") as tmp:
        session = session_for(Path(tmp) / "ort")
        feed = feed_for(session)
        for _ in range(max(warmup_runs, 0)):
            session.run(None, feed)
        for _ in range(max(runs, 1)):
            session.run(None, feed)
        trace_file = session.end_profiling()
        events = json.loads(Path(trace_file).read_text())
        try:
            os.remove(trace_file)
        except OSError:
            pass
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        durations.setdefault(name, []).append(float(ev.get("dur", 0)) / 1000.0)
        op_types.setdefault(name, str((ev.get("args") or {}).get("op_name", "")))
    total_runs = max(warmup_runs, 0) + max(runs, 1)
    out = []
    for name, ds in durations.items():
        timed = ds[-runs:] if len(ds) >= total_runs else ds  # drop warm-up runs
        out.append(
            OpTime(node=name, op_type=op_types[name], median_ms=float(statistics.median(timed)), runs=len(timed))
        )
    return out


def attribute_op_times(layers: Sequence[Any], op_times: Sequence[OpTime]) -> tuple[dict[str, float], float]:
    """Map ONNX Runtime node times onto traced layers (``hwtune.graph.LayerInfo``).

    A node whose (cleaned) name equals a layer name goes to that layer (models given as ONNX files).
    Otherwise the node's module path picks the layer: the module's own layer, or a functional layer
    in that module with a matching op type; a layer that is ``fused_into`` another hands its time to
    that one (ORT names a fused conv+bn+relu6 after the relu6). Layout reorders and copies that belong
    to no layer are returned as the unattributed remainder.

    Returns:
        (ms per layer name, unattributed ms).
    """
    by_name = {layer.name: layer for layer in layers}
    by_module: dict[str, list[Any]] = {}
    for layer in layers:
        by_module.setdefault(layer.module, []).append(layer)
    times: dict[str, float] = {}
    taken: set[str] = set()
    unattributed = 0.0
    for op in op_times:
        layer = by_name.get(clean_node_name(op.node)) or by_name.get(op.node)
        if layer is None:
            layer = _layer_of_module(op, by_module, taken)
        if layer is None:
            unattributed += op.median_ms
            continue
        taken.add(layer.name)
        while getattr(layer, "fused_into", None) and layer.fused_into in by_name:
            layer = by_name[layer.fused_into]
        times[layer.name] = times.get(layer.name, 0.0) + op.median_ms
    return times, unattributed


def _layer_of_module(op: OpTime, by_module: dict[str, list[Any]], taken: set[str]) -> Any:
    """The layer of the module an ORT node's name encodes: the module itself, else an untaken layer of that kind."""
    module = onnx_node_module(op.node)
    candidates = by_module.get(module, []) if module else []
    own = [c for c in candidates if c.name == module]
    if own:
        return own[0]
    kinds = _ORT_TO_CANONICAL.get(op.op_type, ())
    matching = [c for c in candidates if c.op_type in kinds and c.name not in taken]
    return matching[0] if matching else None
