"""Predictor lowering (fusion after pruning, layout/precision crossings, channel padding), the
micro-benchmark suite's chains and blocks, and the cheap structure key."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwtune.errors import CalibrationError
from hwtune.graph import trace_layers
from hwtune.predictor import model_features, structure_key
from hwtune.predictor._features import Lowering, features_from_microbench, features_from_spec, lower, raws_from_graph
from hwtune.predictor._fit import detect_lowering, read_microbench
from hwtune.predictor._model import crossings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("profile_device", REPO / "scripts" / "profile_device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _DeadReader(nn.Module):
    """conv -> relu is the output; a second reader of the conv output is computed and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.unused = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        _ = self.unused(y)
        return self.act(y)


class _Residual(nn.Module):
    """stem conv, then conv + BN whose output is added to the stem output, then ReLU (a ResNet tail)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.act(self.bn(self.conv(s)) + s)


def test_layer_info_lists_producers():
    g = trace_layers(_Residual().eval(), torch.zeros(1, 3, 8, 8))
    by = g.by_name()
    assert by["stem"].producers == ()  # reads the graph input only
    assert by["conv"].producers == ("stem",)
    add = next(layer for layer in g.layers if layer.op_type == "add")
    assert set(add.producers) == {"bn", "stem"}
    assert by["act"].producers == (add.name,)


def test_fusion_is_decided_after_pruning():
    model = _DeadReader().eval()
    g = trace_layers(model, torch.zeros(1, 3, 8, 8))
    assert g.by_name()["act"].fused_into is None  # the profiler sees two readers of the conv output
    feats, _ = model_features(model, (1, 3, 8, 8))
    # the dead reader is pruned, so the runtime folds the ReLU into the conv: no kernel of its own
    assert [(f.name, f.key) for f in feats] == [("conv", "conv")]
    unfolded = lower(raws_from_graph(g.layers))  # without pruning: two readers, the ReLU runs
    assert [f.key for f in unfolded] == ["conv", "pwconv", "relu"]


def test_conv_add_fusion_follows_the_runtime():
    model = _Residual().eval()
    plain, _ = model_features(model, (1, 3, 8, 8))
    fused, _ = model_features(model, (1, 3, 8, 8), lowering=Lowering(fuse_conv_add=True))
    int8, _ = model_features(model, (1, 3, 8, 8), "int8", lowering=Lowering(fuse_conv_add=True))
    keys = lambda fs: [(f.op_type, f.key) for f in fs]
    # BN is folded into the conv weights everywhere
    assert keys(plain) == [("conv", "conv"), ("conv", "conv"), ("add", "add"), ("relu", "relu")]  # TFLite-like
    assert keys(fused) == [("conv", "conv"), ("conv", "conv"), ("add", "fused")]  # ORT x86: FusedConv(sum, relu)
    assert keys(int8) == [("conv", "conv"), ("conv", "conv"), ("add", "add")]  # QLinearAdd; ReLU in the range
    fused_add = fused[-1]
    assert fused_add.bytes_moved == 2 * 16 * 8 * 8 * 4  # reads the residual, writes in place
    assert fused_add.producers == (0, 1)  # links skip the folded BN


def test_crossings_at_layout_and_precision_boundaries():
    def conv(cin: int, prec: str, producers: tuple[int, ...]) -> object:
        return features_from_spec(name="c", op_type="conv", precision=prec, input_shapes=[(1, cin, 8, 8)],
                                  output_shape=(1, 16, 8, 8), macs=cin * 16 * 9 * 64, producers=producers)

    # a single fp32 conv on a 16-channel input: reorder in and out (NCHW <-> blocked)
    assert crossings([conv(16, "fp32", (-1,))], 16 * 64) == [("fp32", 16 * 64 * 4.0), ("fp32", 16 * 64 * 4.0)]
    # a thin stem input is read as it is; the output still leaves the blocked layout
    assert crossings([conv(3, "fp32", (-1,))], 3 * 64) == [("fp32", 16 * 64 * 4.0)]
    # int8: quantize (+ transpose) in, dequantize out, both charged to int8 at fp32 bytes
    assert [p for p, _ in crossings([conv(3, "int8", (-1,))], 3 * 64)] == ["int8", "int8"]
    # network frame: conv -> gap -> linear crosses once, at the head
    gap = features_from_spec(name="g", op_type="gap", precision="fp32", input_shapes=[(1, 16, 8, 8)],
                             output_shape=(1, 16, 1, 1), producers=(0,))
    fc = features_from_spec(name="l", op_type="linear", precision="fp32", input_shapes=[(1, 16)],
                            output_shape=(1, 10), macs=160, producers=(1,))
    assert crossings([conv(3, "fp32", (-1,)), gap, fc], 3 * 64) == [("fp32", 16 * 4.0)]


def test_channel_padding_counts_blocked_work():
    kw = {"name": "c", "op_type": "conv", "precision": "int8", "input_shapes": [(1, 4, 8, 8)],
          "output_shape": (1, 4, 8, 8), "macs": 4 * 4 * 9 * 64}
    assert features_from_spec(**kw).work == 4 * 4 * 9 * 64
    assert features_from_spec(**kw, pad=(16, 16)).work == 16 * 16 * 9 * 64
    assert features_from_spec(**kw, pad=(16, 1)).work == 16 * 4 * 9 * 64
    dw = {**kw, "op_type": "dwconv", "macs": 4 * 9 * 64}
    assert features_from_spec(**dw, pad=(16, 16)).work == 16 * 9 * 64  # one input channel per output channel
    low = Lowering.from_table({"fuse_conv_add": True, "pad_channels": {"int8": [16, 16]}})
    assert low.pads("int8") == (16, 16) and low.pads("fp32") == (1, 1)
    assert Lowering.from_table(low.table()) == low


def test_suite_chains_and_blocks_build_and_lower(script):
    cases = script.build_suite()
    ops = {c["op"] for c in cases}
    assert {"chain", "block", "conv", "dwconv", "pwconv"} <= ops
    lengths = {(c["precision"], c["chain_op"], c["chain_length"]) for c in cases if c["op"] == "chain"}
    for prec in ("fp32", "int8"):
        for kind in ("conv", "pwconv", "dwconv"):
            assert {(prec, kind, n) for n in (1, 2, 4, 8)} <= lengths
    by_id = {c["id"]: c for c in cases}
    # a chain of n conv+relu pairs lowers to n convs (the activations run in the conv kernels)
    for n in (1, 8):
        feats = features_from_microbench(by_id[f"chain-conv-k3-fp32-32x7x7-n{n}"])
        assert [f.key for f in feats] == ["conv"] * n
        assert [f.producers for f in feats] == [(-1,)] + [(i,) for i in range(n - 1)]
    # blocks and the network frame build as valid ONNX graphs, fp32 and int8 (QDQ)
    for case in [c for c in cases if c["op"] == "block"][::5] + [by_id["chain-add-int8-16x28x28-n4"]]:
        script.build_model(case, "u8")
    # every case's layers lower without error, with the graph output last
    for case in cases:
        feats = features_from_microbench(case, Lowering(fuse_conv_add=True, pad_channels=(("int8", 16, 16),)))
        assert feats and feats[-1].out_elements == math.prod(case["output_shape"])


def test_microbench_layers_are_validated(tmp_path, script):
    rows = [dict(c, median_ms=0.05) for c in script.build_suite(size="quick")]
    chain = next(i for i, r in enumerate(rows) if r["op"] == "chain")
    rows[chain]["layers"][0]["op"] = "convv"
    block = next(i for i, r in enumerate(rows) if r["op"] == "block")
    rows[block]["layers"][1]["inputs"] = [5]
    path = tmp_path / "mb.json"
    path.write_text(json.dumps({"results": rows}))
    with pytest.raises(CalibrationError) as exc:
        read_microbench(path)
    lines = str(exc.value).splitlines()
    assert any(f"row {chain + 1}" in line and "layers[0].op must be one of" in line and "did you mean 'conv'" in line
               for line in lines)
    assert any(f"row {block + 1}" in line and "layers[1].inputs must list earlier layer indices" in line for line in lines)
    with pytest.raises(CalibrationError, match=r"missing 'min_ms'"):
        read_microbench(path, "min")


def test_detect_lowering_reads_the_optimized_graphs(script):
    blocks = [dict(c) for c in script.build_suite() if c["op"] == "block" and c["precision"] == "fp32"
              and c["block"] == "resnet"]
    assert detect_lowering(blocks) == Lowering()  # no graph_ops recorded: the default
    fused = [dict(b, graph_ops=["ReorderInput", "Conv", "Conv", "ReorderOutput"]) for b in blocks]
    assert detect_lowering(fused).fuse_conv_add
    kept = [dict(b, graph_ops=["ReorderInput", "Conv", "Conv", "ReorderOutput", "Add"]) for b in blocks]
    assert not detect_lowering(kept).fuse_conv_add


def test_structure_key_is_cheap_and_sees_wiring():
    import hwtune

    a1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    a2 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    build = lambda a: hwtune.create_model("nb201", {"arch": a}, num_classes=10, in_channels=3, input_size=32)
    assert structure_key(build(a1)) == structure_key(build(a1))
    assert structure_key(build(a1)) != structure_key(build(a2))
    assert structure_key(nn.Conv2d(3, 8, 3)) != structure_key(nn.Conv2d(3, 8, 3, stride=2))
    assert structure_key(nn.Conv2d(3, 8, 3)) != structure_key(nn.Conv2d(3, 8, 3, bias=False))


def test_lowered_features_match_the_profiler_graph(tiny_model):
    g = trace_layers(tiny_model, torch.zeros(1, 1, 28, 28))
    feats = lower(raws_from_graph(g.layers))
    assert sum(f.work for f in feats if f.key in ("conv", "pwconv", "dwconv", "linear")) == g.total_macs
    # producer links point backwards, and the first layer reads the graph input
    assert feats[0].producers == (-1,)
    assert all(p < i for i, f in enumerate(feats) for p in f.producers)
    assert np.isclose(sum(f.out_elements for f in feats if f.key == "linear"), 10)
