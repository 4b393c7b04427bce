"""models/reference/mlperf_tiny_resnet8.py has the published size of the MLPerf Tiny IC01 ResNet-8 and
the IC02 widths, and loads the way ``hwtune compress FILE.py:build`` loads a user's model."""

from __future__ import annotations

from pathlib import Path

import pytest
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


@pytest.mark.slow
def test_hwtune_compress_takes_the_reference_file(tmp_path, capsys, rgb_folder):
    """``hwtune compress models/reference/mlperf_tiny_resnet8.py:build --weights ...`` for the Cortex-M7."""
    import json

    from hwtune.cli import main

    data = rgb_folder(tmp_path / "rgb", {"train": 12, "test": 3}, seed=1)
    weights = tmp_path / "reference.pt"
    torch.save(_module().state_dict(), weights)
    out = tmp_path / "run"
    args = ["compress", f"{MODEL}:build", "--weights", str(weights), "--data", str(data), "--device", "stm32h743"]
    args += ["--trials", "2", "--epochs", "0.1", "--out", str(out), "--seed", "0", "--json", "-q"]
    assert main(args) == 0, capsys.readouterr().err
    front = json.loads(capsys.readouterr().out)
    assert front and all(m["precision"] == "int8" for m in front)
    assert min(m["macs"] for m in front) <= 12_501_632
