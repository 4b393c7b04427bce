"""The family registry: ``register_family``, ``get_family``, ``list_families``, ``create_model``."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from hwtune.errors import ConfigError, UnknownNameError, did_you_mean
from hwtune.families._base import KnobsInput, ModelFamily

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["create_model", "get_family", "list_families", "register_family"]

_FAMILIES: dict[str, ModelFamily] = {}

F = TypeVar("F", bound=type[ModelFamily])


def register_family(cls: F) -> F:
    """Class decorator: register a ``ModelFamily`` subclass under its ``name``.

    Raises:
        ConfigError: the name is empty or already registered (a silent override would make
            two recipes mean different models).
    """
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"family class {cls.__name__} must set a non-empty string 'name'")
    if name in _FAMILIES:
        raise ConfigError(
            f"family {name!r} is already registered (by {type(_FAMILIES[name]).__name__}); pick another name"
        )
    _FAMILIES[name] = cls()
    return cls


def unregister_family(name: str) -> None:
    """Remove a family (for tests that register throw-away families)."""
    _FAMILIES.pop(name, None)


def list_families() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted(_FAMILIES)


def get_family(name: str | ModelFamily) -> ModelFamily:
    """The registered family called ``name``.

    Raises:
        UnknownNameError: no such family; the message suggests close matches.
    """
    if isinstance(name, ModelFamily):
        return name
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown family {name!r}{did_you_mean(str(name), _FAMILIES)} (hwtune list-families)"
        ) from None


def create_model(
    family: str, candidate: KnobsInput | None = None, *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28
) -> nn.Module:
    """Build a model of ``family`` from a candidate's knobs.

    Args:
        family: A registered family name (``convnet``, ``mobilenet_v2``, ``resnet``, ``nb201``).
        candidate: A ``Candidate`` of that family or a mapping of knob values; omitted knobs
            take the family defaults (``None`` builds the default model).
        num_classes: Output classes of the head.
        in_channels: Input image channels.
        input_size: Input height = width in pixels (small inputs get stride-1 stems).

    Returns:
        An ``nn.Module`` in training mode whose top-level children are ``stem``, ``stages``
        and ``head``.

    Raises:
        UnknownNameError: unknown family.
        ConfigError: illegal knobs or input settings, every problem on its own line.

    Example:
        >>> import hwtune
        >>> model = hwtune.create_model("convnet", {"width": [8, 16], "depth": [1, 1]})
        >>> type(model).__name__
        'ConvNet'
    """
    return get_family(family).build(
        {} if candidate is None else candidate, num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
