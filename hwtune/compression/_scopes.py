"""Run a flat ``torch.export`` graph inside the module calls it came from.

``torch.export.load(...).module()`` is one flat graph: its operations carry the module path they
were traced in (``nn_module_stack``), but no module of the original hierarchy is *called* any more.
Tracers that name what they record after the module being called -- the ONNX exporter's scopes
(``/s2/t2/a/a.0/Conv``), ``torch.export``'s ``nn_module_stack`` (ExecuTorch, LiteRT) -- would see
every operation at the top level, so a precision plan that names a stage (``s2``) would match
nothing, or only the layers. ``ScopedGraph`` runs each operation inside calls of the modules on its
stack (cheap pass-through modules where the original had no parameters), which gives every tracer
the hierarchy of the model the archive was saved from: what the search scored and what export
ships are built from the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

__all__ = ["Region", "ScopedGraph"]


class Region(nn.Module):
    """A module of the original hierarchy that owns no computation of its own: calling it runs the
    thunk it is given, so tracers record what the thunk does inside this module's scope."""

    def forward(self, thunk: Callable[[], Any]) -> Any:
        return thunk()


def _stack(node: fx.Node) -> list[str]:
    """Module paths of ``node`` from the outermost down (the root's empty path left out)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths: list[str] = []
    for value in stack.values():
        path = value[0] if isinstance(value, tuple) and value else ""
        if isinstance(path, str) and path and path not in paths:
            paths.append(path)
    return paths


def _regions_for(root: nn.Module, paths: list[str]) -> None:
    """Make every path in ``paths`` a callable module of ``root`` (``Region`` where none is there)."""
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        mod = parent._modules.get(child)
        if mod is None:
            parent.add_module(child, Region())
        elif type(mod) is nn.Module:  # a plain container made when the graph was loaded
            region = Region()
            region._modules, region._parameters, region._buffers = mod._modules, mod._parameters, mod._buffers
            region._non_persistent_buffers_set = mod._non_persistent_buffers_set
            parent._modules[child] = region


class _ScopedInterpreter(fx.Interpreter):
    """Runs consecutive operations of one module inside one call of it (a module is entered once per
    stretch of its operations, as in the traced model, so tracers number nothing twice)."""

    def __init__(self, root: nn.Module, graph: fx.Graph, scopes: dict[str, list[str]]) -> None:
        super().__init__(root, graph=graph)
        self.scopes = scopes
        self.result: Any = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        # The graph's own input/output processing (the exported program's pytree specs), as fx.Interpreter.run.
        self.args_iter = iter(self.graph.process_inputs(*args))
        self.env = {}
        self._block(list(self.graph.nodes), 0)
        return self.graph.process_outputs(self.result)

    def _block(self, nodes: list[fx.Node], depth: int) -> None:
        i = 0
        while i < len(nodes):
            paths = self.scopes.get(nodes[i].name, [])
            if len(paths) <= depth:
                node = nodes[i]
                self.env[node] = self.run_node(node)
                if node.op == "output":
                    self.result = self.env[node]
                i += 1
                continue
            head, j = paths[depth], i + 1
            while j < len(nodes) and self.scopes.get(nodes[j].name, [])[depth : depth + 1] == [head]:
                j += 1
            group = nodes[i:j]
            region = self.module.get_submodule(head)
            if isinstance(region, Region):
                region(lambda group=group: self._block(group, depth + 1))
            else:  # a real layer around a call it did not turn into a layer: no scope to open
                self._block(group, depth + 1)
            i = j


class ScopedGraph(nn.Module):
    """The modules and parameters of a loaded single-input ``torch.export`` graph module, run scope by scope.

    Module names, parameters and ``state_dict`` keys are those of the original model; ``train()`` /
    ``eval()`` reach its (restored) BatchNorm layers.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self._modules.update(gm._modules)
        self._parameters.update(gm._parameters)
        for name, buf in gm._buffers.items():
            self.register_buffer(name, buf, persistent=name not in gm._non_persistent_buffers_set)
        self.graph = gm.graph
        scopes: dict[str, list[str]] = {}
        current: list[str] = []
        for node in gm.graph.nodes:
            if node.op not in ("call_function", "call_method", "call_module"):
                continue
            # Operations recorded with no module (shape arithmetic) stay in the scope they sit in.
            paths = _stack(node) if node.meta.get("nn_module_stack") else current
            current = paths
            if node.op == "call_module" and paths and paths[-1] == node.target:
                paths = paths[:-1]  # the layer's own call opens its scope
            if paths:
                scopes[node.name] = paths
        _regions_for(self, sorted({p for paths in scopes.values() for p in paths}, key=lambda p: p.count(".")))
        self._scopes = scopes

    def forward(self, x: torch.Tensor) -> Any:
        # One named input (an image batch): torch.export, exporting this module again, matches its
        # dynamic batch dimension to it.
        return _ScopedInterpreter(self, self.graph, self._scopes).run(x)
