"""Op classification: the canonical op type and geometry of a module or an fx node."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["conv_kind", "function_op", "function_table", "mean_kind", "method_table", "module_op", "pair"]


def pair(v: Any) -> tuple[int, int] | None:
    """The last two dims of a kernel / stride (an int repeated, a 1-d one padded with 1), or None."""
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


def conv_kind(in_channels: int, groups: int, kernel: Sequence[int]) -> str:
    """``dwconv`` (one group per input channel), ``pwconv`` (1x1, one group) or ``conv``."""
    if groups == in_channels and in_channels > 1:
        return "dwconv"
    if groups == 1 and all(k == 1 for k in kernel):
        return "pwconv"
    return "conv"


def mean_kind(ndim: int, dims: Sequence[int]) -> str:
    """``gap`` for a mean over every spatial axis of an N-C-spatial tensor (``x.mean((2, 3))``), else ``other``."""
    return "gap" if ndim >= 3 and sorted(int(d) % ndim for d in dims) == list(range(2, ndim)) else "other"


def module_op(mod: nn.Module, out_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """Canonical op type and geometry of a leaf module."""
    from torch import nn

    if isinstance(mod, nn.modules.conv._ConvNd):
        k = tuple(mod.kernel_size)
        kind = "conv" if mod.transposed else conv_kind(mod.in_channels, mod.groups, k)
        return kind, {
            "kernel_size": pair(k),
            "stride": pair(mod.stride),
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
        return "avgpool", {"kernel_size": pair(mod.kernel_size), "stride": pair(mod.stride)}
    if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return "maxpool", {"kernel_size": pair(mod.kernel_size), "stride": pair(mod.stride)}
    if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        return "maxpool", {}
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return "flatten", {}
    if isinstance(mod, nn.Softmax):
        return "softmax", {}
    if isinstance(mod, nn.MultiheadAttention):
        return "attention", {"in_channels": mod.embed_dim, "out_channels": mod.embed_dim}
    return "other", {}


def function_table() -> dict[Any, str]:
    """Canonical op type of the torch functions and operators an fx graph calls."""
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


def method_table() -> dict[str, str]:
    """Canonical op type of the tensor methods an fx graph calls (``x.add(y)``, ``x.view(...)``)."""
    return dict(_METHOD_OPS)


def function_op(node: Any, table: Mapping[Any, str], values: Mapping[Any, Any]) -> tuple[str, dict[str, Any]]:
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
            return conv_kind(int(inp.shape[1]), groups, k), {
                "kernel_size": pair(k),
                "stride": pair(stride),
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
    return mean_kind(inp.dim(), (dims,) if isinstance(dims, int) else tuple(dims))
