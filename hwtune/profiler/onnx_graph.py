"""Layer facts and activation liveness of an ONNX file (when the model is given as ``.onnx``, not torch).

Shapes come from ONNX shape inference with the input dims fixed; MACs are computed for Conv, Gemm and
MatMul (the ops that dominate, and the only ones FlopCounterMode counts on the torch side, so both paths
agree), params from the initializers the nodes read, and peak activations from the same liveness rule as
:func:`hwtune.graph.trace_layers` walked over the ONNX graph in its (topological) node order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import MAX_INPUT_ELEMENTS, MAX_MODEL_BYTES
from hwtune.errors import ConfigError, ModelError
from hwtune.graph import (
    COMPUTE_OPS,
    FUSABLE_ACTIVATIONS,
    INT8_BIAS_BYTES,
    LayerGraph,
    LayerInfo,
    conv_kind,
    liveness_peak,
    weight_storage_bytes,
)
from hwtune.onnx_export import onnx_node_module
from hwtune.precision import ELEMENT_BYTES, PrecisionPlan

if TYPE_CHECKING:
    import onnx

__all__ = ["check_onnx_model", "load_onnx", "onnx_input_shape", "trace_onnx"]

# Ops whose output is a view / the same buffer as their first input in every runtime hwtune targets.
_ALIAS_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
# Ops that only compute shapes or constants: not layers, no activation buffers.
_SHAPE_OPS = {"Constant", "Shape", "ConstantOfShape", "Size"}
_CANONICAL = {
    "Gemm": "linear",
    "BatchNormalization": "bn",
    "Relu": "relu",
    "HardSwish": "hardswish",
    "Sigmoid": "sigmoid",
    "Add": "add",
    "Sum": "add",
    "Mul": "mul",
    "Concat": "cat",
    "AveragePool": "avgpool",
    "MaxPool": "maxpool",
    "GlobalAveragePool": "gap",
    "GlobalMaxPool": "maxpool",
    "Flatten": "flatten",
    "Reshape": "flatten",
    "Squeeze": "flatten",
    "Unsqueeze": "flatten",
    "Softmax": "softmax",
}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file (possibly someone else's) or raise a one-line ``ModelError`` naming it.

    The graph is read without its external data first and checked (:func:`check_onnx_model`): every
    external-data file must lie inside the model's directory, and no tensor or input may declare an
    absurd size; only then is the external data read.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: refused: an ONNX file of {size} bytes (the limit is {MAX_MODEL_BYTES} bytes)")
        model = onnx.load(str(path), load_external_data=False)
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ModelError(f"{path}: not a readable ONNX model ({_first(exc)})") from exc
    if not model.graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (the graph has no nodes)")
    check_onnx_model(model, path)
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read its external data ({_first(exc)})") from exc
    return model


def _first(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph stores: initializers, sparse ones, node attributes, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def check_onnx_model(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an untrusted ONNX graph before any of its data is read or any input allocated.

    Raises:
        ModelError: ``"<path>: refused: ..."``: an external-data location that is absolute or leaves
            the model's directory (``..``, a symlink out), a missing external file or a range past its
            end, a tensor declaring more than :data:`~hwtune._io.MAX_MODEL_BYTES`, or a graph input
            of more than :data:`~hwtune._io.MAX_INPUT_ELEMENTS` elements.
    """
    import onnx

    base = path.parent.resolve()
    for t in _tensors(model.graph):
        n = math.prod(int(d) for d in t.dims)
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:  # noqa: BLE001 - unknown / string types: count 8 bytes an element
            itemsize = 8
        if any(int(d) < 0 for d in t.dims) or n * itemsize > MAX_MODEL_BYTES:
            raise ModelError(
                f"{path}: refused: tensor {t.name!r} declares shape {list(t.dims)} "
                f"({n * itemsize} bytes; the limit is {MAX_MODEL_BYTES} bytes)"
            )
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(t, path, base)
    for inp in model.graph.input:
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 for d in dims) or math.prod(dims) > MAX_INPUT_ELEMENTS:
            raise ModelError(
                f"{path}: refused: input {inp.name!r} declares shape {dims} (more than {MAX_INPUT_ELEMENTS} elements)"
            )


def _check_external(t: Any, path: Path, base: Path) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{path}: refused: tensor {t.name!r} has external data at {loc!r}"
    if not loc or Path(loc).is_absolute() or loc.startswith(("/", "\\")) or ":" in loc.split("/")[0]:
        raise ModelError(f"{where}: an absolute path; expected a file next to the model")
    target = (base / loc).resolve()
    if not target.is_relative_to(base):
        raise ModelError(f"{where}: outside the model's directory {base}")
    if not target.is_file():
        raise ModelError(f"{where}: no such file next to the model")
    try:
        offset, length = int(info.get("offset") or 0), int(info.get("length") or 0)
    except ValueError as exc:
        raise ModelError(f"{where}: offset/length are not integers") from exc
    if offset < 0 or length < 0 or offset + length > target.stat().st_size:
        raise ModelError(f"{where}: bytes {offset}..{offset + length} lie past the end of the file")


def _graph_input(model: onnx.ModelProto) -> Any:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise ModelError("ONNX model has no graph input")
    return inputs[0]


def onnx_input_shape(model: onnx.ModelProto) -> tuple[int | None, ...]:
    """Declared input shape; symbolic dims are None."""
    dims = _graph_input(model).type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _resolve_shape(model: onnx.ModelProto, input_shape: Sequence[int] | None, src: str) -> tuple[int, ...]:
    declared = onnx_input_shape(model)
    shown = "x".join(str(d) if d is not None else "N" for d in declared)
    if input_shape is None:
        if any(d is None for d in declared[1:]):
            raise ConfigError(
                f"{src}: input shape {shown} has symbolic dims; pass the input shape (e.g. --input 1x3x224x224)"
            )
        return tuple(1 if d is None else int(d) for d in declared)
    shape = tuple(int(s) for s in input_shape)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ConfigError(f"{src}: input shape {'x'.join(map(str, shape))} has more than {MAX_INPUT_ELEMENTS} elements")
    if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape, strict=False)):
        raise ModelError(f"{src}: model input expects shape {shown}, got {'x'.join(map(str, shape))}")
    return shape


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
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    plan = PrecisionPlan.coerce(plan)
    src = str(path)
    model = load_onnx(path)
    shape = _resolve_shape(model, input_shape, src)
    graph_input = _graph_input(model)

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name == graph_input.name:
            for d, s in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
                d.Clear()
                d.dim_value = s
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{src}: shape inference failed for input {'x'.join(map(str, shape))}: {first}") from exc

    g = inferred.graph
    shapes: dict[str, tuple[int, ...] | None] = {}
    elem: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        elem[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            shapes[vi.name] = dims if all(d >= 0 for d in dims) else None
    inits: dict[str, Any] = {}
    for t in g.initializer:
        inits[t.name] = t
        shapes[t.name] = tuple(int(d) for d in t.dims)
        elem[t.name] = t.data_type
    for node in g.node:  # Constant nodes behave like initializers
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    inits[node.output[0]] = attr.t
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
                    elem[node.output[0]] = attr.t.data_type

    def numel(name: str) -> int:
        s = shapes.get(name)
        return int(math.prod(s)) if s is not None else 0

    def is_float(name: str) -> bool:
        return elem.get(name) in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.BFLOAT16,
        )

    def itemsize(name: str) -> int:
        try:
            return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem.get(name, 1))).itemsize)
        except Exception:  # noqa: BLE001 - unknown element type
            return 4

    def tensor_bytes(name: str, precision: str) -> int:
        n = numel(name)
        return n * ELEMENT_BYTES[precision] if is_float(name) else n * itemsize(name)

    def const_value(name: str) -> float | None:
        t = inits.get(name)
        if t is None:
            return None
        arr = numpy_helper.to_array(t)
        return float(arr.reshape(-1)[0]) if arr.size == 1 else None

    # The exporter emits Identity nodes over shared initializers: their outputs are constants too.
    for node in g.node:
        if node.op_type == "Identity" and node.input and node.input[0] in inits and node.output:
            inits[node.output[0]] = inits[node.input[0]]
            shapes[node.output[0]] = shapes[node.input[0]]
            elem[node.output[0]] = elem[node.input[0]]

    # Initializers reached through DequantizeLinear count as the consumer's weights (QDQ graphs).
    dq_source: dict[str, str] = {}
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in inits:
            dq_source[node.output[0]] = node.input[0]

    def weight_name(name: str) -> str | None:
        if name in inits:
            return name
        return dq_source.get(name)

    consumers: dict[str, list[int]] = {}
    nodes = [n for n in g.node]
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)

    layers_raw: list[dict[str, Any]] = []
    node_layer: dict[int, int] = {}
    producer_layer: dict[str, int] = {}
    used_params: set[str] = set()
    for i, node in enumerate(nodes):
        outs = [o for o in node.output if o]
        if node.op_type in _SHAPE_OPS or not outs or all(o in inits for o in outs):
            continue
        if all(not is_float(o) and elem.get(o) == onnx.TensorProto.INT64 for o in outs):
            continue  # shape arithmetic
        if node.op_type in ("DequantizeLinear",) and node.input and node.input[0] in inits:
            continue  # weight dequantization: folded into its consumer
        name = node.name or f"{node.op_type}_{i}"
        module = onnx_node_module(name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        data_inputs = [x for x in node.input if x and weight_name(x) is None]
        param_inputs = [weight_name(x) for x in node.input if x and weight_name(x) is not None]
        param_inputs = [p for p in param_inputs if p is not None and elem.get(p) != onnx.TensorProto.INT64]
        out = outs[0]
        out_shape = shapes.get(out) or ()
        op = _CANONICAL.get(node.op_type, "other")
        geometry: dict[str, Any] = {}
        macs = 0
        roles = {"weight_numel": 0, "out_channels": 0, "bias_numel": 0, "other_numel": 0}
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and shapes.get(node.input[1]):
            w = shapes[node.input[1]]
            group = int(attrs.get("group", 1))
            kernel = tuple(w[2:])
            cin = int(w[1]) * group if node.op_type == "Conv" else int(w[0])
            cout = int(w[0]) if node.op_type == "Conv" else int(w[1]) * group
            macs = (
                numel(out) * int(math.prod(w[1:]))
                if node.op_type == "Conv"
                else numel(node.input[0]) * int(math.prod(w[1:]))
            )
            op = conv_kind(cin, group, kernel) if node.op_type == "Conv" else "conv"
            strides = attrs.get("strides") or [1] * len(kernel)
            geometry = {
                "kernel_size": (tuple(kernel) + (1,))[:2] if len(kernel) == 1 else tuple(kernel[-2:]),
                "stride": (tuple(strides) + (1,))[:2] if len(strides) == 1 else tuple(strides[-2:]),
                "groups": group,
                "in_channels": cin,
                "out_channels": cout,
            }
        elif node.op_type == "Gemm" and len(node.input) > 1:
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b:
                k = a[0] if attrs.get("transA", 0) else a[-1]
                n_out = b[0] if attrs.get("transB", 0) else b[-1]
                macs = numel(out) * int(k)
                geometry = {"in_channels": int(k), "out_channels": int(n_out)}
        elif node.op_type == "MatMul" and len(node.input) > 1:
            a = shapes.get(node.input[0])
            if a:
                macs = numel(out) * int(a[-1])
            if weight_name(node.input[1]) is not None:
                op = "linear"
                b = shapes.get(node.input[1]) or ()
                if len(b) == 2:
                    geometry = {"in_channels": int(b[0]), "out_channels": int(b[1])}
            else:
                op = "matmul"
        elif node.op_type == "Clip":
            lo = const_value(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
            hi = const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
            op = "relu6" if (lo, hi) == (0.0, 6.0) else "other"
        elif node.op_type == "ReduceMean":
            in_shape = shapes.get(node.input[0]) or ()
            axes = attrs.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1] in inits:
                axes = [int(v) for v in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
            nd = len(in_shape)
            if axes is not None and nd >= 3 and sorted(int(a) % nd for a in axes) == list(range(2, nd)):
                op = "gap"
        elif node.op_type == "Attention" or node.op_type == "MultiHeadAttention":
            op = "attention"
        new_params = [p for p in param_inputs if p not in used_params]
        used_params.update(new_params)
        params = sum(numel(p) for p in new_params)
        if op in COMPUTE_OPS and len(node.input) > 1 and weight_name(node.input[1]) in new_params:
            wname = weight_name(node.input[1])
            assert wname is not None
            ws = shapes.get(wname) or (0,)
            out_ch = int(geometry.get("out_channels") or ws[0])
            bias = [p for p in new_params if p != wname]
            roles = {
                "weight_numel": numel(wname),
                "out_channels": out_ch,
                "bias_numel": sum(numel(p) for p in bias),
                "other_numel": 0,
            }
        else:
            roles["other_numel"] = params
        if len(out_shape) == 4:
            geometry.setdefault("out_channels", int(out_shape[1]))
            ins = shapes.get(data_inputs[0]) if data_inputs else None
            if ins and len(ins) == 4:
                geometry.setdefault("in_channels", int(ins[1]))
        producers = sorted({producer_layer[x] for x in data_inputs if x in producer_layer})
        layers_raw.append(
            {
                "name": name,
                "module": module,
                "target": node.op_type,
                "op": op,
                "geometry": geometry,
                "macs": int(macs),
                "params": int(params),
                "roles": roles,
                "out": out,
                "out_shape": tuple(int(s) for s in out_shape),
                "in_shapes": tuple(tuple(int(s) for s in (shapes.get(x) or ())) for x in data_inputs),
                "producers": producers,
                "node_index": i,
                "outs": outs,
                "data_inputs": data_inputs,
                "users": sum(len(consumers.get(o, [])) for o in outs) + sum(1 for o in g.output if o.name in outs),
            }
        )
        node_layer[i] = len(layers_raw) - 1
        for o in outs:
            producer_layer[o] = len(layers_raw) - 1

    # Fusion (same rule as the torch tracer).
    fused: list[str | None] = [None] * len(layers_raw)
    for j, r in enumerate(layers_raw):
        if len(r["producers"]) != 1:
            continue
        p = r["producers"][0]
        prod = layers_raw[p]
        if prod["users"] != 1:
            continue
        if r["op"] == "bn" and prod["op"] in COMPUTE_OPS:
            fused[j] = prod["name"]
        elif r["op"] in FUSABLE_ACTIVATIONS:
            if prod["op"] in COMPUTE_OPS:
                fused[j] = prod["name"]
            elif prod["op"] == "bn" and fused[p] is not None:
                fused[j] = fused[p]
    precisions = [plan.for_module(r["module"]) for r in layers_raw]

    # Liveness over activation tensors; alias ops and fused layers share their input's buffer.
    root: dict[str, str] = {}
    buffers: dict[str, list[int]] = {}
    owner_prec: dict[str, str] = {}
    step_owner: dict[int, int] = {}
    input_name = graph_input.name
    in_prec = plan.default
    for j, r in enumerate(layers_raw):
        if input_name in r["data_inputs"]:
            in_prec = precisions[j]
            break
    buffers[input_name] = [0, 0]
    root[input_name] = input_name
    owner_prec[input_name] = in_prec
    name_to_layer = {r["name"]: j for j, r in enumerate(layers_raw)}
    for j, r in enumerate(layers_raw):
        step = j + 1
        step_owner[step] = j
        for x in r["data_inputs"]:
            if x in root:
                buffers[root[x]][1] = step
        alias_of = None
        if r["target"] in _ALIAS_OPS and r["data_inputs"] and r["data_inputs"][0] in root:
            alias_of = root[r["data_inputs"][0]]
        elif fused[j] is not None:
            target_out = layers_raw[name_to_layer[fused[j]]]["out"]
            alias_of = root.get(target_out)
        for o in r["outs"]:
            if alias_of is not None and o == r["out"]:
                root[o] = alias_of
                continue
            root[o] = o
            buffers[o] = [step, step]
            owner_prec[o] = precisions[j]
    end = len(layers_raw) + 1
    for o in g.output:
        if o.name in root:
            buffers[root[o.name]][1] = end
    sized = {k: (tensor_bytes(k, owner_prec[k]), f, last) for k, (f, last) in buffers.items()}
    peak, peak_step = liveness_peak(sized, None, end + 1)
    # Unfused variant: every non-alias op materialises its output.
    root_u: dict[str, str] = {input_name: input_name}
    buffers_u: dict[str, list[int]] = {input_name: [0, 0]}
    for j, r in enumerate(layers_raw):
        step = j + 1
        for x in r["data_inputs"]:
            if x in root_u:
                buffers_u[root_u[x]][1] = step
        alias = r["target"] in _ALIAS_OPS and r["data_inputs"] and r["data_inputs"][0] in root_u
        for o in r["outs"]:
            if alias and o == r["out"]:
                root_u[o] = root_u[r["data_inputs"][0]]
            else:
                root_u[o] = o
                buffers_u[o] = [step, step]
    for o in g.output:
        if o.name in root_u:
            buffers_u[root_u[o.name]][1] = end
    sized_u = {k: (tensor_bytes(k, owner_prec.get(k, plan.default)), f, last) for k, (f, last) in buffers_u.items()}
    peak_u, _ = liveness_peak(sized_u, None, end + 1)

    layers: list[LayerInfo] = []
    for j, r in enumerate(layers_raw):
        prec = precisions[j]
        geometry = r["geometry"]
        if fused[j] is not None and r["op"] == "bn" and prec == "int8" and r["params"]:
            wbytes = int(geometry.get("out_channels") or 0) * INT8_BIAS_BYTES
        else:
            wbytes = weight_storage_bytes(prec, **r["roles"])
        layers.append(
            LayerInfo(
                name=r["name"],
                op_type=r["op"],
                input_shapes=r["in_shapes"],
                output_shape=r["out_shape"],
                macs=r["macs"],
                params=r["params"],
                precision=prec,
                activation_bytes=tensor_bytes(r["out"], prec),
                weight_bytes=int(wbytes),
                kernel_size=geometry.get("kernel_size"),
                stride=geometry.get("stride"),
                groups=int(geometry.get("groups", 1)),
                in_channels=geometry.get("in_channels"),
                out_channels=geometry.get("out_channels"),
                fused_into=fused[j],
                module=r["module"],
                target=r["target"],
            )
        )
    peak_layer = layers[step_owner[peak_step]].name if peak_step in step_owner else ""
    return LayerGraph(
        layers=tuple(layers),
        input_shape=shape,
        peak_activation_bytes=int(peak),
        peak_activation_bytes_unfused=int(peak_u),
        peak_layer=peak_layer,
        input_bytes=int(sized[input_name][0]),
        total_macs=int(sum(layer.macs for layer in layers)),
        total_params=int(sum(layer.params for layer in layers)),
        total_weight_bytes=int(sum(layer.weight_bytes for layer in layers)),
        traced_with="onnx",
        notes=(),
    )
