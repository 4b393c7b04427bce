"""models/reference/mlperf_tiny_resnet8.py has the published size of the MLPerf Tiny IC01 ResNet-8 and
the IC02 widths, and loads the way ``hwtune compress FILE.py:build`` loads a user's model."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "reference" / "mlperf_tiny_resnet8.py"


def _module():
    from hwtune.compression.loading import load_user_model

    return load_user_model(f"{MODEL}:build")


def test_published_parameter_count_and_macs():
    from hwtune.graph import count_flops

    net = _module()
    trainable = sum(p.numel() for p in net.parameters())
    stats = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert trainable == 78_186 and trainable + stats == 78_666  # what Keras' summary prints for the reference
    macs = count_flops(net.eval(), torch.zeros(1, 3, 32, 32)).macs
    assert macs == 12_501_632  # "12.5 M MACs" (mlcommons/tiny)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_ic02_widths():
    import importlib.util

    from hwtune.graph import count_flops

    spec = importlib.util.spec_from_file_location("mlperf_tiny_resnet8", MODEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build(mod.IC02_WIDTHS).eval()
    assert 200_000 < sum(p.numel() for p in net.parameters()) < 210_000
    assert round(count_flops(net, torch.zeros(1, 3, 32, 32)).macs / 1e6, 1) == 32.6
