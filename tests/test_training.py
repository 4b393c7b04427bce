"""hwtune.training: budgets, the training loop, divergence detection, torch/ONNX evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from hwtune.data import DataSplits, TensorData, from_datasets, load_dataset
from hwtune.errors import ConfigError, ModelError, TrainingDivergedError
from hwtune.training import EvalResult, TrainBudget, TrainStats, evaluate, train


@pytest.fixture(scope="module")
def fashion_small():
    """600 real training and 300 validation images (skipped when Fashion-MNIST is not installed)."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", root="/usr/share/datasets/fashion-mnist", train_limit=600, val_limit=300)


@pytest.fixture
def synthetic():
    """Separable synthetic data: class k has a bright k-th row. 200 train / 40 val images of 1x10x10."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(240) % 10
    x = torch.randn(240, 1, 10, 10, generator=gen) * 0.3
    x[torch.arange(240), 0, y, :] += 2.0
    return from_datasets(torch.utils.data.TensorDataset(x, y), val_fraction=1 / 6)


def linear_model(in_features: int = 100) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 10))


# ------------------------------------------------------------------------------------- budgets


def test_budget_validation_and_parse():
    assert TrainBudget(epochs=0.25).num_samples(1000) == 250
    assert TrainBudget(samples=123).num_samples(10) == 123
    for bad in (
        {},
        {"epochs": 1, "samples": 10},
        {"epochs": 0},
        {"epochs": float("nan")},
        {"samples": 0},
        {"samples": 1.5},
    ):
        with pytest.raises(ConfigError):
            TrainBudget(**bad)
    assert TrainBudget.parse("1.5 epochs") == TrainBudget(epochs=1.5)
    assert TrainBudget.parse("0.5ep") == TrainBudget(epochs=0.5)
    assert TrainBudget.parse("20k samples") == TrainBudget(samples=20_000)
    with pytest.raises(ConfigError, match="cannot parse"):
        TrainBudget.parse("lots")
    b = TrainBudget(epochs=2)
    assert TrainBudget.from_dict(b.to_dict()) == b


# ------------------------------------------------------------------------------------- training


def test_training_tiny_cnn_on_real_data_learns(fashion_small, tiny_model):
    before = evaluate(tiny_model, fashion_small.val)
    stats = train(tiny_model, fashion_small, budget=TrainBudget(epochs=4), batch_size=32, lr=0.2, threads=1)
    after = evaluate(tiny_model, fashion_small.val)
    assert stats.samples_seen == 2400 and stats.steps == 75 and stats.epochs == pytest.approx(4.0)
    assert stats.final_loss < stats.first_loss - 0.3
    assert after.loss < before.loss - 0.3
    assert after.accuracy > 0.2  # chance is 0.1; measured 0.31
    assert not tiny_model.training  # the fixture's eval mode is restored


def test_default_settings_train_a_linear_model_well(fashion_small):
    model = linear_model(784)
    train(model, fashion_small, budget=TrainBudget(epochs=3), batch_size=32)
    result = evaluate(model, fashion_small.val)
    assert result.accuracy > 0.65  # measured 0.77 (logistic regression on 600 images)
    assert result.n == 300 and 0 < result.loss < 1.5


def test_fractional_and_sample_budgets(synthetic):
    n = len(synthetic.train)  # 200
    stats = train(linear_model(), synthetic, budget=TrainBudget(epochs=0.5), batch_size=16)
    assert stats.samples_seen == n // 2 and stats.steps == math.ceil(100 / 16)
    stats = train(linear_model(), synthetic, budget=TrainBudget(samples=450), batch_size=64)
    assert stats.samples_seen == 450 and stats.epochs == pytest.approx(2.25)
    # A trailing batch of one sample is folded into the previous one (BatchNorm cannot train on 1).
    stats = train(linear_model(), synthetic, budget=TrainBudget(samples=65), batch_size=64)
    assert stats.samples_seen == 65 and stats.steps == 1


def test_training_is_deterministic_and_restores_global_state(synthetic):
    torch.manual_seed(123)
    marker = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = linear_model(), linear_model(), linear_model()
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    train(a, synthetic, budget=TrainBudget(epochs=1), batch_size=16, seed=5, threads=1)
    assert torch.equal(torch.rand(1), marker)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    train(b, synthetic, budget=TrainBudget(epochs=1), batch_size=16, seed=5, threads=1)
    train(c, synthetic, budget=TrainBudget(epochs=1), batch_size=16, seed=6, threads=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_second_call_continues_training(synthetic):
    model = linear_model()
    first = train(model, synthetic, budget=TrainBudget(epochs=1), batch_size=20, lr=0.02)
    second = train(model, synthetic, budget=TrainBudget(epochs=1), batch_size=20, lr=0.02)
    assert second.first_loss < first.first_loss - 0.2
    assert second.final_loss < first.final_loss
    assert TrainStats.from_dict(second.to_dict()) == second


def test_generic_dataset_goes_through_dataloader(synthetic):
    class Plain(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            return self.inner[i]

    plain = Plain(synthetic.train)
    a, b = linear_model(), linear_model()
    train(a, plain, budget=TrainBudget(epochs=1), batch_size=16)
    train(b, synthetic.train, budget=TrainBudget(epochs=1), batch_size=16)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # same samples in the same order, two batching paths
    assert evaluate(a, Plain(synthetic.val)).accuracy == evaluate(a, synthetic.val).accuracy


# ----------------------------------------------------------------------------------- divergence


def test_huge_learning_rate_raises_diverged(synthetic):
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step \d+/\d+: loss") as info:
        train(linear_model(), synthetic, budget=TrainBudget(epochs=2), batch_size=16, lr=1e6)
    assert info.value.step >= 1
    assert isinstance(info.value, ArithmeticError)


def test_nan_output_raises_at_first_step(synthetic):
    class NaNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(100, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    with pytest.raises(TrainingDivergedError, match=r"step 1/\d+: loss nan"):
        train(NaNNet(), synthetic, budget=TrainBudget(epochs=1))


def test_bad_settings(synthetic):
    with pytest.raises(ConfigError, match="TrainBudget"):
        train(linear_model(), synthetic, budget=1)
    with pytest.raises(ConfigError, match="did you mean 'adamw'"):
        train(linear_model(), synthetic, budget=TrainBudget(epochs=1), optimizer="adamx")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0\nlr must be"):
        train(linear_model(), synthetic, budget=TrainBudget(epochs=1), batch_size=0, lr=-1)
    with pytest.raises(ConfigError, match="one split"):
        evaluate(linear_model(), synthetic)


def test_adamw_and_progress_bar(synthetic, capsys):
    model = linear_model()
    stats = train(model, synthetic, budget=TrainBudget(epochs=3), batch_size=32, optimizer="adamw", progress=True)
    # AdamW's default peak lr scales with the square root of the batch size.
    assert stats.optimizer == "adamw" and stats.peak_lr == pytest.approx(3e-3 * (32 / 128) ** 0.5)
    assert "train" in capsys.readouterr().err
    assert evaluate(model, synthetic.val).accuracy > 0.5


# ----------------------------------------------------------------------------------- evaluation


def test_evaluate_torch_matches_onnx(fashion_small, tiny_model, tmp_path):
    from hwtune.onnx_export import export_onnx

    train(tiny_model, fashion_small, budget=TrainBudget(epochs=2), batch_size=32, lr=0.2, threads=1)
    path = export_onnx(tiny_model, torch.zeros(1, 1, 28, 28), tmp_path / "tiny.onnx")
    ref = evaluate(tiny_model, fashion_small.val, batch_size=64)
    ort = evaluate(path, fashion_small.val, batch_size=64, threads=1)
    assert (ort.runtime, ref.runtime) == ("onnxruntime", "torch")
    assert ort.n == ref.n == 300
    assert abs(ort.accuracy - ref.accuracy) <= 1 / 300  # a near-tie logit may flip one sample
    assert ort.loss == pytest.approx(ref.loss, rel=1e-4)
    assert EvalResult.from_dict(ort.to_dict()) == ort

    # A static batch of 1 (typical edge export) is fed one sample at a time, with the same result.
    fixed = export_onnx(tiny_model, torch.zeros(1, 1, 28, 28), tmp_path / "fixed.onnx", dynamic_batch=False)
    one = evaluate(fixed, fashion_small.val, limit=25)
    assert one.n == 25
    assert one.accuracy == pytest.approx(evaluate(tiny_model, fashion_small.val, limit=25).accuracy, abs=1 / 25)


def test_evaluate_errors(synthetic, tmp_path):
    with pytest.raises(ModelError, match="ONNX file not found"):
        evaluate(tmp_path / "missing.onnx", synthetic.val)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        evaluate(tmp_path / "junk.onnx", synthetic.val)

    class ThreeOut(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]

    with pytest.raises(ModelError, match="out of range for a model with 3 outputs"):
        evaluate(ThreeOut(), synthetic.val)


def test_types_are_exported():
    assert issubclass(TrainingDivergedError, ArithmeticError)
    assert isinstance(TensorData, type) and isinstance(DataSplits, type)


@pytest.mark.slow
def test_defaults_reach_88_percent_in_one_epoch():
    """The defaults' promise, end to end: one epoch of a 16/32-channel CNN with a flatten head.

    Measured 89.8 % (1 thread) and 89.6 % (2 threads) on the 10k validation split; ~40-90 s.
    """
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

    def cbr(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    torch.manual_seed(0)
    model = nn.Sequential(
        cbr(1, 16), cbr(16, 16), cbr(16, 32, 2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10)
    )
    splits = load_dataset("fashion-mnist", root="/usr/share/datasets/fashion-mnist")
    stats = train(model, splits, budget=TrainBudget(epochs=1))
    assert stats.samples_seen == 50_000 and stats.steps == 391
    assert evaluate(model, splits.val).accuracy >= 0.88
