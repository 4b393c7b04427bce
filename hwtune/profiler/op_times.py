"""Where does int8 win or lose? Per-op kernel times of two models, lined up per node of the exported graph.

:func:`compare_op_times` profiles both models with their runtime's per-op profiler;
:func:`line_up_op_times` maps each kernel (ONNX Runtime renames what it fuses) back to the exported
fp32 node it runs, and sums the rest into overhead categories. A node's kind and MACs are the ones
the profiler's layer table gives it (:data:`hwtune.graph.ONNX_OPS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import ConfigError
from hwtune.graph import OnnxOp, load_onnx
from hwtune.onnx_export import onnx_node_module
from hwtune.runtimes import OpTime, runtime_for_file

if TYPE_CHECKING:
    import onnx

__all__ = ["OpTimeComparison", "OpTimeDiff", "compare_op_times", "line_up_op_times"]


@dataclass(frozen=True)
class OpTimeDiff:
    """Kernel time of one exported compute node (or one overhead category) in two models.

    ``name`` is the node name in the exported fp32 graph (or a category such as
    ``"quantize/dequantize"``); ``kind`` is ``conv``, ``dwconv``, ``pwconv``, ``linear``,
    ``matmul`` or the category. Times are median milliseconds per inference; 0.0 when absent.
    """

    name: str
    module: str
    kind: str
    macs: int
    base_ms: float
    other_ms: float

    @property
    def speedup(self) -> float:
        """``base_ms / other_ms`` (>1: the second model is faster here); inf when other is 0."""
        return self.base_ms / self.other_ms if self.other_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        speedup = self.speedup
        return {
            "name": self.name,
            "module": self.module,
            "kind": self.kind,
            "macs": self.macs,
            "base_ms": round(self.base_ms, 4),
            "other_ms": round(self.other_ms, 4),
            "speedup": round(speedup, 3) if math.isfinite(speedup) else None,
        }


@dataclass(frozen=True)
class OpTimeComparison:
    """Per-node kernel times of a base model (usually fp32) against another (usually int8).

    Attributes:
        base_label, other_label: what the two models are (``"fp32"``, ``"int8"``).
        rows: one :class:`OpTimeDiff` per exported compute node, plus one per overhead category
            (``quantize/dequantize``, ``layout`` (NCHW<->NHWC/NCHWc reorders), ``add``,
            ``other``) — the time int8 spends outside the integer kernels.
        base_total_ms, other_total_ms: summed kernel time per inference (excludes session
            overhead, so below the measured latency).
        runs: profiled inferences per model; threads: intra-op threads.

    ORT fuses differently in the two graphs: a residual ``Add`` (and ReLU/Clip) is folded into
    the fp32 NCHWc convolution but runs as ``QLinearAdd`` in int8, so "add" time shows up on the
    int8 side only. Compare per-kind totals (:meth:`by_kind`) as well as single rows.
    """

    base_label: str
    other_label: str
    rows: tuple[OpTimeDiff, ...]
    base_total_ms: float
    other_total_ms: float
    runs: int
    threads: int

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Summed ``base_ms``/``other_ms``/``speedup`` per kind (``conv``, ``dwconv``, ``add`` ...)."""
        out: dict[str, dict[str, float]] = {}
        for row in self.rows:
            acc = out.setdefault(row.kind, {"base_ms": 0.0, "other_ms": 0.0, "count": 0})
            acc["base_ms"] += row.base_ms
            acc["other_ms"] += row.other_ms
            acc["count"] += 1
        for acc in out.values():
            acc["speedup"] = acc["base_ms"] / acc["other_ms"] if acc["other_ms"] > 0 else math.inf
        return out

    def losers(self, *, min_ms: float = 0.0) -> list[OpTimeDiff]:
        """Rows where the second model is slower (most time lost first); ``min_ms`` drops tiny ones."""
        slow = [r for r in self.rows if r.other_ms > r.base_ms and r.other_ms - r.base_ms >= min_ms]
        return sorted(slow, key=lambda r: r.base_ms - r.other_ms)

    def to_dict(self) -> dict[str, Any]:
        kinds = {
            k: {kk: (round(v, 4) if math.isfinite(v) else None) for kk, v in acc.items()}
            for k, acc in self.by_kind().items()
        }
        return {
            "base_label": self.base_label,
            "other_label": self.other_label,
            "runs": self.runs,
            "threads": self.threads,
            "base_total_ms": round(self.base_total_ms, 4),
            "other_total_ms": round(self.other_total_ms, 4),
            "by_kind": kinds,
            "rows": [r.to_dict() for r in self.rows],
        }


_COMPUTE_KERNELS = {
    "Conv",
    "FusedConv",
    "NchwcConv",
    "QLinearConv",
    "ConvInteger",
    "Gemm",
    "FusedGemm",
    "QGemm",
    "MatMul",
    "FusedMatMul",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "ConvTranspose",
}
_QDQ_KERNELS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_LAYOUT_KERNELS = {"Transpose", "ReorderInput", "ReorderOutput"}


def _graph_index(model: onnx.ModelProto) -> tuple[dict[str, Any], dict[str, Any], dict[str, OnnxOp]]:
    """Nodes by name, producers by tensor, and what the op table says about each compute node.

    Kind and MACs come from :data:`hwtune.graph.ONNX_OPS` (the tracer's table) with the input's
    symbolic batch as 1; a graph shape inference cannot read gets kinds and MACs 0.
    """
    from hwtune.errors import HwtuneError
    from hwtune.graph import OnnxTensors, compute_nodes, infer_tensors, onnx_input_shape

    try:
        shape = tuple(1 if d is None else d for d in onnx_input_shape(model))
        graph, tensors = infer_tensors(model, shape, "reference graph")
    except HwtuneError:  # shape inference only feeds MAC counts; without it they are 0
        graph, tensors = model.graph, OnnxTensors.of(model.graph)
    nodes = {n.name: n for n in model.graph.node if n.name}
    producer = {out: n for n in model.graph.node for out in n.output}
    return nodes, producer, compute_nodes(graph.node, tensors)


def _resolve_compute(
    event_name: str, op_name: str, nodes: Mapping[str, Any], producer: Mapping[str, Any], compute: Mapping[str, OnnxOp]
) -> str | None:
    """Name of the exported compute node an ORT kernel event belongs to, or None.

    ORT renames what it fuses: QDQ groups become ``<conv>_token_<n>`` (QLinearConv), NCHWc convs
    are named after their output tensor plus ``_nchwc`` (the tensor of the ReLU/Clip/Add fused
    into them). Strip those suffixes, then walk back from a fused activation to its conv.
    """
    import re

    name = event_name
    for _ in range(3):
        if name in nodes or name in producer:
            break
        name = re.sub(r"(_token_\d+|_nchwc|_fused|_quant)$", "", name)
    node = nodes.get(name) or producer.get(name)
    if node is None:
        return None
    if op_name not in _COMPUTE_KERNELS:
        return node.name if node.name in compute else None
    seen = 0
    while node is not None and node.name not in compute and seen < 6:
        # prefer the input produced directly by a compute node (a residual Add's other input
        # is the skip path)
        ins = [producer.get(i) for i in node.input if i in producer]
        direct = [p for p in ins if p is not None and p.name in compute]
        node = direct[0] if direct else (ins[0] if ins else None)
        seen += 1
    return node.name if node is not None and node.name in compute else None


def line_up_op_times(
    reference: str | Path | onnx.ModelProto,
    base_ops: Sequence[OpTime],
    other_ops: Sequence[OpTime],
    *,
    runs: int,
    threads: int,
    labels: tuple[str, str] = ("fp32", "int8"),
) -> OpTimeComparison:
    """Line up ONNX Runtime kernel times of two models per node of the exported fp32 graph.

    Used to answer "where is int8 not faster, and which ops lose": conv kernels that got slower,
    and the int8-only overheads (Quantize/DequantizeLinear, layout Transposes, QLinearAdd).
    The times come from a runtime's profiler (``get_runtime("onnxruntime").op_times``);
    :func:`compare_op_times` measures both models and calls this.

    Args:
        reference: the exported fp32 graph whose node names the rows use.
        base_ops, other_ops: per-op median times of the two models (e.g. fp32 and its int8 QDQ version).
        runs: profiled inferences per model; threads: intra-op threads (both recorded in the result).
        labels: names for the two models in the result.
    """
    ref = reference if not isinstance(reference, (str, Path)) else load_onnx(reference)
    nodes, producer, compute = _graph_index(ref)
    totals: list[dict[str, float]] = []
    for ops in (base_ops, other_ops):
        acc: dict[str, float] = {}
        for op in ops:
            key = _resolve_compute(op.node, op.op_type, nodes, producer, compute) or _overhead_category(op.op_type)
            acc[key] = acc.get(key, 0.0) + op.median_ms
        totals.append(acc)
    order = [n for n in compute if n in totals[0] or n in totals[1]]
    categories = ["quantize/dequantize", "layout", "add", "unmatched compute", "other"]
    rows = [
        OpTimeDiff(
            name=n,
            module=onnx_node_module(n),
            kind=compute[n].op_type,
            macs=compute[n].macs,
            base_ms=totals[0].get(n, 0.0),
            other_ms=totals[1].get(n, 0.0),
        )
        for n in order
    ]
    rows += [
        OpTimeDiff(name=c, module="", kind=c, macs=0, base_ms=totals[0].get(c, 0.0), other_ms=totals[1].get(c, 0.0))
        for c in categories
        if c in totals[0] or c in totals[1]
    ]
    return OpTimeComparison(
        base_label=labels[0],
        other_label=labels[1],
        rows=tuple(rows),
        base_total_ms=sum(totals[0].values()),
        other_total_ms=sum(totals[1].values()),
        runs=runs,
        threads=threads,
    )


def _overhead_category(op_type: str) -> str:
    """Where a kernel that belongs to no exported compute node goes."""
    if op_type in _QDQ_KERNELS:
        return "quantize/dequantize"
    if op_type in _LAYOUT_KERNELS:
        return "layout"
    if op_type in ("Add", "QLinearAdd", "Sum"):
        return "add"
    if op_type in _COMPUTE_KERNELS:
        return "unmatched compute"
    return "other"


def compare_op_times(
    base_path: str | Path,
    other_path: str | Path,
    example: Any,
    *,
    threads: int = 1,
    runs: int = 20,
    warmup: int = 3,
    reference_path: str | Path | None = None,
    labels: tuple[str, str] = ("fp32", "int8"),
) -> OpTimeComparison:
    """Profile two models with their runtime's per-op profiler and line their times up per exported node.

    Answers "where is int8 not faster, and which ops lose": conv kernels that got slower, and the
    int8-only overheads (Quantize/DequantizeLinear, layout Transposes, QLinearAdd). The runtime is the
    one that runs ``base_path`` (``.onnx`` -> ``onnxruntime``); the line-up is
    :func:`line_up_op_times`.

    Args:
        base_path, other_path: e.g. the fp32 export and its int8 QDQ version.
        example: one input batch (float32 ``(N, C, H, W)``).
        threads: intra-op threads (1 matches hwtune's host latency measurements).
        runs: profiled inferences per model (times are per-node medians).
        warmup: runs dropped before the counted ones.
        reference_path: the exported fp32 graph whose node names rows use; default ``base_path``.
        labels: names for the two models in the result.

    Raises:
        ConfigError: The runtime has no per-op profiler.
    """
    import numpy as np

    x = np.ascontiguousarray(example, dtype=np.float32)
    per_model = []
    for path in (base_path, other_path):
        rt = runtime_for_file(path)
        ops = rt.op_times(Path(path), x, threads=threads, runs=runs, warmup_runs=warmup)
        if ops is None:
            raise ConfigError(f"{path}: runtime {rt.name!r} reports no per-op times, so they cannot be compared")
        per_model.append(ops)
    return line_up_op_times(
        reference_path or base_path, per_model[0], per_model[1], runs=runs, threads=threads, labels=labels
    )
