"""Turn the aten conv / batch-norm / linear calls of a ``torch.export`` module back into layers.

``torch.export.load(...).module()`` returns a ``GraphModule`` whose convolutions are
``aten.conv2d(x, get_attr("layer1.0.conv1.weight"), ...)`` calls on parameter-holding plain
``Module`` s: nothing Torch-Pruning can prune, and batch norm frozen in inference form. This
rewrites each such call into a ``call_module`` of a real ``nn.Conv{1,2,3}d`` / ``nn.BatchNorm{1,2,3}d``
/ ``nn.Linear`` installed at the same module path with the same ``Parameter`` objects, so the
model prunes, fine-tunes (batch norm follows train/eval mode again) and exports like the original.
Calls that do not have that form (a weight computed in the graph, string padding) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import fx, nn

__all__ = ["restore_layers"]

# By weight rank (conv) / input rank (batch norm). Typed as factories: the three conv classes take
# kernel sizes of different tuple lengths, which one dict of classes cannot express.
_CONV: dict[int, Callable[..., nn.Module]] = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}
_BN: dict[int, Callable[..., nn.Module]] = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _owner(node: Any, attr: str) -> str | None:
    """``"layer1.0.conv1"`` when ``node`` is ``get_attr("layer1.0.conv1.<attr>")``."""
    if isinstance(node, fx.Node) and node.op == "get_attr" and str(node.target).endswith("." + attr):
        return str(node.target)[: -len(attr) - 1]
    return None


def _parameter(owner: nn.Module, name: str) -> nn.Parameter:
    """``owner.<name>``, which the graph reads with ``get_attr`` and the new layer registers as its own
    parameter (torch types any module attribute as ``Tensor | Module``)."""
    return cast(nn.Parameter, getattr(owner, name))


def _buffer(owner: nn.Module, name: str) -> torch.Tensor:
    """``owner.<name>``: a batch-norm statistic the graph reads with ``get_attr``."""
    return cast(torch.Tensor, getattr(owner, name))


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _conv(gm: fx.GraphModule, node: fx.Node) -> tuple[str, nn.Module] | None:
    path = _owner(_arg(node, 1, "weight", None), "weight")
    bias = _arg(node, 2, "bias", None)
    if path is None or (bias is not None and _owner(bias, "bias") != path):
        return None
    owner = gm.get_submodule(path)
    weight = _parameter(owner, "weight")
    padding = _arg(node, 4, "padding", 0)
    if isinstance(padding, str) or weight.dim() not in _CONV:
        return None
    groups = int(_arg(node, 6, "groups", 1))
    layer = _CONV[weight.dim()](
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_arg(node, 3, "stride", 1),
        padding=padding,
        dilation=_arg(node, 5, "dilation", 1),
        groups=groups,
        bias=bias is not None,
    )
    layer.weight = weight
    if bias is not None:
        layer.bias = _parameter(owner, "bias")
    return path, layer


def _batch_norm(gm: fx.GraphModule, node: fx.Node, rank: int | None) -> tuple[str, nn.Module] | None:
    path = _owner(_arg(node, 1, "weight", None), "weight")
    if path is None or rank not in _BN or _owner(_arg(node, 2, "bias", None), "bias") != path:
        return None
    owner = gm.get_submodule(path)
    if not all(hasattr(owner, b) for b in ("running_mean", "running_var")):
        return None
    weight = _parameter(owner, "weight")
    layer = _BN[rank](
        weight.shape[0], eps=float(_arg(node, 7, "eps", 1e-5)), momentum=float(_arg(node, 6, "momentum", 0.1))
    )
    layer.weight, layer.bias = weight, _parameter(owner, "bias")
    layer.running_mean, layer.running_var = _buffer(owner, "running_mean"), _buffer(owner, "running_var")
    if hasattr(owner, "num_batches_tracked"):
        layer.num_batches_tracked = _buffer(owner, "num_batches_tracked")
    return path, layer


def _linear(gm: fx.GraphModule, node: fx.Node) -> tuple[str, nn.Module] | None:
    path = _owner(_arg(node, 1, "weight", None), "weight")
    bias = _arg(node, 2, "bias", None)
    if path is None or (bias is not None and _owner(bias, "bias") != path):
        return None
    owner = gm.get_submodule(path)
    weight = _parameter(owner, "weight")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = weight
    if bias is not None:
        layer.bias = _parameter(owner, "bias")
    return path, layer


def _rank(node: fx.Node) -> int | None:
    val = node.args[0].meta.get("val") if node.args and isinstance(node.args[0], fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def restore_layers(gm: fx.GraphModule) -> int:
    """Rewrite ``gm`` in place (see the module docstring); returns how many calls became layers."""
    aten = torch.ops.aten
    done = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == aten.conv2d.default or node.target in (aten.conv1d.default, aten.conv3d.default):
            found = _conv(gm, node)
        elif node.target == aten.batch_norm.default:
            found = _batch_norm(gm, node, _rank(node))
        elif node.target == aten.linear.default:
            found = _linear(gm, node)
        else:
            continue
        if found is None:
            continue
        path, layer = found
        parent, _, child = path.rpartition(".")
        setattr(gm.get_submodule(parent), child, layer)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(path, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        params = [a for a in node.args[1:] if isinstance(a, fx.Node) and a.op == "get_attr"]
        gm.graph.erase_node(node)
        for p in params:
            if not p.users:
                gm.graph.erase_node(p)
        done += 1
    gm.recompile()
    return done
