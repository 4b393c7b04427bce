"""The optional runtimes: executorch (.pte), litert (.tflite) and tflite-micro (int8 .tflite + arena).

Each runtime's tests skip when its extra is not installed (``pip install 'hwtune[executorch]'`` /
``'hwtune[litert]'``) and are marked ``extras``. Exports are cached per module: one fp32 and one int8
file per runtime of the shared tiny model (seeded, so every test's ``tiny_model`` has the same weights).
"""

from __future__ import annotations

import numpy as np
import pytest

from hwtune.errors import ConfigError, ExportError, RuntimeUnavailableError
from hwtune.precision import PrecisionPlan
from hwtune.runtimes import get_runtime, list_runtimes

EXTRA_MODULES = {
    "executorch": ("executorch", "torchao"),
    "litert": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
    "tflite-micro": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "tflite_micro"),
}
SUFFIX = {"executorch": ".pte", "litert": ".tflite", "tflite-micro": ".tflite"}
_CACHE: dict[tuple[str, str], object] = {}


def _need(runtime: str) -> None:
    for module in EXTRA_MODULES[runtime]:
        pytest.importorskip(module)


def _calibration() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((32, 1, 28, 28)).astype(np.float32)


def _inputs(n: int = 6) -> np.ndarray:
    return np.random.default_rng(2).standard_normal((n, 1, 28, 28)).astype(np.float32)


@pytest.fixture
def shipped(tiny_model, tiny_input, tmp_path_factory):
    """``shipped(runtime, plan)``: the tiny model exported once per module for (runtime, plan label)."""

    def get(runtime: str, plan: str | PrecisionPlan):
        _need(runtime)
        plan = PrecisionPlan.coerce(plan)
        key = (runtime, plan.label)
        if key not in _CACHE:
            out = tmp_path_factory.mktemp("extras") / f"tiny{SUFFIX[runtime]}"
            _CACHE[key] = get_runtime(runtime).export(tiny_model, tiny_input, plan, out, calibration=_calibration())
        return _CACHE[key]

    return get


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# ---- without the extras ---------------------------------------------------------------------------


def test_the_three_runtimes_are_registered():
    for name in ("executorch", "litert", "tflite-micro"):
        assert name in list_runtimes()
        rt = get_runtime(name)
        assert rt.name == name and rt.suffix == SUFFIX[name]
        assert rt.describe()["extra"] in ("executorch", "litert")
    assert get_runtime("tflite-micro").precisions == ("int8",)


@pytest.mark.parametrize("name", ["executorch", "litert", "tflite-micro"])
def test_missing_extra_is_a_one_line_error_with_the_pip_command(name, monkeypatch, tiny_model, tiny_input, tmp_path):
    rt = get_runtime(name)
    monkeypatch.setattr(rt, "modules", ("hwtune_no_such_module_xyz",))
    assert not rt.available()
    for call in (
        lambda: rt.export(tiny_model, tiny_input, PrecisionPlan.uniform("int8"), tmp_path / f"m{rt.suffix}"),
        lambda: rt.load(tmp_path / f"m{rt.suffix}"),
    ):
        with pytest.raises(RuntimeUnavailableError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert f"pip install 'hwtune[{rt.extra}]'" in message and name in message


# ---- with the extras ------------------------------------------------------------------------------


@pytest.mark.extras
@pytest.mark.parametrize("name", ["executorch", "litert"])
def test_fp32_export_runs_like_torch(name, shipped, tiny_model):
    s = shipped(name, "fp32")
    assert s.path.suffix == SUFFIX[name] and s.size_bytes > 0 and s.precision_label == "fp32"
    assert s.runtime == name and s.input_shape == (1, 1, 28, 28)
    x = _inputs()
    got = get_runtime(name).load(s, threads=1).run(x)
    np.testing.assert_allclose(got, _torch_logits(tiny_model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.extras
@pytest.mark.parametrize("name", ["executorch", "litert", "tflite-micro"])
def test_int8_export_is_integer_and_close_to_torch(name, shipped, tiny_model):
    s = shipped(name, "int8")
    assert s.precision_label == "int8"
    assert s.info["float_ops"] == [], s.info  # every op of the tiny CNN has an int8 kernel
    x = _inputs()
    want = _torch_logits(tiny_model, x)
    got = get_runtime(name).load(s).run(x)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()  # int8: loose, but not garbage
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.5


@pytest.mark.extras
def test_litert_int8_file_has_int8_kernels_and_io(shipped):
    from hwtune.runtimes._tflite_common import read_ops

    s = shipped("litert", "int8")
    ops = read_ops(s.path.read_bytes())
    convs = [op for op in ops if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(convs) == 3 and all(op.input_types[0] == "INT8" for op in convs)
    loaded = get_runtime("litert").load(s)
    assert loaded.input_dtype == np.int8  # the file takes int8; run() quantizes with its scale


@pytest.mark.extras
def test_litert_mixed_plan_keeps_the_head_in_float_and_lists_it(shipped, tiny_model):
    plan = PrecisionPlan("int8", (("head", "fp32"),))
    s = shipped("litert", plan)
    assert s.precision_label == plan.label
    assert s.info["float_ops"] == ["FULLY_CONNECTED (head)"]
    assert s.info["ops"].get("DEQUANTIZE") == 1  # int8 -> float at the head's input
    x = _inputs()
    assert np.abs(get_runtime("litert").load(s).run(x) - _torch_logits(tiny_model, x)).max() < 0.1


@pytest.mark.extras
@pytest.mark.slow
def test_executorch_mixed_plan_lists_the_fp32_linear(shipped):
    s = shipped("executorch", PrecisionPlan("int8", (("head", "fp32"),)))
    assert s.info["float_ops"] == ["linear (head)"]
    ops = get_runtime("executorch").op_times(s, None, runs=3)
    assert any("F32" in op.op_type for op in ops) and any("QC8" in op.op_type for op in ops)


@pytest.mark.extras
@pytest.mark.parametrize("name", ["executorch", "litert"])
def test_override_that_matches_nothing_is_a_config_error(name, tiny_model, tiny_input, tmp_path):
    _need(name)
    plan = PrecisionPlan("int8", (("haed", "fp32"),))
    out = tmp_path / f"m{SUFFIX[name]}"
    with pytest.raises(ConfigError, match="'haed'.*did you mean 'head'"):
        get_runtime(name).export(tiny_model, tiny_input, plan, out, calibration=_calibration())
    assert not out.exists()


@pytest.mark.extras
@pytest.mark.parametrize(
    ("name", "plan"),
    [
        ("executorch", PrecisionPlan.uniform("fp16")),
        ("litert", PrecisionPlan.uniform("fp16")),
        ("tflite-micro", PrecisionPlan.uniform("fp32")),
        ("tflite-micro", PrecisionPlan("int8", (("head", "fp32"),))),
    ],
)
def test_unsupported_precision_is_a_config_error(name, plan, tiny_model, tiny_input, tmp_path):
    _need(name)
    out = tmp_path / f"m{SUFFIX[name]}"
    with pytest.raises(ConfigError, match=f"runtime '{name}' ships"):
        get_runtime(name).export(tiny_model, tiny_input, plan, out)
    assert not out.exists()


@pytest.mark.extras
@pytest.mark.parametrize("name", ["executorch", "litert", "tflite-micro"])
def test_measured_latency_names_runtime_and_threads(name, shipped, tiny_input):
    s = shipped(name, "int8")
    m = get_runtime(name).measure_latency(s, tiny_input, threads=1, time_budget_s=0.3, min_runs=5)
    assert m.source == "measured" and m.threads == 1 and m.runs >= 3 and m.median_ms > 0
    if name == "tflite-micro":
        assert m.runtime == "tflite-micro (host reference kernels)"  # never mistaken for an MCU latency
    else:
        assert m.runtime == name
    assert m.p10_ms <= m.median_ms <= m.p90_ms


@pytest.mark.extras
@pytest.mark.parametrize("name", ["executorch", "litert", "tflite-micro"])
def test_evaluate_agrees_with_torch_predictions(name, shipped, tiny_model):
    import torch

    x = torch.from_numpy(_inputs(24))
    with torch.no_grad():
        labels = tiny_model(x).argmax(1)
    data = torch.utils.data.TensorDataset(x, labels)
    precision = "int8" if name == "tflite-micro" else "fp32"
    result = get_runtime(name).evaluate(shipped(name, precision), data, batch_size=8)
    assert result.runtime == name and result.n == 24
    assert result.accuracy >= (0.6 if precision == "int8" else 1.0)


@pytest.mark.extras
def test_executorch_op_times_come_from_the_etdump(shipped, tiny_input):
    ops = get_runtime("executorch").op_times(shipped("executorch", "int8"), tiny_input, runs=5, warmup_runs=1)
    convs = [op for op in ops if op.op_type.startswith("Convolution")]
    assert len(convs) == 2 and all("QC8" in op.op_type and op.runs == 5 for op in convs)
    assert all(op.median_ms >= 0 for op in ops)
    assert get_runtime("litert").op_times(shipped("litert", "fp32"), tiny_input) is None


@pytest.mark.extras
def test_tflite_micro_arena_is_measured_and_covers_the_live_tensors(shipped):
    from hwtune.runtimes._tflite_common import largest_op_io_bytes

    rt = get_runtime("tflite-micro")
    s = shipped("tflite-micro", "int8")
    arena = s.info["arena_bytes"]
    assert s.info["arena_source"] == "measured (tflite-micro arena)"
    # stem output 28x28x4 int8 and the padded 30x30x4 copy before the stride-2 conv are live together
    live = largest_op_io_bytes(s.path.read_bytes())
    assert live == 28 * 28 * 4 + 30 * 30 * 4
    assert arena >= live
    searched = rt.arena_bytes(s, method="search")  # the smallest arena that loads and runs
    assert searched <= arena <= searched + 256
    assert s.info["reference_max_diff_steps"] <= 1


@pytest.mark.extras
def test_tflite_micro_refuses_weights_outside_the_flatbuffer_and_inlines_them(tmp_path):
    """ai-edge-quantizer appends the weights of a ~0.4 MB model after the flatbuffer; TFLM reads garbage."""
    import torch
    from torch import nn

    from hwtune.runtimes._tflite_common import external_buffer_count

    _need("tflite-micro")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    example, calib = torch.zeros(1, 1, 28, 28), _calibration()[:16]
    rt = get_runtime("tflite-micro")
    plan = PrecisionPlan.uniform("int8")
    litert_file = get_runtime("litert").export(mlp, example, plan, tmp_path / "mlp.tflite", calibration=calib)
    if external_buffer_count(litert_file.path.read_bytes()) == 0:
        pytest.skip("this ai-edge-quantizer keeps the weights inside the flatbuffer")
    with pytest.raises(ExportError, match="reference kernels"):
        rt.check_outputs(litert_file, calib[:2])
    micro = rt.export(mlp, example, plan, tmp_path / "mlp-micro.tflite", calibration=calib)
    assert micro.info["external_buffers"] == 0 and micro.info["reference_max_diff_steps"] <= 1
    assert rt.check_outputs(micro, calib[:2]) <= 1
