"""hwtune.compress end to end on a small slice of Fashion-MNIST: a user's trained model becomes a study.

The baseline row is the model itself; candidates are pruned copies (never trained from scratch);
the study exports (from the stored ``torch.export`` archives) and finalizes like any other.
"""

from __future__ import annotations

import pytest

DATA = {"name": "fashion-mnist", "train_limit": 1500, "val_limit": 300, "test_limit": 300}
BUDGET = {"epochs": 0.3, "rungs": [1.0], "batch_size": 64, "latency_budget_s": 0.1, "calibration_samples": 32}


def _user_model():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    class UserNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.blocks = nn.Sequential(Block(16), Block(16))
            self.down = nn.Sequential(
                nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.down(self.blocks(self.stem(x)))
            return self.head(x.mean((2, 3)))

    return UserNet()


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    from support import FASHION_DIR

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed")
    from hwtune.data import load_dataset
    from hwtune.training import TrainBudget, train
    from hwtune.tuner.compress import compress

    model = _user_model()
    data = load_dataset("fashion-mnist", train_limit=1500, val_limit=300, test_limit=300)
    train(model, data, budget=TrainBudget(epochs=1.0), batch_size=64, seed=0, progress=False)
    out = tmp_path_factory.mktemp("compress")
    res = compress(
        model,
        DATA,
        device="host",
        n_trials=5,
        out_dir=out,
        study_name="c",
        sampler="random",
        seed=2,
        budget=BUDGET,
        progress=False,
    )
    return model, res


@pytest.mark.slow
def test_baseline_row_then_pruned_candidates_with_fewer_macs(compressed):
    _model, res = compressed
    first = res.trial(0)
    assert first.complete and first.trained
    assert all(s["width"] == 1.0 for s in first.candidate["stages"].values())  # the user's model as it is
    assert first.figures.epochs_trained == 0.0
    assert res.meta.strategy == "compress" and res.meta.source_model["sha256"] and res.meta.source_model["artifact_id"]
    base_macs = first.figures.macs
    others = [t for t in res.trials if t.complete and t.trained and t.number != 0 and t.duplicate_of is None]
    assert others
    assert all(t.figures.macs <= base_macs for t in others)
    assert any(t.figures.macs < base_macs for t in others)
    assert all(t.figures.model_artifact_id for t in others)
    assert res.front


@pytest.mark.slow
def test_compressed_trial_exports_and_finalizes(compressed, tmp_path):
    from hwtune.exporting import export
    from hwtune.tuner.finalize import finalize

    _, res = compressed
    t = min((t for t in res.front if t.number != 0), key=lambda t: t.figures.macs, default=res.front[0])
    exp = export(res, t.number, tmp_path / "exp")
    assert exp.model_path.suffix == ".onnx" and abs(exp.manifest["val_accuracy"] - t.accuracy) <= 0.01
    res2 = finalize(res, [t.number], epochs=0.2, progress=False)
    f = res2.trial(t.number).figures.finalized
    assert f["teacher"] == "parent" and f["model_artifact_id"]
    exp2 = export(res2, t.number, tmp_path / "final")
    assert exp2.manifest["finalized"]["model_artifact_id"] == f["model_artifact_id"]


def test_compress_rejects_mismatched_models_before_any_trial(tmp_path):
    import torch

    from hwtune.errors import HwtuneError
    from hwtune.tuner.compress import compress

    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 7))  # 7 outputs for 10 classes
    with pytest.raises(HwtuneError, match="7"):
        compress(wrong, DATA, out_dir=tmp_path, n_trials=1, progress=False)
    assert not (tmp_path / "study.db").exists()
    with pytest.raises(HwtuneError, match="nn.Module"):
        compress("not a model", DATA, out_dir=tmp_path, progress=False)


def test_cli_show_space_prints_an_editable_recipe(tmp_path, capsys):
    from hwtune.cli import main

    src = tmp_path / "user.py"
    src.write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))\n"
    )
    rc = main(["compress", f"{src}:make", "--input", "1x1x28x28", "--show-space"])
    out = capsys.readouterr().out
    assert rc == 0 and "width" in out and "precision" in out
