"""hwtune.graph.count_flops: FlopCounterMode MACs agree with thop per conv/linear module; matmul/attention counted."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from hwtune.errors import ModelError
from hwtune.graph import FlopCount, count_flops, trace_layers


def _thop_per_module(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    from thop import profile

    _, _, tree = profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    flat: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for name, (ops, _params, children) in d.items():
            path = f"{prefix}{name}"
            flat[path] = ops
            walk(children, path + ".")

    walk(tree, "")
    return flat


@pytest.mark.parametrize("builder", ["mobilenet_v2", "resnet18"])
def test_conv_linear_macs_match_thop(builder: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(builder, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    ours = count_flops(model, x)
    theirs = _thop_per_module(model, x)
    compute = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(compute) > 20
    for name in compute:
        assert ours.by_module[name] == pytest.approx(theirs[name], rel=0.01), name
    # FlopCounterMode counts only matmul-like ops, so the total is exactly the conv+linear sum.
    assert ours.macs == sum(ours.by_module[n] for n in compute)
    assert ours.flops == 2 * ours.macs
    expected = {"mobilenet_v2": 300_774_272, "resnet18": 1_814_073_344}[builder]
    assert ours.macs == expected
    # The traced per-layer MACs tell the same story.
    graph = trace_layers(model, x)
    assert graph.total_macs == ours.macs
    assert {layer.name: layer.macs for layer in graph.layers if layer.name in compute} == {
        n: ours.by_module[n] for n in compute
    }


def test_matmul_and_attention_counted_where_thop_sees_nothing() -> None:
    class Mixer(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 2, 16, 8) = (batch, heads, seq, dim)
            scores = torch.matmul(x, x.transpose(-1, -2))  # 2*16*16*8 MACs
            attn = torch.nn.functional.scaled_dot_product_attention(x, x, x)  # 2 * 2*16*16*8 MACs
            return scores.sum() + attn.sum()

    x = torch.randn(1, 2, 16, 8)
    count = count_flops(Mixer(), x)
    assert count.macs == 2 * 16 * 16 * 8 * 3
    from thop import profile

    thop_ops, _ = profile(Mixer(), inputs=(x,), verbose=False)
    assert thop_ops == 0  # the reason thop is only a cross-check


def test_multihead_attention_module_counted() -> None:
    mha = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)
    x = torch.randn(1, 4, 8)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    count = count_flops(Wrap(), x)
    projections = 4 * (3 * 8 * 8) + 4 * 8 * 8  # in_proj (q, k, v) + out_proj
    attention = 2 * 4 * 4 * 8  # q.k^T and attn.v over all heads
    assert count.macs == projections + attention
    assert count.by_module["mha"] == count.macs


def test_bad_input_is_model_error() -> None:
    with pytest.raises(ModelError, match="expects 3 input channels, got 1"):
        count_flops(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.randn(1, 1, 8, 8))


def test_flop_count_round_trip() -> None:
    count = count_flops(nn.Linear(8, 4), torch.randn(1, 8))
    assert count.macs == 32
    assert FlopCount.from_dict(count.to_dict()) == count


def test_transformer_encoder_layer_fast_path_counted() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True, dropout=0.0)
    x = torch.randn(1, 4, 8)
    count = count_flops(layer, x)
    mha = 4 * 8 * 8 * 4 + 2 * 4 * 4 * 8
    ffn = 4 * 8 * 16 * 2
    assert count.macs == mha + ffn
