"""Derive a ``CompressSpace`` from a trained model: stages, channel groups, droppable blocks.

Channel coupling comes from Torch-Pruning's dependency graph (residual adds, concatenations,
depthwise convs, squeeze-and-excitation gates), not from hand-written rules. On top of it:

- **Stages** are runs of conv/linear layers (execution order) with the same output resolution,
  named ``stage1``, ``stage2``...; layers after the spatial dimensions are gone form ``head``.
  A layer whose own output is 1x1 inside a module with a larger output (the FC convs of a
  squeeze-and-excitation gate) takes that module's resolution, so a gate stays in its stage.
  ``stages={"name": ["module.prefix", ...]}`` names the stages instead (unmatched layers form
  ``other``).
- A **channel group** belongs to the stage of its deepest layer (a ResNet stem conv coupled by
  the residual adds to stage 1's blocks is pruned with stage 1).
- **Droppable blocks**: see :mod:`hwtune.compression._model_trace` for the rule.
- **Never pruned**: the model input (Torch-Pruning has no pruner for it), every group whose
  channels reach the model output (the classifier), the ``ignored`` modules, and groups
  Torch-Pruning cannot handle: grouped (non-depthwise) convolutions, custom layers with their
  own non-per-channel parameters, and any group whose pruning leaves a model that fails to run
  on the example input (checked once on a copy: one channel removed from every group at once,
  then bisection if that fails). Each is listed in ``CompressSpace.notes``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwtune._util import first_line, is_num
from hwtune.compression._model_trace import COMPUTE_TYPES, ModelTrace, trace_model
from hwtune.compression.compress_space import (
    DEFAULT_PRECISIONS,
    DEFAULT_WIDTH_RATIOS,
    ChannelGroup,
    CompressSpace,
    StageSpace,
)
from hwtune.errors import ConfigError, ModelError, did_you_mean
from hwtune.precision import PRECISIONS

__all__ = ["build_graph", "check_space", "derive_space", "matches"]

OTHER_STAGE = "other"
HEAD_STAGE = "head"


def matches(name: str, prefixes: Iterable[str]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def build_graph(model: nn.Module, example_input: torch.Tensor) -> Any:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example_input`` (mode restored)."""
    import torch_pruning as tp

    was_training = model.training
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            # A tuple: a bare tensor would be unpacked along the batch dimension.
            return tp.DependencyGraph().build_dependency(model, example_inputs=(example_input,), verbose=False)
    except Exception as exc:  # tracing runs user code: any exception type
        raise ModelError(
            f"cannot trace {type(model).__name__} for pruning: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# Stages


def _resolution(trace: ModelTrace, layer: str) -> tuple[int, ...]:
    """Output height/width of ``layer``, or of its innermost ancestor with a >1x1 output."""
    parts = layer.split(".")
    for i in range(len(parts), 0, -1):
        t = trace.modules.get(".".join(parts[:i]))
        if t is not None and t.out_shape is not None and len(t.out_shape) >= 3 and math.prod(t.out_shape[2:]) > 1:
            return tuple(t.out_shape[2:])
    own = trace.modules[layer].out_shape or ()
    return tuple(own[2:]) if len(own) >= 3 else ()


def _stages_by_resolution(trace: ModelTrace) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    stage_of: dict[str, str] = {}
    resolution: dict[str, tuple[int, ...]] = {}
    runs: list[tuple[tuple[int, ...], list[str]]] = []
    for layer in trace.layers:
        key = _resolution(trace, layer)
        if runs and runs[-1][0] == key:
            runs[-1][1].append(layer)
        else:
            runs.append((key, [layer]))
    for i, (key, layers) in enumerate(runs):
        name = HEAD_STAGE if (not key and i == len(runs) - 1) else f"stage{i + 1}"
        resolution[name] = key
        stage_of.update(dict.fromkeys(layers, name))
    return stage_of, resolution


def _stages_by_name(
    trace: ModelTrace, stages: Mapping[str, Sequence[str]], module_names: Sequence[str]
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    problems = []
    for name, prefixes in stages.items():
        if not isinstance(name, str) or not name or "." in name or name == OTHER_STAGE:
            problems.append(
                f"stages: stage name must be a non-empty string without '.', not {OTHER_STAGE!r}, got {name!r}"
            )
        if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
            problems.append(f"stages[{name!r}] must be a list of module names, got {prefixes!r}")
            continue
        for p in prefixes:
            if not any(matches(layer, [p]) for layer in trace.layers):
                problems.append(
                    f"stages[{name!r}]: module {p!r} contains no conv/linear layer that ran"
                    f"{did_you_mean(p, module_names)}"
                )
    if problems:
        raise ConfigError("\n".join(problems))
    stage_of = {}
    for layer in trace.layers:
        stage_of[layer] = next((n for n, ps in stages.items() if matches(layer, ps)), OTHER_STAGE)
    resolution = {}
    for name in dict.fromkeys(stage_of.values()):
        keys = {_resolution(trace, layer) for layer, s in stage_of.items() if s == name}
        resolution[name] = keys.pop() if len(keys) == 1 else ()
    return stage_of, resolution


# --------------------------------------------------------------------------------------------
# Channel groups


@dataclass
class _Group:
    root: str
    layers: list[str]
    channels: int
    blocked: str = ""  # why it cannot be pruned ("" = prunable)


def _custom_params(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> owner for parameters of layers Torch-Pruning has no pruner for and that
    are not per-channel vectors (one non-singleton dimension: those it prunes correctly)."""
    import torch_pruning as tp

    out = {}
    for name, m in model.named_modules():
        if tp.ops.module2type(m) != tp.ops.OPTYPE.ELEMENTWISE:
            continue
        for p in m.parameters(recurse=False):
            if sum(s > 1 for s in p.shape) > 1:
                out[id(p)] = f"{name or 'model'} ({type(m).__name__})"
    return out


def _why_blocked(
    group: Any, dg: Any, names: dict[Any, str], custom: dict[int, str], ignored: Sequence[str], output: Sequence[str]
) -> str:
    for dep, _ in group:
        target = dep.target.module
        if isinstance(target, nn.Parameter) and id(target) in custom:
            return f"custom layer {custom[id(target)]} has parameters Torch-Pruning cannot prune"
        if isinstance(target, nn.modules.conv._ConvNd) and 1 < target.groups and target.groups != target.out_channels:
            return f"grouped convolution {names.get(target, '?')!r} (groups={target.groups}) is not supported"
        if dg.is_out_channel_pruning_fn(dep.handler) and isinstance(target, nn.Module):
            if names.get(target) in output:
                return "output"
            if ignored and matches(names.get(target, ""), ignored):
                return f"{names[target]!r} is in ignored"
    return ""


def _collect_groups(
    model: nn.Module, example_input: torch.Tensor, ignored: Sequence[str], output: Sequence[str]
) -> list[_Group]:
    dg = build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    custom = _custom_params(model)
    out = []
    for group in dg.get_all_groups(root_module_types=COMPUTE_TYPES):
        root_mod = group[0].dep.target.module
        layers = [
            names[d.target.module]
            for d, _ in group
            if isinstance(d.target.module, COMPUTE_TYPES) and dg.is_out_channel_pruning_fn(d.handler)
        ]
        channels = int(dg.get_out_channels(root_mod))
        blocked = _why_blocked(group, dg, names, custom, ignored, output)
        if not blocked and channels < 2:
            blocked = "a single channel"
        out.append(_Group(names[root_mod], list(dict.fromkeys(layers)), channels, blocked))
    return out


def _prunes_cleanly(model: nn.Module, x: torch.Tensor, roots: Sequence[str], out_shape: tuple[int, ...]) -> bool:
    """Remove channel 0 of every group in ``roots`` from a copy; does the copy still run?"""
    trial = copy.deepcopy(model)
    try:
        dg = build_graph(trial, x)
        mods = dict(trial.named_modules())
        for root in roots:
            mod = mods[root]
            dg.get_pruning_group(mod, dg.get_pruner_of_module(mod).prune_out_channels, [0]).prune()
        with torch.no_grad():
            y = trial.eval()(x)
        return isinstance(y, torch.Tensor) and tuple(y.shape) == out_shape
    except Exception:  # noqa: BLE001 - a failed trial is the answer, whatever its type
        return False


def _failing_roots(model: nn.Module, x: torch.Tensor, roots: list[str], out_shape: tuple[int, ...]) -> list[str]:
    if not roots or _prunes_cleanly(model, x, roots, out_shape):
        return []
    if len(roots) == 1:
        return roots
    mid = len(roots) // 2
    return _failing_roots(model, x, roots[:mid], out_shape) + _failing_roots(model, x, roots[mid:], out_shape)


# --------------------------------------------------------------------------------------------
# The space


def _check_arguments(
    model: Any, example_input: Any, width_ratios: Sequence[Any], precisions: Sequence[Any], round_to: Any
) -> None:
    problems = []
    if not isinstance(model, nn.Module):
        problems.append(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        problems.append(
            f"example_input must be a batched tensor such as torch.randn(1, 3, 32, 32), got {example_input!r}"
        )
    if not width_ratios or any(not is_num(w) or not 0 < w <= 1 for w in width_ratios):
        problems.append(f"width_ratios must be numbers in (0, 1], got {list(width_ratios)}")
    if not precisions or any(p not in PRECISIONS for p in precisions):
        problems.append(f"precisions must be some of {', '.join(PRECISIONS)}, got {list(precisions)}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        problems.append(f"round_to must be an integer >= 1, got {round_to!r}")
    if problems:
        raise ConfigError("\n".join(problems))


def _trace_checked(model: nn.Module, example_input: torch.Tensor) -> ModelTrace:
    try:
        trace = trace_model(model, example_input)
    except Exception as exc:  # user code
        raise ModelError(
            f"{type(model).__name__} does not run on an input of shape {tuple(example_input.shape)}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if len(trace.output_shape) != 2:
        raise ModelError(
            f"{type(model).__name__} must return logits of shape (batch, classes), got {trace.output_shape or 'no tensor'}"
        )
    if not trace.layers:
        raise ModelError(f"nothing in {type(model).__name__} can be pruned: it has no conv or linear layer")
    return trace


def _notes(groups: list[_Group]) -> list[str]:
    notes = []
    for g in groups:
        if g.blocked and g.blocked != "output":
            notes.append(
                f"channels of {', '.join(g.layers[:4])}{' ...' if len(g.layers) > 4 else ''} left unpruned: {g.blocked}"
            )
    return notes


def _prunable_groups(model: nn.Module, x: torch.Tensor, trace: ModelTrace, ignored: Sequence[str]) -> list[_Group]:
    """Every channel group, with ``blocked`` set for those that cannot be pruned."""
    groups = _collect_groups(model, x, ignored, trace.output_layers)
    failing = _failing_roots(model, x, [g.root for g in groups if not g.blocked], trace.output_shape)
    custom = ", ".join(sorted(set(_custom_params(model).values())))
    for g in groups:
        if g.root in failing:
            g.blocked = "pruning them breaks the forward pass" + (f" (custom layers: {custom})" if custom else "")
    if all(g.blocked for g in groups) and not trace.blocks:
        reasons = "; ".join(f"{g.root}: {g.blocked}" for g in groups if g.blocked != "output") or "only the classifier"
        raise ModelError(f"nothing in {type(model).__name__} can be pruned (no droppable residual block; {reasons})")
    return groups


def _stage_spaces(
    trace: ModelTrace,
    stage_of: Mapping[str, str],
    resolution: Mapping[str, tuple[int, ...]],
    prunable: list[_Group],
    width_ratios: Sequence[float],
    precisions: Sequence[str],
) -> list[StageSpace]:
    order = {name: t.order for name, t in trace.modules.items()}
    stage_groups: dict[str, list[ChannelGroup]] = {}
    for g in sorted(prunable, key=lambda g: min(order.get(layer, -1) for layer in g.layers)):
        deepest = max(g.layers, key=lambda layer: order.get(layer, -1))
        layers = tuple(sorted(g.layers, key=lambda layer: order.get(layer, -1)))
        stage_groups.setdefault(stage_of[deepest], []).append(ChannelGroup(g.root, layers, g.channels))
    stage_blocks: dict[str, list[str]] = {}
    for b in trace.blocks:
        first = next((layer for layer in trace.layers if matches(layer, [b])), None)
        if first is not None:  # a block without conv/linear (x + bn(x)) has no stage: left alone
            stage_blocks.setdefault(stage_of[first], []).append(b)
    out = []
    for name in dict.fromkeys(stage_of[layer] for layer in trace.layers):
        blocks = tuple(stage_blocks.get(name, ()))
        sg = tuple(stage_groups.get(name, ()))
        out.append(
            StageSpace(
                name=name,
                layers=tuple(layer for layer in trace.layers if stage_of[layer] == name),
                groups=sg,
                blocks=blocks,
                width=tuple(float(w) for w in width_ratios) if sg else (1.0,),
                depth=tuple(range(len(blocks), -1, -1)),
                precision=tuple(precisions),
                resolution=resolution[name],
            )
        )
    return out


def derive_space(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    stages: Mapping[str, Sequence[str]] | None = None,
    width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    ignored: Sequence[str] = (),
    round_to: int = 1,
) -> CompressSpace:
    """Read a model's structure and return its compression search space.

    Args:
        model: The trained model (not modified; its train/eval mode is restored).
        example_input: One batch of the input it was trained on, e.g. ``torch.randn(1, 1, 28, 28)``.
        stages: Stage name -> module-name prefixes, instead of stages by output resolution.
        width_ratios: Choices of the fraction of channels kept per stage (1.0 = unpruned).
        precisions: Per-stage precision choices (the device's).
        ignored: Module-name prefixes whose output channels must never be pruned.
        round_to: Kept channel counts are rounded to multiples of this (8 suits int8 kernels).

    Returns:
        The space. Stages without prunable groups get ``width = (1.0,)``; ``depth`` choices run
        from all droppable blocks kept down to none.

    Raises:
        ConfigError: a bad argument (every problem listed).
        ModelError: the model does not run on ``example_input``, or nothing in it can be pruned
            (the message names the layers that block it).

    Example:
        >>> import torch, torchvision                                      # doctest: +SKIP
        >>> m = torchvision.models.resnet18(num_classes=10)                # doctest: +SKIP
        >>> derive_space(m, torch.randn(1, 3, 64, 64)).param_choices()     # doctest: +SKIP
        {'stage2.width': (1.0, 0.75, 0.5, 0.25), 'stage2.depth': (2, 1, 0), ...}
    """
    _check_arguments(model, example_input, width_ratios, precisions, round_to)
    module_names = [n for n, _ in model.named_modules() if n]
    unknown = [p for p in ignored if not any(matches(n, [p]) for n in module_names)]
    if unknown:
        raise ConfigError(f"ignored: no module named {unknown[0]!r}{did_you_mean(unknown[0], module_names)}")
    trace = _trace_checked(model, example_input)
    if stages:
        stage_of, resolution = _stages_by_name(trace, stages, module_names)
    else:
        stage_of, resolution = _stages_by_resolution(trace)
    groups = _prunable_groups(model, example_input, trace, tuple(ignored))
    out = _stage_spaces(trace, stage_of, resolution, [g for g in groups if not g.blocked], width_ratios, precisions)
    return CompressSpace(
        input_shape=tuple(example_input.shape[1:]),
        num_classes=int(trace.output_shape[1]),
        stages=tuple(out),
        notes=tuple(_notes(groups)),
        ignored=tuple(ignored),
        round_to=round_to,
    )


def check_space(space: CompressSpace, model: nn.Module, example_input: torch.Tensor) -> None:
    """Check that a (possibly edited) space fits ``model``: every group and block it names exists.

    Raises:
        ConfigError: one line per mismatch, naming the recipe file and the group/block.
    """
    fresh = derive_space(model, example_input, ignored=space.ignored, round_to=space.round_to)
    where = f"{space.path}: " if space.path else "compress space: "
    problems = []
    if tuple(example_input.shape[1:]) != tuple(space.input_shape):
        problems.append(
            f"input_shape is {list(space.input_shape)}, the example input has {list(example_input.shape[1:])}"
        )
    if space.num_classes != fresh.num_classes:
        problems.append(f"num_classes is {space.num_classes}, the model outputs {fresh.num_classes}")
    groups = {g.root: g for st in fresh.stages for g in st.groups}
    blocks = {b for st in fresh.stages for b in st.blocks}
    for st in space.stages:
        for g in st.groups:
            real = groups.get(g.root)
            if real is None:
                problems.append(
                    f"stages.{st.name}: group {g.root!r} is not a prunable channel group of the model"
                    f"{did_you_mean(g.root, groups)}"
                )
            elif real.channels != g.channels or set(real.layers) != set(g.layers):
                problems.append(
                    f"stages.{st.name}: group {g.root!r} is {g.channels} channels of {list(g.layers)}, "
                    f"the model has {real.channels} channels of {list(real.layers)}"
                )
        for b in st.blocks:
            if b not in blocks:
                problems.append(
                    f"stages.{st.name}: block {b!r} is not a droppable block of the model{did_you_mean(b, blocks)}"
                )
    if problems:
        raise ConfigError("\n".join(where + p for p in problems))
