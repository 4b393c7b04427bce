"""hwtune.profile_model / ProfileReport: JSON keys, latency labelling, fit, ONNX files, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

import hwtune
from hwtune.errors import ConfigError, ModelError, UnknownNameError
from hwtune.graph import trace_layers
from hwtune.onnx_export import export_onnx
from hwtune.precision import PrecisionPlan
from hwtune.profiler import ProfileReport, profile_model
from hwtune.profiler.roofline import ROOFLINE_LABEL

CONTRACT_KEYS = {
    "macs",
    "flops",
    "params",
    "weight_bytes",
    "peak_activation_bytes",
    "latency_ms",
    "latency_source",
    "latency",
    "runtime",
    "precision",
    "fits",
    "layers",
    "device",
}
SHAPE = (1, 1, 28, 28)


def test_host_fp32_is_measured_with_contract_keys(tiny_model: torch.nn.Module) -> None:
    r = profile_model(tiny_model, SHAPE, device="host", time_budget_s=0.5)
    d = json.loads(json.dumps(r.to_dict()))
    assert CONTRACT_KEYS <= set(d)
    assert d["latency_source"] == "measured" and r.measured
    assert d["runtime"] == "onnxruntime"
    assert d["latency"]["median_ms"] == d["latency_ms"] > 0
    assert d["latency"]["threads"] == hwtune.load_profile("host").threads
    assert d["latency_label"].startswith("measured on onnxruntime")
    assert set(d["fits"]) >= {"weights", "activations", "overall"} and d["fits"]["overall"] is True
    assert d["flops"] == 2 * d["macs"]
    assert d["params"] == sum(p.numel() for p in tiny_model.parameters())
    assert d["weight_bytes"] == 4 * d["params"]
    assert d["layers"] and {"name", "op_type", "output_shape", "macs", "params", "activation_bytes", "time_ms"} <= set(
        d["layers"][0]
    )
    assert d["layer_times_source"] == "measured"
    assert any(row["time_ms"] is not None for row in d["layers"])
    assert ProfileReport.from_dict(d).to_dict() == d


def test_torch_runtime_measures_eager(tiny_model: torch.nn.Module) -> None:
    r = profile_model(tiny_model, SHAPE, device="host", runtime="torch", time_budget_s=0.3, layers=False)
    assert r.latency_source == "measured" and r.runtime == "torch"
    assert r.layers == () and r.to_dict()["layers"] == []


def test_predict_device_is_never_labelled_measured(tiny_model: torch.nn.Module) -> None:
    for device in ("raspberry-pi-4", "jetson-nano", "pixel-3"):
        r = profile_model(tiny_model, SHAPE, device=device)
        assert r.latency_source in ("predicted", "estimated"), device
        assert "measured" not in r.latency_label
        assert r.latency_ms is not None and r.latency_ms > 0
        if r.latency_source == "predicted":
            assert r.latency_label.startswith("predicted (±")
        else:
            assert r.latency_label.startswith("estimated")


def test_uncalibrated_profile_gets_roofline_label(tiny_model: torch.nn.Module) -> None:
    import dataclasses

    profile = dataclasses.replace(hwtune.load_profile("raspberry-pi-4"), calibration=None)
    r = profile_model(tiny_model, SHAPE, device=profile)
    assert r.latency_source == "estimated"
    assert r.latency_label == ROOFLINE_LABEL


def test_no_latency_when_not_requested(tiny_model: torch.nn.Module) -> None:
    r = profile_model(tiny_model, SHAPE, device="host", measure=False)
    assert r.latency_source == "unavailable" and r.latency_ms is None and r.latency is None
    assert r.to_dict()["latency"]["source"] == "unavailable"


def test_mcu_int8_bytes_and_fit(tiny_model: torch.nn.Module) -> None:
    r = profile_model(tiny_model, SHAPE, device="stm32h743", precision="int8")
    fp32 = profile_model(tiny_model, SHAPE, device="stm32h743", precision="fp32", measure=False)
    assert r.precision == "int8" and r.fits.overall
    assert r.peak_activation_bytes * 4 == fp32.peak_activation_bytes
    assert r.weight_bytes < fp32.weight_bytes / 2  # 1 B weights + per-channel scales vs 4 B
    # The MCU does not run fp32: no latency rather than a made-up one.
    assert fp32.latency_source == "unavailable"


def test_mcu_int8_keeps_the_file_its_arena_was_measured_on(tmp_path, tiny_model: torch.nn.Module) -> None:
    import numpy as np

    from hwtune.runtimes import get_runtime

    rt = get_runtime("tflite-micro")
    if not rt.available():
        pytest.skip("TFLite Micro not installed (pip install 'hwtune[litert]')")
    calib = np.random.default_rng(1).standard_normal((8, *SHAPE[1:])).astype(np.float32)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    kw = {"device": "stm32h743", "precision": "int8", "measure": False, "layers": False}
    r = profile_model(tiny_model, SHAPE, calibration_data=calib, ship_to=tmp_path / "m.tflite", **kw)
    assert r.shipped is not None and r.shipped.path == tmp_path / "m.tflite" and r.shipped.path.is_file()
    assert r.working_memory_bytes == r.shipped.info["arena_bytes"] and r.storage_bytes == r.shipped.size_bytes
    assert "shipped" not in r.to_dict()
    # the weights are untouched, and the file is the one the runtime ships for them with that calibration
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    again = rt.export(tiny_model, torch.zeros(SHAPE), PrecisionPlan("int8"), tmp_path / "again.tflite", calibration=calib)
    assert again.path.read_bytes() == r.shipped.path.read_bytes()
    assert profile_model(tiny_model, SHAPE, **kw).shipped is None  # without ship_to nothing is kept


def test_fit_fails_when_weights_exceed_flash() -> None:
    big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4096))  # 3.2 M params > 2 MiB int8 flash
    r = profile_model(big, SHAPE, device="stm32h743", precision="int8", measure=False)
    assert not r.fits.weights and not r.fits.overall and r.fits.activations


def test_host_int8_measured_with_random_calibration_note(tiny_model: torch.nn.Module) -> None:
    r = profile_model(tiny_model, SHAPE, device="host", precision="int8", time_budget_s=0.3, layers=False)
    assert r.latency_source == "measured"
    assert any("random" in note for note in r.notes)


def test_mixed_precision_plan(tiny_model: torch.nn.Module) -> None:
    plan = PrecisionPlan("int8", (("stem", "fp32"),))
    r = profile_model(tiny_model, SHAPE, device="stm32h743", precision=plan, measure=False)
    by_name = {layer.name: layer for layer in r.layers}
    assert by_name["stem.0"].precision == "fp32" and by_name["body.0"].precision == "int8"
    assert r.precision == plan.label


def test_onnx_file_matches_torch_trace(tmp_path, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    r = profile_model(path, None, device="host", time_budget_s=0.3)
    ref = trace_layers(tiny_model, tiny_input)
    assert r.traced_with == "onnx" and r.input_shape == SHAPE
    assert r.macs == ref.total_macs
    assert r.peak_activation_bytes == ref.peak_activation_bytes
    assert r.latency_source == "measured" and r.layer_times_ms
    # BN is folded into the conv in the exported graph: fewer stored params than torch counts.
    assert r.params < ref.total_params
    est = profile_model(str(path), SHAPE, device="raspberry-pi-4")
    assert est.latency_source == "estimated" and est.latency_label == ROOFLINE_LABEL


def test_bad_inputs(tmp_path, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    with pytest.raises(
        ModelError, match=r"rejected input of shape 1x3x28x28: first layer 'stem.0' expects 1 input channels, got 3"
    ):
        profile_model(tiny_model, (1, 3, 28, 28), device="host", measure=False)
    with pytest.raises(ConfigError, match="input_shape must be positive integers"):
        profile_model(tiny_model, (1, 0, 28), device="host", measure=False)
    with pytest.raises(ConfigError, match="input_shape is required"):
        profile_model(tiny_model, None, device="host", measure=False)
    with pytest.raises(UnknownNameError, match="did you mean 'raspberry-pi-4'"):
        profile_model(tiny_model, SHAPE, device="raspbery-pi-4")
    with pytest.raises(ConfigError, match="precision"):
        profile_model(tiny_model, SHAPE, precision="int4")
    with pytest.raises(ConfigError, match="runtime"):
        profile_model(tiny_model, SHAPE, runtime="onnxruntim")
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    with pytest.raises(ModelError, match=r"expects shape Nx1x28x28, got 1x3x28x28"):
        profile_model(path, (1, 3, 28, 28), device="host")
    with pytest.raises(ConfigError, match="cannot run an ONNX file"):
        profile_model(path, SHAPE, device="host", runtime="torch")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        profile_model(bad, SHAPE, device="host")
