"""The one slicing rule shared by ``extract`` (a copy) and ``SubnetView`` (a differentiable view).

Each dimension of a parent tensor is cut to the sub-network's size: a channel dimension keeps
its group's first ``n`` channels in the given order (or the parent's own first ``n``), a kernel
dimension keeps its centre. Without an order every cut is a view (``narrow``), so gradients of a
sub-network flow straight into the parent's parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hwtune.errors import ModelError

__all__ = ["ChannelGroups", "slice_state"]

# Module path -> (output channel group, input channel group), as ``ModelFamily.channel_groups``
# returns it.
ChannelGroups = dict[str, tuple[str | None, str | None]]


def _own_tensors(module: nn.Module, buffers: bool) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters(recurse=False)
    if buffers:
        yield from module.named_buffers(recurse=False)


def _dim_roles(module: nn.Module, name: str, t: torch.Tensor) -> tuple[str | None, ...]:
    """Per dimension: ``out``, ``in``, ``k`` (kernel) or ``None`` (never cut)."""
    if name == "num_batches_tracked":
        return ()
    if isinstance(module, nn.Conv2d) and name == "weight":
        if module.groups == 1:
            return ("out", "in", "k", "k")
        if module.groups == module.in_channels == module.out_channels:  # depthwise
            return ("out", None, "k", "k")
        raise ModelError(f"grouped conv with {module.groups} groups cannot be sliced (only dense and depthwise)")
    if isinstance(module, nn.Linear) and name == "weight":
        return ("out", "in")
    if t.ndim == 1:  # biases, BatchNorm affine and running statistics
        return ("out",)
    raise ModelError(f"cannot slice {type(module).__name__}.{name} of shape {tuple(t.shape)}")


class _Cutter:
    """Cuts tensors along groups, caching index tensors per (group, size)."""

    def __init__(self, order: Any) -> None:
        self.order = order
        self._index: dict[tuple[str, int], torch.Tensor] = {}

    def cut(self, t: torch.Tensor, dim: int, group: str | None, role: str | None, n: int, where: str) -> torch.Tensor:
        size = t.shape[dim]
        if n > size:
            raise ModelError(f"{where}: the sub-network needs {n} along dim {dim}, the parent has only {size}")
        if role == "k":
            if (size - n) % 2:
                raise ModelError(f"{where}: a {n}x{n} kernel is not the centre of the parent's {size}x{size}")
            return t.narrow(dim, (size - n) // 2, n) if n < size else t
        perm = None if (self.order is None or group is None) else self.order.indices(group)
        if perm is None or group is None:  # perm is None whenever group is; this tells mypy
            if n < size and (role is None or group is None):
                raise ModelError(f"{where}: dim {dim} is not sliceable but sizes differ ({n} vs {size})")
            return t.narrow(dim, 0, n) if n < size else t
        if len(perm) != size:
            raise ModelError(f"{where}: channel order of group {group!r} has {len(perm)} entries, the parent {size}")
        key = (group, n)
        if key not in self._index:
            self._index[key] = torch.tensor(perm[:n], dtype=torch.long)
        return t.index_select(dim, self._index[key])


def slice_state(
    parent: nn.Module, groups: ChannelGroups, sub: nn.Module, order: Any = None, *, buffers: bool = True
) -> dict[str, torch.Tensor]:
    """The parent's tensors cut to the shapes of ``sub``'s parameters (and buffers).

    Args:
        parent: The parent model.
        groups: ``family.channel_groups(parent)``.
        sub: A model of the same family with the sub-network's architecture.
        order: A ``ChannelOrder`` or ``None`` (the parent's first channels).
        buffers: Include BatchNorm running statistics.

    Returns:
        ``sub``'s state-dict names -> tensors of exactly ``sub``'s shapes, computed from the parent
        (differentiable unless called under ``torch.no_grad``).

    Raises:
        ModelError: ``sub`` has a layer the parent lacks or one larger than the parent's.
    """
    cutter = _Cutter(order)
    out: dict[str, torch.Tensor] = {}
    for path, module in sub.named_modules():
        own = list(_own_tensors(module, buffers))
        if not own:
            continue
        if path not in groups:
            raise ModelError(f"layer {path!r} of the sub-network has no counterpart in the parent")
        parent_module = parent.get_submodule(path)
        out_group, in_group = groups[path]
        for name, t_sub in own:
            t = getattr(parent_module, name)
            where = f"{path}.{name}"
            if not isinstance(t, torch.Tensor) or t.ndim != t_sub.ndim:
                raise ModelError(f"{where}: parent tensor does not match the sub-network's {tuple(t_sub.shape)}")
            for dim, role in enumerate(_dim_roles(module, name, t_sub)):
                group = out_group if role == "out" else in_group if role == "in" else None
                t = cutter.cut(t, dim, group, role, t_sub.shape[dim], where)
            out[f"{path}.{name}" if path else name] = t
    return out
