"""``hwtune profile``: every bad input is one line on stderr with exit code 2; JSON and table output."""

from __future__ import annotations

import json

import pytest
import torch
from support import cli_error

from hwtune.cli import main
from hwtune.cli.profile import parse_input_shape
from hwtune.errors import ConfigError
from hwtune.onnx_export import export_onnx

SMALL = ["torchvision:mobilenet_v2", "--arg", "width_mult=0.35", "--input", "1x3x32x32"]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("hwtune: ") or "error" in line]
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("hwtune: error:")]
    assert len(errors) == 1 and len(lines) == 1, err  # one line, no traceback
    return errors[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["profile", "torchvision:mobilenet_v2", "--input", "1x3xabc"], "--input must be positive integers"),
        (["profile", "torchvision:mobilenet_v2", "--input", "1x0x32x32"], "--input must be positive integers"),
        (["profile", "torchvision:mobilenet_v5"], "did you mean 'mobilenet_v2'"),
        (["profile", "torchvision:mobilenet_v2", "--device", "raspbery-pi-4"], "did you mean 'raspberry-pi-4'"),
        (["profile", "/nonexistent/model.onnx"], "ONNX file not found"),
        (["profile", "torchvision:mobilenet_v2", "--precision", "int4"], "did you mean 'int8'"),
        (
            ["profile", "torchvision:mobilenet_v2", "--runtime", "tensorflow"],
            "--runtime must be a registered runtime",
        ),
        (["profile", "torchvision:mobilenet_v2", "--arg", "width_mult"], "--arg must be key=value"),
        (["profile", "torchvision:mobilenet_v2", "--arg", "nope=1", "--no-latency"], "rejected its arguments"),
        (["profile", "keras:mobilenet"], "MODEL must be torchvision:<builder> or a path to an .onnx file"),
        ([*["profile", *SMALL[:3]], "--input", "1x1x32x32", "--no-latency"], "expects 3 input channels, got 1"),
    ],
)
def test_bad_inputs_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert expected in _error(capsys, argv)


def test_unreadable_onnx(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage")
    assert "not a readable ONNX model" in _error(capsys, ["profile", str(bad)])


def test_wrong_input_for_onnx_file(
    tmp_path, capsys: pytest.CaptureFixture[str], tiny_model: torch.nn.Module, tiny_input: torch.Tensor
) -> None:
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    line = _error(capsys, ["profile", str(path), "--input", "1x3x28x28"])
    assert "expects shape Nx1x28x28, got 1x3x28x28" in line


def test_parse_input_shape() -> None:
    assert parse_input_shape("1x3x224x224") == (1, 3, 224, 224)
    for bad in ("", "x", "1x-3", "1.5x3", "axb"):
        with pytest.raises(ConfigError):
            parse_input_shape(bad)


def test_json_output_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", *SMALL, "--device", "host", "--json", "--budget-s", "0.5"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {
        "macs",
        "flops",
        "params",
        "weight_bytes",
        "peak_activation_bytes",
        "latency_ms",
        "latency_source",
        "runtime",
        "precision",
        "fits",
        "layers",
    } <= set(d)
    assert d["latency_source"] == "measured" and d["runtime"] == "onnxruntime" and d["latency_ms"] > 0
    assert d["model"] == "torchvision:mobilenet_v2" and d["input_shape"] == [1, 3, 32, 32]


def test_table_output_predict_device_with_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", *SMALL, "--device", "raspberry-pi-4", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "measured" not in out.split("latency", 1)[1].splitlines()[0]
    assert ("predicted (±" in out) or ("estimated (" in out)
    assert "features.0.0" in out and "(fused)" in out


def test_onnx_file_table(
    tmp_path, capsys: pytest.CaptureFixture[str], tiny_model: torch.nn.Module, tiny_input: torch.Tensor
) -> None:
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    assert main(["profile", str(path), "--device", "host", "--budget-s", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "measured on onnxruntime (1 thread)" in out
    assert "1x1x28x28" in out


@pytest.mark.slow
def test_issue_acceptance_mobilenet_v2_224(capsys: pytest.CaptureFixture[str]) -> None:
    """``hwtune profile torchvision:mobilenet_v2 --device host --input 1x3x224x224 --json``."""
    argv = [
        "profile",
        "torchvision:mobilenet_v2",
        "--device",
        "host",
        "--input",
        "1x3x224x224",
        "--json",
        "--budget-s",
        "3",
    ]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["macs"] == pytest.approx(300.8e6, rel=0.001)
    assert d["params"] == pytest.approx(3.5e6, rel=0.01)
    assert d["latency_source"] == "measured" and d["latency_ms"] > 0
    assert main([*argv, "--runtime", "torch"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["latency_source"] == "measured" and d["runtime"] == "torch"


def test_latency_predict_on_host_says_when_the_calibration_is_from_another_cpu(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwtune import hostcpu

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: sse4_2 avx fma f16c avx2 avx512f avx512_vnni\n")
    monkeypatch.setattr(hostcpu, "CPUINFO", fake)
    monkeypatch.setattr(hostcpu.platform, "system", lambda: "Linux")
    hostcpu.detect_cpu.cache_clear()
    try:
        assert main(["profile", *SMALL, "--latency", "predict", "--json"]) == 0
    finally:
        hostcpu.detect_cpu.cache_clear()
    d = json.loads(capsys.readouterr().out)
    assert d["latency_source"] == "predicted"
    assert "calibrated on AMD EPYC with AVX2, not this CPU (AMD EPYC with AVX2, AVX-512, VNNI)" in d["latency_label"]
    assert "--latency measure: raspberry-pi-4 is a remote device" in _error(
        capsys, ["profile", *SMALL, "--device", "raspberry-pi-4", "--latency", "measure"])


def test_usage_error_names_a_value_that_starts_with_a_dash(capsys):
    line = cli_error(capsys, ["profile", "torchvision:resnet18", "--input", "-1x3x224x224"])
    assert "'-1x3x224x224'" in line
