"""Compress a user's own trained model: load it safely, derive its search space, apply candidates.

The model side of ``hwtune compress`` (the tuner wiring lives in :mod:`hwtune.tuner`):

1. :func:`load_user_model` / :func:`check_model` — the model from a factory, torchvision or a
   ``torch.export`` archive, weights from a state dict (never an unpickled object);
2. :func:`derive_space` — stages, Torch-Pruning channel groups and droppable residual blocks ->
   a :class:`CompressSpace` (width / depth / precision per stage), editable as TOML;
3. :func:`apply_candidate` — a pruned copy of the model for one :class:`CompressCandidate`, with
   :func:`stage_prefixes` / :func:`precision_plan` for its per-stage precision.

Example:
    >>> import torch
    >>> from hwtune.compress import load_user_model, derive_space, apply_candidate   # doctest: +SKIP
    >>> model = load_user_model("torchvision:resnet18", kwargs={"num_classes": 10})  # doctest: +SKIP
    >>> x = torch.randn(1, 3, 64, 64)                                                 # doctest: +SKIP
    >>> space = derive_space(model, x)                                                # doctest: +SKIP
    >>> pruned, info = apply_candidate(model, space, space.uniform(0.5), example_input=x)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module; resolved on first use so importing the space (no torch) stays cheap
_EXPORTS: dict[str, str] = {
    "ChannelGroup": "hwtune.compress.space",
    "CompressCandidate": "hwtune.compress.space",
    "CompressSpace": "hwtune.compress.space",
    "StageChoice": "hwtune.compress.space",
    "StageSpace": "hwtune.compress.space",
    "kept_channels": "hwtune.compress.space",
    "check_space": "hwtune.compress.derive",
    "derive_space": "hwtune.compress.derive",
    "apply_candidate": "hwtune.compress.prune",
    "dropped_blocks": "hwtune.compress.prune",
    "precision_plan": "hwtune.compress.prune",
    "stage_prefixes": "hwtune.compress.prune",
    "check_model": "hwtune.compress.loading",
    "load_user_model": "hwtune.compress.loading",
    "load_weights": "hwtune.compress.loading",
    "read_state_dict": "hwtune.compress.loading",
    "state_sha256": "hwtune.compress.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwtune.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from hwtune.compress.derive import check_space, derive_space
    from hwtune.compress.loading import check_model, load_user_model, load_weights, read_state_dict, state_sha256
    from hwtune.compress.prune import apply_candidate, dropped_blocks, precision_plan, stage_prefixes
    from hwtune.compress.space import (
        ChannelGroup,
        CompressCandidate,
        CompressSpace,
        StageChoice,
        StageSpace,
        kept_channels,
    )
