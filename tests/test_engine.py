"""The one training loop: devices, precision, objectives, and that train/finetune/train_parent share it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwtune import engine
from hwtune.engine import device_name, on_device, resolve_amp, resolve_device, run_loop
from hwtune.errors import ConfigError, TrainingDivergedError

cuda = pytest.mark.cuda


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def _labels(model: nn.Module):
    def objective(x, y, backward):
        loss = F.cross_entropy(model(x), y)
        backward(loss)
        return float(loss.detach())

    return objective


def _run(model: nn.Module, **kw) -> engine.LoopResult:
    x, y = _data()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return run_loop(batches, _labels(model), opt, lambda s: 0.1, steps=len(batches), device=torch.device("cpu"), **kw)


# ----------------------------------------------------------------------------------- devices


def test_cpu_and_auto_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine, "_mps_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert device_name(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cuda", "'cuda': CUDA is not available"),
        ("cuda:1", "CUDA is not available"),
        ("mps", "'mps': MPS is not available"),
        ("tpu", "expected auto, cpu, cuda, cuda:N or mps"),
        ("cpu:3", "expected auto"),
    ],
)
def test_missing_or_unknown_device_is_one_line(monkeypatch, spec, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine, "_mps_available", lambda: False)
    with pytest.raises(ConfigError, match=match) as info:
        resolve_device(spec)
    assert "\n" not in str(info.value)


def test_cuda_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(ConfigError, match=r"'cuda:7': this machine has 1 CUDA device\(s\), cuda:0..cuda:0"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_amp_modes_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu).dtype is None  # the CPU stays fp32 unless asked
    assert resolve_amp(None, cpu).name == "fp32"
    assert resolve_amp("off", cpu).dtype is None
    assert resolve_amp("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16.*CUDA or MPS"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="amp 'fp8': expected one of auto, bf16, fp16, off"):
        resolve_amp("fp8", cpu)


def test_on_device_moves_back():
    model = _model()
    with on_device([model, None], torch.device("cpu")):
        assert next(model.parameters()).device.type == "cpu"
    with on_device([model], None):
        pass


# ----------------------------------------------------------------------------------- the loop


def test_loop_is_reproducible_and_learns():
    a, b = _model(), _model()
    ra, rb = _run(a), _run(b)
    assert ra.losses == rb.losses and ra.seen == 64
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_loop_bf16_autocast_on_cpu_trains():
    model = _model()
    result = _run(model, precision=resolve_amp("bf16", torch.device("cpu")))
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)


def test_loop_augment_sees_every_batch_and_limit_stops():
    seen = []

    def augment(x):
        seen.append(x.shape[0])
        return x

    result = _run(_model(), augment=augment)
    assert seen == [16, 16, 16, 16] and result.seen == 64
    assert len(_run(_model(), time_limit_s=0.0).losses) == 1  # at least one step


def test_loop_divergence_names_the_step():
    model = _model()

    def objective(x, y, backward):
        loss = F.cross_entropy(model(x), y) * float("nan")
        backward(loss)
        return float(loss)

    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDivergedError, match=r"fine-tuning diverged at step 1/1: loss nan"):
        run_loop([(x, y)], objective, opt, lambda s: 0.1, steps=1, device=torch.device("cpu"), desc="fine-tuning")


def test_train_finetune_and_parent_record_their_device():
    from hwtune.supernet import finetune
    from hwtune.training import TrainBudget, train

    x, y = _data()
    ds = torch.utils.data.TensorDataset(x, y)
    model = _model()
    stats = train(model, ds, budget=TrainBudget(epochs=1), batch_size=16, train_device="cpu", amp="auto")
    assert (stats.device, stats.amp) == ("cpu", "fp32")
    ft = finetune(model, ds, epochs=1, teacher=_model(), batch_size=16, train_device="auto")
    assert ft.device in ("cpu", "mps") or ft.device.startswith("cuda:")
    assert next(model.parameters()).device.type == "cpu"  # back where it was
    with pytest.raises(ConfigError, match="amp"):
        train(model, ds, budget=TrainBudget(epochs=1), amp="fp4")


# ----------------------------------------------------------------------------------- CUDA only


@cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_training_moves_model_and_back(amp):
    from hwtune.supernet import finetune, recalibrate_bn
    from hwtune.training import TrainBudget, train

    x, y = _data(256)
    ds = torch.utils.data.TensorDataset(x, y)
    model = _model()
    stats = train(model, ds, budget=TrainBudget(epochs=2), batch_size=32, train_device="cuda", amp=amp)
    assert stats.device.startswith("cuda:0 (") and stats.amp == ("fp32" if amp == "off" else amp)
    assert math.isfinite(stats.final_loss) and stats.samples_seen == 512
    assert next(model.parameters()).device.type == "cpu"
    ft = finetune(model, ds, epochs=1, teacher=_model(), batch_size=32, train_device="cuda:0", amp=amp)
    assert ft.device.startswith("cuda:0")
    recalibrate_bn(model, ds, train_device="cuda")
    assert all(b.device.type == "cpu" for b in model.buffers())


# --------------------------------------------------------------------------------- memory format


def test_channels_last_is_chosen_by_measurement_and_pinned_when_asked(monkeypatch):
    import hwtune.engine as eng

    monkeypatch.delenv(eng.CHANNELS_LAST_ENV_VAR, raising=False)
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    ds = torch.utils.data.TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,)))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )  # fmt: skip
    cpu = torch.device("cpu")
    # Timed steps: contiguous 30 ms, channels-last 20 ms -> 1.5x, chosen; the decision is cached.
    calls = []

    def fake_step(model, x, y, precision):
        calls.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return 0.020 if calls[-1] else 0.030

    monkeypatch.setattr(eng, "_step_seconds", fake_step)
    fmt = eng.choose_memory_format(net, ds, cpu, batch_size=4)
    assert fmt.channels_last and fmt.name == "channels_last (measured 1.50x)" and fmt.speedup == pytest.approx(1.5)
    rounds = eng.TRAIN_FORMAT_ROUNDS + 1
    assert calls.count(True) == calls.count(False) == rounds  # interleaved, first round not counted
    assert eng.choose_memory_format(net, ds, cpu, batch_size=4) is fmt and len(calls) == 2 * rounds
    # Training's margin is 1.05x: 1.09x is channels-last, 1.03x is not; a tiny step is not worth it; a failure
    # falls back to contiguous.
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    monkeypatch.setattr(eng, "_step_seconds", lambda m, x, y, p: 0.030 if x.is_contiguous() else 0.0275)
    assert eng.choose_memory_format(net, ds, cpu, batch_size=4).name == "channels_last (measured 1.09x)"
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    monkeypatch.setattr(eng, "_step_seconds", lambda m, x, y, p: 0.030 if x.is_contiguous() else 0.029)
    assert eng.choose_memory_format(net, ds, cpu, batch_size=4).name == "contiguous (measured 1.03x)"
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    monkeypatch.setattr(eng, "_step_seconds", lambda m, x, y, p: 0.0001)
    assert eng.choose_memory_format(net, ds, cpu, batch_size=4).name == "contiguous (step too short to gain)"
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    monkeypatch.setattr(eng, "_step_seconds", lambda m, x, y, p: 1 / 0)
    assert eng.choose_memory_format(net, ds, cpu, batch_size=4).name.startswith("contiguous (measurement failed")
    assert eng.choose_memory_format(net, ds, cpu, channels_last=True).name == "channels_last (asked)"
    monkeypatch.setenv(eng.CHANNELS_LAST_ENV_VAR, "1")
    assert eng.choose_memory_format(net, ds, cpu).name == "channels_last (HWTUNE_CHANNELS_LAST=1)"
    flat = torch.utils.data.TensorDataset(torch.randn(8, 5), torch.randint(0, 4, (8,)))
    monkeypatch.delenv(eng.CHANNELS_LAST_ENV_VAR)
    assert eng.choose_memory_format(torch.nn.Linear(5, 4), flat, cpu).name == "contiguous (no 4-D images)"


def test_channels_last_is_measured_for_each_architecture_of_one_class(monkeypatch):
    import hwtune.engine as eng

    monkeypatch.delenv(eng.CHANNELS_LAST_ENV_VAR, raising=False)
    monkeypatch.setattr(eng, "_FORMAT_CACHE", {})
    ds = torch.utils.data.TensorDataset(torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,)))

    def net(width: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    # Channels-last gains 1.5x on the wide one only (a search's members share their class, not their speed).
    def fake_step(model, x, y, precision):
        wide = model[0].out_channels == 16
        return 0.020 if wide and not x.is_contiguous() else 0.030

    monkeypatch.setattr(eng, "_step_seconds", fake_step)
    cpu = torch.device("cpu")
    assert eng.architecture_key(net(8)) != eng.architecture_key(net(16))
    assert eng.architecture_key(net(8)) == eng.architecture_key(net(8))
    assert eng.choose_memory_format(net(8), ds, cpu, batch_size=4).name == "contiguous (measured 1.00x)"
    assert eng.choose_memory_format(net(16), ds, cpu, batch_size=4).name == "channels_last (measured 1.50x)"
    assert len(eng._FORMAT_CACHE) == 2


def test_channels_last_training_is_reproducible_and_hands_back_a_contiguous_model():
    from hwtune.training import TrainBudget, train

    ds = torch.utils.data.TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,)))
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(8, 4),
        )  # fmt: skip
        stats = train(net, ds, budget=TrainBudget(epochs=2), batch_size=16, seed=1, channels_last=True)
        assert stats.memory_format == "channels_last (asked)"
        assert net[0].weight.is_contiguous()  # export and quantization get the usual layout back
        states.append(net.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)
