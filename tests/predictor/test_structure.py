"""Structural lowering: the same layers as the traced lowering, with no trace per new candidate."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import hwtune
import hwtune.graph as graph_unit
from hwtune.graph import trace_layers
from hwtune.precision import PrecisionPlan
from hwtune.predictor import model_features
from hwtune.predictor._dead_ops import dead_by_producers
from hwtune.predictor._features import raws_from_graph
from hwtune.predictor._structure import raws_from_structure, template_count

ARCHS = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
         "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",  # a dead conv
         "|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|skip_connect~2|",  # node 2 is zeros
         "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|")


def _candidates(seed: int, n: int) -> list[tuple[str, dict, tuple[int, ...]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fam = ("convnet", "mobilenet_v2", "resnet", "nb201")[i % 4]
        if fam == "convnet":
            k = {"width": (rng.choice((4, 8, 16)), rng.choice((8, 16, 32))), "depth": (rng.choice((1, 2)), 1),
                 "kernel_size": (rng.choice((1, 3, 5)), 3), "stem_stride": rng.choice((1, 2))}
        elif fam == "mobilenet_v2":
            k = {"width_mult": rng.choice((0.1, 0.25)), "depth": (1, 1, 2, 1, 1, 1, 1), "last_channel": 32,
                 "expand_ratio": (1, 2, rng.choice((2, 4)), 2, 2, 2, 2), "kernel_size": (3, 5, 3, 3, 3, 3, 3)}
        elif fam == "resnet":
            k = {"width": (rng.choice((4, 8)), rng.choice((8, 16))), "depth": (1, rng.choice((1, 2)))}
        else:
            k = {"arch": rng.choice(ARCHS), "channels": 4, "cells_per_stage": rng.choice((1, 2))}
        out.append((fam, k, rng.choice(((1, 1, 28, 28), (1, 3, 32, 32), (2, 3, 32, 32)))))
    return out


def _build(fam: str, knobs: dict, shape: tuple[int, ...]) -> nn.Module:
    return hwtune.create_model(fam, knobs, num_classes=10, in_channels=shape[1], input_size=shape[2]).eval()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_structural_lowering_equals_the_traced_one(precision):
    plan = PrecisionPlan.coerce(precision)
    for fam, knobs, shape in _candidates(0, 8):
        model = _build(fam, knobs, shape)
        g = trace_layers(model, torch.zeros(shape), plan)
        traced = raws_from_graph(g.layers, dead_by_producers(g.layers))
        assert raws_from_structure(model, shape, plan) == traced, (fam, knobs, shape)
        # eager: nothing pruned
        assert raws_from_structure(model, shape, plan, prune=False) == raws_from_graph(g.layers), (fam, knobs)


def test_mixed_precision_follows_module_paths():
    model = _build("resnet", {"width": (8, 16), "depth": (1, 1)}, (1, 3, 32, 32))
    plan = PrecisionPlan("int8", (("stem", "fp32"), ("head", "fp32")))
    g = trace_layers(model, torch.zeros(1, 3, 32, 32), plan)
    assert raws_from_structure(model, (1, 3, 32, 32), plan) == raws_from_graph(g.layers, dead_by_producers(g.layers))


@pytest.fixture
def no_tracer(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        return trace_layers(*args, **kwargs)

    monkeypatch.setattr(graph_unit, "trace_layers", refuse)
    return calls


def test_new_family_candidates_are_not_traced(no_tracer):
    from hwtune.predictor import predict_latency

    for fam, knobs, shape in _candidates(1, 4):  # one of each family: wiring templates recorded once
        predict_latency(_build(fam, knobs, shape), shape, device="raspberry-pi-4")
    templates = template_count()
    for fam, knobs, shape in _candidates(2, 16):
        predict_latency(_build(fam, knobs, shape), shape, device="raspberry-pi-4")
    assert no_tracer == []  # no trace for any candidate
    assert template_count() == templates  # and no new fx recording either: a family's wiring is shared


class _Transposer(nn.Module):
    """A forward the structural replay does not know (``transpose``): traced once, then reused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).transpose(2, 3)


def test_unknown_units_are_traced_once_per_structure(no_tracer):
    def net():
        return nn.Sequential(_Transposer(), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1)).eval()

    a, _ = model_features(net(), (1, 3, 16, 16))
    assert len(no_tracer) == 1 and isinstance(no_tracer[0][0], _Transposer)  # only the unknown unit
    b, _ = model_features(net(), (1, 3, 16, 16))
    assert len(no_tracer) == 1 and a == b
    full = trace_layers(net(), torch.zeros(1, 3, 16, 16))
    traced = raws_from_graph(full.layers, dead_by_producers(full.layers))
    got = raws_from_structure(net(), (1, 3, 16, 16), PrecisionPlan(), trace_unit=lambda m, s, p: raws_from_graph(
        trace_layers(m, torch.zeros(s), p).layers))
    strip = [(r.op_type, r.input_shapes, r.output_shape, r.macs, r.weight_bytes, r.producers) for r in got]
    assert strip == [(r.op_type, r.input_shapes, r.output_shape, r.macs, r.weight_bytes, r.producers) for r in traced]


def test_a_wrong_input_shape_is_a_model_error():
    from hwtune.errors import ModelError

    model = _build("convnet", {"width": (8,), "depth": (1,)}, (1, 1, 28, 28))
    with pytest.raises(ModelError, match="input channels"):
        model_features(model, (1, 3, 28, 28))


def test_a_wired_cell_is_lowered_from_its_wiring_hook():
    """Any module offering ``wiring()`` is lowered from it, no fx template; identical cells are copied, others not."""
    from hwtune.families import WiredCell

    class Cell(nn.Module):
        def __init__(self, kernel: int) -> None:
            super().__init__()
            self.edges = nn.ModuleDict({"a": nn.Conv2d(4, 4, kernel, padding=kernel // 2), "b": nn.ReLU()})
            self._inputs = [[(0, "a")], [(0, None), (1, "b")], [], [(2, None), (1, "a")]]

        def wiring(self):
            return tuple(tuple((i, None if k is None else f"edges.{k}") for i, k in node) for node in self._inputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nodes = [x]
            for node in self._inputs:
                if not node:
                    nodes.append(torch.zeros_like(x))
                    continue
                terms = [nodes[i] if k is None else self.edges[k](nodes[i]) for i, k in node]
                total = terms[0]
                for t in terms[1:]:
                    total = total + t
                nodes.append(total)
            return nodes[-1]

    assert isinstance(Cell(3), WiredCell)
    # cells 0 and 1 are identical (copied), cell 2 has the same wiring but a 1x1 edge (lowered again)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), Cell(3), Cell(3), Cell(1), nn.AdaptiveAvgPool2d(1)).eval()
    before = template_count()
    for precision in ("fp32", "int8"):
        plan = PrecisionPlan.coerce(precision)
        g = trace_layers(net, torch.zeros(1, 3, 8, 8), plan)
        assert raws_from_structure(net, (1, 3, 8, 8), plan) == raws_from_graph(g.layers, dead_by_producers(g.layers))
    assert template_count() == before
