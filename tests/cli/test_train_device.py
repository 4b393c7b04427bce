"""--train-device / --amp on every command that trains: checked before any work, recorded with each trial,
in finalize's figures and in the export manifest."""

from __future__ import annotations

import pytest
import torch
from support import FASHION_DIR, tiny_recipe, write_recipe

from hwtune import engine
from hwtune.cli import main

DATA = {"name": "fashion-mnist", "train_limit": 600, "val_limit": 200, "test_limit": 200}
BUDGET = {"epochs": 0.5, "rungs": [1.0], "batch_size": 64, "latency_budget_s": 0.05, "calibration_samples": 32}


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine, "_mps_available", lambda: False)


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "fashion-convnet", "--device", "host", "--train-device", "cuda"],
        ["tune", "fashion-convnet", "--device", "host", "--train-device", "mps"],
        ["tune", "fashion-convnet", "--device", "host", "--amp", "fp16"],
        ["worker", "--storage", "sqlite:///nowhere/study.db", "--train-device", "cuda:1"],
        ["finalize", "RUNDIR", "--train-device", "cuda"],
        ["compress", "torchvision:resnet18", "--train-device", "cuda"],
        ["demo", "--train-device", "gpu"],
    ],
)
def test_bad_train_device_is_one_line_exit_2_before_any_work(no_accelerator, argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "run") if a == "RUNDIR" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "train device" in err or "amp 'fp16'" in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no run directory, no study


def test_cuda_index_beyond_the_machine_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "fashion-convnet", "--device", "host", "--train-device", "cuda:7"]) == 2
    assert "this machine has 1 CUDA device(s)" in capsys.readouterr().err


def _tiny_run(tmp_path, train_device: str, extra: list[str] | None = None) -> str:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    recipe = write_recipe(tmp_path, text=tiny_recipe(augment=["crop:2"]))  # [train] augment: finalize's default
    out = tmp_path / "run"
    from hwtune.tuner import tune

    res = tune(
        recipe, device="host", data=DATA, n_trials=2, out_dir=out, study_name="dev", sampler="random", seed=0,
        budget=BUDGET, progress=False, train_device=train_device,
    )  # fmt: skip
    assert res.knee is not None
    return str(out)


@pytest.mark.slow
def test_tiny_tune_finalize_export_record_the_train_device(tmp_path, capsys):
    out = _tiny_run(tmp_path, "cpu")
    assert main(["finalize", out, "--epochs", "0.2", "--train-device", "cpu", "-q"]) == 0
    assert main(["export", out, "--json", "-o", str(tmp_path / "exp")]) == 0
    import json

    manifest = json.loads(capsys.readouterr().out)
    # device, precision, memory format (pinned by tests/conftest.py)
    assert manifest["training"]["trained_on"] == "cpu, fp32, contiguous (HWTUNE_CHANNELS_LAST=0)"
    assert manifest["finalized"]["augment"] == "crop:2"  # the recipe's, as finalize was given none
    from hwtune.tuner.finalize import finalize

    res = finalize(out, "knee", epochs=0.1, progress=False, train_device="cpu", augment="crop:2,hflip")
    knee = res.trial(res.knee.number)
    assert knee.figures.train_device == "cpu, fp32, contiguous (HWTUNE_CHANNELS_LAST=0)"
    assert knee.figures.finalized["train_device"] == "cpu, fp32, contiguous (HWTUNE_CHANNELS_LAST=0)"
    assert knee.figures.finalized["augment"] == "crop:2,hflip"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_tune_on_cuda(tmp_path, capsys):
    out = _tiny_run(tmp_path, "cuda")
    assert main(["finalize", out, "--epochs", "0.2", "--train-device", "cuda", "-q"]) == 0
    assert main(["export", out, "--json", "-o", str(tmp_path / "exp")]) == 0
    import json

    manifest = json.loads(capsys.readouterr().out)
    assert manifest["training"]["trained_on"].startswith("cuda:0 (")
