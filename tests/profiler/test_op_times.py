"""Per-op times of two models lined up per exported node (``hwtune.profiler.op_times``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from hwtune.graph import trace_onnx
from hwtune.onnx_export import export_onnx
from hwtune.profiler import compare_op_times
from hwtune.profiler.op_times import line_up_op_times
from hwtune.quant import QuantConfig, quantize
from hwtune.runtimes import OpTime


class _Mixed(torch.nn.Module):
    """One node of each kind the old op-time rule named differently from the layer table."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.up = torch.nn.ConvTranspose2d(4, 4, 2, stride=2, groups=4)  # depthwise transposed
        self.pw1d = torch.nn.Conv1d(4, 4, 1)  # a 1-d pointwise conv
        self.w = torch.nn.Parameter(torch.randn(64, 8))  # x @ W: a linear layer without nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.dw(x))  # (1, 4, 16, 16)
        z = self.pw1d(y.flatten(2))  # (1, 4, 256)
        return z.reshape(1, 16, 64) @ self.w


def test_line_up_names_each_node_as_the_layer_table_does(tmp_path) -> None:
    """Kinds and MACs of the rows are trace_onnx's: the one depthwise rule, MatMul by a weight is linear.

    Before 0.2 the op-time rows had their own rule: a depthwise ConvTranspose was ``dwconv`` (the
    layer table says ``conv``), a 1-d 1x1 conv ``conv`` (``pwconv``), ``x @ W`` ``matmul``
    (``linear``), and a transposed conv's MACs were counted per output element.
    """
    path = export_onnx(_Mixed().eval(), torch.randn(1, 4, 8, 8), tmp_path / "mixed.onnx")
    layers = {la.name: la for la in trace_onnx(path, (1, 4, 8, 8)).layers}
    compute = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul")]
    ops = [OpTime(node=n.name, op_type=n.op_type, median_ms=1.0, runs=3) for n in compute]
    cmp = line_up_op_times(path, ops, ops, runs=3, threads=1)
    rows = {r.name: r for r in cmp.rows if r.module or r.name in layers}
    assert len(rows) == len(compute) == 4
    for name, row in rows.items():
        assert (row.kind, row.macs) == (layers[name].op_type, layers[name].macs), name
    assert sorted(r.kind for r in rows.values()) == ["conv", "dwconv", "linear", "pwconv"]
    up = next(r for r in rows.values() if r.module == "up")
    assert up.macs == 4 * 8 * 8 * 1 * 2 * 2  # every input element scatters into Cout/g x 2 x 2 outputs


def test_compare_op_times_lines_up_every_conv(tiny_model, tiny_input, tmp_path) -> None:
    tiny_onnx = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    images = np.random.default_rng(0).standard_normal((48, 1, 28, 28)).astype(np.float32)
    q = quantize(tiny_onnx, tmp_path / "q.onnx", "int8", calibration=images, config=QuantConfig(calibration_samples=32))
    cmp = compare_op_times(tiny_onnx, q.path, images[:1], runs=3, warmup=1)
    names = [r.name for r in cmp.rows if r.module]
    assert names == ["/stem/stem.0/Conv", "/body/body.0/Conv", "/head/Gemm"]
    for row in cmp.rows:
        if row.module:
            assert row.base_ms > 0 and row.other_ms > 0, row  # both graphs ran this conv
    assert {r.kind for r in cmp.rows if r.module} == {"conv", "linear"}
    stem = next(r for r in cmp.rows if r.module == "stem.0")
    assert stem.macs == 4 * 1 * 9 * 28 * 28
    kinds = cmp.by_kind()
    # int8 pays for getting in and out of the integer domain; fp32 has no such kernels
    assert kinds["quantize/dequantize"]["other_ms"] > 0 and kinds["quantize/dequantize"]["base_ms"] == 0
    total = sum(r.other_ms for r in cmp.rows)
    assert math.isclose(total, cmp.other_total_ms, rel_tol=1e-9)
    assert all(r.other_ms > r.base_ms for r in cmp.losers())
    json.dumps(cmp.to_dict())
