"""hwtune.graph.trace_layers: layer facts, fusion marking and the activation-liveness peak (hand-computed cases)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwtune.errors import ModelError
from hwtune.graph import LayerGraph, LayerInfo, liveness_peak, trace_layers, weight_storage_bytes
from hwtune.precision import PrecisionPlan


class Branchy(nn.Module):
    """Input 1x1x8x8. Hand liveness (fp32 bytes): x=256, y=conv1 out=1024 (relu in place), a=b=z=512, fc=40.

    Steps: x(0) conv1(1) relu(2) conv2(3) conv3(4) add(5) flatten(6, view of z) fc(7) output(8).
    Alive during conv3: y (read again by conv3) + a + b = 1024 + 512 + 512 = 2048 -> the peak.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(4, 8, 1, stride=2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv1(x))
        z = self.conv2(y) + self.conv3(y)
        return self.fc(torch.flatten(z, 1))


class Dynamic(Branchy):
    """Same network with data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e9:
            return super().forward(x)
        return x


def _x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 1, 8, 8)


def test_hand_liveness_branchy_fp32() -> None:
    g = trace_layers(Branchy(), _x())
    assert g.traced_with == "fx"
    assert g.peak_activation_bytes == 2048
    assert g.peak_activation_bytes_unfused == 2048
    assert g.peak_layer == "conv3"
    assert g.input_bytes == 256


def test_hand_liveness_scales_with_precision() -> None:
    assert trace_layers(Branchy(), _x(), "fp16").peak_activation_bytes == 1024
    assert trace_layers(Branchy(), _x(), "int8").peak_activation_bytes == 512
    # Mixed: conv1 (and its in-place relu) int8 -> y = 256 B, a, b, z stay fp32. During conv3:
    # y + a + b = 1280; during the add: a + b + z = 1536 -> the peak moves to the add.
    plan = PrecisionPlan("fp32", (("conv1", "int8"),))
    g = trace_layers(Branchy(), _x(), plan)
    assert g.peak_activation_bytes == 1536
    assert g.peak_layer == "add"
    assert g.input_bytes == 64  # the input is stored at its consumer's (conv1's) precision


def test_hooks_fallback_gives_same_layers_and_peak() -> None:
    g = trace_layers(Dynamic(), _x())
    assert g.traced_with == "hooks"
    assert any("torch.fx could not trace" in n for n in g.notes)
    assert g.peak_activation_bytes == 2048
    ref = trace_layers(Branchy(), _x())
    modules = [layer for layer in ref.layers if layer.name in {"conv1", "relu", "conv2", "conv3", "fc"}]
    assert [(m.name, m.op_type, m.macs, m.output_shape) for m in modules] == [
        (m.name, m.op_type, m.macs, m.output_shape) for m in g.layers
    ]
    assert g.total_macs == ref.total_macs


def test_fusion_conv_bn_relu_shrinks_peak() -> None:
    # x=256 B, conv/bn/relu outputs 1024 B each. Eager: conv out + bn out alive during bn = 2048.
    # Fused (one buffer written in place): input + conv buffer during conv = 1280.
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    g = trace_layers(net, _x())
    assert [layer.fused_into for layer in g.layers] == [None, "0", "0"]
    assert g.peak_activation_bytes_unfused == 2048
    assert g.peak_activation_bytes == 1280


def test_no_fusion_when_conv_output_has_two_readers() -> None:
    class TwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.conv(x)
            return self.bn(c) + c

    g = trace_layers(TwoReaders(), _x())
    assert g.by_name()["bn"].fused_into is None


def test_layer_facts_and_canonical_ops() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),  # conv
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # dwconv
        nn.Conv2d(16, 8, 1),  # pwconv
        nn.Hardswish(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),  # gap
        nn.Flatten(),
        nn.Linear(8, 4),
        nn.Softmax(dim=1),
    )
    g = trace_layers(net, torch.randn(1, 3, 16, 16))
    ops = [layer.op_type for layer in g.layers]
    assert ops == [
        "conv",
        "bn",
        "relu6",
        "dwconv",
        "pwconv",
        "hardswish",
        "maxpool",
        "gap",
        "flatten",
        "linear",
        "softmax",
    ]
    conv = g.layers[0]
    assert conv.output_shape == (1, 16, 8, 8)
    assert conv.macs == 16 * 8 * 8 * 3 * 3 * 3
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.groups == 1
    assert (conv.in_channels, conv.out_channels) == (3, 16)
    assert conv.activation_bytes == 16 * 8 * 8 * 4
    assert g.layers[3].macs == 16 * 8 * 8 * 9 and g.layers[3].groups == 16
    assert g.layers[4].macs == 8 * 8 * 8 * 16
    assert g.layers[9].macs == 8 * 4
    assert sum(layer.params for layer in g.layers) == g.total_params == sum(p.numel() for p in net.parameters())
    assert g.total_macs == sum(layer.macs for layer in g.layers)
    assert g.total_weight_bytes == 4 * g.total_params


def test_functional_ops_matmul_attention_counted() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 4, 8)
            q = self.proj(x)
            s = torch.matmul(q, q.transpose(1, 2))  # 1*4*4*8 MACs
            o = torch.nn.functional.scaled_dot_product_attention(q, q, q)  # 2*1*4*4*8 MACs
            return torch.softmax(s, -1).sum() + o.mean() + x.mean((1, 2)).sum()

    g = trace_layers(Attn(), torch.randn(1, 4, 8))
    by_op = {}
    for layer in g.layers:
        by_op.setdefault(layer.op_type, []).append(layer)
    assert by_op["matmul"][0].macs == 4 * 4 * 8
    assert by_op["attention"][0].macs == 2 * 4 * 4 * 8
    assert g.total_macs == 4 * 8 * 8 + 4 * 4 * 8 + 2 * 4 * 4 * 8
    assert "softmax" in by_op


def test_int8_weight_bytes_include_scales_and_int32_bias() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True))
    g = trace_layers(net, torch.randn(1, 3, 8, 8), "int8")
    # 216 int8 weights + 8 x (fp32 scale + int8 zero point) + 8 int32 biases
    assert g.layers[0].weight_bytes == 216 + 8 * 5 + 8 * 4
    assert weight_storage_bytes("fp16", weight_numel=10, bias_numel=2, other_numel=3) == 30


def test_shared_module_called_twice_counts_params_once() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    g = trace_layers(Twice(), torch.randn(1, 2, 6, 6))
    assert [layer.name for layer in g.layers] == ["conv", "conv#2"]
    assert [layer.params for layer in g.layers] == [38, 0]
    assert g.layers[1].macs == g.layers[0].macs > 0


def test_wrong_input_shape_names_expected_and_got() -> None:
    with pytest.raises(ModelError, match=r"1x3x8x8.*'conv1' expects 1 input channels, got 3"):
        trace_layers(Branchy(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ModelError, match="must be a torch.Tensor"):
        trace_layers(Branchy(), [1, 2, 3])  # type: ignore[arg-type]


def test_model_mode_restored() -> None:
    net = Branchy().train()
    trace_layers(net, _x())
    assert net.training


def test_liveness_peak_merges_chains() -> None:
    bufs = {"a": (10, 0, 1), "b": (10, 1, 2), "c": (10, 2, 3)}
    assert liveness_peak(bufs) == (20, 1)
    assert liveness_peak(bufs, {"b": "a", "c": "b"})[0] == 10


def test_layer_graph_round_trip() -> None:
    g = trace_layers(Branchy(), _x())
    back = LayerGraph.from_dict(g.to_dict())
    assert back == g
    assert LayerInfo.from_dict(g.layers[0].to_dict()) == g.layers[0]
