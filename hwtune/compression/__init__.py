"""Compress a user's own trained model: load it safely, derive its search space, apply candidates.

The model side of ``hwtune compress`` (the tuner wiring lives in :mod:`hwtune.tuner`):

1. :func:`load_user_model` / :func:`check_model` — the model from a factory, torchvision or a
   ``torch.export`` archive, weights from a state dict (never an unpickled object);
2. :func:`derive_space` — stages, Torch-Pruning channel groups and droppable residual blocks ->
   a :class:`CompressSpace` (width / depth / precision per stage), editable as TOML;
3. :func:`apply_candidate` — a pruned copy of the model for one :class:`CompressCandidate`, with
   :func:`stage_prefixes` / :func:`precision_plan` for its per-stage precision;
4. :class:`UserModelSpace` — the derived space seen as the tuner's space (stored kind ``compress``).

Example:
    >>> import torch
    >>> from hwtune.compression import load_user_model, derive_space, apply_candidate   # doctest: +SKIP
    >>> model = load_user_model("torchvision:resnet18", kwargs={"num_classes": 10})  # doctest: +SKIP
    >>> x = torch.randn(1, 3, 64, 64)                                                 # doctest: +SKIP
    >>> space = derive_space(model, x)                                                # doctest: +SKIP
    >>> pruned, info = apply_candidate(model, space, space.uniform(0.5), example_input=x)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hwtune.compression.user_space import UserModelSpace  # no torch; registers the stored space kind "compress"

# public name -> module; resolved on first use so importing the space (no torch) stays cheap
_EXPORTS: dict[str, str] = {
    "ChannelGroup": "hwtune.compression.compress_space",
    "CompressCandidate": "hwtune.compression.compress_space",
    "CompressSpace": "hwtune.compression.compress_space",
    "StageChoice": "hwtune.compression.compress_space",
    "StageSpace": "hwtune.compression.compress_space",
    "kept_channels": "hwtune.compression.compress_space",
    "check_space": "hwtune.compression.derive",
    "derive_space": "hwtune.compression.derive",
    "apply_candidate": "hwtune.compression.prune",
    "dropped_blocks": "hwtune.compression.prune",
    "precision_plan": "hwtune.compression.prune",
    "stage_prefixes": "hwtune.compression.prune",
    "check_model": "hwtune.compression.loading",
    "load_user_model": "hwtune.compression.loading",
    "load_weights": "hwtune.compression.loading",
    "read_state_dict": "hwtune.compression.loading",
    "state_sha256": "hwtune.compression.loading",
}

__all__ = [
    "ChannelGroup",
    "CompressCandidate",
    "CompressSpace",
    "StageChoice",
    "StageSpace",
    "UserModelSpace",
    "apply_candidate",
    "check_model",
    "check_space",
    "derive_space",
    "dropped_blocks",
    "kept_channels",
    "load_user_model",
    "load_weights",
    "precision_plan",
    "read_state_dict",
    "stage_prefixes",
    "state_sha256",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwtune.compression' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from hwtune.compression.compress_space import (
        ChannelGroup,
        CompressCandidate,
        CompressSpace,
        StageChoice,
        StageSpace,
        kept_channels,
    )
    from hwtune.compression.derive import check_space, derive_space
    from hwtune.compression.loading import check_model, load_user_model, load_weights, read_state_dict, state_sha256
    from hwtune.compression.prune import apply_candidate, dropped_blocks, precision_plan, stage_prefixes
