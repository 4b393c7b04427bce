"""Fast NAS-Bench-201 features for ``bench_predictor.py``: trace each distinct piece once, compose per cell string.

A NAS-Bench-201 network is a fixed skeleton (stem, two reduction blocks, head) plus 15 copies of
one cell. Tracing 15,625 networks would take hours; tracing the skeleton once and each cell op
once per stage (3 ops x 3 stages, plus the node-sum add) takes a second, and a network's
features are then the skeleton's plus, per stage, ``cells_per_stage`` x the ops its cell runs.
The composition applies the same dead-op rule as ``predict`` (an op whose result cannot reach
the cell output through non-``none`` edges is pruned by the exporter/runtime), and a test
(``tests/benchmarks/test_nb201_features.py``) checks the composed features against ``predict``
on the built model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwtune.predictor._features import LayerFeatures, lower, raws_from_graph
from hwtune.predictor._model import Hardware, design_vector, layers_vector

__all__ = ["NB201Composer", "executed_edges"]

_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_TRACED_OPS = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")


def executed_edges(arch: str) -> list[tuple[int, int, str]]:
    """(dst, src, op) of the edges whose op a runtime executes (modules only: skip is free).

    An edge runs when its destination node reaches the cell output (node 3) through
    non-``none`` edges; ``none`` contributes nothing and reads nothing.
    """
    from hwtune.families.nb201 import parse_arch

    ops = parse_arch(arch)
    edges = [(j, i, ops[j - 1][i]) for j, i in _EDGES]
    used = {3}
    for j in (3, 2, 1):
        if j in used:
            used.update(i for d, i, op in edges if d == j and op != "none")
    return [(d, i, op) for d, i, op in edges if d in used and op != "none"]


class NB201Composer:
    """Per-arch layer features of NAS-Bench-201 networks from once-traced pieces."""

    def __init__(
        self, *, precision: str = "fp32", channels: int = 16, cells_per_stage: int = 5, input_size: int = 32,
        in_channels: int = 3, num_classes: int = 10,
    ) -> None:
        import torch

        from hwtune.families.nb201 import NB201Net
        from hwtune.families.nb201 import make_op as _make_op
        from hwtune.graph import trace_layers

        self.cells_per_stage = cells_per_stage
        self.input_elements = in_channels * input_size * input_size
        identity = "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
        skeleton = NB201Net(identity, channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                            in_channels=in_channels)
        g = trace_layers(skeleton, torch.zeros(1, in_channels, input_size, input_size), precision)
        # lowered like predict() lowers a whole network (the identity cell prunes nothing)
        self.skeleton = lower(raws_from_graph(g.layers))

        self.pieces: dict[tuple[int, str], tuple[LayerFeatures, ...]] = {}
        for s in range(3):
            c, h = channels * 2**s, input_size // 2**s
            x = torch.zeros(1, c, h, h)
            for op in _TRACED_OPS:
                # wrapped, so the op is a call_module with its geometry (a root module traces as functions)
                mod = torch.nn.Sequential(_make_op(op, c))
                gl = trace_layers(mod, x, precision)
                feats = [f._replace(producers=()) for f in lower(raws_from_graph(gl.layers))]
                # the edge's leading ReLU is counted separately: a runtime fuses it into the
                # conv that produced its input when nothing else reads that tensor (then it
                # costs nothing, like every folded activation in lower())
                relu = [f for f in feats if f.op_type == "relu"]
                if relu:
                    self.pieces[(s, "relu")] = (relu[0],)
                    self.pieces[(s, "relu_fused")] = ()
                self.pieces[(s, op)] = tuple(f for f in feats if f.op_type != "relu")
            self.pieces[(s, "add")] = (self._add_features(c, h, precision),)

    @staticmethod
    def _add_features(c: int, h: int, precision: str) -> LayerFeatures:
        from hwtune.predictor._features import features_from_spec

        f = features_from_spec(name="add", op_type="add", precision=precision, input_shapes=[(1, c, h, h)] * 2,
                               output_shape=(1, c, h, h))
        assert f is not None
        return f

    def counts(self, arch: str) -> dict[tuple[int, str], int]:
        """Executed pieces per stage, summed over the stage's cells.

        Simulates the tensors of the whole network to mirror the profiler's fusion rule: a
        nor_conv edge's ReLU is fused when its input tensor comes straight from a conv+BN (a
        single-input node, or the stem) and nothing else reads that tensor.
        """
        edges = executed_edges(arch)
        out: dict[tuple[int, str], int] = {}

        def bump(s: int, op: str, n: int = 1) -> None:
            out[(s, op)] = out.get((s, op), 0) + n

        # tensor = [producer kind, users]; kinds: convbn, pool, add, const. Users are only known
        # once the next cell (or the reduction/head) has read a tensor, so ReLUs are decided last.
        pending: list[tuple[int, list[Any]]] = []
        for s in range(3):
            t_in = ["convbn" if s == 0 else "add", 0]
            for _ in range(self.cells_per_stage):
                nodes: dict[int, list[Any]] = {0: t_in}
                relu_inputs: list[list[Any]] = []
                for j in (1, 2, 3):
                    ins = [(i, op) for d, i, op in edges if d == j]
                    terms = []
                    for i, op in ins:
                        src = nodes.get(i) or ["const", 0]
                        if op == "skip_connect":
                            terms.append(src)
                            continue
                        src[1] += 1
                        if op.startswith("nor_conv"):
                            relu_inputs.append(src)
                            bump(s, op)
                            terms.append(["convbn", 0])
                        else:
                            bump(s, op)
                            terms.append(["pool", 0])
                    if not terms:
                        nodes[j] = ["const", 0]
                    elif len(terms) == 1:
                        nodes[j] = terms[0]
                    else:
                        for t in terms:
                            t[1] += 1
                        bump(s, "add", len(terms) - 1)
                        nodes[j] = ["add", 0]
                t_in = nodes[3]
                pending += [(s, src) for src in relu_inputs]
            t_in[1] += 2 if s < 2 else 1  # reduction block (conv + shortcut) or head BN reads it
        for s, src in pending:
            bump(s, "relu_fused" if src[0] == "convbn" and src[1] == 1 else "relu")
        return out

    def features(self, arch: str) -> tuple[LayerFeatures, ...]:
        """All executed layers of the network (order within the body is not execution order,
        and producer links are dropped: the layers read as a chain, which gives the same
        precision/layout crossings as the real graph -- stem in, head out -- because the cells
        are uniform in precision and hold no plain-layout ops)."""
        cells: list[LayerFeatures] = []
        for (s, op), n in sorted(self.counts(arch).items()):
            cells.extend(list(self.pieces[(s, op)]) * n)
        skeleton = [f._replace(producers=()) for f in self.skeleton]
        return (*skeleton[:2], *cells, *skeleton[2:])

    def design_matrix(self, archs: Sequence[str], hw: Hardware, names: Sequence[str]) -> Any:
        """Rows ``x`` with ``latency = x . theta`` for many archs, from per-piece vectors (fast)."""
        import numpy as np

        base = np.array(design_vector(self.skeleton, self.input_elements, hw, names))
        piece = {k: np.array(layers_vector(v, hw, names)) for k, v in self.pieces.items()}
        per_count: dict[tuple[str, ...], Any] = {}
        rows = []
        for arch in archs:
            c = self.counts(arch)
            key = tuple(sorted(c.items()))
            if key not in per_count:
                v = base.copy()
                for k, n in c.items():
                    v += n * piece[k]
                per_count[key] = v
            rows.append(per_count[key])
        return np.array(rows)
