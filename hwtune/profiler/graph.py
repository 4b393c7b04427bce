"""Trace a model into per-layer facts: shapes, MACs, params, bytes, runtime fusion and activation liveness.

``trace_layers`` runs one batch-1 forward pass of the model through ``torch.fx`` (symbolic trace, then an
interpreter that records every node's output tensor and its FLOPs under ``FlopCounterMode``). Models fx
cannot trace (data-dependent control flow, ``*args`` tricks) fall back to forward hooks on the leaf modules
plus a dispatch-level recorder of every aten op, so liveness still sees functional ops.

Peak activation memory is a liveness analysis of the recorded tensors, see :func:`trace_layers`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hwtune.errors import ModelError
from hwtune.precision import ELEMENT_BYTES, PrecisionPlan

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CANONICAL_OPS",
    "FUSABLE_ACTIVATIONS",
    "LayerGraph",
    "LayerInfo",
    "check_input",
    "liveness_peak",
    "trace_layers",
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
_COMPUTE_OPS = ("conv", "dwconv", "pwconv", "linear")

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


def _scaled_nbytes(numel: int, itemsize: int, is_float: bool, precision: str) -> int:
    """Bytes of a tensor stored at ``precision`` (only floating tensors change element size)."""
    return numel * ELEMENT_BYTES[precision] if is_float else numel * itemsize


# ----------------------------------------------------------------------------------------------
# Liveness


def liveness_peak(
    buffers: Mapping[Any, tuple[int, int, int]],
    merges: Mapping[Any, Any] | None = None,
    steps: int | None = None,
) -> tuple[int, int]:
    """Peak total size of simultaneously alive buffers in a sequential schedule.

    Args:
        buffers: key -> (bytes, first step, last step); a buffer is alive on every step
            ``first <= s <= last`` (it exists while its producer runs and until its last consumer ran).
        merges: key -> key of a buffer it shares memory with (runtime fusion writes in place). The merged
            buffer disappears and extends the lifetime of its target.
        steps: Number of steps (default: one past the largest step seen).

    Returns:
        (peak bytes, step at which it is first reached).
    """
    live: dict[Any, list[int]] = {k: [b, f, last] for k, (b, f, last) in buffers.items()}
    for src, dst in (merges or {}).items():
        root = dst
        seen = {src}
        while root in (merges or {}) and root not in seen:  # follow chains conv <- bn <- relu
            seen.add(root)
            root = merges[root]  # type: ignore[index]
        if src not in live or root not in live or src == root:
            continue
        b, f, last = live.pop(src)
        live[root][1] = min(live[root][1], f)
        live[root][2] = max(live[root][2], last)
    if not live:
        return 0, 0
    n = steps if steps is not None else max(v[2] for v in live.values()) + 1
    delta = [0] * (n + 1)
    for b, f, last in live.values():
        delta[f] += b
        delta[min(last, n - 1) + 1] -= b
    peak, peak_step, cur = 0, 0, 0
    for s in range(n):
        cur += delta[s]
        if cur > peak:
            peak, peak_step = cur, s
    return peak, peak_step


# ----------------------------------------------------------------------------------------------
# Op classification


def _pair(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    if not t:
        return None
    if len(t) == 1:
        return (t[0], 1)
    return (t[-2], t[-1])


def _conv_kind(in_channels: int, groups: int, kernel: Sequence[int]) -> str:
    if groups == in_channels and in_channels > 1:
        return "dwconv"
    if groups == 1 and all(k == 1 for k in kernel):
        return "pwconv"
    return "conv"


def _module_op(mod: nn.Module, out_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """Canonical op type and geometry of a leaf module."""
    from torch import nn

    if isinstance(mod, nn.modules.conv._ConvNd):
        k = tuple(mod.kernel_size)
        kind = "conv" if mod.transposed else _conv_kind(mod.in_channels, mod.groups, k)
        return kind, {
            "kernel_size": _pair(k),
            "stride": _pair(mod.stride),
            "groups": mod.groups,
            "in_channels": mod.in_channels,
            "out_channels": mod.out_channels,
        }
    if isinstance(mod, nn.Linear):
        return "linear", {"in_channels": mod.in_features, "out_channels": mod.out_features}
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return "bn", {"in_channels": mod.num_features, "out_channels": mod.num_features}
    if isinstance(mod, nn.ReLU6):
        return "relu6", {}
    if isinstance(mod, nn.Hardtanh) and mod.min_val == 0.0 and mod.max_val == 6.0:
        return "relu6", {}
    if isinstance(mod, nn.ReLU):
        return "relu", {}
    if isinstance(mod, nn.Hardswish):
        return "hardswish", {}
    if isinstance(mod, nn.Sigmoid):
        return "sigmoid", {}
    if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        spatial = out_shape[2:]
        return ("gap" if spatial and all(s == 1 for s in spatial) else "avgpool"), {}
    if isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return "avgpool", {"kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride)}
    if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return "maxpool", {"kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride)}
    if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        return "maxpool", {}
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return "flatten", {}
    if isinstance(mod, nn.Softmax):
        return "softmax", {}
    if isinstance(mod, nn.MultiheadAttention):
        return "attention", {"in_channels": mod.embed_dim, "out_channels": mod.embed_dim}
    return "other", {}


def _function_table() -> dict[Any, str]:
    import torch
    import torch.nn.functional as F

    table: dict[Any, str] = {
        operator.add: "add",
        operator.iadd: "add",
        torch.add: "add",
        operator.mul: "mul",
        operator.imul: "mul",
        torch.mul: "mul",
        torch.cat: "cat",
        torch.concat: "cat",
        torch.concatenate: "cat",
        F.relu: "relu",
        torch.relu: "relu",
        torch.relu_: "relu",
        F.relu_: "relu",
        F.relu6: "relu6",
        F.hardswish: "hardswish",
        torch.sigmoid: "sigmoid",
        F.sigmoid: "sigmoid",
        torch.matmul: "matmul",
        operator.matmul: "matmul",
        torch.bmm: "matmul",
        torch.mm: "matmul",
        torch.einsum: "matmul",
        F.scaled_dot_product_attention: "attention",
        F.softmax: "softmax",
        torch.softmax: "softmax",
        F.avg_pool1d: "avgpool",
        F.avg_pool2d: "avgpool",
        F.avg_pool3d: "avgpool",
        F.max_pool1d: "maxpool",
        F.max_pool2d: "maxpool",
        F.max_pool3d: "maxpool",
        torch.flatten: "flatten",
        torch.reshape: "flatten",
        torch.squeeze: "flatten",
        torch.unsqueeze: "flatten",
        F.linear: "linear",
        F.batch_norm: "bn",
        F.conv1d: "conv",
        F.conv2d: "conv",
        F.conv3d: "conv",
    }
    return table


_METHOD_OPS = {
    "add": "add",
    "add_": "add",
    "mul": "mul",
    "mul_": "mul",
    "relu": "relu",
    "relu_": "relu",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
    "matmul": "matmul",
    "bmm": "matmul",
    "softmax": "softmax",
    "flatten": "flatten",
    "view": "flatten",
    "reshape": "flatten",
    "squeeze": "flatten",
    "unsqueeze": "flatten",
}


def _function_op(node: Any, table: Mapping[Any, str], values: Mapping[Any, Any]) -> tuple[str, dict[str, Any]]:
    """Canonical op type and geometry of an fx call_function / call_method node."""
    import torch
    import torch.nn.functional as F

    target = node.target
    if node.op == "call_method":
        op = _METHOD_OPS.get(str(target), "other")
        if target == "mean":
            op = _mean_op(node, values)
        return op, {}
    if target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
        out = values.get(node)
        spatial = tuple(out.shape[2:]) if isinstance(out, torch.Tensor) else ()
        return ("gap" if spatial and all(s == 1 for s in spatial) else "avgpool"), {}
    if target is F.hardtanh:
        lo = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
        hi = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
        return ("relu6" if (lo, hi) == (0.0, 6.0) else "other"), {}
    if target is torch.mean:
        return _mean_op(node, values), {}
    op = table.get(target, "other")
    if op == "conv":
        weight = values.get(node.args[1]) if len(node.args) > 1 else values.get(node.kwargs.get("weight"))
        inp = values.get(node.args[0])
        if isinstance(weight, torch.Tensor) and isinstance(inp, torch.Tensor):
            groups = int(node.kwargs.get("groups", node.args[6] if len(node.args) > 6 else 1))
            k = tuple(weight.shape[2:])
            stride = node.kwargs.get("stride", node.args[3] if len(node.args) > 3 else 1)
            return _conv_kind(int(inp.shape[1]), groups, k), {
                "kernel_size": _pair(k),
                "stride": _pair(stride),
                "groups": groups,
                "in_channels": int(inp.shape[1]),
                "out_channels": int(weight.shape[0]),
            }
    if op == "linear":
        weight = values.get(node.args[1]) if len(node.args) > 1 else values.get(node.kwargs.get("weight"))
        if isinstance(weight, torch.Tensor):
            return "linear", {"in_channels": int(weight.shape[1]), "out_channels": int(weight.shape[0])}
    return op, {}


def _mean_op(node: Any, values: Mapping[Any, Any]) -> str:
    """``x.mean((2, 3))`` on an NCHW tensor is a global average pool."""
    import torch

    inp = values.get(node.args[0]) if node.args else None
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if not isinstance(inp, torch.Tensor) or dims is None:
        return "other"
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    nd = inp.dim()
    norm = sorted(d % nd for d in dims)
    return "gap" if nd >= 3 and norm == list(range(2, nd)) else "other"


# ----------------------------------------------------------------------------------------------
# Input checking


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    from torch import nn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            return name, mod
    return None


def check_input(model: nn.Module, example: torch.Tensor) -> None:
    """Run ``model(example)`` once; raise ``ModelError`` naming the expected and the given shape if it fails."""
    import torch

    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # any torch error here means the input does not fit the model
        raise ModelError(_shape_message(model, tuple(example.shape), exc)) from exc


def _shape_message(model: nn.Module, shape: tuple[int, ...], exc: BaseException) -> str:
    from torch import nn

    got = "x".join(str(s) for s in shape)
    first = _first_layer(model)
    expected = ""
    if first is not None:
        name, mod = first
        if isinstance(mod, nn.modules.conv._ConvNd):
            nd = len(mod.kernel_size)
            want_c = mod.in_channels
            got_c = shape[1] if len(shape) > 1 else None
            if len(shape) != nd + 2:
                expected = (
                    f"expected a {nd + 2}-d input (N, {want_c}, ...) for first layer {name!r}, got {len(shape)}-d"
                )
            elif got_c != want_c:
                expected = f"first layer {name!r} expects {want_c} input channels, got {got_c}"
        elif isinstance(mod, nn.Linear) and shape and shape[-1] != mod.in_features:
            expected = f"first layer {name!r} expects {mod.in_features} input features, got {shape[-1]}"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    msg = f"{type(model).__name__} rejected input of shape {got}"
    return f"{msg}: {expected} ({detail})" if expected else f"{msg}: {detail}"


# ----------------------------------------------------------------------------------------------
# Tracing


def _tensors(value: Any) -> list[torch.Tensor]:
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        return [value]
    try:
        return [v for v in tree_leaves(value) if isinstance(v, torch.Tensor)]
    except Exception:  # noqa: BLE001 - exotic containers: no tensors we can see
        return []


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - tensors without storage (meta, sparse)
        return None
    return ptr or None


def _storage_bytes(t: torch.Tensor, precision: str) -> int:
    try:
        nbytes = t.untyped_storage().nbytes()
    except Exception:  # noqa: BLE001 - no storage: fall back to the logical size
        nbytes = t.numel() * t.element_size()
    numel = nbytes // max(t.element_size(), 1)
    return _scaled_nbytes(numel, t.element_size(), t.is_floating_point(), precision)


def _activation_bytes(t: torch.Tensor | None, precision: str) -> int:
    if t is None:
        return 0
    return _scaled_nbytes(t.numel(), t.element_size(), t.is_floating_point(), precision)


def _param_roles(mod: nn.Module, op_type: str) -> dict[str, int]:
    """Split a module's parameters into quantizable weight / bias / other element counts."""
    weight = getattr(mod, "weight", None)
    bias = getattr(mod, "bias", None)
    import torch

    if op_type in _COMPUTE_OPS and isinstance(weight, torch.Tensor):
        roles = {
            "weight_numel": weight.numel(),
            "out_channels": int(weight.shape[0]),
            "bias_numel": 0,
            "other_numel": 0,
        }
        if isinstance(bias, torch.Tensor):
            roles["bias_numel"] = bias.numel()
        skip = {id(weight), id(bias)}
        roles["other_numel"] = sum(p.numel() for p in mod.parameters() if id(p) not in skip)
        return roles
    return {
        "weight_numel": 0,
        "out_channels": 0,
        "bias_numel": 0,
        "other_numel": sum(p.numel() for p in mod.parameters()),
    }


_NO_ROLES = {"weight_numel": 0, "out_channels": 0, "bias_numel": 0, "other_numel": 0}


@dataclass
class _Raw:
    """A layer before byte accounting, filled by the fx or the hooks tracer."""

    name: str
    module: str
    target: str
    op_type: str
    geometry: dict[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    out: Any  # first output tensor or None
    macs: int
    params: int
    roles: dict[str, int]
    producers: tuple[int, ...]  # raw indices whose outputs this layer reads
    users: int = 0  # consumers of this layer's output (layers, functional ops, the graph output)


@dataclass
class _Trace:
    """What a tracer recorded: layers plus every activation buffer's lifetime in execution steps."""

    raws: list[_Raw]
    input_keys: list[int]
    buffers: dict[int, list[int]]  # storage key -> [first step, last step]
    owner: dict[int, int | None]  # storage key -> raw index whose precision sizes it (None: plan default)
    tensor: dict[int, Any]  # storage key -> a tensor of that storage (for its size)
    steps: int
    step_owner: dict[int, int | None]  # step -> raw index running
    total_macs: int
    traced_with: str


def trace_layers(model: nn.Module, example: torch.Tensor, plan: PrecisionPlan | str = "fp32") -> LayerGraph:
    """Trace ``model`` on ``example`` and return its layers and peak activation memory.

    Liveness: each activation tensor is alive from the step its producing op runs until its last
    consumer ran; the model input is alive from the start, the outputs until the end. Views, flatten,
    reshape, dropout (identity in eval) and in-place ops (``ReLU(inplace=True)``, ``out += x``) share
    their input's storage, detected from the real storages of one forward pass. Batch norm and
    relu/relu6 that runtimes fuse into the preceding conv/linear (``fused_into``) write into that
    conv's buffer. Each tensor counts at its producing layer's precision (the input at its first
    consumer's).

    ``peak_activation_bytes`` is a **lower bound** of a real allocator's peak: it ignores kernel
    workspaces (im2col, packed weights), allocator rounding and fragmentation, and frees a buffer the
    moment its last consumer finishes (a torch.fx liveness estimate measured 0.64-0.83x of the PyTorch
    CPU allocator's peak). ``peak_activation_bytes_unfused`` is the same analysis with every op
    materialising its output, as eager PyTorch runs it; it is a lower bound of the eager allocator's
    peak. Runtimes that also run element-wise ops (add) in place can go below the fused figure.

    Args:
        model: The network; switched to eval mode for the trace and restored afterwards.
        example: One input batch (batch 1 for the usual peak), e.g. ``torch.randn(1, 3, 224, 224)``.
        plan: Precision name or ``PrecisionPlan``; sets each layer's element size.

    Returns:
        A ``LayerGraph``.

    Raises:
        ModelError: If the model rejects ``example`` (the message names expected and given shape).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU())
        >>> g = trace_layers(net, torch.randn(1, 1, 8, 8))
        >>> [(layer.op_type, layer.fused_into) for layer in g.layers]
        [('conv', None), ('relu', '0')]
    """
    import torch

    plan = PrecisionPlan.coerce(plan)
    if not isinstance(example, torch.Tensor):
        raise ModelError(f"example input must be a torch.Tensor, got {type(example).__name__}")
    was_training = model.training
    model.eval()
    notes: list[str] = []
    try:
        try:
            trace = _trace_fx(model, example)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - fx raises TraceError, TypeError, NotImplementedError, ... on dynamic models
            check_input(model, example)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            notes.append(
                f"torch.fx could not trace {type(model).__name__} ({first[:160]}); used forward hooks on leaf modules"
            )
            trace = _trace_hooks(model, example)
    finally:
        model.train(was_training)
    return _assemble(model, example, plan, trace, notes)


def _trace_fx(model: nn.Module, example: torch.Tensor) -> _Trace:
    import torch
    import torch.fx

    from hwtune.profiler.flops import flop_counter

    gm = torch.fx.symbolic_trace(model)
    table = _function_table()
    counter = flop_counter()
    flops: dict[Any, int] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            before = counter.get_total_flops()
            out = super().run_node(n)
            flops[n] = counter.get_total_flops() - before
            return out

    # Keep every value: the tensors stay alive, so storage addresses identify aliasing exactly.
    rec = _Recorder(gm, garbage_collect_values=False)
    try:
        with torch.no_grad(), counter:
            rec.run(example)
    except Exception as exc:
        check_input(model, example)  # raises ModelError if the input is the problem
        raise RuntimeError(f"fx interpretation failed: {exc}") from exc
    values = rec.env
    modules = dict(gm.named_modules())
    param_keys = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
    param_keys.discard(None)

    nodes = list(gm.graph.nodes)
    tr = _Trace([], [], {}, {}, {}, len(nodes), {}, counter.get_total_flops() // 2, "fx")
    node_raw: dict[Any, int] = {}
    calls: dict[str, int] = {}
    seen_params: set[int] = set()
    placeholder_keys: dict[Any, list[int]] = {}

    for step, n in enumerate(nodes):
        val = values.get(n)
        for inp in n.all_input_nodes:  # every tensor read at this step extends its buffer's life
            for t in _tensors(values.get(inp)):
                key = _storage_key(t)
                if key in tr.buffers:
                    tr.buffers[key][1] = step
        if n.op == "placeholder":
            for t in _tensors(val):
                key = _storage_key(t)
                if key is not None and key not in tr.buffers:
                    tr.buffers[key] = [step, step]
                    tr.owner[key] = None
                    tr.tensor[key] = t
                    tr.input_keys.append(key)
                    placeholder_keys.setdefault(n, []).append(key)
            continue
        if n.op in ("output", "get_attr"):
            continue
        outs = _tensors(val)
        if not outs:
            continue  # size()/shape queries are not layers
        idx = len(tr.raws)
        for t in outs:
            key = _storage_key(t)
            if key is None or key in param_keys or key in tr.buffers:
                continue  # views and in-place results share an existing buffer
            tr.buffers[key] = [step, step]
            tr.owner[key] = idx
            tr.tensor[key] = t
        if n.op == "call_module":
            mod = modules[str(n.target)]
            base = str(n.target)
            k = calls.get(base, 0)
            calls[base] = k + 1
            name = base if k == 0 else f"{base}#{k + 1}"
            module_path = base
            op_type, geometry = _module_op(mod, tuple(outs[0].shape))
            own = [p for p in mod.parameters() if id(p) not in seen_params]
            seen_params.update(id(p) for p in own)
            params = sum(p.numel() for p in own)
            roles = _param_roles(mod, op_type) if own else dict(_NO_ROLES)
            target = type(mod).__name__
        else:
            stack = n.meta.get("nn_module_stack") or {}
            module_path = str(list(stack)[-1]) if stack else ""
            name = n.name
            op_type, geometry = _function_op(n, table, values)
            # Parameters used functionally (F.conv2d(x, self.weight)) arrive through get_attr nodes.
            attr = [
                p
                for i in n.all_input_nodes
                if i.op == "get_attr"
                for p in [values.get(i)]
                if isinstance(p, torch.nn.Parameter) and id(p) not in seen_params
            ]
            seen_params.update(id(p) for p in attr)
            params = sum(p.numel() for p in attr)
            roles = {**_NO_ROLES, "other_numel": params}
            if op_type in _COMPUTE_OPS and attr:
                w = max(attr, key=lambda p: p.dim())
                rest = sum(p.numel() for p in attr if p is not w)
                roles = {
                    "weight_numel": w.numel(),
                    "out_channels": int(w.shape[0]),
                    "bias_numel": rest,
                    "other_numel": 0,
                }
            target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        tr.raws.append(
            _Raw(
                name=name,
                module=module_path,
                target=str(target),
                op_type=op_type,
                geometry=geometry,
                input_shapes=tuple(
                    tuple(int(s) for s in t.shape)
                    for i in n.all_input_nodes
                    if i.op != "get_attr"
                    for t in _tensors(values.get(i))
                ),
                out=outs[0],
                macs=int(flops.get(n, 0)) // 2,
                params=params,
                roles=roles,
                producers=tuple(sorted({node_raw[i] for i in n.all_input_nodes if i in node_raw})),
            )
        )
        node_raw[n] = idx
        tr.step_owner[step] = idx
    for n, idx in node_raw.items():
        tr.raws[idx].users = len(n.users)
    # The input is stored at its first consumer's precision.
    for n, keys in placeholder_keys.items():
        consumers = sorted(node_raw[u] for u in n.users if u in node_raw)
        for key in keys:
            tr.owner[key] = consumers[0] if consumers else None
    return tr


def _trace_hooks(model: nn.Module, example: torch.Tensor) -> _Trace:
    """Fallback tracer: forward hooks on leaf modules for layers, a dispatch mode over aten ops for liveness."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from hwtune.profiler.flops import flop_counter

    counter = flop_counter()
    param_keys = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
    param_keys.discard(None)
    tr = _Trace([], [], {}, {}, {}, 0, {}, 0, "hooks")
    state: dict[str, Any] = {"step": 0, "current": None}
    key_raw: dict[int, int] = {}  # storage key -> raw layer that last wrote it
    calls: dict[str, int] = {}
    seen_params: set[int] = set()
    pre_flops: dict[int, int] = {}

    class _Liveness(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            state["step"] += 1
            step = state["step"]
            tr.step_owner[step] = state["current"]
            read = set()
            for t in _tensors((args, kwargs)):
                key = _storage_key(t)
                if key in tr.buffers:
                    tr.buffers[key][1] = step
                    read.add(key)
            if state["current"] is None:  # a functional op between modules consumes these layers
                for key in read:
                    if key in key_raw:
                        tr.raws[key_raw[key]].users += 1
            for t in _tensors(out):
                key = _storage_key(t)
                if key is None or key in param_keys or key in tr.buffers:
                    continue
                tr.buffers[key] = [step, step]
                tr.owner[key] = state["current"]
                tr.tensor[key] = t  # holding it also keeps its address from being reused
            return out

    def pre_hook(mod: nn.Module, args: Any) -> None:
        pre_flops[id(mod)] = counter.get_total_flops()
        state["current"] = len(tr.raws)

    def post_hook_for(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            before = pre_flops.pop(id(mod), counter.get_total_flops())
            outs, ins = _tensors(out), _tensors(args)
            k = calls.get(name, 0)
            calls[name] = k + 1
            op_type, geometry = _module_op(mod, tuple(outs[0].shape) if outs else ())
            own = [p for p in mod.parameters() if id(p) not in seen_params]
            seen_params.update(id(p) for p in own)
            producers = tuple(sorted({key_raw[key] for t in ins if (key := _storage_key(t)) in key_raw}))
            idx = len(tr.raws)
            tr.raws.append(
                _Raw(
                    name=name if k == 0 else f"{name}#{k + 1}",
                    module=name,
                    target=type(mod).__name__,
                    op_type=op_type,
                    geometry=geometry,
                    input_shapes=tuple(tuple(int(s) for s in t.shape) for t in ins),
                    out=outs[0] if outs else None,
                    macs=(counter.get_total_flops() - before) // 2,
                    params=sum(p.numel() for p in own),
                    roles=_param_roles(mod, op_type) if own else dict(_NO_ROLES),
                    producers=producers,
                )
            )
            for p in producers:
                tr.raws[p].users += 1
            for t in outs:
                key = _storage_key(t)
                if key is not None:
                    key_raw[key] = idx  # in-place results: later readers consume this layer
            for key in tr.input_keys:
                if tr.owner.get(key) is None and any(_storage_key(t) == key for t in ins):
                    tr.owner[key] = idx
            state["current"] = None

        return hook

    handles = []
    for name, mod in model.named_modules():
        if mod is model or list(mod.children()):
            continue
        handles.append(mod.register_forward_pre_hook(pre_hook))
        handles.append(mod.register_forward_hook(post_hook_for(name)))
    input_key = _storage_key(example)
    if input_key is not None:
        tr.buffers[input_key] = [0, 0]
        tr.owner[input_key] = None
        tr.tensor[input_key] = example
        tr.input_keys.append(input_key)
    try:
        with torch.no_grad(), counter, _Liveness():
            out = model(example)
    except Exception as exc:
        raise ModelError(_shape_message(model, tuple(example.shape), exc)) from exc
    finally:
        for h in handles:
            h.remove()
    end = state["step"] + 1
    for t in _tensors(out):
        key = _storage_key(t)
        if key in tr.buffers:
            tr.buffers[key][1] = end
        if key in key_raw:
            tr.raws[key_raw[key]].users += 1
    tr.steps = end + 1
    tr.total_macs = counter.get_total_flops() // 2
    return tr


def _fusions(raws: Sequence[_Raw]) -> list[str | None]:
    """``fused_into`` per layer: bn after a conv/linear that only it reads; relu/relu6 after such a conv or fused bn."""
    fused: list[str | None] = [None] * len(raws)
    for i, r in enumerate(raws):
        if len(r.producers) != 1:
            continue
        p = r.producers[0]
        prod = raws[p]
        if prod.users != 1:
            continue  # the intermediate is read elsewhere, so the runtime must materialise it
        if r.op_type == "bn" and prod.op_type in _COMPUTE_OPS:
            fused[i] = prod.name
        elif r.op_type in FUSABLE_ACTIVATIONS:
            if prod.op_type in _COMPUTE_OPS:
                fused[i] = prod.name
            elif prod.op_type == "bn" and fused[p] is not None:
                fused[i] = fused[p]
    return fused


def _assemble(model: nn.Module, example: torch.Tensor, plan: PrecisionPlan, tr: _Trace, notes: list[str]) -> LayerGraph:
    raws = tr.raws
    precisions = [plan.for_module(r.module) for r in raws]
    fused = _fusions(raws)
    name_idx = {r.name: i for i, r in enumerate(raws)}

    sized: dict[int, tuple[int, int, int]] = {}
    for key, (first, last) in tr.buffers.items():
        owner = tr.owner.get(key)
        prec = precisions[owner] if owner is not None else plan.default
        t = tr.tensor.get(key)
        sized[key] = (_storage_bytes(t, prec) if t is not None else 0, first, last)
    input_bytes = sum(sized[k][0] for k in tr.input_keys if k in sized)

    merges: dict[int, int] = {}
    for i, r in enumerate(raws):
        if fused[i] is None or r.out is None:
            continue
        key = _storage_key(r.out)
        target = raws[name_idx[fused[i]]].out
        tkey = _storage_key(target) if target is not None else None
        if key is not None and tkey is not None and key != tkey:
            merges[key] = tkey
    peak_fused, peak_step = liveness_peak(sized, merges, tr.steps)
    peak_unfused, _ = liveness_peak(sized, None, tr.steps)

    layers: list[LayerInfo] = []
    for i, r in enumerate(raws):
        prec = precisions[i]
        geometry = dict(r.geometry)
        if r.out is not None and r.out.dim() == 4:
            geometry.setdefault("out_channels", int(r.out.shape[1]))
            if r.input_shapes and len(r.input_shapes[0]) == 4:
                geometry.setdefault("in_channels", int(r.input_shapes[0][1]))
        if fused[i] is not None and r.op_type == "bn" and prec == "int8" and r.params:
            # BN folded into an int8 conv becomes its int32 bias: C values, not 2C floats.
            wbytes = int(geometry.get("out_channels") or 0) * INT8_BIAS_BYTES
        else:
            wbytes = weight_storage_bytes(prec, **r.roles)
        layers.append(
            LayerInfo(
                name=r.name,
                op_type=r.op_type,
                input_shapes=r.input_shapes,
                output_shape=tuple(int(s) for s in r.out.shape) if r.out is not None else (),
                macs=int(r.macs),
                params=int(r.params),
                precision=prec,
                activation_bytes=_activation_bytes(r.out, prec),
                weight_bytes=int(wbytes),
                kernel_size=geometry.get("kernel_size"),
                stride=geometry.get("stride"),
                groups=int(geometry.get("groups", 1)),
                in_channels=geometry.get("in_channels"),
                out_channels=geometry.get("out_channels"),
                fused_into=fused[i],
                module=r.module,
                target=r.target,
                producers=tuple(raws[p].name for p in r.producers),
            )
        )
    peak_layer = ""
    for s in range(peak_step, -1, -1):
        owner = tr.step_owner.get(s)
        if owner is not None:
            peak_layer = raws[owner].name
            break
    return LayerGraph(
        layers=tuple(layers),
        input_shape=tuple(int(s) for s in example.shape),
        peak_activation_bytes=int(peak_fused),
        peak_activation_bytes_unfused=int(peak_unfused),
        peak_layer=peak_layer,
        input_bytes=int(input_bytes),
        total_macs=int(tr.total_macs),
        total_params=int(sum(p.numel() for p in model.parameters())),
        total_weight_bytes=int(sum(layer.weight_bytes for layer in layers)),
        traced_with=tr.traced_with,
        notes=tuple(notes),
    )
