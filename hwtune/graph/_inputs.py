"""Input checking: run a model once and, when it rejects the input, say which shape it expected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwtune._util import first_line
from hwtune.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["check_input", "shape_message"]


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
        raise ModelError(shape_message(model, tuple(example.shape), exc)) from exc


def shape_message(model: nn.Module, shape: tuple[int, ...], exc: BaseException) -> str:
    """One line saying ``model`` rejected ``shape``, naming what its first conv/linear expects when that explains it."""
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
    detail = first_line(exc)
    msg = f"{type(model).__name__} rejected input of shape {got}"
    return f"{msg}: {expected} ({detail})" if expected else f"{msg}: {detail}"
