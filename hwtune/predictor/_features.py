"""Per-layer latency features: what the predictor needs to know about one operation.

A ``LayerFeatures`` is derived from the profiler's ``LayerInfo`` (``hwtune.profiler.graph``) or,
for micro-benchmark rows, from the op spec that ``scripts/profile_device.py`` recorded. Both go
through :func:`features_from_spec` so a conv in a network and the same conv measured alone get
identical features. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hwtune.precision import ELEMENT_BYTES

__all__ = ["FREE_OPS", "OP_KEYS", "LayerFeatures", "features_from_layer", "features_from_spec", "op_key"]

# Predictor op categories, each with its own (overhead, compute efficiency, memory efficiency).
# Depthwise and pointwise convs get their own rows because runtimes run them with different
# kernels (depthwise is memory-bound, 1x1 is a plain GEMM without im2col).
OP_KEYS: tuple[str, ...] = (
    "conv", "dwconv", "pwconv", "linear", "avgpool", "maxpool", "gap", "add", "mul", "cat", "relu", "act", "bn",
    "fused", "other",
)
# Reshapes and views: runtimes run them as metadata changes (no kernel worth timing).
FREE_OPS: tuple[str, ...] = ("flatten",)

_KEY_OF: Mapping[str, str] = {
    "conv": "conv", "dwconv": "dwconv", "pwconv": "pwconv", "linear": "linear", "matmul": "linear",
    "avgpool": "avgpool", "maxpool": "maxpool", "gap": "gap", "add": "add", "mul": "mul", "cat": "cat",
    "relu": "relu", "relu6": "relu", "hardswish": "act", "sigmoid": "act", "softmax": "act", "bn": "bn",
    "attention": "other", "other": "other",
}


def op_key(op_type: str, fused: bool = False) -> str | None:
    """Predictor category of a canonical op type; ``None`` for ops that cost nothing."""
    if op_type in FREE_OPS:
        return None
    if fused:
        return "fused"
    return _KEY_OF.get(op_type, "other")


@dataclass(frozen=True)
class LayerFeatures:
    """What one layer costs in the units of the roofline.

    Attributes:
        name: Layer name (module path or fx node name).
        op_type: Canonical op type from the profiler (``conv``, ``relu`` ...).
        key: Predictor category (one of ``OP_KEYS``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        work: Operations of the compute term: MACs for conv/linear, window taps (output elements x
            kernel area) for pools, input elements for global pooling, output elements otherwise.
        bytes_moved: Input activations + output activations + weights, at this precision.
        out_elements: Output elements (used for precision-boundary costs).
    """

    name: str
    op_type: str
    key: str
    precision: str
    work: int
    bytes_moved: int
    out_elements: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerFeatures:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape) if shape else 0


def features_from_spec(
    *,
    name: str,
    op_type: str,
    precision: str,
    input_shapes: Sequence[Sequence[int]],
    output_shape: Sequence[int],
    macs: int = 0,
    weight_bytes: int = 0,
    kernel_size: Sequence[int] | None = None,
    fused: bool = False,
) -> LayerFeatures | None:
    """Features of one op from its geometry; ``None`` for free ops (reshapes)."""
    key = op_key(op_type, fused)
    if key is None:
        return None
    elem = ELEMENT_BYTES[precision]
    in_elems = sum(_numel(s) for s in input_shapes)
    out_elems = _numel(output_shape)
    if key in ("conv", "dwconv", "pwconv", "linear"):
        work = int(macs)
    elif key in ("avgpool", "maxpool"):
        area = math.prod(kernel_size) if kernel_size else max(1, in_elems // max(1, out_elems))
        work = out_elems * int(area)
    elif key == "gap":
        work = in_elems
    else:
        work = out_elems
    if key == "fused":
        # Folded into the producer's epilogue: the output is written once by the producer, so
        # only a read-modify pass in cache is left (the small term the calibration fits).
        bytes_moved = out_elems * elem
    else:
        bytes_moved = (in_elems + out_elems) * elem + int(weight_bytes)
    return LayerFeatures(name, op_type, key, precision, int(work), int(bytes_moved), int(out_elems))


# Tensors created from shapes alone: exporters emit them as constants, runtimes run nothing.
_CONSTANT_TARGETS = frozenset({"zeros_like", "ones_like", "full_like", "zeros", "ones", "full", "empty_like"})


def features_from_layer(layer: Any) -> LayerFeatures | None:
    """Features of a profiler ``LayerInfo`` (duck-typed so this module needs no torch)."""
    if getattr(layer, "target", "") in _CONSTANT_TARGETS:
        return None
    return features_from_spec(
        name=layer.name,
        op_type=layer.op_type,
        precision=layer.precision,
        input_shapes=layer.input_shapes,
        output_shape=layer.output_shape,
        macs=layer.macs,
        weight_bytes=layer.weight_bytes,
        kernel_size=layer.kernel_size,
        fused=layer.fused_into is not None,
    )


# Micro-benchmark op name (scripts/profile_device.py) -> canonical op types of the graph it times.
MICROBENCH_OPS: Mapping[str, tuple[str, ...]] = {
    "conv": ("conv",), "pwconv": ("pwconv",), "dwconv": ("dwconv",), "linear": ("linear",),
    "maxpool": ("maxpool",), "avgpool": ("avgpool",), "gap": ("gap",), "add": ("add",), "mul": ("mul",),
    "concat": ("cat",), "relu": ("relu",), "clip": ("relu6",), "sigmoid": ("sigmoid",),
    "hardswish": ("hardswish",), "bn": ("bn",), "conv_relu": ("conv", "relu"), "conv_add": ("conv", "add"),
    "qdq": (),
}


def features_from_microbench(row: Mapping[str, Any]) -> list[LayerFeatures]:
    """The layers one micro-benchmark case runs (a conv+relu case is a conv and a fused relu)."""
    op = row["op"]
    prec = row["precision"]
    ins = [tuple(s) for s in row["input_shapes"]]
    out = tuple(row["output_shape"])
    layers: list[LayerFeatures] = []
    for i, op_type in enumerate(MICROBENCH_OPS[op]):
        if op_type in ("conv", "pwconv", "dwconv", "linear"):
            cin = ins[0][1]
            cout = int(row["out_channels"])
            k = int(row.get("kernel") or 1)
            groups = int(row.get("groups") or 1)
            if op_type == "linear":
                w_numel, macs = cin * cout, cin * cout
            else:
                w_numel = cout * (cin // groups) * k * k
                macs = w_numel * _numel(out[2:])
            elem = ELEMENT_BYTES[prec]
            # matches graph.weight_storage_bytes: int8 weights + per-channel scale/zero point + int32 bias
            wbytes = w_numel + cout * 5 + cout * 4 if prec == "int8" else (w_numel + cout) * elem
            if op_type == "conv" and op in ("conv", "conv_relu", "conv_add"):
                op_type = "pwconv" if k == 1 and groups == 1 else ("dwconv" if groups == cin and cin > 1 else "conv")
            f = features_from_spec(name=f"{row['id']}/{op_type}", op_type=op_type, precision=prec,
                                   input_shapes=[ins[0]], output_shape=out, macs=macs, weight_bytes=wbytes)
        else:
            fused = op == "conv_relu" and i > 0
            k = row.get("kernel")
            kernel = (int(k), int(k)) if k else None
            f = features_from_spec(name=f"{row['id']}/{op_type}", op_type=op_type, precision=prec,
                                   input_shapes=ins if i == 0 else [out] + ins[1:], output_shape=out,
                                   kernel_size=kernel, fused=fused)
        if f is not None:
            layers.append(f)
    return layers
