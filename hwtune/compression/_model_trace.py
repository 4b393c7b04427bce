"""One traced forward pass of a user model: which layers ran, in what order, at what shapes,
and which modules are droppable residual blocks.

**The droppable-block rule.** A module ``M`` can be replaced by ``nn.Identity`` without changing
any shape when all of these hold on the traced forward pass:

1. ``M`` is not the whole model, owns parameters, and ran exactly once;
2. it took one tensor and returned one tensor of the *same shape*;
3. its output depends on an addition one of whose operands is ``M``'s input tensor itself (an
   identity shortcut: ``x + f(x)``, optionally followed by element-wise ops such as ReLU);
4. no module inside ``M`` also satisfies 1-3 (the innermost such module is the block, so a
   ``Sequential`` of residual blocks is not itself a block).

Condition 3 is read from the autograd graph, so it holds for torchvision's ``BasicBlock`` /
``Bottleneck`` / ``InvertedResidual`` with an identity shortcut, hwtune's ``resnet`` and
``mobilenet_v2`` blocks, and any user block written as ``x + branch(x)``, and it excludes blocks
with a projection shortcut (their shapes differ anyway), squeeze-and-excitation gates
(``x * s`` is not an add) and concatenations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["COMPUTE_TYPES", "LayerTrace", "ModelTrace", "trace_model"]

# Layers that carry prunable channels (Torch-Pruning's default root types, without LSTM: a
# recurrent layer's output is a tuple, and an image classifier does not have one).
COMPUTE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
_MAX_GRAPH_NODES = 20_000  # bound on the autograd walk inside one module


@dataclass
class LayerTrace:
    """What one module did in the traced forward pass."""

    name: str
    order: int = -1  # position of its first call among all module calls
    calls: int = 0
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    in_fn: Any = None  # grad_fn of its input at call time
    out_fn: Any = None  # grad_fn of its output


@dataclass
class ModelTrace:
    """Layers (conv/linear, execution order), every module's trace, and the droppable blocks."""

    modules: dict[str, LayerTrace] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    output_layers: list[str] = field(default_factory=list)  # layers whose channels are the output's


def _single_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def trace_model(model: nn.Module, example_input: torch.Tensor) -> ModelTrace:
    """Run ``model(example_input)`` once (eval mode, gradients on) and record what ran.

    The model's train/eval mode is restored; its weights are not touched.
    """
    names = {m: n for n, m in model.named_modules()}
    traces = {n: LayerTrace(n) for n in names.values()}
    counter = iter(range(1 << 30))

    def pre_hook(module: nn.Module, args: Any) -> None:
        tr = traces[names[module]]
        tr.calls += 1
        if tr.order < 0:
            tr.order = next(counter)
        x = _single_tensor(args)
        if tr.calls == 1 and x is not None:
            tr.in_shape, tr.in_fn = tuple(x.shape), x.grad_fn

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        tr = traces[names[module]]
        y = _single_tensor(output)
        if tr.calls == 1 and y is not None:
            tr.out_shape, tr.out_fn = tuple(y.shape), y.grad_fn

    handles = []
    for m in names:
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    was_training = model.training
    model.eval()
    leaf = example_input.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(leaf * 1.0)  # not a leaf: the model may modify its input in place
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ran = sorted((t for t in traces.values() if t.calls > 0), key=lambda t: t.order)
    trace = ModelTrace(modules={t.name: t for t in ran})
    mods = dict(model.named_modules())
    trace.layers = [t.name for t in ran if isinstance(mods[t.name], COMPUTE_TYPES) and t.out_shape is not None]
    trace.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
    trace.blocks = _droppable_blocks(model, trace)
    if isinstance(out, torch.Tensor):
        trace.output_layers = _output_layers(trace, out.grad_fn)
    return trace


def _output_layers(trace: ModelTrace, out_fn: Any) -> list[str]:
    """Layers that produce the model output with no other conv/linear after them: the classifier
    (or every branch of a concatenated output). Their output channels are the classes."""
    by_fn = {trace.modules[name].out_fn: name for name in trace.layers if trace.modules[name].out_fn is not None}
    found: list[str] = []
    seen: set[Any] = set()
    stack = [out_fn]
    while stack and len(seen) < _MAX_GRAPH_NODES:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in by_fn:
            found.append(by_fn[node])
            continue
        stack.extend(nxt for nxt, _ in getattr(node, "next_functions", ()))
    return found


def _walk(start: Any, stop: Any) -> Iterator[Any]:
    """Autograd nodes reachable backwards from ``start`` without passing ``stop``."""
    seen, stack = {stop}, [start]
    while stack and len(seen) < _MAX_GRAPH_NODES:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(nxt for nxt, _ in getattr(node, "next_functions", ()))


def _has_identity_add(tr: LayerTrace) -> bool:
    if tr.in_fn is None or tr.out_fn is None or tr.out_fn is tr.in_fn:
        return False
    for node in _walk(tr.out_fn, tr.in_fn):
        if node.name().startswith("Add") and any(nxt is tr.in_fn for nxt, _ in node.next_functions):
            return True
    return False


def _droppable_blocks(model: nn.Module, trace: ModelTrace) -> list[str]:
    mods = dict(model.named_modules())
    found = []
    for name, tr in trace.modules.items():
        if not name or tr.calls != 1 or tr.in_shape is None or tr.in_shape != tr.out_shape:
            continue
        if next(mods[name].parameters(), None) is None:
            continue
        if _has_identity_add(tr):
            found.append(name)
    inner = [b for b in found if not any(o != b and o.startswith(b + ".") for o in found)]
    return sorted(inner, key=lambda b: trace.modules[b].order)
