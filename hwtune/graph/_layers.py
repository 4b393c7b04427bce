"""Per-layer facts of a traced model (``LayerInfo``, ``LayerGraph``) and their byte accounting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hwtune.precision import ELEMENT_BYTES

__all__ = [
    "CANONICAL_OPS",
    "COMPUTE_OPS",
    "FUSABLE_ACTIVATIONS",
    "INT8_BIAS_BYTES",
    "INT8_SCALE_BYTES",
    "INT8_ZERO_POINT_BYTES",
    "LayerGraph",
    "LayerInfo",
    "scaled_nbytes",
    "weight_storage_bytes",
]

CANONICAL_OPS: tuple[str, ...] = (
    "conv",
    "dwconv",
    "pwconv",
    "linear",
    "matmul",
    "bn",
    "relu",
    "relu6",
    "hardswish",
    "sigmoid",
    "add",
    "mul",
    "cat",
    "avgpool",
    "maxpool",
    "gap",
    "flatten",
    "softmax",
    "attention",
    "other",
)
# ONNX Runtime (FusedConv / GemmActivationFusion) and TFLite (fused_activation_function) fold these
# activations into the preceding conv/linear; TFLite has no fused hardswish, so it is not listed.
FUSABLE_ACTIVATIONS: tuple[str, ...] = ("relu", "relu6")
# The ops that carry MACs and whose weights int8 quantizes.
COMPUTE_OPS: tuple[str, ...] = ("conv", "dwconv", "pwconv", "linear")

# Bytes of the per-output-channel quantization parameters that int8 weights carry:
# one fp32 scale and one int8 zero point (ONNX QDQ per-axis QuantizeLinear).
INT8_SCALE_BYTES = 4
INT8_ZERO_POINT_BYTES = 1
# int8 convs accumulate in int32, so their bias is stored as int32 (ONNX QDQ quantizes bias to int32).
INT8_BIAS_BYTES = 4


@dataclass(frozen=True)
class LayerInfo:
    """One operation of a traced model.

    Attributes:
        name: Module path for module calls (``features.0.0``), the fx node name for functional ops
            (``add_3``); ``#2`` is appended when a module is called a second time.
        op_type: One of :data:`CANONICAL_OPS`.
        input_shapes: Shapes of the tensor inputs (parameters excluded).
        output_shape: Shape of the (first) output tensor.
        macs: Multiply-accumulates, from ``FlopCounterMode`` FLOPs / 2 (BN, pooling, activations count 0).
        params: Parameters this layer owns (shared parameters counted at their first use only).
        precision: Precision this layer runs at, from ``PrecisionPlan.for_module``.
        activation_bytes: Output elements x element bytes at ``precision``.
        weight_bytes: Storage of this layer's parameters at ``precision`` (see ``weight_storage_bytes``).
        kernel_size, stride: For convolutions and pools, the last two spatial dims; else None.
        groups: Convolution groups (1 for everything else).
        in_channels, out_channels: Channel counts (features for linear; dim 1 of 4-d tensors otherwise).
        fused_into: Name of the conv/linear a runtime fuses this bn/relu/relu6 into, else None.
        module: Module path that owns the op (``""`` for the root module).
        target: The torch class or function name (``Conv2d``, ``add``), for humans.
        producers: Names of the layers whose outputs this layer reads (the graph input is not
            listed), so consumers can be counted after ops are pruned. Filled by both tracers;
            empty for graphs read from ONNX.
    """

    name: str
    op_type: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    precision: str
    activation_bytes: int
    weight_bytes: int
    kernel_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    groups: int = 1
    in_channels: int | None = None
    out_channels: int | None = None
    fused_into: str | None = None
    module: str = ""
    target: str = ""
    producers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["producers"] = list(self.producers)
        d["input_shapes"] = [list(s) for s in self.input_shapes]
        d["output_shape"] = list(self.output_shape)
        d["kernel_size"] = list(self.kernel_size) if self.kernel_size else None
        d["stride"] = list(self.stride) if self.stride else None
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerInfo:
        d = dict(data)
        d["input_shapes"] = tuple(tuple(int(x) for x in s) for s in d.get("input_shapes", ()))
        d["output_shape"] = tuple(int(x) for x in d.get("output_shape", ()))
        for key in ("kernel_size", "stride"):
            if d.get(key) is not None:
                d[key] = tuple(int(x) for x in d[key])
        d["producers"] = tuple(str(x) for x in d.get("producers", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class LayerGraph:
    """Per-layer facts of one traced forward pass, plus the activation-liveness peak.

    Attributes:
        layers: Layers in execution order.
        input_shape: Shape of the example input.
        peak_activation_bytes: Largest total size of simultaneously alive activation tensors (input
            included) when bn/relu are fused into their conv as deployment runtimes do. A lower bound
            of a real allocator's peak; see :func:`trace_layers`.
        peak_activation_bytes_unfused: The same with every op materialising its own output (eager order).
        peak_layer: Layer running when the (fused) peak is reached.
        input_bytes: Size of the input tensor at its first consumer's precision.
        total_macs: Sum of MACs (functional ops outside modules included).
        total_params: Unique parameters of the model.
        total_weight_bytes: Sum of the layers' ``weight_bytes``.
        traced_with: ``"fx"``, ``"hooks"`` (fallback) or ``"onnx"``.
        notes: Caveats (e.g. why the fx trace failed).
    """

    layers: tuple[LayerInfo, ...]
    input_shape: tuple[int, ...]
    peak_activation_bytes: int
    peak_activation_bytes_unfused: int
    peak_layer: str
    input_bytes: int
    total_macs: int
    total_params: int
    total_weight_bytes: int
    traced_with: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def by_name(self) -> dict[str, LayerInfo]:
        return {layer.name: layer for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "input_shape": list(self.input_shape),
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_bytes_unfused": self.peak_activation_bytes_unfused,
            "peak_layer": self.peak_layer,
            "input_bytes": self.input_bytes,
            "total_macs": self.total_macs,
            "total_params": self.total_params,
            "total_weight_bytes": self.total_weight_bytes,
            "traced_with": self.traced_with,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerGraph:
        return cls(
            layers=tuple(LayerInfo.from_dict(x) for x in data["layers"]),
            input_shape=tuple(int(x) for x in data["input_shape"]),
            peak_activation_bytes=int(data["peak_activation_bytes"]),
            peak_activation_bytes_unfused=int(data.get("peak_activation_bytes_unfused", data["peak_activation_bytes"])),
            peak_layer=str(data.get("peak_layer", "")),
            input_bytes=int(data.get("input_bytes", 0)),
            total_macs=int(data["total_macs"]),
            total_params=int(data["total_params"]),
            total_weight_bytes=int(data["total_weight_bytes"]),
            traced_with=str(data.get("traced_with", "fx")),
            notes=tuple(data.get("notes", ())),
        )


# ----------------------------------------------------------------------------------------------
# Byte accounting


def weight_storage_bytes(
    precision: str,
    *,
    weight_numel: int = 0,
    out_channels: int = 0,
    bias_numel: int = 0,
    other_numel: int = 0,
) -> int:
    """Bytes to store a layer's parameters at ``precision``.

    fp32 / fp16: every parameter at 4 / 2 bytes. int8 (ONNX QDQ static quantization, per-channel):
    conv/linear weights at 1 byte plus one fp32 scale and one int8 zero point per output channel,
    biases as int32, and every other parameter left in fp32 (runtimes keep norms etc. in float).

    Args:
        precision: ``fp32``, ``fp16`` or ``int8``.
        weight_numel: Elements of a quantizable conv/linear weight.
        out_channels: Output channels of that weight (for the per-channel scales).
        bias_numel: Elements of its bias.
        other_numel: Any other parameter elements.
    """
    if precision == "int8":
        return (
            weight_numel
            + out_channels * (INT8_SCALE_BYTES + INT8_ZERO_POINT_BYTES)
            + bias_numel * INT8_BIAS_BYTES
            + other_numel * ELEMENT_BYTES["fp32"]
        )
    return (weight_numel + bias_numel + other_numel) * ELEMENT_BYTES[precision]


def scaled_nbytes(numel: int, itemsize: int, is_float: bool, precision: str) -> int:
    """Bytes of a tensor stored at ``precision`` (only floating tensors change element size)."""
    return numel * ELEMENT_BYTES[precision] if is_float else numel * itemsize
