"""Weight inheritance: every candidate of a sliceable space is a sub-network of one parent.

The parent is the space's largest candidate (:func:`largest_candidate`). Train it once for all
its sub-networks (:func:`train_parent`, the sandwich rule), then evaluate a candidate in seconds:
:func:`extract` it (weights copied from the parent), :func:`recalibrate_bn`, evaluate; spend real
training only on the few that ship (:func:`finetune`, distilled from the parent).

Sliceable families: ``convnet``, ``mobilenet_v2``, ``resnet`` (:func:`is_sliceable`;
:func:`why_not_sliceable` says why ``nb201`` is not).

Example:
    >>> from hwtune.space import SearchSpace
    >>> from hwtune.supernet import extract, largest_candidate
    >>> space = SearchSpace.from_recipe("fashion-convnet")
    >>> parent = space.build(largest_candidate(space))
    >>> sub = extract(parent, space, space.sample(0))
    >>> type(sub).__name__
    'ConvNet'
"""

from __future__ import annotations

from hwtune.supernet.bn import recalibrate_bn
from hwtune.supernet.distill import FinetuneStats, distill_loss, finetune
from hwtune.supernet.elastic import ParentStats, sandwich_step, train_parent
from hwtune.supernet.extract import SubnetView, extract
from hwtune.supernet.importance import ChannelOrder, importance_order
from hwtune.supernet.parent import (
    check_sliceable,
    family_of,
    is_sliceable,
    largest_candidate,
    smallest_candidate,
    why_not_sliceable,
)

__all__ = [
    "ChannelOrder",
    "FinetuneStats",
    "ParentStats",
    "SubnetView",
    "check_sliceable",
    "distill_loss",
    "extract",
    "family_of",
    "finetune",
    "importance_order",
    "is_sliceable",
    "largest_candidate",
    "recalibrate_bn",
    "sandwich_step",
    "smallest_candidate",
    "train_parent",
    "why_not_sliceable",
]
