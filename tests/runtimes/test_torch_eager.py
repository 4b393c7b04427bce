"""hwtune/runtimes/torch_eager.py: scoring a module in chunks, in the memory format measured faster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwtune.runtimes import torch_eager
from hwtune.runtimes.torch_eager import TorchLoadedModel, infer_channels_last


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).train()


@pytest.mark.parametrize("pinned", ["0", "1"])
def test_chunked_scoring_gives_the_whole_batch_logits_in_either_format(monkeypatch, pinned):
    model = _cnn()
    x = np.random.default_rng(0).standard_normal((300, 3, 8, 8)).astype(np.float32)  # > INFER_CHUNK: split
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    model.train()
    monkeypatch.setenv("HWTUNE_CHANNELS_LAST", pinned)
    out = TorchLoadedModel(model).run(x)
    assert out.shape == (300, 10)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert model.training  # the mode is restored
    assert all(p.is_contiguous() for p in model.parameters())  # and the format (export expects contiguous)
    # the parameters are still trainable ones (not inference tensors): the model trains and exports after scoring
    assert not any(p.is_inference() for p in model.parameters())
    model(torch.from_numpy(x[:4])).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_format_is_measured_once_per_model_class_and_shape(monkeypatch):
    monkeypatch.delenv("HWTUNE_CHANNELS_LAST", raising=False)
    monkeypatch.setattr(torch_eager, "_INFER_FORMATS", {})
    calls = []
    real = torch_eager._forward_seconds
    monkeypatch.setattr(torch_eager, "_forward_seconds", lambda m, x: calls.append(1) or real(m, x))
    model, x = _cnn().eval(), torch.randn(32, 3, 8, 8)
    first = infer_channels_last(model, x)
    assert infer_channels_last(model, x) is first and len(calls) == 8  # 4 rounds x 2 formats, then cached
    assert infer_channels_last(model, torch.randn(4, 3, 8, 8)) is False  # a small batch is not reordered
    assert infer_channels_last(nn.Linear(4, 2), torch.randn(32, 4)) is False  # no images


def test_scoring_inside_a_callers_inference_mode_leaves_the_weights_alone(monkeypatch):
    monkeypatch.setenv("HWTUNE_CHANNELS_LAST", "1")
    model = _cnn()
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        out = TorchLoadedModel(model).run(x)
    assert out.shape == (64, 10)
    assert not any(p.is_inference() for p in model.parameters())
