"""The two tracers (torch and ONNX) against graphs recorded before the ONNX tracer moved into ``hwtune.graph``.

``data/layer_graphs.json`` holds, for every family's default model and a few torchvision models, the
``LayerGraph`` traced from torch and read back from the model's ONNX export, at fp32, int8 and a mixed
plan (plus one int8 QDQ file): every graph-level figure in clear and one digest per layer (all of
``LayerInfo.to_dict()``). It was written at 622de2a (``python tests/graph/test_onnx_trace.py --write``),
before the tracers shared their op table and ``LayerInfo`` assembly; a change to what either tracer
reports fails here, naming the first layer that differs, and must be deliberate (re-record, say so).
Re-recorded twice since: the ONNX reader's unfused peak under a mixed plan sized the outputs of fused
bn/relu at the plan's default precision instead of their own (now as the torch tracer does); and
shufflenet's ONNX MACs were 912,384 instead of 3,230,848 because shape inference lost every shape after
the first channel shuffle (its computed Reshape target and chunk bounds are now folded to constants).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

GOLDEN = Path(__file__).parent / "data" / "layer_graphs.json"
PLANS: dict[str, Any] = {
    "fp32": "fp32",
    "int8": "int8",
    "mixed": {"default": "int8", "overrides": [["stem", "fp32"], ["head", "fp16"]]},
}
FAMILIES = ("convnet", "mobilenet_v2", "nb201", "resnet")
TORCHVISION = ("mobilenet_v2", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1")


def _plan(spec: Any) -> Any:
    from hwtune.precision import PrecisionPlan

    if isinstance(spec, str):
        return spec
    return PrecisionPlan(default=spec["default"], overrides=tuple((p, q) for p, q in spec["overrides"]))


def _model(key: str) -> tuple[Any, tuple[int, ...]]:
    import hwtune

    torch.manual_seed(0)
    kind, name = key.split(":")
    if kind == "family":
        model = hwtune.create_model(name, num_classes=10, in_channels=3, input_size=32)
        return model.eval(), (1, 3, 32, 32)
    import torchvision

    kw = {"width_mult": 0.35} if name == "mobilenet_v2" else {}
    return getattr(torchvision.models, name)(num_classes=10, **kw).eval(), (1, 3, 64, 64)


def _digest(layer: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(layer, sort_keys=True).encode()).hexdigest()[:12]


def _summary(graph: Any) -> dict[str, Any]:
    d = graph.to_dict()
    d["layers"] = [_digest(layer) for layer in d["layers"]]
    return d


def snapshot(key: str, tmp: Path) -> dict[str, Any]:
    """The graphs of one model, keyed ``<tracer>/<plan>``: figures in clear, one digest per layer."""
    import numpy as np

    from hwtune.graph import count_flops, trace_layers, trace_onnx
    from hwtune.onnx_export import export_onnx
    from hwtune.quant import QuantConfig, quantize

    model, shape = _model(key)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    path = export_onnx(model, x, tmp / f"{key.replace(':', '_')}.onnx")
    out: dict[str, Any] = {"flops": count_flops(model, x).flops}
    graphs: dict[str, Any] = {}
    for plan_name, spec in PLANS.items():
        graphs[f"torch/{plan_name}"] = trace_layers(model, x, _plan(spec))
        graphs[f"onnx/{plan_name}"] = trace_onnx(path, shape, _plan(spec))
    if key == "family:convnet":
        calib = np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32)
        q = quantize(
            path, tmp / "convnet.int8.onnx", "int8", calibration=calib, config=QuantConfig(calibration_samples=8)
        )
        graphs["onnx-qdq/int8"] = trace_onnx(q.path, shape, "int8")
    out.update({k: _summary(g) for k, g in graphs.items()})
    out["_graphs"] = graphs
    return out


KEYS = [pytest.param(f"family:{f}", id=f) for f in FAMILIES] + [
    pytest.param(f"torchvision:{m}", id=m, marks=pytest.mark.slow) for m in TORCHVISION
]


@pytest.mark.parametrize("key", KEYS)
def test_graphs_unchanged(key: str, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())[key]
    got = snapshot(key, tmp_path)
    graphs = got.pop("_graphs")
    assert set(got) == set(golden)
    assert got["flops"] == golden["flops"]
    for name, want in golden.items():
        if name == "flops":
            continue
        have = got[name]
        for i, (a, b) in enumerate(zip(have["layers"], want["layers"], strict=False)):
            assert a == b, f"{key} {name}: layer {i} changed, now {graphs[name].layers[i].to_dict()}"
        assert have == want, f"{key} {name}"
    # The torch trace counts FlopCounterMode's MACs; the ONNX reading the same (conv/linear/matmul only).
    assert got["torch/fp32"]["total_macs"] == golden["flops"] // 2
    assert got["onnx/fp32"]["total_macs"] == got["torch/fp32"]["total_macs"]
    # Where both tracers see the same buffers at fp32, they size them alike under a mixed plan too.
    unfused = "peak_activation_bytes_unfused"
    if got["onnx/fp32"][unfused] == got["torch/fp32"][unfused]:
        assert got["onnx/mixed"][unfused] == got["torch/mixed"][unfused]


class _Shuffle(torch.nn.Module):
    """A channel shuffle and a chunk whose target shape / bounds the exporter computes from ``Shape`` (Div, Cast)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.size()
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        left, right = y.chunk(2, dim=1)
        return torch.cat([left, self.b(right)], dim=1)


def test_shapes_after_a_computed_reshape_are_known(tmp_path: Path) -> None:
    """Shape inference stops at Div/Cast; the reader folds those integer inputs, so the second conv has its MACs."""
    from hwtune.graph import trace_layers, trace_onnx
    from hwtune.onnx_export import export_onnx

    x = torch.randn(1, 3, 8, 8)
    model = _Shuffle().eval()
    onnx_graph = trace_onnx(export_onnx(model, x, tmp_path / "shuffle.onnx"), (1, 3, 8, 8))
    assert onnx_graph.total_macs == trace_layers(model, x).total_macs == (8 * 3 * 9 + 4 * 4 * 9) * 64
    assert all(layer.output_shape for layer in onnx_graph.layers)


def test_golden_covers_every_family() -> None:
    import hwtune

    golden = json.loads(GOLDEN.read_text())
    assert {f"family:{f}" for f in hwtune.list_families()} == {k for k in golden if k.startswith("family:")}


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    recorded: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for k in [f"family:{f}" for f in FAMILIES] + [f"torchvision:{m}" for m in TORCHVISION]:
            snap = snapshot(k, Path(d))
            snap.pop("_graphs")
            recorded[k] = snap
    GOLDEN.write_text(json.dumps(recorded, sort_keys=True, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
