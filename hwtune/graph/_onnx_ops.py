"""ONNX op knowledge in one table: op type -> handler giving the canonical op type, geometry and MACs.

Adding an op is adding an entry to :data:`ONNX_OPS` (or a plain name to :data:`ONNX_CANONICAL`). The
handlers read tensor facts through :class:`OnnxTensors` (shapes from ONNX shape inference, element
types, constant initializers). MACs are computed for Conv, ConvTranspose, Gemm and MatMul: the ops that
carry them and the only ones ``FlopCounterMode`` counts on the torch side, so both tracers agree. The
depthwise / pointwise rule is :func:`hwtune.graph.conv_kind`, the one the torch tracer uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hwtune.graph._ops import conv_kind, mean_kind, pair

__all__ = ["ONNX_CANONICAL", "ONNX_OPS", "OnnxOp", "OnnxTensors", "compute_nodes", "onnx_op"]

# Op types whose canonical name needs nothing but the op type.
ONNX_CANONICAL: dict[str, str] = {
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
    "Attention": "attention",
    "MultiHeadAttention": "attention",
}


@dataclass
class OnnxTensors:
    """Shapes, element types and constants of one (shape-inferred) ONNX graph's tensors.

    ``shapes[name]`` is None when shape inference left a dim unknown. Constant nodes, and Identity
    nodes over initializers (the exporter emits them for shared weights), count as initializers;
    ``dq_source`` maps a DequantizeLinear output to the initializer it dequantizes (QDQ graphs).
    """

    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    elem: dict[str, int] = field(default_factory=dict)
    inits: dict[str, Any] = field(default_factory=dict)
    dq_source: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Any) -> OnnxTensors:
        t = cls()
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            tt = vi.type.tensor_type
            t.elem[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                t.shapes[vi.name] = dims if all(d >= 0 for d in dims) else None
        for init in graph.initializer:
            t._constant(init.name, init)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        t._constant(node.output[0], attr.t)
        for node in graph.node:
            if node.op_type == "Identity" and node.input and node.input[0] in t.inits and node.output:
                t.inits[node.output[0]] = t.inits[node.input[0]]
                t.shapes[node.output[0]] = t.shapes[node.input[0]]
                t.elem[node.output[0]] = t.elem[node.input[0]]
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.input and node.input[0] in t.inits:
                t.dq_source[node.output[0]] = node.input[0]
        return t

    def _constant(self, name: str, tensor: Any) -> None:
        self.inits[name] = tensor
        self.shapes[name] = tuple(int(d) for d in tensor.dims)
        self.elem[name] = tensor.data_type

    def numel(self, name: str) -> int:
        s = self.shapes.get(name)
        return int(math.prod(s)) if s is not None else 0

    def is_float(self, name: str) -> bool:
        import onnx

        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
        return self.elem.get(name) in floats

    def itemsize(self, name: str) -> int:
        import numpy as np
        from onnx import helper

        try:
            return int(np.dtype(helper.tensor_dtype_to_np_dtype(self.elem.get(name, 1))).itemsize)
        except Exception:  # noqa: BLE001 - unknown element type
            return 4

    def const_value(self, name: str) -> float | None:
        """The value of a one-element constant, else None."""
        from onnx import numpy_helper

        t = self.inits.get(name)
        if t is None:
            return None
        arr = numpy_helper.to_array(t)
        return float(arr.reshape(-1)[0]) if arr.size == 1 else None

    def const_ints(self, name: str) -> list[int] | None:
        from onnx import numpy_helper

        t = self.inits.get(name)
        return None if t is None else [int(v) for v in numpy_helper.to_array(t).reshape(-1)]

    def weight_name(self, name: str) -> str | None:
        """The initializer behind ``name`` (itself, or what a DequantizeLinear reads), else None."""
        return name if name in self.inits else self.dq_source.get(name)


@dataclass(frozen=True)
class OnnxOp:
    """What a handler says about one node: canonical op type, geometry (kernel, stride, groups, channels), MACs."""

    op_type: str
    geometry: Mapping[str, Any] = field(default_factory=dict)
    macs: int = 0


Handler = Callable[[Any, Mapping[str, Any], OnnxTensors], OnnxOp]


def _input(node: Any, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _conv(node: Any, attrs: Mapping[str, Any], t: OnnxTensors) -> OnnxOp:
    """Conv / ConvTranspose: weights (Cout, Cin/g, k...) / (Cin, Cout/g, k...)."""
    w = t.shapes.get(node.input[1]) if len(node.input) > 1 else None
    if not w:
        return OnnxOp("other")
    transposed = node.op_type == "ConvTranspose"
    group = int(attrs.get("group", 1))
    kernel = tuple(w[2:])
    cin = int(w[0]) if transposed else int(w[1]) * group
    cout = int(w[1]) * group if transposed else int(w[0])
    # MACs: every output element reads Cin/g x k inputs; a transposed conv scatters every input element.
    reads = t.numel(node.input[0]) if transposed else t.numel(node.output[0])
    strides = attrs.get("strides") or [1] * len(kernel)
    geometry = {
        "kernel_size": pair(kernel),
        "stride": pair(strides),
        "groups": group,
        "in_channels": cin,
        "out_channels": cout,
    }
    op = "conv" if transposed else conv_kind(cin, group, kernel)
    return OnnxOp(op, geometry, reads * int(math.prod(w[1:])))


def _gemm(node: Any, attrs: Mapping[str, Any], t: OnnxTensors) -> OnnxOp:
    a, b = (t.shapes.get(node.input[i]) if len(node.input) > i else None for i in (0, 1))
    if not a or not b:
        return OnnxOp("linear")
    k = a[0] if attrs.get("transA", 0) else a[-1]
    n_out = b[0] if attrs.get("transB", 0) else b[-1]
    return OnnxOp("linear", {"in_channels": int(k), "out_channels": int(n_out)}, t.numel(node.output[0]) * int(k))


def _matmul(node: Any, attrs: Mapping[str, Any], t: OnnxTensors) -> OnnxOp:
    """A MatMul with a constant right side is a linear layer; one of two activations is a matmul."""
    if len(node.input) < 2:
        return OnnxOp("other")
    a = t.shapes.get(node.input[0])
    macs = t.numel(node.output[0]) * int(a[-1]) if a else 0
    if t.weight_name(node.input[1]) is None:
        return OnnxOp("matmul", {}, macs)
    b = t.shapes.get(node.input[1]) or ()
    geometry = {"in_channels": int(b[0]), "out_channels": int(b[1])} if len(b) == 2 else {}
    return OnnxOp("linear", geometry, macs)


def _clip(node: Any, attrs: Mapping[str, Any], t: OnnxTensors) -> OnnxOp:
    """Clip(0, 6) is relu6 (bounds as inputs since opset 11, as attributes before)."""
    lo_name, hi_name = _input(node, 1), _input(node, 2)
    lo = t.const_value(lo_name) if lo_name else attrs.get("min")
    hi = t.const_value(hi_name) if hi_name else attrs.get("max")
    return OnnxOp("relu6" if (lo, hi) == (0.0, 6.0) else "other")


def _reduce_mean(node: Any, attrs: Mapping[str, Any], t: OnnxTensors) -> OnnxOp:
    """A mean over every spatial axis of an N-C-spatial tensor is a global average pool."""
    in_shape = t.shapes.get(node.input[0]) or ()
    axes = attrs.get("axes")
    axes_name = _input(node, 1)
    if axes is None and axes_name is not None:
        axes = t.const_ints(axes_name)
    return OnnxOp("other" if axes is None else mean_kind(len(in_shape), axes))


ONNX_OPS: dict[str, Handler] = {
    "Conv": _conv,
    "ConvTranspose": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Clip": _clip,
    "ReduceMean": _reduce_mean,
}


def onnx_op(node: Any, t: OnnxTensors, attrs: Mapping[str, Any] | None = None) -> OnnxOp:
    """What :data:`ONNX_OPS` (or :data:`ONNX_CANONICAL`) says about ``node``; ``other`` for op types neither knows."""
    if attrs is None:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    handler = ONNX_OPS.get(node.op_type)
    if handler is not None:
        return handler(node, attrs, t)
    return OnnxOp(ONNX_CANONICAL.get(node.op_type, "other"))


def compute_nodes(nodes: Iterable[Any], t: OnnxTensors) -> dict[str, OnnxOp]:
    """The named nodes that carry MACs (conv, linear, matmul kinds), with what the table says about them."""
    out: dict[str, OnnxOp] = {}
    for node in nodes:
        if node.name and node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            out[node.name] = onnx_op(node, t)
    return out
