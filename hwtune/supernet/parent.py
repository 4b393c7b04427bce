"""Which spaces share one parent, and the parent itself: the space's largest candidate.

A family is sliceable when every candidate of its spaces is a sub-network of the largest one:
fewer channels per layer, the first ``d`` blocks of each stage, the centre of each kernel
(``convnet``, ``mobilenet_v2``, ``resnet``). ``nb201`` picks an operation per cell edge instead,
so its candidates share nothing a parent could hand down; they are trained from scratch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from hwtune._util import is_num
from hwtune.errors import ConfigError, ModelError
from hwtune.families import ModelFamily, get_family, list_families

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from hwtune.space import Candidate, SearchSpace, SpaceLike

__all__ = [
    "check_sliceable",
    "family_of",
    "is_sliceable",
    "largest_candidate",
    "smallest_candidate",
    "why_not_sliceable",
]


def _as_family(family_or_space: str | ModelFamily | SpaceLike) -> ModelFamily:
    if isinstance(family_or_space, ModelFamily):
        return family_or_space
    if isinstance(family_or_space, str):
        return get_family(family_or_space)
    family = getattr(family_or_space, "family", None)
    if isinstance(family, str):  # a SearchSpace
        return get_family(family)
    raise ConfigError(f"expected a family name, a ModelFamily or a SearchSpace, got {type(family_or_space).__name__}")


def _space_choices(space: SearchSpace) -> dict[str, list[tuple[Any, ...]]]:
    """Knob -> choices (one tuple per stage for per-stage knobs), searched knobs only."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for p in space.params:
        out.setdefault(p.knob, []).append(tuple(p.choices))
    return {k: v for k, v in out.items() if any(len(c) > 1 for c in v)}


def why_not_sliceable(family_or_space: str | ModelFamily | SpaceLike) -> str | None:
    """Why candidates cannot inherit weights from one parent, or ``None`` when they can.

    Args:
        family_or_space: A family name, a ``ModelFamily`` or a ``SearchSpace`` (a space is also
            checked for knob choices that break slicing, e.g. MobileNetV2 ``expand_ratio`` mixing 1
            with larger ratios in one stage).

    Example:
        >>> why_not_sliceable("convnet") is None
        True
        >>> print(why_not_sliceable("nb201"))  # doctest: +ELLIPSIS
        family 'nb201' cannot share a parent: ...
    """
    family = _as_family(family_or_space)
    if not family.sliceable:
        sliceable = [n for n in list_families() if get_family(n).sliceable]
        return (
            f"family {family.name!r} cannot share a parent: its knobs ({', '.join(family.knobs)}) do not shrink "
            "one network into sub-networks (only widths, depths and kernel sizes do), so its candidates are trained "
            f"from scratch (strategy 'scratch'); sliceable families: {', '.join(sliceable)}"
        )
    if isinstance(family_or_space, (str, ModelFamily)):
        return None
    space = cast("SearchSpace", family_or_space)  # only recipe spaces have a sliceable family
    where = str(space.path) if space.path is not None else space.name
    problems = []
    choices = _space_choices(space)
    for knob, per_stage in choices.items():
        if not all(is_num(v) for c in per_stage for v in c):
            problems.append(f"knobs.{knob} has choices that are not sizes: {[list(c) for c in per_stage]}")
    problems += family.slicing_problems(choices)
    if problems:
        return "\n".join(f"{where}: {p}" for p in problems)
    return None


def is_sliceable(family_or_space: str | ModelFamily | SpaceLike) -> bool:
    """``True`` when candidates can be sliced from one parent (see :func:`why_not_sliceable`)."""
    return why_not_sliceable(family_or_space) is None


def check_sliceable(family_or_space: str | ModelFamily | SpaceLike) -> ModelFamily:
    """The family, or ``ConfigError`` with :func:`why_not_sliceable`'s reason."""
    why = why_not_sliceable(family_or_space)
    if why is not None:
        raise ConfigError(why)
    return _as_family(family_or_space)


def _extreme_candidate(space: SearchSpace, pick: Any, precision: str | None) -> Candidate:
    check_sliceable(space)
    if precision is None:
        precision = "fp32" if "fp32" in space.precision_choices else space.precision_choices[0]
    params: dict[str, Any] = {p.name: pick(p.choices) for p in space.params}
    params["precision"] = precision
    return space.candidate(params)


def largest_candidate(space: SearchSpace, *, precision: str | None = None) -> Candidate:
    """The parent: every searched knob at its largest choice.

    Knobs that are not sizes but still numbers (``convnet``'s ``stem_stride``) also take their
    largest choice; the weights do not depend on them, so every value shares the parent.

    Args:
        space: A sliceable space.
        precision: Precision of the returned candidate (default ``fp32`` when the space has it,
            else its first choice); slicing ignores it.

    Raises:
        ConfigError: the space is not sliceable (the reason) or ``precision`` is not a choice.
    """
    return _extreme_candidate(space, max, precision)


def smallest_candidate(space: SearchSpace, *, precision: str | None = None) -> Candidate:
    """Every searched knob at its smallest choice (the sandwich rule's lower slice)."""
    return _extreme_candidate(space, min, precision)


def family_of(model: nn.Module) -> ModelFamily:
    """The sliceable family that built ``model``.

    Raises:
        ModelError: no sliceable family builds this module type.
    """
    for name in list_families():
        family = get_family(name)
        if family.sliceable and family.owns(model):
            return family
    raise ModelError(
        f"{type(model).__name__} was not built by a sliceable family "
        f"({', '.join(n for n in list_families() if get_family(n).sliceable)}); pass the family or space explicitly"
    )
