"""Channel importance: which channels of each group a smaller sub-network keeps.

A channel group (``ModelFamily.channel_groups``) is the set of channels that must be kept or
dropped together: the outputs of one conv and its BatchNorm, or, across a residual add, the
outputs of every layer feeding that add. One order per group, computed once on the parent,
is then used by every extraction, so two layers tied by an add always keep the same channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from hwtune.errors import ConfigError
from hwtune.families import ModelFamily
from hwtune.supernet.parent import _as_family, family_of

__all__ = ["IMPORTANCE_METHODS", "ChannelOrder", "importance_order"]

SCHEMA_VERSION = 1
IMPORTANCE_METHODS = ("bn", "l1")


@dataclass(frozen=True)
class ChannelOrder:
    """A permutation per channel group, most important channel first.

    Attributes:
        groups: ``(group, permutation)`` pairs sorted by group name; a mapping is accepted.
        method: How importance was scored (``bn``, ``l1``, or ``custom``).

    Example:
        >>> order = ChannelOrder({"stem": (1, 0, 2)})
        >>> order.indices("stem"), order.indices("other")
        ((1, 0, 2), None)
    """

    groups: tuple[tuple[str, tuple[int, ...]], ...] | Mapping[str, Sequence[int]] = ()
    method: str = "custom"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        raw = self.groups.items() if isinstance(self.groups, Mapping) else self.groups
        groups = tuple(sorted((str(g), tuple(int(i) for i in perm)) for g, perm in raw))
        problems = [
            f"ChannelOrder group {g!r} must be a permutation of 0..{len(perm) - 1}, got {list(perm)[:8]}..."
            for g, perm in groups
            if sorted(perm) != list(range(len(perm)))
        ]
        if self.schema_version != SCHEMA_VERSION:
            problems.append(f"ChannelOrder schema_version must be {SCHEMA_VERSION}, got {self.schema_version!r}")
        if problems:
            raise ConfigError("\n".join(problems))
        object.__setattr__(self, "groups", groups)

    @property
    def pairs(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``groups`` as ``__post_init__`` stores it: sorted ``(group, permutation)`` pairs."""
        return cast("tuple[tuple[str, tuple[int, ...]], ...]", self.groups)

    def indices(self, group: str | None) -> tuple[int, ...] | None:
        """The permutation of ``group``, or ``None`` (keep the parent's channel order)."""
        for g, perm in self.pairs:
            if g == group:
                return perm
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "method": self.method,
            "groups": {g: list(perm) for g, perm in self.pairs},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelOrder:
        return cls(
            groups=dict(data.get("groups", {})),
            method=str(data.get("method", "custom")),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )


def _layer_scores(module: nn.Module, method: str) -> torch.Tensor | None:
    if method == "bn" and isinstance(module, nn.BatchNorm2d) and module.weight is not None:
        return module.weight.detach().abs()
    if method == "l1" and isinstance(module, nn.Conv2d):
        return module.weight.detach().abs().flatten(1).sum(1)
    return None


def importance_order(
    parent: nn.Module, family: str | ModelFamily | Any | None = None, *, method: str = "bn"
) -> ChannelOrder:
    """Rank every channel group of ``parent`` by importance, most important first.

    Scores: ``bn`` = |gamma| of the BatchNorm after each conv (every conv here is followed by
    one, and gamma is the channel's output scale); ``l1`` = L1 norm of each conv filter. A group
    fed by several layers (a residual add) sums its layers' scores, each layer's scores divided
    by their mean first so that every layer counts equally.

    Args:
        parent: A model built by a sliceable family.
        family: Its family (name, ``ModelFamily`` or ``SearchSpace``); default: inferred.
        method: ``bn`` or ``l1``.

    Raises:
        ConfigError: unknown method or a family that is not sliceable.
        ModelError: the family of ``parent`` cannot be inferred.
    """
    if method not in IMPORTANCE_METHODS:
        raise ConfigError(f"importance method must be one of {', '.join(IMPORTANCE_METHODS)}, got {method!r}")
    fam = family_of(parent) if family is None else _as_family(family)
    groups = fam.channel_groups(parent)
    if groups is None:
        raise ConfigError(f"family {fam.name!r} is not sliceable; it has no channel groups to order")
    scores: dict[str, torch.Tensor] = {}
    for path, (out_group, _) in groups.items():
        if out_group is None:
            continue
        s = _layer_scores(parent.get_submodule(path), method)
        if s is None:
            continue
        s = s.float() / s.float().mean().clamp_min(1e-12)
        scores[out_group] = scores[out_group] + s if out_group in scores else s
    ordered = {g: tuple(torch.argsort(s, descending=True, stable=True).tolist()) for g, s in scores.items()}
    return ChannelOrder(ordered, method=method)
