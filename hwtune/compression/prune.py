"""Apply a compression candidate to a copy of the user's model: drop blocks, prune channels.

``apply_candidate`` deep-copies the model, replaces the dropped residual blocks by
``nn.Identity`` (the deepest of each stage first), then prunes each channel group of a stage to
``kept_channels(channels, width)`` with Torch-Pruning, ranking channels by the library's
importance: ``"magnitude"`` (= ``"l2"``) or ``"l1"`` weight norms, or ``"taylor"`` (first-order
Taylor, needs a labelled ``batch``). The result is an ordinary ``nn.Module`` (same module
names, fewer channels) that runs, exports to ONNX and carries the inherited weights.

``stage_prefixes`` / ``precision_plan`` give the per-stage precision of a candidate as module
prefixes of the pruned model, for :func:`hwtune.quant.quantize`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hwtune.compression.compress_space import CompressCandidate, CompressSpace, kept_channels
from hwtune.compression.derive import build_graph, matches
from hwtune.errors import ConfigError, ModelError, did_you_mean
from hwtune.precision import PrecisionPlan

__all__ = ["IMPORTANCES", "apply_candidate", "dropped_blocks", "precision_plan", "stage_prefixes"]

IMPORTANCES = ("magnitude", "l1", "l2", "taylor")


def _as_candidate(space: CompressSpace, candidate: CompressCandidate | Mapping[str, Any]) -> CompressCandidate:
    if isinstance(candidate, CompressCandidate):
        names = [st.name for st in space.stages]
        got = [n for n, _ in candidate.stages]
        if got != names:
            raise ConfigError(f"candidate stages {got} do not match the space's stages {names}")
        return candidate
    if isinstance(candidate, Mapping):
        return space.candidate(candidate)
    raise ConfigError(f"candidate must be a CompressCandidate or a parameter dict, got {type(candidate).__name__}")


def dropped_blocks(space: CompressSpace, candidate: CompressCandidate | Mapping[str, Any]) -> list[str]:
    """Module names of the blocks ``candidate`` drops: each stage keeps its first ``depth`` blocks."""
    cand = _as_candidate(space, candidate)
    out = []
    for st in space.stages:
        depth = cand.choice(st.name).depth
        if not 0 <= depth <= len(st.blocks):
            raise ConfigError(f"candidate depth {depth} of stage {st.name!r} must be in [0, {len(st.blocks)}]")
        out += list(st.blocks[depth:])
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        if not hasattr(parent, child):
            raise AttributeError(child)
    except AttributeError as exc:
        raise ConfigError(f"block {name!r} of the compress space is not a module of the model") from exc
    setattr(parent, child, new)


def _importance(kind: str, batch: Any) -> Any:
    import torch_pruning as tp

    if kind not in IMPORTANCES:
        raise ConfigError(
            f"importance must be one of {', '.join(IMPORTANCES)}, got {kind!r}{did_you_mean(kind, IMPORTANCES)}"
        )
    if kind == "taylor":
        if batch is None:
            raise ConfigError(
                "importance 'taylor' needs a labelled batch: apply_candidate(..., batch=(images, labels))"
            )
        return tp.importance.GroupTaylorImportance(normalizer=None)
    return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2, normalizer=None)


def _taylor_gradients(model: nn.Module, batch: Any) -> None:
    try:
        images, labels = batch
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
    except Exception as exc:  # user model and user batch
        raise ModelError(f"cannot compute Taylor importance on the batch: {type(exc).__name__}: {exc}") from exc


def _group_widths(space: CompressSpace, cand: CompressCandidate) -> dict[str, tuple[str, str, int, float]]:
    """layer name -> (stage, group root, channels, width) for every layer of a prunable group."""
    out = {}
    for st in space.stages:
        width = cand.choice(st.name).width
        for g in st.groups:
            for layer in g.layers:
                out[layer] = (st.name, g.root, g.channels, width)
    return out


def _prune_channels(
    model: nn.Module,
    space: CompressSpace,
    cand: CompressCandidate,
    example_input: torch.Tensor,
    imp: Any,
    batch: Any,
    dropped: list[str],
) -> dict[str, dict[str, list[int]]]:
    """Prune every group of ``model`` in place; returns stage -> {group root: [before, after]}."""
    dg = build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    widths = _group_widths(space, cand)
    if batch is not None:
        _taylor_gradients(model, batch)
    plans: list[Any] = []
    report: dict[str, dict[str, list[int]]] = {}
    for group in dg.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        layers = [names.get(d.target.module, "") for d, _ in group if dg.is_out_channel_pruning_fn(d.handler)]
        hits = [widths[layer] for layer in layers if layer in widths]
        if not hits:
            continue
        # A group whose recorded root is still in the model keeps its recorded size; one that a
        # dropped block coupled (a residual add over a concatenation) splits into smaller groups.
        hit = next((h for h in hits if not matches(h[1], dropped)), hits[0])
        stage, root, channels, width = hit
        root_mod, fn = group[0].dep.target.module, group[0].dep.handler
        live = int(dg.get_out_channels(root_mod))
        if matches(root, dropped):
            root, channels = names.get(root_mod, root), live
        elif live != channels:
            raise ConfigError(f"compress space: group {root!r} has {channels} channels, the model has {live}")
        keep = kept_channels(channels, width, space.round_to)
        report.setdefault(stage, {})[root] = [channels, keep]
        if keep >= channels:
            continue
        scores = imp(group)
        if scores is None:
            raise ModelError(f"Torch-Pruning gave no importance for group {root!r} (no weights to rank)")
        plans.append((root_mod, fn, torch.argsort(scores.cpu())[: channels - keep].tolist()))
    for root_mod, fn, idxs in plans:
        dg.get_pruning_group(root_mod, fn, idxs).prune()
    model.zero_grad(set_to_none=True)
    return report


def _count(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    from hwtune.graph import count_flops

    return count_flops(model, example_input).macs, sum(p.numel() for p in model.parameters())


def apply_candidate(
    model: nn.Module,
    space: CompressSpace,
    candidate: CompressCandidate | Mapping[str, Any],
    *,
    example_input: torch.Tensor,
    importance: str = "magnitude",
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the compressed model of ``candidate`` from a copy of ``model`` (not modified).

    Args:
        model: The trained parent model.
        space: Its space (``derive_space`` or a recipe checked with ``check_space``).
        candidate: A ``CompressCandidate`` or a flat parameter dict (``space.param_choices`` names).
        example_input: An input batch (the structure is traced on it).
        importance: ``"magnitude"``/``"l2"``, ``"l1"`` or ``"taylor"`` (needs ``batch``).
        batch: ``(images, labels)`` for Taylor importance.

    Returns:
        ``(pruned_model, info)``; the model is in eval mode. ``info`` (JSON-able) holds the
        candidate, ``dropped_blocks``, ``channels`` (stage -> group root -> [before, after]),
        ``macs_before``/``macs_after``, ``params_before``/``params_after`` and ``importance``.

    Raises:
        ConfigError: a bad candidate or importance, or a space that does not fit the model.
        ModelError: the pruned model fails to run or its output shape changed.

    Example:
        >>> pruned, info = apply_candidate(model, space, space.uniform(0.5),        # doctest: +SKIP
        ...                                example_input=torch.randn(1, 1, 28, 28))
        >>> info["macs_after"] < info["macs_before"]                                  # doctest: +SKIP
        True
    """
    cand = _as_candidate(space, candidate)
    imp = _importance(importance, batch)
    macs_before, params_before = _count(model, example_input)
    pruned = copy.deepcopy(model).eval()
    dropped = dropped_blocks(space, cand)
    for name in dropped:
        _replace(pruned, name, nn.Identity())
    channels = _prune_channels(pruned, space, cand, example_input, imp, batch, dropped)
    pruned.eval()
    try:
        with torch.no_grad():
            out = pruned(example_input)
    except Exception as exc:  # should not happen: derive_space tested every group
        raise ModelError(f"the pruned model fails to run: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (example_input.shape[0], space.num_classes):
        raise ModelError(
            f"the pruned model returns {getattr(out, 'shape', type(out))}, expected "
            f"({example_input.shape[0]}, {space.num_classes})"
        )
    macs_after, params_after = _count(pruned, example_input)
    info = {
        "candidate": cand.to_dict(),
        "importance": importance,
        "dropped_blocks": dropped,
        "channels": channels,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "params_before": params_before,
        "params_after": params_after,
        "notes": list(space.notes),
    }
    return pruned, info


def stage_prefixes(space: CompressSpace, candidate: CompressCandidate | Mapping[str, Any]) -> dict[str, list[str]]:
    """Stage name -> module-name prefixes covering exactly that stage's layers in the pruned model.

    Each layer is covered by its shortest ancestor whose layers all belong to the same stage
    (``layer2`` rather than its eight convs); layers of dropped blocks are left out, and so is a
    stage with no layer left. Every prefix names real layers, as ``hwtune.quant`` requires.
    """
    dropped = dropped_blocks(space, candidate)
    live = {layer: st.name for st in space.stages for layer in st.layers if not matches(layer, dropped)}
    out: dict[str, list[str]] = {}
    for layer, stage in live.items():
        parts = layer.split(".")
        prefix = layer
        for i in range(1, len(parts) + 1):
            p = ".".join(parts[:i])
            if all(s == stage for other, s in live.items() if matches(other, [p])):
                prefix = p
                break
        found = out.setdefault(stage, [])
        if prefix not in found:
            found.append(prefix)
    return out


def precision_plan(space: CompressSpace, candidate: CompressCandidate | Mapping[str, Any]) -> PrecisionPlan:
    """The ``PrecisionPlan`` of ``candidate``: the precision most layers run at is the default,
    every stage at another precision an override on its ``stage_prefixes``."""
    cand = _as_candidate(space, candidate)
    prefixes = stage_prefixes(space, cand)
    per_layer: Counter[str] = Counter()
    for st in space.stages:
        per_layer[cand.choice(st.name).precision] += len(st.layers)
    default = per_layer.most_common(1)[0][0]
    overrides: list[tuple[str, str]] = []
    for stage, prec in cand.stage_precision.items():
        if prec != default:
            overrides += [(p, prec) for p in prefixes.get(stage, ())]
    return PrecisionPlan(default=default, overrides=tuple(overrides))
