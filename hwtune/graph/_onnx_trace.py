"""Layer facts and activation liveness of an ONNX file: the same ``LayerGraph`` :func:`trace_layers` gives.

Shapes come from ONNX shape inference with the input dims fixed; op types, geometry and MACs from the op
table (:mod:`hwtune.graph._onnx_ops`); params from the initializers the nodes read (through
DequantizeLinear in QDQ graphs); fusion and ``LayerInfo`` assembly are the torch tracer's
(:mod:`hwtune.graph._assemble`); peak activations follow the same liveness rule walked over the ONNX
graph in its (topological) node order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._util import first_line
from hwtune.errors import ModelError
from hwtune.graph._assemble import NO_ROLES, LayerRecord, fusions, layer_infos
from hwtune.graph._layers import COMPUTE_OPS, LayerGraph, scaled_nbytes
from hwtune.graph._liveness import liveness_peak
from hwtune.graph._onnx_file import graph_input, load_onnx, resolve_shape
from hwtune.graph._onnx_ops import OnnxTensors, onnx_op
from hwtune.onnx_export import onnx_node_module
from hwtune.precision import PrecisionPlan

if TYPE_CHECKING:
    import onnx

__all__ = ["infer_tensors", "trace_onnx"]

# Ops whose output is a view / the same buffer as their first input in every runtime hwtune targets.
_ALIAS_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
# Ops that only compute shapes or constants: not layers, no activation buffers.
_SHAPE_OPS = {"Constant", "Shape", "ConstantOfShape", "Size"}


@dataclass
class _Node:
    """The ONNX side of one record: its tensors, for liveness."""

    outs: list[str]
    data_inputs: list[str]


def trace_onnx(
    path: str | Path, input_shape: Sequence[int] | None = None, plan: PrecisionPlan | str = "fp32"
) -> LayerGraph:
    """Per-node layer facts and peak activation bytes of an ONNX model.

    Args:
        path: The ``.onnx`` file.
        input_shape: Input shape (batch included); default: the declared one with a symbolic batch as 1.
        plan: Precision for byte accounting (node -> module path from the exporter's scope names).

    Raises:
        ModelError: Unreadable file, or an input shape the model does not accept.
        ConfigError: No input shape given and the declared one is symbolic beyond the batch.
    """
    plan = PrecisionPlan.coerce(plan)
    src = str(path)
    model = load_onnx(path)
    shape = resolve_shape(model, input_shape, src)
    g, t = infer_tensors(model, shape, src)
    records, nodes = _records(g, t)
    fused = fusions(records)
    precisions = [plan.for_module(r.module) for r in records]
    input_name = graph_input(model).name
    outputs = {o.name for o in g.output}
    in_prec = next((precisions[j] for j, n in enumerate(nodes) if input_name in n.data_inputs), plan.default)
    sized = _buffers(records, nodes, fused, input_name, in_prec, precisions, outputs, t)
    end = len(records) + 2
    peak, peak_step = liveness_peak(sized, None, end)
    # Unfused variant: every non-alias op materialises its output, at its own precision.
    peak_u, _ = liveness_peak(_buffers(records, nodes, None, input_name, in_prec, precisions, outputs, t), None, end)
    layers = layer_infos(records, precisions, fused, with_producers=False)
    return LayerGraph(
        layers=tuple(layers),
        input_shape=shape,
        peak_activation_bytes=int(peak),
        peak_activation_bytes_unfused=int(peak_u),
        peak_layer=layers[peak_step - 1].name if 1 <= peak_step <= len(layers) else "",
        input_bytes=int(sized[input_name][0]),
        total_macs=int(sum(layer.macs for layer in layers)),
        total_params=int(sum(layer.params for layer in layers)),
        total_weight_bytes=int(sum(layer.weight_bytes for layer in layers)),
        traced_with="onnx",
        notes=(),
    )


def infer_tensors(model: onnx.ModelProto, shape: Sequence[int] | None, src: str) -> tuple[Any, OnnxTensors]:
    """Shape inference with the graph input fixed to ``shape`` (None: as declared): the graph and its tensors."""
    import onnx
    from onnx import shape_inference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    if shape is not None:
        name = graph_input(model).name
        for inp in fixed.graph.input:
            if inp.name == name:
                for d, s in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
                    d.Clear()
                    d.dim_value = s
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError
        shown = "x".join(map(str, shape)) if shape is not None else "as declared"
        raise ModelError(f"{src}: shape inference failed for input {shown}: {first_line(exc)}") from exc
    tensors = OnnxTensors.of(inferred.graph)
    if shape is not None and _fold_shape_inputs(fixed, inferred.graph, tensors, shape):
        with contextlib.suppress(Exception):  # the folded graph is only better informed; keep the first on failure
            inferred = shape_inference.infer_shapes(fixed, data_prop=True)
            tensors = OnnxTensors.of(inferred.graph)
    return inferred.graph, tensors


def _fold_shape_inputs(model: onnx.ModelProto, g: Any, t: OnnxTensors, shape: Sequence[int]) -> bool:
    """Give computed integer inputs (Reshape targets, Slice bounds) as constants where shape inference lost them.

    ONNX's data propagation stops at ops such as Div and Cast, which exporters use to compute a
    channel shuffle's target shape or a ``chunk``'s bounds from ``Shape``; every shape after it, and so
    the MACs of every conv after it, would be unknown. With the input shape fixed those values are
    constants: one ONNX Runtime run on zeros computes them, and their consumers read them as
    initializers. Returns True when anything was folded.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    int64 = onnx.TensorProto.INT64
    wanted = sorted({
        i for n in g.node if n.output and t.shapes.get(n.output[0]) is None and t.elem.get(n.output[0]) != int64
        for i in n.input if i and i not in t.inits and t.elem.get(i) == int64
    })  # fmt: skip
    if not wanted:
        return False
    try:
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, int64, None) for n in wanted)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros(shape, dtype=np.float32) for i in sess.get_inputs()[:1]}
        values = dict(zip(wanted, sess.run(wanted, feed), strict=True))
    except Exception:  # noqa: BLE001 - no runtime, or it cannot run the graph: shapes stay unknown
        return False
    for name, value in values.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"{name}__folded"))
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in values:
                node.input[k] = f"{name}__folded"
    return True


def _records(g: Any, t: OnnxTensors) -> tuple[list[LayerRecord], list[_Node]]:
    """One record per node that computes activations (shape arithmetic and weight dequantization skipped)."""
    import onnx
    from onnx import helper

    consumers: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            if name:
                consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = [o.name for o in g.output]
    records: list[LayerRecord] = []
    nodes: list[_Node] = []
    producer: dict[str, int] = {}
    used_params: set[str] = set()
    for i, node in enumerate(g.node):
        outs = [o for o in node.output if o]
        if node.op_type in _SHAPE_OPS or not outs or all(o in t.inits for o in outs):
            continue
        if all(not t.is_float(o) and t.elem.get(o) == onnx.TensorProto.INT64 for o in outs):
            continue  # shape arithmetic
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in t.inits:
            continue  # weight dequantization: folded into its consumer
        name = node.name or f"{node.op_type}_{i}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        data_inputs = [x for x in node.input if x and t.weight_name(x) is None]
        weights = [w for x in node.input if x and (w := t.weight_name(x)) is not None]
        new_params = [p for p in weights if t.elem.get(p) != onnx.TensorProto.INT64 and p not in used_params]
        used_params.update(new_params)
        facts = onnx_op(node, t, attrs)
        params = sum(t.numel(p) for p in new_params)
        out = outs[0]
        records.append(
            LayerRecord(
                name=name,
                module=onnx_node_module(name),
                target=node.op_type,
                op_type=facts.op_type,
                geometry=dict(facts.geometry),
                input_shapes=tuple(tuple(int(s) for s in (t.shapes.get(x) or ())) for x in data_inputs),
                output_shape=tuple(int(s) for s in (t.shapes.get(out) or ())),
                macs=int(facts.macs),
                params=int(params),
                roles=_roles(node, facts.op_type, facts.geometry, new_params, params, t),
                producers=tuple(sorted({producer[x] for x in data_inputs if x in producer})),
                out=out,
                out_numel=t.numel(out),
                out_itemsize=t.itemsize(out),
                out_is_float=t.is_float(out),
                users=sum(consumers.get(o, 0) for o in outs) + sum(1 for o in graph_outputs if o in outs),
            )
        )
        nodes.append(_Node(outs, data_inputs))
        for o in outs:
            producer[o] = len(records) - 1
    return records, nodes


def _roles(
    node: Any, op_type: str, geometry: Any, new_params: list[str], params: int, t: OnnxTensors
) -> dict[str, int]:
    """Element counts by role (weight_storage_bytes): a conv/linear's weight (input 1) and bias, else all "other"."""
    wname = t.weight_name(node.input[1]) if len(node.input) > 1 else None
    if op_type not in COMPUTE_OPS or wname is None or wname not in new_params:
        return {**NO_ROLES, "other_numel": params}
    ws = t.shapes.get(wname) or (0,)
    return {
        "weight_numel": t.numel(wname),
        "out_channels": int(geometry.get("out_channels") or ws[0]),
        "bias_numel": sum(t.numel(p) for p in new_params if p != wname),
        "other_numel": 0,
    }


def _buffers(
    records: Sequence[LayerRecord],
    nodes: Sequence[_Node],
    fused: Sequence[str | None] | None,
    input_name: str,
    in_prec: str,
    precisions: Sequence[str],
    outputs: set[str],
    t: OnnxTensors,
) -> dict[str, tuple[int, int, int]]:
    """Activation buffers -> (bytes, first step, last step): record j runs at step j + 1.

    Alias ops share their input's buffer; with ``fused``, a fused op writes into its conv's buffer.
    Each buffer counts at its producer's precision (the input at its first consumer's).
    """
    root: dict[str, str] = {input_name: input_name}
    span: dict[str, list[int]] = {input_name: [0, 0]}
    own: dict[str, str] = {input_name: in_prec}
    name_to_layer = {r.name: j for j, r in enumerate(records)}
    for j, (r, n) in enumerate(zip(records, nodes, strict=True)):
        step = j + 1
        for x in n.data_inputs:
            if x in root:
                span[root[x]][1] = step
        alias_of = None
        if r.target in _ALIAS_OPS and n.data_inputs and n.data_inputs[0] in root:
            alias_of = root[n.data_inputs[0]]
        elif fused is not None and (into := fused[j]) is not None:
            alias_of = root.get(records[name_to_layer[into]].out)
        for o in n.outs:
            if alias_of is not None and o == r.out:
                root[o] = alias_of
                continue
            root[o] = o
            span[o] = [step, step]
            own[o] = precisions[j]
    end = len(records) + 1
    for o in outputs:
        if o in root:
            span[root[o]][1] = end

    def nbytes(name: str) -> int:
        return scaled_nbytes(t.numel(name), t.itemsize(name), t.is_float(name), own[name])

    return {k: (nbytes(k), f, last) for k, (f, last) in span.items()}
