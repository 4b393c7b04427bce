"""Sub-networks of a parent: as an ordinary module (``extract``) or as a view (``SubnetView``).

``extract`` builds the candidate with its family's own builder and copies the parent's weights
into it: per layer the most important output channels (see ``importance_order``), the first
``d`` blocks of each stage, the centre ``k x k`` of larger kernels, BatchNorm affine and running
statistics cut likewise, the classifier cut on its input features. Its state dict has exactly
the shapes of the candidate built directly, and the largest candidate reproduces the parent.

``SubnetView`` runs a sub-network *on* the parent's tensors (``torch.func.functional_call`` with
sliced parameters): no copy, and the backward pass accumulates into the parent's gradients. That
is what elastic training uses; ``extract`` is what a tuner evaluates and ships.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from hwtune._util import jsonable
from hwtune.errors import ConfigError
from hwtune.families import ModelFamily
from hwtune.supernet._slicing import ChannelGroups, slice_state
from hwtune.supernet.importance import ChannelOrder
from hwtune.supernet.parent import check_sliceable

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.families import KnobsInput
    from hwtune.space import SearchSpace

__all__ = ["SubnetView", "extract"]


def _fixed_sizes(parent: nn.Module, groups: ChannelGroups) -> tuple[int, int]:
    """``(num_classes, in_channels)``: the two dimensions no group slices."""
    num_classes = in_channels = None
    for path, (out_group, in_group) in groups.items():
        module = parent.get_submodule(path)
        if out_group is None and isinstance(module, nn.Linear):
            num_classes = module.out_features
        if in_group is None and isinstance(module, nn.Conv2d) and module.groups == 1:
            in_channels = module.in_channels
    if num_classes is None or in_channels is None:
        raise ConfigError(f"cannot find the input conv and the classifier of {type(parent).__name__}")
    return num_classes, in_channels


def _builder(
    space_or_family: SearchSpace | ModelFamily | str, parent: nn.Module, input_size: int | None
) -> tuple[ModelFamily, ChannelGroups, Callable[[Any], nn.Module]]:
    family = check_sliceable(space_or_family)
    groups = family.channel_groups(parent)
    if groups is None:  # pragma: no cover - check_sliceable guarantees an override
        raise ConfigError(f"family {family.name!r} has no channel groups")
    if hasattr(space_or_family, "build") and not isinstance(space_or_family, ModelFamily):
        return family, groups, space_or_family.build
    if input_size is None:
        raise ConfigError(
            f"extracting from family {family.name!r} needs input_size= (the parent's input size in pixels); "
            "or pass the SearchSpace"
        )
    num_classes, in_channels = _fixed_sizes(parent, groups)

    def build(candidate: KnobsInput) -> nn.Module:
        return family.build(candidate, num_classes=num_classes, in_channels=in_channels, input_size=input_size)

    return family, groups, build


def extract(
    parent: nn.Module,
    space_or_family: SearchSpace | ModelFamily | str,
    candidate: KnobsInput,
    *,
    order: ChannelOrder | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """The candidate as an ordinary module, with weights inherited from ``parent``.

    Args:
        parent: The parent model (the space's largest candidate, possibly elastically trained).
        space_or_family: The ``SearchSpace`` (gives input size and classes), or a family name /
            ``ModelFamily`` together with ``input_size``.
        candidate: A ``Candidate`` or knob mapping no larger than the parent in any dimension.
        order: Channel order per group (``importance_order(parent)``, computed once and reused).
            ``None`` keeps each group's first channels: right for a parent from
            :func:`~hwtune.supernet.train_parent`, whose sub-networks were trained on exactly those.
        input_size: Input size in pixels; only needed when a family is given instead of a space.

    Returns:
        A new module (in the parent's train/eval mode) whose state dict has the same keys and
        shapes as building ``candidate`` directly.

    Raises:
        ConfigError: the family is not sliceable or the candidate is invalid.
        ModelError: the candidate is larger than the parent somewhere.

    Example:
        >>> space = SearchSpace.from_recipe("fashion-convnet")               # doctest: +SKIP
        >>> parent = space.build(largest_candidate(space))                   # doctest: +SKIP
        >>> sub = extract(parent, space, space.sample(0), order=importance_order(parent))  # doctest: +SKIP
    """
    _, groups, build = _builder(space_or_family, parent, input_size)
    sub = build(candidate)
    with torch.no_grad():
        state = slice_state(parent, groups, sub, order)
        sub.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return sub.train(parent.training)


def _cache_key(candidate: KnobsInput) -> str:
    knobs = candidate.knobs if hasattr(candidate, "knobs") else sorted(dict(candidate).items())
    return json.dumps(jsonable(knobs), sort_keys=True)


class SubnetView:
    """Run sub-networks on the parent's own tensors (weight sharing without copies).

    In training mode (the parent's mode) only the parameters are shared: BatchNorm layers use
    batch statistics and the parent's running statistics are left alone (a sub-network's
    statistics are re-estimated after extraction, see ``recalibrate_bn``). In eval mode the
    parent's running statistics are sliced too, so the view's output equals ``extract``'s.

    Args:
        parent: The parent model.
        space_or_family: As for :func:`extract`.
        order: As for :func:`extract`.
        input_size: As for :func:`extract`.
        cache_size: Sub-network skeletons (built modules whose own weights are unused) kept.

    Example:
        >>> view = SubnetView(parent, space)                 # doctest: +SKIP
        >>> loss = F.cross_entropy(view(candidate, x), y)    # doctest: +SKIP
        >>> loss.backward()  # gradients land in the parent's .grad  # doctest: +SKIP
    """

    def __init__(
        self,
        parent: nn.Module,
        space_or_family: SearchSpace | ModelFamily | str,
        *,
        order: ChannelOrder | None = None,
        input_size: int | None = None,
        cache_size: int = 32,
    ) -> None:
        self.parent = parent
        self.order = order
        _, self.groups, self._build = _builder(space_or_family, parent, input_size)
        self._cache: OrderedDict[str, nn.Module] = OrderedDict()
        self._cache_size = max(1, int(cache_size))

    def skeleton(self, candidate: KnobsInput) -> nn.Module:
        """The candidate's built module (cached); its own weights are never used by the view."""
        key = _cache_key(candidate)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        module = self._build(candidate)
        for p in module.parameters():
            p.requires_grad_(False)
        self._cache[key] = module
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return module

    def __call__(self, candidate: KnobsInput, x: torch.Tensor) -> torch.Tensor:
        """The sub-network's output for ``x``, differentiable with respect to the parent."""
        sub = self.skeleton(candidate)
        training = self.parent.training
        sub.train(training)
        tensors = slice_state(self.parent, self.groups, sub, self.order, buffers=not training)
        return functional_call(sub, tensors, (x,))
