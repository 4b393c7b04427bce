"""What a model family is: its knobs, their legal values, its stages, and how it builds.

A family turns a candidate's knobs (``{"width": (16, 32), "depth": (1, 2), ...}``) into an
``nn.Module``. Knobs are either family-wide (one value, e.g. ``width_mult``) or per stage (one
value per body stage, e.g. ``depth``); the number of body stages is the length of the
per-stage tuples. Validation collects every problem and raises one ``ConfigError`` with one
line per problem. No torch in this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from hwtune._util import is_int, is_num
from hwtune.errors import ConfigError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "CellWiring",
    "ChannelGroups",
    "HasKnobs",
    "Knob",
    "KnobsInput",
    "ModelFamily",
    "WiredCell",
    "knobs_of",
    "make_divisible",
]

# Module path -> (group of its output channels, group of its input channels); see
# ``ModelFamily.channel_groups``.
ChannelGroups = dict[str, tuple[str | None, str | None]]

# Per node after the input: its inputs as (source node, submodule path or None for the identity).
CellWiring = tuple[tuple[tuple[int, str | None], ...], ...]


@runtime_checkable
class WiredCell(Protocol):
    """The family hook for a cell whose wiring is data (a NAS cell's edges), not code.

    A module that offers ``wiring()`` promises that its forward is: node 0 is the input; node ``j``
    is the sum, in the listed order, of ``submodule(node i)`` (the identity when the path is None)
    over its inputs, or ``zeros_like(input)`` when it has none; the last node is the output. The
    latency predictor lowers such a cell from ``wiring()`` without tracing it, so a new genotype
    costs no ``torch.fx`` call.
    """

    def wiring(self) -> CellWiring: ...


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` the way torchvision does.

    Same rule as ``torchvision.models._utils._make_divisible`` (from the TF MobileNet code):
    round to nearest, never below ``min_value`` and never more than 10% below ``value``.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _as_float(v: Any) -> Any:
    return float(v) if is_int(v) else v


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


@dataclass(frozen=True)
class Knob:
    """One knob of a family and its legal values.

    Attributes:
        name: Knob name as it appears in a candidate (``width``, ``depth``, ``kernel_size`` ...).
        description: One line for ``hwtune list-families`` and docs.
        kind: ``int``, ``float`` or ``str``.
        per_stage: One value per body stage (a tuple in the candidate) instead of one value.
        choices: The legal values, when they are a short list; ``None`` means a range.
        low: Smallest legal value (inclusive) for a range knob.
        high: Largest legal value (inclusive) for a range knob.
        default: Value used when a candidate omits the knob (broadcast to every stage for a
            per-stage knob); ``None`` means required unless the family's ``default_knobs``
            has a tuple of the right length.
        check: Extra rule for string knobs: returns a problem text or ``None``.
    """

    name: str
    description: str
    kind: type = int
    per_stage: bool = False
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    default: Any = None
    check: Callable[[Any], str | None] | None = None

    @property
    def rule(self) -> str:
        """Human text of the legal values: ``one of 1, 2, 3`` or ``an integer in [1, 1024]``."""
        if self.choices is not None:
            return "one of " + ", ".join(_fmt(c) for c in self.choices)
        noun = {int: "an integer", float: "a number", str: "a string"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{noun} in [{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.low is not None:
            return f"{noun} >= {_fmt(self.low)}"
        return noun

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (a single value, not a per-stage tuple) is illegal, or ``None``."""
        if self.kind is int:
            ok_type = is_int(value)
        elif self.kind is float:
            ok_type = is_num(value)
        else:
            ok_type = isinstance(value, str)
        if not ok_type:
            return f"must be {self.rule}"
        if self.choices is not None and value not in self.choices:
            return f"must be {self.rule}"
        if self.low is not None and value < self.low:
            return f"must be {self.rule}"
        if self.high is not None and value > self.high:
            return f"must be {self.rule}"
        if self.check is not None:
            return self.check(value)
        return None

    def __str__(self) -> str:
        return f"{self.rule}, one per stage" if self.per_stage else self.rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind.__name__,
            "per_stage": self.per_stage,
            "rule": self.rule,
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
        }


class HasKnobs(Protocol):
    """What a family reads of a candidate (``hwtune.space.Candidate``): its family and knob values."""

    @property
    def family(self) -> str: ...

    @property
    def knobs(self) -> tuple[tuple[str, Any], ...]: ...


KnobsInput = HasKnobs | Mapping[str, Any]
"""A candidate, or a plain mapping of knob names to values (omitted knobs take the defaults)."""


def knobs_of(candidate: KnobsInput, family: str | None = None) -> dict[str, Any]:
    """The knob dict of a ``Candidate`` or a plain mapping (lists become tuples).

    Raises:
        ConfigError: ``candidate`` is a ``Candidate`` of another family, or not a mapping.
    """
    if hasattr(candidate, "knobs") and hasattr(candidate, "family"):
        if family is not None and candidate.family != family:
            raise ConfigError(f"candidate is for family {candidate.family!r}, not {family!r}")
        items = dict(candidate.knobs)
    elif isinstance(candidate, Mapping):
        items = dict(candidate)
    else:
        raise ConfigError(f"candidate must be a Candidate or a mapping of knob names to values, got {candidate!r}")
    return {str(k): _freeze(v) for k, v in items.items()}


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


class ModelFamily:
    """Base class of a registered family. Subclasses set the class attributes and ``_build``.

    Attributes:
        name: Registry name (``convnet``).
        description: One line.
        knobs: Knob name -> ``Knob``.
        default_knobs: A complete, legal knob set (used for omitted knobs and ``hwtune
            list-families``).
        min_stages: Fewest body stages allowed.
        max_stages: Most body stages allowed.
        sliceable: Every candidate is a sub-network of the largest one (``channel_groups`` is
            implemented), so candidates can inherit weights from one trained parent.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    knobs: ClassVar[Mapping[str, Knob]] = {}
    default_knobs: ClassVar[Mapping[str, Any]] = {}
    min_stages: ClassVar[int] = 1
    max_stages: ClassVar[int] = 1
    sliceable: ClassVar[bool] = False

    # ---- knobs ---------------------------------------------------------------------------
    def resolve(self, candidate: KnobsInput) -> dict[str, Any]:
        """Complete and check a candidate's knobs: defaults filled, scalars broadcast per stage.

        Returns:
            Every knob of the family; per-stage knobs as tuples of one value per stage.

        Raises:
            ConfigError: one line per problem (unknown knob, illegal value, stage counts that
                disagree, a required knob missing).
        """
        given = knobs_of(candidate, self.name)
        problems: list[str] = []
        for key in given:
            if key not in self.knobs:
                problems.append(
                    f"candidate knob {key!r} is not a knob of family {self.name!r}{did_you_mean(key, self.knobs)}"
                    f" (knobs: {', '.join(self.knobs)})"
                )
        n_stages = self._stage_count(given, problems)
        resolved: dict[str, Any] = {}
        for name, knob in self.knobs.items():
            if name in given:
                value = given[name]
                if knob.kind is float:
                    # 1 and 1.0 must give one candidate (same key), so ints become floats.
                    value = tuple(_as_float(v) for v in value) if isinstance(value, tuple) else _as_float(value)
            else:
                default = self.default_knobs.get(name)
                if knob.per_stage and isinstance(default, tuple) and len(default) == n_stages:
                    value = default
                elif knob.default is not None:
                    value = knob.default
                elif default is not None and not knob.per_stage:
                    value = default
                else:
                    each = f"one value per stage ({n_stages} stages), each " if knob.per_stage else ""
                    problems.append(f"candidate knob {name!r} is required ({each}{knob.rule})")
                    continue
            if knob.per_stage:
                if not isinstance(value, tuple):
                    value = (value,) * n_stages
                elif len(value) != n_stages:
                    continue  # already reported by _stage_count
                for i, v in enumerate(value):
                    why = knob.problem(v)
                    if why:
                        problems.append(f"candidate knob {name!r} for stage {i + 1} {why}, got {_fmt(v)}")
            else:
                if isinstance(value, tuple):
                    problems.append(f"candidate knob {name!r} takes one value for the whole model, got {list(value)}")
                    continue
                why = knob.problem(value)
                if why:
                    problems.append(f"candidate knob {name!r} {why}, got {_fmt(value)}")
            resolved[name] = value
        problems += self._check_combination(resolved) if not problems else []
        if problems:
            raise ConfigError("\n".join(problems))
        return resolved

    def validate(self, candidate: KnobsInput) -> None:
        """Raise ``ConfigError`` listing every problem with ``candidate``'s knobs; else return."""
        self.resolve(candidate)

    def _stage_count(self, given: Mapping[str, Any], problems: list[str]) -> int:
        lengths = {
            name: len(v)
            for name, v in given.items()
            if name in self.knobs and self.knobs[name].per_stage and isinstance(v, tuple)
        }
        if not lengths:
            default_lengths = [len(v) for v in self.default_knobs.values() if isinstance(v, tuple)]
            return default_lengths[0] if default_lengths else self.min_stages
        distinct = sorted(set(lengths.values()))
        if len(distinct) > 1:
            parts = ", ".join(f"{name!r} has {n}" for name, n in lengths.items())
            problems.append(f"candidate per-stage knobs must give the same number of stages, got {parts}")
        n = max(distinct, key=list(lengths.values()).count)
        if not self.min_stages <= n <= self.max_stages:
            allowed = (
                str(self.min_stages) if self.min_stages == self.max_stages else f"{self.min_stages}..{self.max_stages}"
            )
            problems.append(
                f"candidate per-stage knobs must give {allowed} values (one per stage) for family {self.name!r}, got {n}"
            )
        return n

    def _check_combination(self, knobs: Mapping[str, Any]) -> list[str]:
        """Cross-knob rules (override); each returned string is one problem line."""
        return []

    # ---- recipe table form -------------------------------------------------------------------
    def expand_knob(self, name: str, spec: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, ...]], list[str]]:
        """Split a knob given as a TOML table in a recipe into named sub-choices.

        Families whose knob is a composite value override this (``nb201``: ``arch = {ops =
        [...]}`` searches each cell edge separately). Returns ``(parts, problems)``: part name
        -> tuple of choices, and problem fragments the caller prefixes with the recipe key.
        """
        return {}, [f"knob {name!r} of family {self.name!r} has no table form; give a value or a list of choices"]

    def join_knob(self, name: str, parts: Mapping[str, Any]) -> Any:
        """Compose a knob value from the part values chosen (inverse of ``split_knob``)."""
        raise ConfigError(f"knob {name!r} of family {self.name!r} has no table form")

    def split_knob(self, name: str, value: Any) -> dict[str, Any]:
        """The part values of a composite knob value (inverse of ``join_knob``)."""
        raise ConfigError(f"knob {name!r} of family {self.name!r} has no table form")

    # ---- stages ----------------------------------------------------------------------------
    def num_stages(self, candidate: KnobsInput) -> int:
        """Number of body stages of ``candidate``."""
        knobs = self.resolve(candidate)
        for name, knob in self.knobs.items():
            if knob.per_stage:
                return len(knobs[name])
        return self.min_stages

    def stages(self, candidate: KnobsInput) -> tuple[str, ...]:
        """Stage names: ``("stem", "stage1", ..., "stageN", "head")``."""
        n = self.num_stages(candidate)
        return ("stem", *(f"stage{i + 1}" for i in range(n)), "head")

    def stage_prefixes(self, candidate: KnobsInput) -> dict[str, str]:
        """Stage name -> module-name prefix in the built model (``stage1`` -> ``stages.0``)."""
        n = self.num_stages(candidate)
        out = {"stem": "stem"}
        out.update({f"stage{i + 1}": f"stages.{i}" for i in range(n)})
        out["head"] = "head"
        return out

    # ---- building --------------------------------------------------------------------------
    def build(self, candidate: KnobsInput, *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
        """Build the model for ``candidate`` (validated first).

        Raises:
            ConfigError: bad knobs or input settings (every problem listed).
        """
        knobs = self.resolve(candidate)
        problems = []
        for label, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
            if not is_int(value) or value < 1:
                problems.append(f"{label} must be an integer >= 1, got {value!r}")
        if not problems:
            problems += self.input_problems(knobs, in_channels=in_channels, input_size=input_size)
        if problems:
            raise ConfigError("\n".join(problems))
        return self._build(knobs, num_classes=num_classes, in_channels=in_channels, input_size=input_size)

    def input_problems(self, knobs: Mapping[str, Any], *, in_channels: int, input_size: int) -> list[str]:
        """Problems building resolved ``knobs`` for this input (override); [] when fine."""
        return []

    def _build(self, knobs: Mapping[str, Any], *, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - every registered family overrides it

    # ---- weight sharing (hwtune.supernet) ---------------------------------------------------
    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` was built by this family (override; used to infer a parent's family)."""
        return False

    def slicing_problems(self, choices: Mapping[str, Sequence[tuple[Any, ...]]]) -> list[str]:
        """Why some candidates of a space are not sub-networks of its largest one.

        Args:
            choices: Searched knob -> its choices, one tuple per stage for a per-stage knob,
                a single tuple otherwise.

        Returns:
            One problem fragment per offending knob (the caller names the recipe); [] when fine.
        """
        return []

    def channel_groups(self, model: nn.Module) -> ChannelGroups | None:
        """Which channel group each dimension of each layer of a built ``model`` belongs to.

        Families whose candidates are sub-networks of the space's largest one (widths, depths
        and kernel sizes shrink it) override this; ``hwtune.supernet`` slices a parent with it.
        A channel group is a set of feature-map channels that must be kept or dropped
        together: the output channels of one conv (and its BatchNorm), or, where a residual add
        ties them, the outputs of every layer feeding that add.

        Returns:
            Module path -> ``(output group, input group)`` for every module with parameters
            (conv, BatchNorm, linear); ``None`` for a dimension that is never sliced (the image
            channels, the classes). ``None`` overall: the family is not sliceable (default).
        """
        return None

    # ---- description -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for ``hwtune list-families --json``)."""
        stages: Sequence[int] = (self.min_stages, self.max_stages)
        return {
            "name": self.name,
            "description": self.description,
            "stages": list(stages),
            "knobs": [k.to_dict() for k in self.knobs.values()],
            "default_knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.default_knobs.items()},
        }

    def __repr__(self) -> str:
        return f"<family {self.name!r}: {', '.join(self.knobs)}>"
