"""The compression search space derived from a user's model, and the candidates drawn from it.

A ``CompressSpace`` is data, not code: the structure read from the model (stages, the coupled
channel groups Torch-Pruning found in each stage, the residual blocks that can be dropped) plus
the choices to search per stage (``width`` = fraction of channels kept, ``depth`` = droppable
blocks kept, ``precision``). It round-trips through a TOML recipe the user can edit
(``to_toml`` / ``from_toml``) and gives a tuner a flat view (``param_choices``: ``stage2.width``
-> choices), exactly like :class:`hwtune.space.SearchSpace`.

No torch here: deriving the space from a model is :func:`hwtune.compression.derive_space`,
applying a candidate is :func:`hwtune.compression.apply_candidate`.

Example:
    >>> space = CompressSpace(input_shape=(1, 28, 28), num_classes=10, stages=(
    ...     StageSpace("stage1", layers=("conv",), groups=(ChannelGroup("conv", ("conv",), 16),),
    ...                width=(1.0, 0.5), precision=("fp32", "int8")),))
    >>> space.param_choices()
    {'stage1.width': (1.0, 0.5), 'stage1.precision': ('fp32', 'int8')}
    >>> space.candidate({"stage1.width": 0.5, "stage1.precision": "int8"}).label
    'stage1 w0.5 int8'
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwtune._util import is_int, is_num
from hwtune.errors import ConfigError, did_you_mean, unknown_key_problems
from hwtune.precision import PRECISIONS

__all__ = [
    "ChannelGroup",
    "CompressCandidate",
    "CompressSpace",
    "StageChoice",
    "StageSpace",
    "kept_channels",
]

SCHEMA_VERSION = 1
KIND = "compress"
KNOBS = ("width", "depth", "precision")
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def kept_channels(channels: int, width: float, round_to: int = 1) -> int:
    """Channels a group keeps at ``width``: ``round(channels * width)`` to a multiple of ``round_to``.

    Never fewer than ``min(round_to, channels)`` nor more than ``channels``, so a group is never
    pruned away entirely.

    Example:
        >>> kept_channels(64, 0.25), kept_channels(10, 0.75), kept_channels(10, 0.75, round_to=8)
        (16, 8, 8)
    """
    step = max(1, int(round_to))
    kept = step * math.floor(channels * width / step + 0.5)
    return max(min(step, channels), min(channels, kept))


# --------------------------------------------------------------------------------------------
# Structure


@dataclass(frozen=True)
class ChannelGroup:
    """Channels Torch-Pruning couples: pruning ``root``'s outputs prunes every layer listed too.

    Attributes:
        root: Module name of the layer the group is pruned through (a conv or linear).
        layers: Every layer whose output channels belong to the group (residual adds and
            depthwise convs couple several), ``root`` included.
        channels: Channels of the group in the unpruned model.
    """

    root: str
    layers: tuple[str, ...]
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "channels": self.channels, "layers": list(self.layers)}


@dataclass(frozen=True)
class StageSpace:
    """One stage: its layers, its prunable channel groups and droppable blocks, and its choices.

    Attributes:
        name: ``stage1``... (by output resolution) or a user-given name.
        layers: Conv/linear module names of the stage, in execution order (what a per-stage
            precision applies to).
        groups: Channel groups this stage's ``width`` prunes.
        blocks: Residual blocks that can be dropped, in execution order (the deepest go first).
        width: Choices of the fraction of each group's channels kept (1.0 = unpruned).
        depth: Choices of how many of ``blocks`` are kept.
        precision: Choices of the stage's precision.
        resolution: Output height/width of the stage's layers (informative); empty for the head.
    """

    name: str
    layers: tuple[str, ...] = ()
    groups: tuple[ChannelGroup, ...] = ()
    blocks: tuple[str, ...] = ()
    width: tuple[float, ...] = (1.0,)
    depth: tuple[int, ...] = ()
    precision: tuple[str, ...] = ("fp32",)
    resolution: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.depth:
            object.__setattr__(self, "depth", (len(self.blocks),))

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """``{"width": ..., "depth": ..., "precision": ...}`` of this stage."""
        return {"width": self.width, "depth": self.depth, "precision": self.precision}

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": list(self.resolution),
            "width": list(self.width),
            "depth": list(self.depth),
            "precision": list(self.precision),
            "layers": list(self.layers),
            "blocks": list(self.blocks),
            "groups": [g.to_dict() for g in self.groups],
        }


# --------------------------------------------------------------------------------------------
# Candidate


@dataclass(frozen=True)
class StageChoice:
    """What a candidate does to one stage."""

    width: float = 1.0
    depth: int = 0
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "depth": self.depth, "precision": self.precision}


@dataclass(frozen=True)
class CompressCandidate:
    """One point of a ``CompressSpace``: a ``StageChoice`` per stage (space order).

    Frozen, hashable, JSON round-trip (``to_dict``/``from_dict``); ``key`` is a stable id.
    """

    stages: tuple[tuple[str, StageChoice], ...]
    schema_version: int = SCHEMA_VERSION

    def choice(self, stage: str) -> StageChoice:
        """The choice for ``stage``.

        Raises:
            ConfigError: no such stage.
        """
        for name, ch in self.stages:
            if name == stage:
                return ch
        names = [n for n, _ in self.stages]
        raise ConfigError(f"candidate has no stage {stage!r}{did_you_mean(stage, names)} (stages: {', '.join(names)})")

    @property
    def stage_precision(self) -> dict[str, str]:
        """Stage name -> precision."""
        return {n: ch.precision for n, ch in self.stages}

    @property
    def precision(self) -> str:
        """The precision when every stage agrees, else ``"mixed"``."""
        used = set(self.stage_precision.values())
        return used.pop() if len(used) == 1 else "mixed"

    def params(self) -> dict[str, Any]:
        """The flat parameter dict (``stage1.width`` ...) that gives this candidate."""
        out: dict[str, Any] = {}
        for name, ch in self.stages:
            out.update({f"{name}.width": ch.width, f"{name}.depth": ch.depth, f"{name}.precision": ch.precision})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": KIND,
            "stages": {n: ch.to_dict() for n, ch in self.stages},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressCandidate:
        """Inverse of ``to_dict``.

        Raises:
            ConfigError: not the right layout (every problem listed).
        """
        stages = data.get("stages") if isinstance(data, Mapping) else None
        if not isinstance(stages, Mapping):
            raise ConfigError(f"compress candidate must be an object with a 'stages' table, got {data!r}")
        out, problems = [], []
        for name, ch in stages.items():
            try:
                if not isinstance(ch, Mapping) or set(ch) - set(KNOBS):
                    raise TypeError
                choice = StageChoice(float(ch["width"]), int(ch["depth"]), str(ch["precision"]))
            except (KeyError, TypeError, ValueError):
                problems.append(f"compress candidate stage {name!r} must be {{width, depth, precision}}, got {ch!r}")
                continue
            out.append((str(name), choice))
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(stages=tuple(out), schema_version=int(data.get("schema_version", SCHEMA_VERSION)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable, file-name-safe id: ``compress-1f3a9c0b2d4e``."""
        return f"{KIND}-{hashlib.sha256(self.to_json().encode()).hexdigest()[:12]}"

    @property
    def label(self) -> str:
        """Readable one-liner: ``stage1 w0.5 d1 int8 | stage2 w1.0 fp32``."""
        parts = []
        for name, ch in self.stages:
            depth = f" d{ch.depth}" if ch.depth else ""
            parts.append(f"{name} w{ch.width:g}{depth} {ch.precision}")
        return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# Space


@dataclass(frozen=True)
class CompressSpace:
    """The search space of one user model: stages with width / depth / precision choices.

    Attributes:
        input_shape: Per-sample input shape ``(C, H, W)`` the structure was derived at.
        num_classes: Output width of the model (never pruned).
        stages: Stages in execution order.
        notes: Layers left unpruned and why (unsupported by Torch-Pruning, ignored, ...).
        ignored: Module-name prefixes whose output channels are never pruned.
        round_to: Kept channel counts are multiples of this (see ``kept_channels``).
        path: Recipe file it was read from (not part of equality).
    """

    input_shape: tuple[int, ...]
    num_classes: int
    stages: tuple[StageSpace, ...]
    notes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    round_to: int = 1
    path: Path | None = field(default=None, compare=False)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = _space_problems(self)
        if problems:
            where = f"{self.path}: " if self.path else "compress space: "
            raise ConfigError("\n".join(where + p for p in problems))

    # ---- tuner view ----
    def stage(self, name: str) -> StageSpace:
        """The stage called ``name`` (``ConfigError`` with close names otherwise)."""
        for st in self.stages:
            if st.name == name:
                return st
        names = [s.name for s in self.stages]
        raise ConfigError(
            f"compress space has no stage {name!r}{did_you_mean(name, names)} (stages: {', '.join(names)})"
        )

    def all_params(self) -> dict[str, tuple[Any, ...]]:
        """Every parameter (fixed ones too): ``stage1.width`` -> choices, in stage order."""
        out: dict[str, tuple[Any, ...]] = {}
        for st in self.stages:
            for knob, choices in st.choices().items():
                out[f"{st.name}.{knob}"] = choices
        return out

    def param_choices(self) -> dict[str, tuple[Any, ...]]:
        """Searched parameters (two or more choices) -> choices: what a tuner suggests."""
        return {k: v for k, v in self.all_params().items() if len(v) > 1}

    @property
    def fixed_params(self) -> dict[str, Any]:
        """Parameters with a single choice -> that value (``candidate`` fills them in)."""
        return {k: v[0] for k, v in self.all_params().items() if len(v) == 1}

    def size(self) -> int:
        """Number of distinct candidates."""
        return math.prod(len(v) for v in self.all_params().values())

    def candidate(self, params: Mapping[str, Any]) -> CompressCandidate:
        """The candidate for a flat parameter dict (``param_choices`` names; fixed ones may be omitted).

        Raises:
            ConfigError: unknown names, missing parameters, values outside their choices (all listed).
        """
        known = self.all_params()
        problems = unknown_key_problems(params, known, what="parameter")
        values: dict[str, Any] = {}
        for name, choices in known.items():
            if name in params:
                v = params[name]
                if v in choices and not isinstance(v, bool):
                    values[name] = v
                else:
                    problems.append(f"parameter {name!r} must be one of {', '.join(map(repr, choices))}, got {v!r}")
            elif len(choices) == 1:
                values[name] = choices[0]
            else:
                problems.append(f"parameter {name!r} is missing (choices: {', '.join(map(repr, choices))})")
        if problems:
            raise ConfigError("\n".join(f"compress space: {p}" for p in problems))
        return CompressCandidate(
            tuple(
                (
                    st.name,
                    StageChoice(
                        float(values[f"{st.name}.width"]),
                        int(values[f"{st.name}.depth"]),
                        str(values[f"{st.name}.precision"]),
                    ),
                )
                for st in self.stages
            )
        )

    def baseline(self) -> CompressCandidate:
        """The unpruned candidate: full width and depth, each stage's first precision."""
        return self.candidate(
            {
                **{f"{st.name}.width": 1.0 for st in self.stages if 1.0 in st.width},
                **{f"{st.name}.depth": len(st.blocks) for st in self.stages if len(st.blocks) in st.depth},
                **{f"{st.name}.precision": st.precision[0] for st in self.stages},
            }
        )

    def uniform(self, width: float, *, precision: str | None = None) -> CompressCandidate:
        """Every stage at ``width`` (stages without groups stay at 1.0), full depth.

        ``width`` need not be one of the choices: this is the hand-made baseline a user would try.
        """
        stages = []
        for st in self.stages:
            w = float(width) if st.groups else 1.0
            stages.append((st.name, StageChoice(w, len(st.blocks), precision or st.precision[0])))
        return CompressCandidate(tuple(stages))

    # ---- identity ----
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": KIND,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "round_to": self.round_to,
            "ignored": list(self.ignored),
            "notes": list(self.notes),
            "stages": {st.name: st.to_dict() for st in self.stages},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: Path | None = None) -> CompressSpace:
        """Build from ``to_dict`` output or a parsed recipe.

        Raises:
            ConfigError: one line per problem, naming the key, the rule and the value.
        """
        where = f"{path}: " if path else "compress space: "
        problems = _layout_problems(data)
        if problems:
            raise ConfigError("\n".join(where + p for p in problems))
        stages = []
        for name, raw in data["stages"].items():
            groups = tuple(
                ChannelGroup(str(g["root"]), tuple(str(x) for x in g.get("layers", [g["root"]])), int(g["channels"]))
                for g in raw.get("groups", [])
            )
            blocks = tuple(str(b) for b in raw.get("blocks", []))
            stages.append(
                StageSpace(
                    name=str(name),
                    layers=tuple(str(x) for x in raw.get("layers", [])),
                    groups=groups,
                    blocks=blocks,
                    width=tuple(_number(w) for w in raw.get("width", [1.0])),
                    depth=tuple(raw.get("depth", [len(blocks)])),
                    precision=tuple(raw.get("precision", ["fp32"])),
                    resolution=tuple(raw.get("resolution", [])),
                )
            )
        return cls(
            input_shape=tuple(data["input_shape"]),
            num_classes=data["num_classes"],
            stages=tuple(stages),
            notes=tuple(str(n) for n in data.get("notes", [])),
            ignored=tuple(str(n) for n in data.get("ignored", [])),
            round_to=data.get("round_to", 1),
            path=path,
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )

    def to_toml(self) -> str:
        """The space as an editable recipe (``from_toml`` reads it back to an equal space)."""
        return _to_toml(self)

    @classmethod
    def from_toml(cls, path: str | Path) -> CompressSpace:
        """Read a recipe written by ``to_toml`` (possibly edited) and validate it.

        Raises:
            ConfigError: unreadable file, bad TOML, or invalid content (every problem listed,
                each line naming the file, key and value).
        """
        path = Path(path)
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: compress space file not found") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read compress space ({exc.strerror or exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        return cls.from_dict(raw, path=path)

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name}({len(s.groups)}g,{len(s.blocks)}b)" for s in self.stages)
        return f"<CompressSpace {list(self.input_shape)} -> {self.num_classes}: {stages}; {self.size()} candidates>"


def _number(v: Any) -> Any:
    return float(v) if is_int(v) else v


# --------------------------------------------------------------------------------------------
# Validation


_TOP_KEYS = ("schema_version", "kind", "input_shape", "num_classes", "round_to", "ignored", "notes", "stages")
_STAGE_KEYS = ("resolution", "width", "depth", "precision", "layers", "blocks", "groups")
_GROUP_KEYS = ("root", "channels", "layers")


def _is_str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _layout_problems(data: Any) -> list[str]:
    """Key/type problems of a raw dict (before the dataclasses are built)."""
    if not isinstance(data, Mapping):
        return [f"must be a table, got {data!r}"]
    problems = unknown_key_problems(data, _TOP_KEYS)
    if data.get("kind", KIND) != KIND:
        problems.append(f"kind must be {KIND!r}, got {data.get('kind')!r}")
    for key in ("input_shape", "num_classes", "stages"):
        if key not in data:
            problems.append(f"missing required key {key!r}")
    shape = data.get("input_shape", [1])
    if not (isinstance(shape, (list, tuple)) and shape and all(is_int(v) and v > 0 for v in shape)):
        problems.append(f"input_shape must be a list of positive integers (C, H, W), got {shape!r}")
    for key in ("ignored", "notes"):
        if not _is_str_list(data.get(key, [])):
            problems.append(f"{key} must be a list of strings, got {data.get(key)!r}")
    stages = data.get("stages", {})
    if not isinstance(stages, Mapping) or not stages:
        return [*problems, f"stages must be a non-empty table of stage tables, got {stages!r}"]
    for name, raw in stages.items():
        problems += _stage_layout_problems(str(name), raw)
    return problems


def _stage_layout_problems(name: str, raw: Any) -> list[str]:
    where = f"stages.{name}"
    if not isinstance(raw, Mapping):
        return [f"{where} must be a table, got {raw!r}"]
    problems = unknown_key_problems(raw, _STAGE_KEYS, where)
    for key in ("width", "depth", "precision", "resolution"):
        if key in raw and not isinstance(raw[key], (list, tuple)):
            problems.append(f"{where}.{key} must be a list, got {raw[key]!r}")
    for key in ("layers", "blocks"):
        if not _is_str_list(raw.get(key, [])):
            problems.append(f"{where}.{key} must be a list of module names (strings), got {raw.get(key)!r}")
    groups = raw.get("groups", [])
    if not isinstance(groups, (list, tuple)):
        return [*problems, f"{where}.groups must be a list of {{root, channels, layers}} tables, got {groups!r}"]
    for i, g in enumerate(groups):
        gw = f"{where}.groups[{i}]"
        if not isinstance(g, Mapping):
            problems.append(f"{gw} must be a table {{root, channels, layers}}, got {g!r}")
            continue
        problems += unknown_key_problems(g, _GROUP_KEYS, gw)
        if not isinstance(g.get("root"), str):
            problems.append(f"{gw}.root must be a module name, got {g.get('root')!r}")
        if not (is_int(g.get("channels")) and g["channels"] >= 1):
            problems.append(f"{gw}.channels must be an integer >= 1, got {g.get('channels')!r}")
        if not _is_str_list(g.get("layers", [])):
            problems.append(f"{gw}.layers must be a list of module names, got {g.get('layers')!r}")
    return problems


def _choice_problems(st: StageSpace) -> list[str]:
    where = f"stages.{st.name}"
    problems = []
    if not st.width or any(not is_num(w) or not 0 < w <= 1 for w in st.width):
        problems.append(f"{where}.width must be a non-empty list of numbers in (0, 1], got {list(st.width)}")
    elif not st.groups and tuple(st.width) != (1.0,):
        problems.append(f"{where}.width must be [1.0]: the stage has no prunable channel groups, got {list(st.width)}")
    n = len(st.blocks)
    if not st.depth or any(not is_int(d) or not 0 <= d <= n for d in st.depth):
        problems.append(
            f"{where}.depth must be a non-empty list of integers in [0, {n}] (droppable blocks kept), got {list(st.depth)}"
        )
    if not st.precision or any(p not in PRECISIONS for p in st.precision):
        problems.append(
            f"{where}.precision must be a non-empty list of {', '.join(PRECISIONS)}, got {list(st.precision)}"
        )
    for knob, values in st.choices().items():
        if len(set(values)) != len(values):
            problems.append(f"{where}.{knob} lists a choice twice: {list(values)}")
    if st.resolution and not all(is_int(v) and v > 0 for v in st.resolution):
        problems.append(f"{where}.resolution must be positive integers, got {list(st.resolution)}")
    return problems


def _space_problems(space: CompressSpace) -> list[str]:
    problems = []
    if not is_int(space.num_classes) or space.num_classes < 1:
        problems.append(f"num_classes must be an integer >= 1, got {space.num_classes!r}")
    if not is_int(space.round_to) or space.round_to < 1:
        problems.append(f"round_to must be an integer >= 1, got {space.round_to!r}")
    if space.schema_version != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}, got {space.schema_version!r}")
    if not space.stages:
        problems.append("stages must not be empty")
    seen_stage: set[str] = set()
    seen_root: dict[str, str] = {}
    seen_block: dict[str, str] = {}
    for st in space.stages:
        if not st.name or "." in st.name or st.name in seen_stage:
            problems.append(f"stage name {st.name!r} must be unique, non-empty and without '.'")
        seen_stage.add(st.name)
        problems += _choice_problems(st)
        for g in st.groups:
            if g.root in seen_root:
                problems.append(f"stages.{st.name}: group {g.root!r} is also in stage {seen_root[g.root]!r}")
            seen_root[g.root] = st.name
        for b in st.blocks:
            if b in seen_block:
                problems.append(f"stages.{st.name}: block {b!r} is also in stage {seen_block[b]!r}")
            seen_block[b] = st.name
    return problems


# --------------------------------------------------------------------------------------------
# TOML writer (tomllib only reads; the layout is small enough to write by hand)


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _toml_list(key: str, values: Sequence[Any], per_line: int = 4) -> list[str]:
    if len(values) <= per_line:
        return [f"{key} = {_toml_value(list(values))}"]
    return [f"{key} = [", *(f"  {_toml_value(v)}," for v in values), "]"]


def _to_toml(space: CompressSpace) -> str:
    lines = [
        "# hwtune compression space, derived from a trained model (hwtune.compression.derive_space).",
        "# Edit the choices of each stage: width (fraction of each channel group kept, (0, 1]),",
        "# depth (how many of the stage's droppable residual blocks are kept; the deepest go first)",
        "# and precision. The structure (layers, blocks, groups) was read from the model; you may",
        "# delete a group to keep its channels, or move it to another stage, but not invent one.",
        f"schema_version = {space.schema_version}",
        f'kind = "{KIND}"',
        f"input_shape = {_toml_value(list(space.input_shape))}",
        f"num_classes = {space.num_classes}",
        f"round_to = {space.round_to}",
        f"ignored = {_toml_value(list(space.ignored))}",
        *_toml_list("notes", space.notes, per_line=0),
    ]
    for st in space.stages:
        lines += ["", f"[stages.{json.dumps(st.name)}]"]
        if st.resolution:
            lines.append(f"resolution = {_toml_value(list(st.resolution))}")
        lines += [
            f"width = {_toml_value(list(st.width))}",
            f"depth = {_toml_value(list(st.depth))}",
            f"precision = {_toml_value(list(st.precision))}",
            *_toml_list("layers", st.layers),
            *_toml_list("blocks", st.blocks),
            *_toml_list("groups", [g.to_dict() for g in st.groups], per_line=0),
        ]
    return "\n".join(lines) + "\n"
