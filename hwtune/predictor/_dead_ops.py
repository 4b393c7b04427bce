"""Which traced layers a deployment runtime actually runs (dead-op elimination).

The profiler's ``LayerGraph`` lists every op the PyTorch forward executes. Exporters and
runtimes (``torch.onnx`` + ONNX Runtime, the TFLite converter) prune ops whose results never
reach an output -- e.g. a NAS-Bench-201 cell edge that feeds a node nothing reads. This small
wrapper over ``torch.fx`` finds those layers by the profiler's naming (module path, ``#k`` for
the k-th call of a module, fx node name for functional ops) so the predictor does not charge
for them. It is not a second tracer: it only walks the symbolic graph backwards from the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["dead_by_producers", "dead_layer_names"]


def dead_by_producers(layers: Sequence[Any]) -> frozenset[str] | None:
    """Names of layers that do not feed the last layer, from the profiler's ``producers`` links.

    hwtune exports single-output models (``logits``), and the last layer in execution order
    computes that output; everything it does not (transitively) read is pruned by exporters.
    Returns None when the layers carry no links (graphs from older profilers): use
    :func:`dead_layer_names` then. Costs nothing next to a second ``torch.fx`` trace.
    """
    if not layers or not any(getattr(layer, "producers", ()) for layer in layers):
        return None
    by_name = {layer.name: layer for layer in layers}
    live: set[str] = set()
    stack = [layers[-1].name]
    while stack:
        name = stack.pop()
        if name in live or name not in by_name:
            continue
        live.add(name)
        stack.extend(by_name[name].producers)
    return frozenset(layer.name for layer in layers if layer.name not in live)


def dead_layer_names(model: nn.Module) -> frozenset[str]:
    """Names (profiler naming) of layers whose outputs cannot reach the model output.

    Returns an empty set when ``torch.fx`` cannot trace the model (then nothing is pruned).
    """
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - fx raises many types on dynamic models; then prune nothing
        return frozenset()
    nodes = list(gm.graph.nodes)
    live: set[torch.fx.Node] = set()
    stack = [n for n in nodes if n.op == "output"]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(n.all_input_nodes)
    dead: set[str] = set()
    calls: dict[str, int] = {}
    for n in nodes:
        if n.op in ("placeholder", "output", "get_attr"):
            continue
        if n.op == "call_module":
            base = str(n.target)
            k = calls.get(base, 0)
            calls[base] = k + 1
            name = base if k == 0 else f"{base}#{k + 1}"
        else:
            name = n.name
        if n not in live:
            dead.add(name)
    return frozenset(dead)
