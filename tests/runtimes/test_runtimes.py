"""hwtune.runtimes: the registry, and export -> load -> measure -> evaluate round trips on onnxruntime and torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hwtune import runtimes
from hwtune.device import load_profile
from hwtune.errors import ConfigError, ModelError, RuntimeUnavailableError, UnknownNameError
from hwtune.precision import PrecisionPlan
from hwtune.runtimes import (
    EvalResult,
    LatencyMeasurement,
    Runtime,
    ShippedModel,
    evaluate_loaded,
    get_runtime,
    list_runtimes,
    measure_callable,
    register_runtime,
    runtime_for_file,
)
from hwtune.training import evaluate


class _FakeRuntime(Runtime):
    """A runtime that only has a name: enough to exercise the registry."""

    name = "fake-rt"
    format = "fake"
    suffix = ".fake"
    modules = ("a_module_that_is_not_installed",)

    def export(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    def load(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    def measure_latency(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError


@pytest.fixture
def fake_runtime():
    rt = register_runtime(_FakeRuntime())
    yield rt
    runtimes._registry._REGISTRY.pop(rt.name, None)


@pytest.fixture(scope="module")
def val_slice():
    """300 real Fashion-MNIST validation images (the tiny model's input: 1x28x28)."""
    from hwtune.data import load_dataset

    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", root=root, train_limit=100, val_limit=300, test_limit=10).val


# ---------------------------------------------------------------------------------------------
# Registry


def test_builtin_runtimes_are_registered_and_describe_themselves() -> None:
    names = list_runtimes()
    assert {"onnxruntime", "torch"} <= set(names) and names == sorted(names)
    ort, eager = get_runtime("onnxruntime"), get_runtime("torch")
    assert (ort.name, ort.format, ort.suffix, ort.precisions) == (
        "onnxruntime",
        "onnx",
        ".onnx",
        ("fp32", "fp16", "int8"),
    )
    assert (eager.name, eager.suffix, eager.precisions, eager.runs_modules) == ("torch", ".pt2", ("fp32",), True)
    assert ort.available() and eager.available()
    assert get_runtime("onnxruntime") is ort  # created once
    json.dumps(ort.describe())


def test_unknown_runtime_names_close_match_and_registered() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_runtime("onnxruntim")
    msg = str(info.value)
    assert "did you mean 'onnxruntime'" in msg and "registered:" in msg and "torch" in msg
    assert len(msg.splitlines()) == 1
    assert isinstance(info.value, ConfigError)  # so `except ValueError` keeps working


def test_register_runtime_rejects_duplicates_and_non_runtimes(fake_runtime) -> None:
    assert "fake-rt" in list_runtimes() and get_runtime("fake-rt") is fake_runtime
    with pytest.raises(ConfigError, match="'fake-rt' is already registered"):
        register_runtime(_FakeRuntime())
    with pytest.raises(ConfigError, match="already registered"):
        register_runtime(type("Dup", (_FakeRuntime,), {"name": "onnxruntime"})())
    with pytest.raises(ConfigError, match="needs a Runtime instance"):
        register_runtime("onnxruntime")  # type: ignore[arg-type]
    assert not fake_runtime.available()
    with pytest.raises(RuntimeUnavailableError, match="a_module_that_is_not_installed, which is not installed"):
        fake_runtime.require()


def test_runtime_for_file_by_suffix(fake_runtime) -> None:
    assert runtime_for_file("m.onnx").name == "onnxruntime"
    assert runtime_for_file(Path("dir/m.PT2")).name == "torch"
    assert runtime_for_file("m.fake") is fake_runtime
    with pytest.raises(ConfigError, match=r"no registered runtime runs \.xyz files"):
        runtime_for_file("m.xyz")


def test_profile_naming_an_unregistered_runtime_is_one_line(tmp_path: Path) -> None:
    src = Path(load_profile("raspberry-pi-4").path).read_text()
    assert 'runtime = "onnxruntime"' in src
    path = tmp_path / "board.toml"
    path.write_text(src.replace('runtime = "onnxruntime"', 'runtime = "tensorrtx"'))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{path}: runtime must be a registered runtime (")
    for name in list_runtimes():
        assert name in msg
    assert "got 'tensorrtx'" in msg


def test_a_newly_registered_runtime_is_valid_in_profiles(tmp_path: Path, fake_runtime) -> None:
    src = Path(load_profile("raspberry-pi-4").path).read_text()
    path = tmp_path / "board.toml"
    path.write_text(src.replace('runtime = "onnxruntime"', 'runtime = "fake-rt"'))
    assert load_profile(path).runtime == "fake-rt"


# ---------------------------------------------------------------------------------------------
# Shared pieces: the timed loop and the value objects


def test_measure_callable_structure_and_arguments() -> None:
    calls = []
    m = measure_callable(lambda: calls.append(1), runtime="python", threads=1, time_budget_s=0.05, min_runs=5)
    assert m.source == "measured" and m.runtime == "python" and m.runs >= 3
    assert len(calls) == m.runs + m.warmup_runs
    assert LatencyMeasurement.from_dict(m.to_dict()) == m
    for bad in ({"threads": 0}, {"threads": 1.5}, {"time_budget_s": 0}, {"target_ci_pct": -1}):
        kw = {"threads": 1, "time_budget_s": 0.05, **bad}
        with pytest.raises(ConfigError):
            measure_callable(lambda: None, runtime="python", **kw)


def test_value_objects_round_trip() -> None:
    r = EvalResult(accuracy=0.5, loss=1.25, n=8, seconds=0.1, runtime="onnxruntime")
    assert EvalResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    s = ShippedModel(Path("m.onnx"), "onnxruntime", "onnx", "int8", (1, 1, 28, 28), {"notes": ["x"]})
    assert ShippedModel.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# ---------------------------------------------------------------------------------------------
# Round trips


def test_onnxruntime_round_trip(tmp_path, tiny_model, tiny_input, val_slice) -> None:
    rt = get_runtime("onnxruntime")
    shipped = rt.export(tiny_model, tiny_input, PrecisionPlan.coerce("fp32"), tmp_path / "out" / "m.onnx")
    assert shipped.path == tmp_path / "out" / "m.onnx" and shipped.path.is_file()
    assert (shipped.runtime, shipped.format, shipped.precision_label) == ("onnxruntime", "onnx", "fp32")
    assert shipped.input_shape == (1, 1, 28, 28) and shipped.size_bytes > 0
    assert sorted(p.name for p in shipped.path.parent.iterdir()) == ["m.onnx"]  # no temporary files left

    loaded = rt.load(shipped, threads=1)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_model(x).numpy()
    np.testing.assert_allclose(loaded.run(x.numpy()), ref, rtol=1e-4, atol=1e-5)

    m = rt.measure_latency(shipped, tiny_input.numpy(), threads=1, time_budget_s=0.3)
    assert m.runtime == "onnxruntime" and m.threads == 1 and m.runs >= 3 and m.median_ms > 0

    on_ort = rt.evaluate(shipped, val_slice, batch_size=64)
    on_torch = get_runtime("torch").evaluate(tiny_model, val_slice, batch_size=64)
    assert on_ort.runtime == "onnxruntime" and on_torch.runtime == "torch" and on_ort.n == on_torch.n == 300
    assert on_ort.accuracy == pytest.approx(on_torch.accuracy, abs=1 / 300)
    assert on_ort.loss == pytest.approx(on_torch.loss, rel=1e-4)
    # training.evaluate picks the runtime from the file suffix / the ShippedModel
    assert evaluate(shipped.path, val_slice).runtime == "onnxruntime"
    assert evaluate(shipped, val_slice).accuracy == on_ort.accuracy

    ops = rt.op_times(shipped, tiny_input.numpy(), threads=1, runs=3)
    assert ops and all(op.runs == 3 and op.median_ms >= 0 for op in ops)


def test_torch_round_trip(tmp_path, tiny_model, tiny_input, val_slice) -> None:
    rt = get_runtime("torch")
    shipped = rt.export(tiny_model, tiny_input, PrecisionPlan.coerce("fp32"), tmp_path / "m.pt2")
    assert shipped.path.suffix == ".pt2" and shipped.path.is_file() and shipped.runtime == "torch"
    assert tiny_model.training is False  # mode restored (the fixture model is in eval mode)

    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))  # any batch: dynamic dimension
    with torch.no_grad():
        ref = tiny_model(x).numpy()
    np.testing.assert_allclose(rt.load(shipped.path).run(x.numpy()), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rt.load(tiny_model).run(x.numpy()), ref, rtol=1e-6, atol=1e-7)

    for target in (tiny_model, shipped):
        m = rt.measure_latency(target, tiny_input, threads=1, time_budget_s=0.2)
        assert m.runtime == "torch" and m.runs >= 3 and m.median_ms > 0
    assert rt.op_times(shipped, tiny_input) is None

    from_file = evaluate(shipped.path, val_slice, limit=100)
    from_module = evaluate(tiny_model, val_slice, limit=100)
    assert from_file.runtime == from_module.runtime == "torch" and from_file.n == 100
    assert from_file.accuracy == from_module.accuracy
    assert from_file.loss == pytest.approx(from_module.loss, rel=1e-5)


def test_torch_ships_fp32_only_and_runs_no_onnx(tmp_path, tiny_model, tiny_input) -> None:
    rt = get_runtime("torch")
    with pytest.raises(ConfigError, match="ships fp32 only, not the plan int8"):
        rt.export(tiny_model, tiny_input, PrecisionPlan.coerce("int8"), tmp_path / "m.pt2")
    with pytest.raises(ConfigError, match=r"cannot run an ONNX file .*use runtime 'onnxruntime'"):
        rt.measure_latency(tmp_path / "m.onnx", tiny_input)
    with pytest.raises(ModelError, match="expects 1 input channels, got 3"):
        rt.measure_latency(tiny_model, torch.randn(1, 3, 28, 28), time_budget_s=0.1)


def test_onnxruntime_int8_export_is_qdq(tmp_path, tiny_model, tiny_input) -> None:
    onnx = pytest.importorskip("onnx")
    from hwtune.quant import node_precisions

    rt = get_runtime("onnxruntime")
    calibration = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    shipped = rt.export(
        tiny_model, tiny_input, PrecisionPlan.coerce("int8"), tmp_path / "q.onnx", calibration=calibration, seed=0
    )
    ops = {n.op_type for n in onnx.load(str(shipped.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert sum(p == "int8" for p in node_precisions(shipped.path).values()) == 3  # 2 convs + the linear head
    info = shipped.info
    assert shipped.precision_label == "int8" and info["calibration_source"] == "data"
    assert info["calibration_samples"] == 16 and info["activation_type"] in ("u8", "s8")
    assert info["path"] == str(shipped.path)
    json.dumps(info)
    m = rt.measure_latency(shipped, tiny_input.numpy(), time_budget_s=0.2)
    assert m.runs >= 3
    # no calibration: random data, and the runtime says so
    random_cal = rt.export(tiny_model, tiny_input, PrecisionPlan.coerce("int8"), tmp_path / "r.onnx")
    assert random_cal.info["calibration_source"] == "random"
    assert any("random" in note for note in random_cal.info["notes"])


def test_fixed_batch_file_is_fed_exact_batches(tmp_path, tiny_model, val_slice) -> None:
    from hwtune.onnx_export import export_onnx

    path = export_onnx(tiny_model, torch.zeros(4, 1, 28, 28), tmp_path / "b4.onnx", dynamic_batch=False)
    loaded = get_runtime("onnxruntime").load(path)
    assert loaded.fixed_batch == 4
    # 30 samples in batches of 4: the last batch is padded and its padding dropped
    fixed = evaluate_loaded(loaded, val_slice, batch_size=64, limit=30, runtime="onnxruntime")
    ref = evaluate(tiny_model, val_slice, limit=30)
    assert fixed.n == 30 and fixed.accuracy == ref.accuracy
    assert math.isclose(fixed.loss, ref.loss, rel_tol=1e-4)


def test_evaluate_checks_output_and_arguments(tiny_model, val_slice) -> None:
    with pytest.raises(ModelError, match=r"model output has shape \(64, 2, 5\)"):
        evaluate(torch.nn.Sequential(tiny_model, torch.nn.Unflatten(1, (2, 5))), val_slice)
    with pytest.raises(ModelError, match="out of range for a model with 3 outputs"):
        evaluate(torch.nn.Sequential(tiny_model, torch.nn.Linear(10, 3)), val_slice)
    with pytest.raises(ConfigError, match="batch_size"):
        get_runtime("torch").evaluate(tiny_model, val_slice, batch_size=0)
    with pytest.raises(ConfigError, match="loads .onnx files"):
        get_runtime("onnxruntime").load(tiny_model)


def test_importing_the_registry_is_light() -> None:
    """device.py uses the registry's names, so importing hwtune.runtimes must not pull in torch or a runtime."""
    import subprocess
    import sys

    code = (
        "import sys, hwtune.runtimes as r; r.list_runtimes(); "
        "print(sorted(m for m in ('torch', 'numpy', 'onnx', 'onnxruntime', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
