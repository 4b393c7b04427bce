"""Latency predictor: fitting math, file validation, profile writing, and the public API."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hwtune.errors import CalibrationError
from hwtune.predictor._features import features_from_spec
from hwtune.predictor._fit import (
    MIN_MICROBENCH_ROWS,
    fit_microbench,
    fit_scales,
    microbench_samples,
    read_microbench,
    read_networks_csv,
)
from hwtune.predictor._model import Coefficients, Hardware, OpCoefficients, design_vector, param_names

REPO = Path(__file__).resolve().parents[2]
ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _script():
    spec = importlib.util.spec_from_file_location("profile_device", REPO / "scripts" / "profile_device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def host_hw():
    from hwtune.device import load_profile

    return Hardware.from_profile(load_profile("raspberry-pi-4"))


def _truth() -> Coefficients:
    spec = Coefficients.spec()
    ops = {p: dict(t) for p, t in spec.ops.items()}
    ops["fp32"]["conv"] = OpCoefficients(3.0, 0.7, 2.0)
    ops["fp32"]["pwconv"] = OpCoefficients(2.5, 0.45, 1.5)
    ops["fp32"]["dwconv"] = OpCoefficients(2.0, 0.08, 0.9)
    ops["int8"]["conv"] = OpCoefficients(4.0, 0.5, 1.2)
    return Coefficients(ops=ops, run_overhead_us={"fp32": 8.0, "int8": 12.0, "fp16": 8.0},
                        eff_io={"fp32": 3.0, "int8": 0.5, "fp16": 1.0},
                        io_overhead_us={"fp32": 1.5, "int8": 4.0, "fp16": 2.0})


def test_microbench_fit_recovers_known_coefficients(host_hw):
    rows = _script().build_suite(("fp32", "int8"))
    samples = microbench_samples(rows)
    names = param_names()
    truth = _truth()
    theta = np.array(truth.theta(names))
    y = [float(np.dot(design_vector(f, n, host_hw, names), theta)) for f, n in samples]
    fit = fit_microbench(samples, y, host_hw, ridge=1e-6)
    for prec, key in (("fp32", "conv"), ("fp32", "pwconv"), ("fp32", "dwconv"), ("int8", "conv")):
        got, want = fit.coefficients.op(key, prec), truth.op(key, prec)
        assert got.eff_compute == pytest.approx(want.eff_compute, rel=0.05), (prec, key)
        assert got.overhead_us == pytest.approx(want.overhead_us, rel=0.10), (prec, key)
    # the chains separate the per-run cost, the per-crossing cost and the per-op overhead
    assert fit.coefficients.run_overhead_ms("fp32") * 1000 == pytest.approx(8.0, rel=0.10)
    assert fit.coefficients.run_overhead_ms("int8") * 1000 == pytest.approx(12.0, rel=0.10)
    assert fit.coefficients.io_overhead_ms("int8") * 1000 == pytest.approx(4.0, rel=0.10)
    assert fit.error_pct < 1.0  # noise-free data: held-out error is ~0 when the fit is right
    assert fit.spearman > 0.999


def test_calibrate_microbench_writes_lowering_and_statistic(tmp_path):
    from hwtune.device import load_profile
    from hwtune.predictor import calibrate_microbench, predict
    from hwtune.predictor._features import Lowering

    rows = _script().build_suite(("fp32", "int8"), "quick")
    hw = Hardware.from_profile(load_profile("host"))
    names = param_names()
    theta = np.array(_truth().theta(names))
    truth_lowering = Lowering(pad_channels=(("int8", 16, 16),))
    for r, (f, n) in zip(rows, microbench_samples(rows, truth_lowering)):
        r["min_ms"] = float(np.dot(design_vector(f, n, hw, names), theta))
        r["median_ms"] = 1.1 * r["min_ms"]
    results = tmp_path / "mb.json"
    results.write_text(json.dumps({"device": {"threads": 1, "cpu_model": "test"}, "results": rows}))
    out = tmp_path / "host.toml"
    report = calibrate_microbench(results, "host", out, statistic="min")
    table = tomllib.loads(out.read_text())["calibration"]
    assert table["statistic"] == "min" and table["method"] == "microbench"
    assert table["pad_channels"]["int8"] == [16, 16]  # the cross-validated choice finds the true blocks
    # fp32 has no padding in the truth; every fp32 output width in the suite is a multiple of 8,
    # so 8 fits exactly as well and the tie goes to the larger block
    assert table["pad_channels"].get("fp32", [1, 1]) in ([1, 1], [8, 1])
    assert table["error_pct"] < 1.0 and report.table["n_samples"] == len(rows)
    p = predict(torch_tiny(), (1, 1, 28, 28), device=out, precision="int8")
    assert p.source.startswith("predicted (calibrated: microbench")


def torch_tiny():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3)).eval()


def test_network_fit_recovers_three_scales(host_hw):
    from hwtune.predictor._fit import scaled_design

    rng = np.random.default_rng(0)
    samples = []
    for _ in range(8):
        feats = [features_from_spec(name=f"c{i}", op_type=op, precision="fp32", input_shapes=[(1, c, h, h)],
                                    output_shape=(1, c, h, h), macs=c * c * 9 * h * h if op == "conv" else 0,
                                    weight_bytes=4 * c * c * 9 if op == "conv" else 0, kernel_size=(3, 3))
                 for i, (op, c, h) in enumerate((rng.choice(["conv", "relu", "avgpool", "add"]), int(rng.choice([8, 16, 64])),
                                                 int(rng.choice([4, 16, 32]))) for _ in range(int(rng.integers(3, 12))))]
        samples.append((feats, 3 * 32 * 32))
    d, _ = scaled_design(samples, host_hw, Coefficients.spec())
    true = np.array([2.0, 5.0, 0.5])
    y = d @ true
    fit = fit_scales(samples, y, host_hw)
    assert [fit.scales[k] for k in ("overhead", "compute", "memory")] == pytest.approx(list(true), rel=1e-3)
    assert fit.error_pct < 0.1
    assert fit.validation.startswith("leave-one-out")


def test_predictions_monotone_in_macs_within_op_type():
    import torch

    from hwtune.predictor import predict_latency

    for device in ("raspberry-pi-4", "pixel-3", "host", "stm32h743"):
        for kernel in (1, 3):
            lat = [predict_latency(torch.nn.Sequential(torch.nn.Conv2d(8, c, kernel, padding=kernel // 2)), (1, 8, 16, 16),
                                   device=device) for c in (4, 8, 16, 32)]
            assert all(a < b for a, b in itertools.pairwise(lat)), (device, kernel, lat)


def test_profile_without_calibration_says_so(tiny_model):
    from hwtune.device import load_profile
    from hwtune.predictor import UNCALIBRATED_LABEL, predict

    bare = replace(load_profile("raspberry-pi-4"), calibration=None)
    p = predict(tiny_model, (1, 1, 28, 28), device=bare)
    assert p.source == UNCALIBRATED_LABEL == "estimated (roofline, uncalibrated)"
    assert p.status == "uncalibrated" and p.latency_source == "estimated" and p.error_pct is None
    assert p.latency_ms > 0
    calibrated = predict(tiny_model, (1, 1, 28, 28), device="raspberry-pi-4")
    assert calibrated.source.startswith("predicted (calibrated: networks")
    assert calibrated.error_pct is not None and calibrated.latency_source == "predicted"


def test_prediction_is_per_layer_and_round_trips(tiny_model):
    from hwtune.predictor import Prediction, predict

    p = predict(tiny_model, (1, 1, 28, 28), device="pixel-3", precision="int8")
    assert math.isclose(p.latency_ms, p.run_overhead_ms + p.boundary_ms + sum(x.latency_ms for x in p.per_layer))
    assert {x.op_type for x in p.per_layer} >= {"conv", "linear", "gap"}
    assert "int8 extrapolated from fp32" in p.source
    again = Prediction.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p


def test_public_api_on_nb201():
    import hwtune

    model = hwtune.create_model("nb201", {"arch": ARCH_A}, num_classes=10, in_channels=3, input_size=32)
    for device in ("raspberry-pi-4", "pixel-3", str(REPO / "profiles" / "jetson-nano.toml")):
        ms = hwtune.predict_latency(model, (1, 3, 32, 32), device=device, precision="fp32")
        assert isinstance(ms, float) and ms > 0


def test_dead_ops_are_not_charged():
    import hwtune
    from hwtune.predictor import predict

    # node 1's conv only feeds 'none' edges: exporters and runtimes drop it
    dead = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    live = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|"
    build = lambda a: hwtune.create_model("nb201", {"arch": a}, num_classes=10, in_channels=3, input_size=32)
    p_dead = predict(build(dead), (1, 3, 32, 32), device="raspberry-pi-4")
    p_live = predict(build(live), (1, 3, 32, 32), device="raspberry-pi-4")
    assert not any("edge_1_0" in x.name for x in p_dead.per_layer)
    assert any("edge_1_0" in x.name for x in p_live.per_layer)
    assert p_dead.latency_ms < p_live.latency_ms


# -- bad files --------------------------------------------------------------------------------


def _rows(n: int) -> list[dict]:
    return [{"id": f"c{i}", "op": "relu", "precision": "fp32", "input_shapes": [[1, 8, 4, 4 + i]],
             "output_shape": [1, 8, 4, 4 + i], "median_ms": 0.01 + 0.001 * i} for i in range(n)]


def test_bad_microbench_files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"results": [1, 2,')
    with pytest.raises(CalibrationError, match=r"bad\.json: not valid JSON \(line 1"):
        read_microbench(bad_json)

    few = tmp_path / "few.json"
    few.write_text(json.dumps({"results": _rows(3)}))
    with pytest.raises(CalibrationError, match=rf"few\.json: 3 usable row\(s\), need at least {MIN_MICROBENCH_ROWS}"):
        read_microbench(few)

    rows = _rows(30)
    rows[4]["median_ms"] = -1.0
    rows[7]["op"] = "convv"
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps({"results": rows}))
    with pytest.raises(CalibrationError) as exc:
        read_microbench(neg)
    lines = str(exc.value).splitlines()
    assert f"{neg}: row 5 (c4): column 'median_ms' must be a number > 0, got -1.0" in lines
    assert any(line.startswith(f"{neg}: row 8 (c7): column 'op'") and "did you mean 'conv'" in line for line in lines)

    csv_missing = tmp_path / "m.csv"
    csv_missing.write_text("id,op,precision\nc0,relu,fp32\n")
    with pytest.raises(CalibrationError, match=r"m\.csv: missing column\(s\) input_shapes, output_shape, median_ms"):
        read_microbench(csv_missing)


def test_bad_network_csvs(tmp_path):
    p = tmp_path / "nets.csv"
    p.write_text("arch,input_shape,latency_ms,colour\n" + f"{ARCH_A},1x3x32x32,5.0,red\n")
    with pytest.raises(CalibrationError, match=r"nets\.csv: unknown column 'colour'"):
        read_networks_csv(p)
    p.write_text("arch,input_shape\n" + f"{ARCH_A},1x3x32x32\n")
    with pytest.raises(CalibrationError, match=r"nets\.csv: missing column 'latency_ms'"):
        read_networks_csv(p)
    p.write_text("arch,input_shape,latency_ms\n" + "\n".join(f"{ARCH_A},1x3x32x32,{v}" for v in (5, -2, "x", 4, 3)))
    with pytest.raises(CalibrationError) as exc:
        read_networks_csv(p)
    msg = str(exc.value)
    assert f"{p}: row 3: column 'latency_ms' must be a number > 0, got '-2'" in msg
    assert f"{p}: row 4: column 'latency_ms' must be a number > 0, got 'x'" in msg
    p.write_text("arch,input_shape,latency_ms\n" + f"{ARCH_A},1x3x32x32,5\n")
    with pytest.raises(CalibrationError, match=r"nets\.csv: 1 network row\(s\), need at least 3"):
        read_networks_csv(p)


def test_bad_calibration_table_in_profile(tmp_path, tiny_model):
    from hwtune.predictor import predict
    from hwtune.predictor._toml import replace_table

    table = {"method": "microbench", "coefficients": {"fp32": {"conv": {"overhead_us": 10.0, "eff_compute": -0.5,
                                                                        "eff_memory": 1.0}}}}
    path = tmp_path / "pi5.toml"
    path.write_text(replace_table((REPO / "profiles" / "raspberry-pi-5.toml").read_text(), "calibration", table))
    with pytest.raises(CalibrationError, match=r"pi5\.toml: calibration\.coefficients\.fp32\.conv\.eff_compute must be a number > 0, got -0\.5"):
        predict(tiny_model, (1, 1, 28, 28), device=path)


# -- writing profiles -------------------------------------------------------------------------


def test_calibrate_writes_only_the_calibration_table(tmp_path):
    from hwtune.device import load_profile
    from hwtune.predictor import calibrate_spec
    from hwtune.predictor._toml import replace_table

    src = REPO / "profiles" / "raspberry-pi-4.toml"
    out = tmp_path / "pi.toml"
    report = calibrate_spec(src, out, error_pct=50.0)
    before = replace_table(src.read_text(), "calibration", None)
    after = replace_table(out.read_text(), "calibration", None)
    assert before == after  # every line outside [calibration] kept
    raw = tomllib.loads(out.read_text())
    assert raw["calibration"]["method"] == "spec" and raw["calibration"]["error_pct"] == 50.0
    from hwtune.predictor._forms import BASE_COLUMNS

    # the spec direction of the shipped prior (CPU and phone devices), priced at this profile's peak
    assert (load_profile(out).calibration["form"], load_profile(out).calibration["executes"]) == ("per_op", "eager")
    assert set(load_profile(out).calibration["form_coefficients"]) == set(BASE_COLUMNS)
    assert report.path == out


def test_cli_calibrate_networks(tmp_path, capsys):
    from hwtune.cli import calibrate
    from hwtune.device import load_profile

    csv_path = tmp_path / "nets.csv"
    archs = [ARCH_A, "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
             "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
             "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|none~2|"]
    csv_path.write_text("name,arch,input_shape,latency_ms\n" + "\n".join(
        f"n{i},{a},1x3x32x32,{v}" for i, (a, v) in enumerate(zip(archs, (54.8, 12.0, 30.1, 61.0)))))
    parser = argparse.ArgumentParser()
    calibrate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--networks", str(csv_path), "--base", "raspberry-pi-4",
                              "--out", str(tmp_path / "pi.toml")])
    assert calibrate.run(args) == 0
    out = capsys.readouterr().out
    assert "wrote [calibration] (networks, 4 samples)" in out
    prof = load_profile(tmp_path / "pi.toml")
    cal = prof.calibration
    assert cal["method"] == "networks" and cal["n_samples"] == 4
    # FLOPs' form unless a reference direction of the prior beats it leave-one-out
    assert (cal["form"], cal["executes"]) == ("macs", "eager") if cal["prior_pick"] == "flops" else cal["form"] == "per_op"
    assert f"chosen: {cal['choice']}" in out
    assert cal["validation"].startswith("leave-one-out over the 4 calibration networks")
    assert f"form: {cal['form']} ({cal['executes']} lowering)" in out
    lines = out.splitlines()
    hw_line = next(ln for ln in lines if ln.startswith("hwtune "))
    flops_line = next(ln for ln in lines if ln.startswith("FLOPs alone"))
    assert f"{cal['spearman']:.3g}" in hw_line and f"{cal['flops_spearman']:.3g}" in flops_line
    assert "no 'batch_size' column" in out  # the old CSV format loads, with a note
