"""Search spaces (recipes in ``models/*.toml``) and the candidates drawn from them.

A recipe names a model family, the input it is for, the dataset, the values to search for
each knob and the precision choices. ``SearchSpace.from_recipe("fashion-convnet")`` loads a
bundled recipe (or a path), validates every key at once and turns it into a flat list of
categorical parameters (``stage1.width``, ``kernel_size`` ..., ``precision``) — what a tuner
suggests — and ``SearchSpace.candidate(params)`` turns a choice of them into a ``Candidate``.

Recipe layout (a complete, commented example is ``models/fashion-convnet.toml``)::

    schema_version = 1
    family = "convnet"               # hwtune list-families
    dataset = "fashion-mnist"
    description = "..."              # optional

    [input]
    channels = 1
    size = 28                        # height = width, pixels
    classes = 10

    [knobs]                          # omitted knobs take the family default
    stem_stride = 2                  # a single value: fixed
    stem_width = [8, 16]             # a list: the choices
    width = [[8, 16], [16, 32], [32, 64]]  # per-stage knob, list of lists: choices per stage
    depth = [1, 2, 3]                # per-stage knob, flat list: the same choices in every stage
    # stages = 3                     # number of body stages, when no per-stage list says it

    [precision]
    choices = ["fp32", "int8", "mixed"]
    mixed = { default = "int8", stem = "fp32", head = "fp32" }   # a named per-stage policy

    [train]                          # recommended budget for a full-fidelity trial
    epochs = 1.0
    batch_size = 128

No torch here: the family registry (which needs torch) is imported only when a recipe is
loaded or a candidate resolved.

Example:
    >>> import hwtune, random
    >>> space = hwtune.SearchSpace.from_recipe("fashion-convnet")
    >>> cand = space.sample(random.Random(0))
    >>> hwtune.Candidate.from_dict(cand.to_dict()) == cand
    True
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hwtune._io import load_toml
from hwtune._resources import resource_dir, resource_files
from hwtune._util import SAFE_NAME_RULE, is_int, is_num, is_safe_name, safe_name
from hwtune.candidate import Candidate
from hwtune.errors import ConfigError, UnknownNameError, did_you_mean, unknown_key_problems
from hwtune.precision import PRECISIONS

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.families import ModelFamily

__all__ = [
    "Candidate",
    "CandidateLike",
    "InputSpec",
    "Param",
    "ParentSpec",
    "SearchSpace",
    "SpaceLike",
    "TrainSpec",
    "list_recipes",
    "register_space_kind",
    "space_from_dict",
    "space_kinds",
]

SCHEMA_VERSION = 1  # of a recipe
PRECISION_PARAM = "precision"


# --------------------------------------------------------------------------------------------
# Search space


@dataclass(frozen=True)
class InputSpec:
    """Model input: ``channels`` x ``size`` x ``size`` images."""

    channels: int
    size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (self.channels, self.size, self.size)


@dataclass(frozen=True)
class TrainSpec:
    """Recommended training budget for a full-fidelity trial (``[train]`` of a recipe).

    ``augment``: the augmentation steps the recipe's data tolerates (``["crop:4", "hflip"]``, see
    :mod:`hwtune.augment`), what ``finalize`` trains with unless told otherwise; the search's short
    training runs do not augment.
    """

    epochs: float = 1.0
    batch_size: int = 128
    augment: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParentSpec:
    """Training budget of the parent network a weight-inheriting search trains once (``[parent]``)."""

    epochs: float = 3.0
    batch_size: int = 128


@dataclass(frozen=True)
class Param:
    """One categorical search parameter.

    Attributes:
        name: Parameter name as a tuner sees it: ``stage2.width``, ``width_mult``,
            ``arch.edge_2_1`` or ``precision``.
        choices: The values, in recipe order.
        knob: The knob it sets (``precision`` for the precision parameter).
        part: Stage index (0-based, int) for a per-stage knob, part name (str) for a table-form
            knob, ``None`` for a whole knob.
    """

    name: str
    choices: tuple[Any, ...]
    knob: str = ""
    part: int | str | None = None


def list_recipes() -> list[str]:
    """Names of the bundled recipes (``models/*.toml``), sorted."""
    return list(resource_files("models"))


# --------------------------------------------------------------------------------------------
# The role a space plays for the tuner, export and reports (a recipe's SearchSpace, a user
# model's hwtune.compression.UserModelSpace), and stored spaces rebuilt by their kind


class CandidateLike(Protocol):
    """What the tuner, export and reports need of a candidate (``Candidate``, ``CompressCandidate``)."""

    @property
    def precision(self) -> str:
        """The precision (a uniform name or a mixed policy's name)."""
        ...

    @property
    def key(self) -> str:
        """A stable, file-name-safe id (weights caches, artifact names)."""
        ...

    @property
    def label(self) -> str:
        """A readable one-liner."""
        ...

    @property
    def stage_precision(self) -> Mapping[str, str] | tuple[tuple[str, str], ...]:
        """Stage -> precision (a mapping or its pairs); empty for a uniform recipe precision."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the space's ``candidate_from_dict`` rebuilds an equal candidate."""
        ...

    def to_json(self) -> str:
        """``to_dict`` as canonical JSON (sorted keys)."""
        ...


class SpaceLike(Protocol):
    """What the tuner, export and reports need of a search space (``SearchSpace``, ``UserModelSpace``).

    ``to_dict`` is what a study stores; a dict with a ``kind`` key is rebuilt by the ``from_dict``
    registered for that kind (:func:`space_from_dict`), one without it is a recipe.
    """

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def dataset(self) -> str: ...

    @property
    def input(self) -> InputSpec: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def train(self) -> TrainSpec: ...

    @property
    def parent(self) -> ParentSpec | None: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def precision_choices(self) -> tuple[str, ...]: ...

    @property
    def knob_choices(self) -> dict[str, tuple[Any, ...]]: ...

    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        """Tuner parameter name -> choices (only the parameters with more than one choice)."""
        ...

    def size(self) -> int:
        """Number of distinct candidates."""
        ...

    def candidate(self, params: Mapping[str, Any]) -> CandidateLike:
        """The candidate for one choice of every parameter (``ConfigError`` on an unknown one)."""
        ...

    def candidate_from_dict(self, data: Mapping[str, Any]) -> CandidateLike:
        """A candidate stored by ``to_dict`` (a trial's record)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; rebuilt by :func:`space_from_dict`."""
        ...


RECIPE_KIND = "recipe"  # a stored space dict without "kind" (what every release wrote for recipes)
_SPACE_KINDS: dict[str, Callable[[Mapping[str, Any]], SpaceLike]] = {}
# Built-in kinds defined above this module, by the module that registers them when imported (the way
# hwtune.runtimes names its built-in runtimes): a stored space opens without its package imported first.
_BUILTIN_KIND_MODULES = {"compress": "hwtune.compression.user_space"}


def register_space_kind(kind: str, from_dict: Callable[[Mapping[str, Any]], SpaceLike]) -> None:
    """Register how a stored space dict whose ``kind`` is ``kind`` is rebuilt.

    The kinds written to studies stay registered for as long as those studies must open.

    Raises:
        ConfigError: ``kind`` is already registered.
    """
    if kind in _SPACE_KINDS:
        raise ConfigError(f"space kind {kind!r} is already registered")
    _SPACE_KINDS[kind] = from_dict


def space_kinds() -> list[str]:
    """The kinds of stored spaces that can be rebuilt (registered or built in), sorted."""
    return sorted({*_SPACE_KINDS, *_BUILTIN_KIND_MODULES})


def space_from_dict(data: Mapping[str, Any]) -> SpaceLike:
    """Rebuild a stored space by its ``kind`` (none: a recipe's layout, ``SearchSpace.from_dict``).

    Kinds other than ``recipe`` are registered by the package that defines them
    (``hwtune.compression`` registers ``compress``).

    Raises:
        ConfigError: an unknown kind (close names suggested), or an invalid space.
    """
    kind = data.get("kind", RECIPE_KIND)
    if isinstance(kind, str) and kind not in _SPACE_KINDS and kind in _BUILTIN_KIND_MODULES:
        importlib.import_module(_BUILTIN_KIND_MODULES[kind])  # registers the kind
    from_dict = _SPACE_KINDS.get(kind) if isinstance(kind, str) else None
    if from_dict is None:
        known = space_kinds()
        raise ConfigError(
            f"stored space: unknown kind {kind!r}{did_you_mean(str(kind), known)} (known: {', '.join(known)})"
        )
    return from_dict(data)



@dataclass(frozen=True)
class SearchSpace:
    """A family's search space over knobs and precisions, loaded from a recipe.

    Attributes:
        name: Recipe name (file stem).
        family: Family name.
        input: Input channels and size.
        num_classes: Classes of the task.
        dataset: Dataset the recipe is meant for (``fashion-mnist``).
        params: Every knob parameter (fixed ones have a single choice), in a fixed order.
        precision_choices: Precision choices (uniform names or policy names).
        precision_policies: Policy name -> ``{"default": p, stage: p, ...}``.
        num_stages: Body stages of every candidate.
        train: Recommended training budget.
        description: Free text from the recipe.
        path: File the recipe came from (not part of equality).
    """

    name: str
    family: str
    input: InputSpec
    num_classes: int
    dataset: str
    params: tuple[Param, ...]
    precision_choices: tuple[str, ...] = ("fp32",)
    precision_policies: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    num_stages: int = 1
    train: TrainSpec = field(default_factory=TrainSpec)
    parent: ParentSpec | None = None
    description: str = ""
    path: Path | None = field(default=None, compare=False)
    schema_version: int = SCHEMA_VERSION

    # ---- loading ----
    @classmethod
    def from_recipe(cls, path_or_name: str | Path) -> SearchSpace:
        """Load a bundled recipe by name (``"fashion-convnet"``) or a recipe file.

        Raises:
            UnknownNameError: not a bundled name nor an existing path (close names suggested).
            ConfigError: the file is unreadable or invalid (every problem on its own line,
                naming file, key, rule and value).
        """
        text = str(path_or_name)
        bundled = resource_files("models")
        if isinstance(path_or_name, str) and text in bundled:
            path = bundled[text]
        elif isinstance(path_or_name, Path) or text.endswith(".toml") or os.sep in text or Path(text).exists():
            path = Path(text)
        else:
            raise UnknownNameError(
                f"unknown recipe {text!r}{did_you_mean(text, bundled)} (bundled: {', '.join(bundled) or 'none'}; "
                "a path to a .toml recipe also works)"
            )
        raw = load_toml(path, kind="recipe")
        return cls.from_dict(raw, source=_display(path), name=path.stem, path=path)

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, source: str = "<recipe>", name: str | None = None, path: Path | None = None
    ) -> SearchSpace:
        """Build from the recipe's TOML layout (as ``to_dict`` returns it).

        Raises:
            ConfigError: every problem, one line each, prefixed with ``source``.
        """
        return _parse_recipe(raw, source, name, path)

    def to_dict(self) -> dict[str, Any]:
        """The recipe layout (TOML-ready, JSON-ready); ``from_dict`` rebuilds an equal space."""
        from hwtune.families import get_family

        family = get_family(self.family)
        knobs: dict[str, Any] = {}
        for knob in dict.fromkeys(p.knob for p in self.params):
            ps = [p for p in self.params if p.knob == knob]
            spec = family.knobs[knob]
            if spec.per_stage:
                knobs[knob] = [list(p.choices) for p in ps]
            elif isinstance(ps[0].part, str):
                knobs[knob] = {str(p.part): list(p.choices) for p in ps}
            else:
                knobs[knob] = list(ps[0].choices)
        precision: dict[str, Any] = {"choices": list(self.precision_choices)}
        precision.update({k: dict(v) for k, v in self.precision_policies.items()})
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "family": self.family,
            "dataset": self.dataset,
            "input": {"channels": self.input.channels, "size": self.input.size, "classes": self.num_classes},
            "knobs": {"stages": self.num_stages, **knobs},
            "precision": precision,
            "train": {"epochs": self.train.epochs, "batch_size": self.train.batch_size},
        }
        if self.train.augment:
            out["train"]["augment"] = list(self.train.augment)
        if self.parent is not None:
            out["parent"] = {"epochs": self.parent.epochs, "batch_size": self.parent.batch_size}
        if self.description:
            out["description"] = self.description
        return out

    # ---- the parameter view a tuner uses ----
    @property
    def family_obj(self) -> ModelFamily:
        from hwtune.families import get_family

        return get_family(self.family)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the model input."""
        return self.input.shape

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names of every candidate: ``stem``, ``stage1``..``stageN``, ``head``."""
        return ("stem", *(f"stage{i + 1}" for i in range(self.num_stages)), "head")

    @property
    def knob_choices(self) -> dict[str, tuple[Any, ...]]:
        """Searched knob parameters (two or more choices): name -> choices. Fixed ones are left out."""
        return {p.name: p.choices for p in self.params if len(p.choices) > 1}

    @property
    def fixed_params(self) -> dict[str, Any]:
        """Parameters with a single choice, name -> value (``candidate`` fills them in)."""
        fixed = {p.name: p.choices[0] for p in self.params if len(p.choices) == 1}
        if len(self.precision_choices) == 1:
            fixed[PRECISION_PARAM] = self.precision_choices[0]
        return fixed

    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        """Every searched parameter including ``precision``: what a tuner feeds to
        ``suggest_categorical``. Values are str/int/float only."""
        out = self.knob_choices
        if len(self.precision_choices) > 1:
            out[PRECISION_PARAM] = self.precision_choices
        return out

    def size(self) -> int:
        """Number of distinct candidates."""
        return math.prod(len(p.choices) for p in self.params) * len(self.precision_choices)

    def candidate(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate for a flat dict of parameter values (``param_choices`` names).

        Fixed parameters may be omitted. Raises ``ConfigError`` listing unknown names, missing
        parameters and values outside their choices.
        """
        all_params = {p.name: p for p in self.params}
        problems = unknown_key_problems(params, [*all_params, PRECISION_PARAM], self.name, what="parameter")
        values: dict[str, Any] = {}
        for p in (*self.params, Param(PRECISION_PARAM, self.precision_choices, PRECISION_PARAM)):
            if p.name in params:
                v = params[p.name]
                if v not in p.choices:
                    problems.append(
                        f"{self.name}: parameter {p.name!r} must be one of {', '.join(map(repr, p.choices))}, got {v!r}"
                    )
                    continue
                values[p.name] = v
            elif len(p.choices) == 1:
                values[p.name] = p.choices[0]
            else:
                problems.append(
                    f"{self.name}: parameter {p.name!r} is missing (choices: {', '.join(map(repr, p.choices))})"
                )
        if problems:
            raise ConfigError("\n".join(problems))
        return self._make({k: v for k, v in values.items() if k != PRECISION_PARAM}, values[PRECISION_PARAM])

    def candidate_from_dict(self, data: Mapping[str, Any]) -> Candidate:
        """A candidate stored by ``Candidate.to_dict`` (a trial's record)."""
        return Candidate.from_dict(data)

    def _make(self, values: Mapping[str, Any], precision: str) -> Candidate:
        family = self.family_obj
        knobs: dict[str, Any] = {}
        for knob in dict.fromkeys(p.knob for p in self.params):
            ps = [p for p in self.params if p.knob == knob]
            if isinstance(ps[0].part, int):
                knobs[knob] = tuple(values[p.name] for p in ps)
            elif isinstance(ps[0].part, str):
                knobs[knob] = family.join_knob(knob, {str(p.part): values[p.name] for p in ps})
            else:
                knobs[knob] = values[ps[0].name]
        resolved = family.resolve(_with_stage_count(family, knobs, self.num_stages))
        return Candidate(
            family=self.family,
            knobs=tuple(resolved.items()),
            precision=precision,
            stage_precision=tuple(self._stage_precision(precision).items()),
        )

    def build(self, candidate: Candidate) -> Any:
        """The ``nn.Module`` for ``candidate`` at this space's input and class count."""
        from hwtune.families import create_model

        return create_model(
            self.family,
            candidate,
            num_classes=self.num_classes,
            in_channels=self.input.channels,
            input_size=self.input.size,
        )

    def _stage_precision(self, precision: str) -> dict[str, str]:
        policy = self.precision_policies.get(precision)
        if policy is None:
            return {}
        return {stage: policy.get(stage, policy["default"]) for stage in self.stages}

    def params_of(self, candidate: Candidate) -> dict[str, Any]:
        """Inverse of ``candidate``: the parameter values (searched ones only) that give it.

        Raises:
            ConfigError: the candidate is not in this space (each offending knob listed).
        """
        if candidate.family != self.family:
            raise ConfigError(f"{self.name}: candidate is for family {candidate.family!r}, not {self.family!r}")
        family = self.family_obj
        knobs = candidate.knob_dict
        problems, values = [], {}
        for p in self.params:
            if p.knob not in knobs:
                problems.append(f"{self.name}: candidate has no knob {p.knob!r}")
                continue
            value = knobs[p.knob]
            if isinstance(p.part, int):
                value = value[p.part] if isinstance(value, tuple) and p.part < len(value) else None
            elif isinstance(p.part, str):
                value = family.split_knob(p.knob, value).get(p.part)
            if value not in p.choices:
                problems.append(f"{self.name}: {p.name} = {value!r} is not among {list(p.choices)}")
            values[p.name] = value
        if candidate.precision not in self.precision_choices:
            problems.append(
                f"{self.name}: precision {candidate.precision!r} is not among {list(self.precision_choices)}"
            )
        values[PRECISION_PARAM] = candidate.precision
        if problems:
            raise ConfigError("\n".join(problems))
        searched = self.param_choices()
        out = {k: v for k, v in values.items() if k in searched}
        if self.candidate(out) != candidate:
            raise ConfigError(
                f"{self.name}: candidate {candidate.key} differs from the space's resolution of its params"
            )
        return out

    def __contains__(self, candidate: object) -> bool:
        if not isinstance(candidate, Candidate):
            return False
        try:
            self.params_of(candidate)
        except ConfigError:
            return False
        return True

    def sample(self, rng: Any = None) -> Candidate:
        """A uniformly random candidate.

        Args:
            rng: ``numpy.random.Generator``, ``random.Random``, an int seed or ``None``.
        """
        rng = _as_rng(rng)
        values = {p.name: p.choices[rng(len(p.choices))] for p in self.params}
        precision = self.precision_choices[rng(len(self.precision_choices))]
        return self._make(values, precision)

    def enumerate(self) -> Iterator[Candidate]:
        """Every candidate, in a fixed order (last parameter fastest, precision last)."""
        names = [p.name for p in self.params]
        for combo in itertools.product(*(p.choices for p in self.params), self.precision_choices):
            yield self._make(dict(zip(names, combo[:-1], strict=True)), combo[-1])

    def __repr__(self) -> str:
        return (
            f"SearchSpace({self.name!r}, family={self.family!r}, input={self.input.shape}, "
            f"searched={list(self.param_choices())}, size={self.size()})"
        )


def _with_stage_count(family: ModelFamily, knobs: dict[str, Any], n_stages: int) -> dict[str, Any]:
    """Make the stage count explicit when no per-stage knob was searched: the family's
    default tuples may have another length than the recipe's ``stages``."""
    if any(family.knobs[k].per_stage for k in knobs) or family.min_stages == family.max_stages:
        return knobs
    out = dict(knobs)
    for name, spec in family.knobs.items():
        if spec.per_stage and spec.default is not None:
            out[name] = (spec.default,) * n_stages
            break
    return out


def _as_rng(rng: Any) -> Any:
    """A function ``n -> random index in [0, n)`` from any of the accepted RNG kinds."""
    if rng is None or isinstance(rng, int) and not isinstance(rng, bool):
        r = random.Random(rng)
        return r.randrange
    if hasattr(rng, "integers"):  # numpy Generator
        return lambda n: int(rng.integers(n))
    if hasattr(rng, "randrange"):
        return rng.randrange
    raise ConfigError(f"rng must be a numpy Generator, random.Random, int seed or None, got {type(rng).__name__}")


def _display(path: Path) -> str:
    """Bundled recipes show as ``models/x.toml``; user files as given."""
    try:
        return str(path.resolve().relative_to(resource_dir("models").resolve().parent))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Recipe parsing: collect every problem, raise once.

_TOP_KEYS = (
    "schema_version",
    "name",
    "family",
    "dataset",
    "description",
    "input",
    "knobs",
    "precision",
    "train",
    "parent",
)
_INPUT_KEYS = ("channels", "size", "classes")
_TRAIN_KEYS = ("epochs", "batch_size", "augment")




def _parse_recipe(raw: Mapping[str, Any], src: str, name: str | None, path: Path | None) -> SearchSpace:
    from hwtune.families import get_family, list_families

    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{src}: a recipe must be a table, got {raw!r}")
    problems += unknown_key_problems(raw, _TOP_KEYS, src)
    for key in ("family", "dataset", "input"):
        if key not in raw:
            problems.append(f"{src}: missing required key {key!r}")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        problems.append(f"{src}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
    # The name becomes part of directory names (the default study): a safe name, or one made from the file's.
    if "name" in raw and not is_safe_name(raw["name"]):
        problems.append(f"{src}: name must be a name of {SAFE_NAME_RULE}, got {raw['name']!r}")
    name = raw["name"] if is_safe_name(raw.get("name")) else safe_name(name or "", default="recipe")
    for key in ("dataset", "description"):
        if (key in raw and not isinstance(raw[key], str)) or (key == "dataset" and raw.get(key) == ""):
            problems.append(
                f"{src}: {key} must be {'a non-empty string' if key == 'dataset' else 'a string'}, got {raw[key]!r}"
            )

    # [input]
    input_spec, classes = InputSpec(1, 28), 10
    table = raw.get("input", {})
    if not isinstance(table, Mapping):
        problems.append(f"{src}: [input] must be a table, got {table!r}")
    else:
        problems += unknown_key_problems(table, _INPUT_KEYS, src, prefix="input.")
        vals = {}
        for key in _INPUT_KEYS:
            if key not in table:
                problems.append(f"{src}: missing required key 'input.{key}'")
            elif not (is_int(table[key]) and table[key] >= 1):
                problems.append(f"{src}: input.{key} must be an integer >= 1, got {table[key]!r}")
            else:
                vals[key] = table[key]
        input_spec = InputSpec(vals.get("channels", 1), vals.get("size", 28))
        classes = vals.get("classes", 10)

    # [train]
    train = TrainSpec()
    table = raw.get("train", {})
    if not isinstance(table, Mapping):
        problems.append(f"{src}: [train] must be a table, got {table!r}")
    else:
        problems += unknown_key_problems(table, _TRAIN_KEYS, src, prefix="train.")
        epochs, batch = table.get("epochs", 1.0), table.get("batch_size", 128)
        if not (is_num(epochs) and epochs > 0):
            problems.append(f"{src}: train.epochs must be a number > 0, got {epochs!r}")
            epochs = 1.0
        if not (is_int(batch) and batch >= 1):
            problems.append(f"{src}: train.batch_size must be an integer >= 1, got {batch!r}")
            batch = 128
        augment: tuple[str, ...] = ()
        if table.get("augment") is not None:
            from hwtune.augment import recipe_augment  # imports torch: only for a recipe that augments

            try:
                augment = recipe_augment(table["augment"], f"{src}: train.augment")
            except ConfigError as exc:
                problems.append(str(exc))
        train = TrainSpec(float(epochs), batch, augment)
    parent = _parse_parent(raw.get("parent"), src, problems)

    # family and [knobs]
    family_name = raw.get("family")
    family = None
    if "family" in raw:
        if not isinstance(family_name, str) or family_name not in list_families():
            problems.append(
                f"{src}: family must be one of {', '.join(list_families())}, got {family_name!r}"
                f"{did_you_mean(str(family_name), list_families())}"
            )
        else:
            family = get_family(family_name)
    params: list[Param] = []
    n_stages = 1
    knobs_raw = raw.get("knobs", {})
    if not isinstance(knobs_raw, Mapping):
        problems.append(f"{src}: [knobs] must be a table, got {knobs_raw!r}")
    elif family is not None:
        n_stages, params = _parse_knobs(family, knobs_raw, src, problems)

    # [precision]
    choices, policies = _parse_precision(raw.get("precision", {}), src, problems, n_stages)

    if problems:
        raise ConfigError("\n".join(problems))
    if family is None:  # pragma: no cover - a missing family is always reported above
        raise ConfigError(f"{src}: missing required key 'family'")
    space = SearchSpace(
        name=name,
        family=family.name,
        input=input_spec,
        num_classes=classes,
        dataset=raw["dataset"],
        params=tuple(params),
        precision_choices=choices,
        precision_policies=policies,
        num_stages=n_stages,
        train=train,
        parent=parent,
        description=raw.get("description", ""),
        path=path,
    )
    # Whole-candidate checks the per-value checks cannot see (cross-knob rules, input size):
    # resolve the first candidate and ask the family.
    try:
        first = space._make({p.name: p.choices[0] for p in space.params}, choices[0])
        problems += [
            f"{src}: {p}"
            for p in family.input_problems(first.knob_dict, in_channels=input_spec.channels, input_size=input_spec.size)
        ]
    except ConfigError as exc:
        problems += [f"{src}: {line}" for line in str(exc).splitlines()]
    if problems:
        raise ConfigError("\n".join(problems))
    return space


def _parse_parent(table: Any, src: str, problems: list[str]) -> ParentSpec | None:
    """``[parent]``: epochs and batch size of the parent a weight-inheriting search trains (optional)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        problems.append(f"{src}: [parent] must be a table, got {table!r}")
        return None
    problems += unknown_key_problems(table, ("epochs", "batch_size"), src, prefix="parent.")
    epochs, batch = table.get("epochs", 3.0), table.get("batch_size", 128)
    if not (is_num(epochs) and epochs > 0):
        problems.append(f"{src}: parent.epochs must be a number > 0, got {epochs!r}")
        return None
    if not (is_int(batch) and batch >= 1):
        problems.append(f"{src}: parent.batch_size must be an integer >= 1, got {batch!r}")
        return None
    return ParentSpec(float(epochs), batch)


def _parse_knobs(
    family: ModelFamily, knobs_raw: Mapping[str, Any], src: str, problems: list[str]
) -> tuple[int, list[Param]]:
    """Knob specs -> (number of stages, params in order: family-wide knobs, then stage by stage)."""
    specs = family.knobs
    for key in knobs_raw:
        if key != "stages" and key not in specs:
            problems.append(
                f"{src}: unknown key 'knobs.{key}' for family {family.name!r}{did_you_mean(key, [*specs, 'stages'])}"
                f" (knobs: {', '.join(specs)})"
            )
    # Number of stages: explicit, else the per-stage lists, else the family default.
    lengths = {
        k: len(v)
        for k, v in knobs_raw.items()
        if k in specs and specs[k].per_stage and isinstance(v, list) and any(isinstance(x, list) for x in v)
    }
    default_lengths = [len(v) for v in family.default_knobs.values() if isinstance(v, tuple)]
    n_stages = default_lengths[0] if default_lengths else family.min_stages
    if "stages" in knobs_raw:
        n = knobs_raw["stages"]
        if not (is_int(n) and family.min_stages <= n <= family.max_stages):
            problems.append(
                f"{src}: knobs.stages must be an integer in [{family.min_stages}, {family.max_stages}] for family "
                f"{family.name!r}, got {n!r}"
            )
        else:
            n_stages = n
    elif lengths:
        n_stages = max(lengths.values(), key=list(lengths.values()).count)
    for k, n in lengths.items():
        if n != n_stages:
            problems.append(f"{src}: knobs.{k} must give one entry per stage ({n_stages} stages), got {n}")
    if not family.min_stages <= n_stages <= family.max_stages:
        problems.append(
            f"{src}: family {family.name!r} takes {family.min_stages}..{family.max_stages} stages, got {n_stages}"
        )

    def choices_of(knob: str, value: Any, where: str) -> tuple[Any, ...] | None:
        spec = specs[knob]
        items = value if isinstance(value, list) else [value]
        if not items:
            problems.append(f"{src}: {where} must list at least one choice, got []")
            return None
        ok = True
        out = []
        for v in items:
            if spec.kind is float and is_int(v):
                v = float(v)
            why = spec.problem(v)
            if why:
                problems.append(f"{src}: {where} {why}, got {v!r}")
                ok = False
            out.append(v)
        if len(set(map(repr, out))) != len(out):
            problems.append(f"{src}: {where} lists a choice twice: {out!r}")
            ok = False
        return tuple(out) if ok else None

    global_params: list[Param] = []
    stage_params: list[list[Param]] = [[] for _ in range(max(n_stages, 0))]
    for knob, spec in specs.items():
        if knob not in knobs_raw:
            continue
        value = knobs_raw[knob]
        where = f"knobs.{knob}"
        if isinstance(value, Mapping):
            parts, part_problems = family.expand_knob(knob, value)
            problems.extend(f"{src}: {where}: {p}" for p in part_problems)
            global_params += [Param(f"{knob}.{part}", ch, knob, part) for part, ch in parts.items()]
        elif spec.per_stage:
            if isinstance(value, list) and any(isinstance(x, list) for x in value):
                if len(value) != n_stages:
                    continue  # reported above
                stage_choices = [choices_of(knob, v, f"{where} (stage {i + 1})") for i, v in enumerate(value)]
            else:  # one spec for every stage: checked (and reported) once
                stage_choices = [choices_of(knob, value, where)] * n_stages
            for i, ch in enumerate(stage_choices):
                if ch is not None:
                    stage_params[i].append(Param(f"stage{i + 1}.{knob}", ch, knob, i))
        else:
            if isinstance(value, list) and any(isinstance(x, list) for x in value):
                problems.append(
                    f"{src}: {where} is one value for the whole model: give a list of choices, got {value!r}"
                )
                continue
            ch = choices_of(knob, value, where)
            if ch is not None:
                global_params.append(Param(knob, ch, knob, None))
    # Keep per-stage params stage-major (stage1.width, stage1.depth, stage2.width ...).
    return n_stages, global_params + [p for stage in stage_params for p in stage]


def _parse_precision(
    table: Any, src: str, problems: list[str], n_stages: int
) -> tuple[tuple[str, ...], dict[str, dict[str, str]]]:
    if not isinstance(table, Mapping):
        problems.append(f"{src}: [precision] must be a table, got {table!r}")
        return ("fp32",), {}
    choices = table.get("choices", ["fp32"])
    if not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)):
        problems.append(f"{src}: precision.choices must be a non-empty list of strings, got {choices!r}")
        return ("fp32",), {}
    if len(set(choices)) != len(choices):
        problems.append(f"{src}: precision.choices lists a choice twice: {choices!r}")
    stages = ("stem", *(f"stage{i + 1}" for i in range(n_stages)), "head")
    policies: dict[str, dict[str, str]] = {}
    for key, value in table.items():
        if key == "choices":
            continue
        if key in PRECISIONS:
            problems.append(f"{src}: precision.{key} names a uniform precision; only mixed policies are tables")
            continue
        if key not in choices:
            problems.append(
                f"{src}: precision.{key} is a policy not listed in precision.choices{did_you_mean(key, choices)}"
            )
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{src}: precision.{key} must be a table {{default = ..., <stage> = ...}}, got {value!r}")
            continue
        policy: dict[str, str] = {}
        for stage, prec in value.items():
            if stage != "default" and stage not in stages:
                problems.append(
                    f"{src}: precision.{key}.{stage} is not a stage{did_you_mean(stage, ['default', *stages])} "
                    f"(stages: {', '.join(stages)})"
                )
            elif prec not in PRECISIONS:
                problems.append(f"{src}: precision.{key}.{stage} must be one of {', '.join(PRECISIONS)}, got {prec!r}")
            else:
                policy[stage] = prec
        if "default" not in value:
            problems.append(f"{src}: precision.{key} must set 'default' (the precision of stages not named)")
        elif len({policy.get(s, policy.get("default")) for s in stages}) == 1 and policy.get("default"):
            problems.append(
                f"{src}: precision.{key} gives every stage {policy['default']!r}; list {policy['default']!r} as a "
                "uniform choice instead"
            )
        policies[key] = policy
    for choice in choices:
        if choice not in PRECISIONS and choice not in policies:
            problems.append(
                f"{src}: precision.choices entry {choice!r} must be one of {', '.join(PRECISIONS)} or a policy defined as "
                f"precision.{choice} = {{default = ..., <stage> = ...}}{did_you_mean(choice, PRECISIONS)}"
            )
    return tuple(choices), policies


# -- a recipe is the default kind of stored space
register_space_kind(RECIPE_KIND, SearchSpace.from_dict)
