"""Batch size and input shape: stated per calibration row, scaled through the model at prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwtune.errors import CalibrationError
from hwtune.predictor._fit import read_networks_csv

REPO = Path(__file__).resolve().parents[2]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _csv(tmp_path: Path, header: str, rows: list[str]) -> Path:
    p = tmp_path / "nets.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_batch_column_sets_the_shape(tmp_path):
    p = _csv(tmp_path, "arch,batch_size,input_shape,latency_ms",
             [f"{ARCH},4,3x32x32,20.0", f"{ARCH},1,1x3x32x32,6.0", f"{ARCH},2,2x3x32x32,11.0"])
    rows, notes = read_networks_csv(p, with_notes=True)
    assert [r.input_shape for r in rows] == [(4, 3, 32, 32), (1, 3, 32, 32), (2, 3, 32, 32)]
    assert [r.batch_size for r in rows] == [4, 1, 2] and notes == []


def test_a_csv_without_the_batch_column_loads_as_batch_1_with_a_note(tmp_path):
    p = _csv(tmp_path, "arch,input_shape,latency_ms", [f"{ARCH},1x3x32x32,6.0", f"{ARCH},3x32x32,6.1",
                                                       f"{ARCH},1x3x32x32,5.9"])
    rows, notes = read_networks_csv(p, with_notes=True)
    assert {r.batch_size for r in rows} == {1}
    assert len(notes) == 1 and "no 'batch_size' column" in notes[0] and "batch 1" in notes[0]
    assert read_networks_csv(p) == rows  # the old call still returns the rows


def test_contradicting_batch_and_shape_are_reported(tmp_path):
    p = _csv(tmp_path, "arch,batch_size,input_shape,latency_ms",
             [f"{ARCH},4,2x3x32x32,20.0", f"{ARCH},zero,3x32x32,6.0", f"{ARCH},1,32x32,6.0", f"{ARCH},1,3x32x32,6.0"])
    with pytest.raises(CalibrationError) as exc:
        read_networks_csv(p)
    lines = str(exc.value).splitlines()
    assert f"{p}: row 2: input_shape '2x3x32x32' has batch 2 but batch_size is 4; give input_shape without the " \
           "batch (e.g. 3x32x32) or make them agree" in lines
    assert any("row 3: column 'batch_size' must be an integer >= 1, got 'zero'" in ln for ln in lines)
    assert any("row 4: column 'input_shape' must be a CHW or NCHW shape" in ln for ln in lines)


def _macs_profile(tmp_path: Path, batches: list[int]) -> Path:
    from hwtune.predictor._toml import replace_table

    table = {"method": "networks", "form": "macs", "form_coefficients": {"compute": 4.0, "intercept_ms": 0.5},
             "n_samples": 10, "error_pct": 5.0, "spearman": 0.95, "precisions": ["fp32"], "batch_sizes": batches}
    path = tmp_path / "dev.toml"
    path.write_text(replace_table((REPO / "profiles" / "raspberry-pi-4.toml").read_text(), "calibration", table))
    return path


def test_another_batch_scales_through_the_model_and_says_so(tmp_path):
    from hwtune.predictor import predict, predict_latency_detail

    path = _macs_profile(tmp_path, [1])
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)).eval()
    one = predict_latency_detail(net, (1, 3, 16, 16), device=path)
    four = predict_latency_detail(net, (4, 3, 16, 16), device=path)
    assert one.notes == () and one.batch_size == 1
    # compute grows with the batch (MACs x4), the per-run intercept does not
    assert float(four) - 0.5 == pytest.approx(4 * (float(one) - 0.5), rel=1e-9)
    assert four.batch_size == 4 and len(four.notes) == 1
    assert "batch 4 is outside the calibration's batch sizes (1)" in four.notes[0]
    full = predict(net, (4, 3, 16, 16), device=path)
    assert full.notes == four.notes and full.batch_size == 4
    measured_at_4 = _macs_profile(tmp_path, [1, 4])
    assert predict_latency_detail(net, (4, 3, 16, 16), device=measured_at_4).notes == ()


def test_networks_calibration_records_its_batches(tmp_path):
    from hwtune.device import load_profile
    from hwtune.predictor import calibrate_networks

    archs = [ARCH, "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
             "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
             "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|none~2|"]
    rows = [f"{a},{b},3x32x32,{v * b}" for a, v in zip(archs, (54.8, 12.0, 30.1, 61.0)) for b in (1, 2)]
    p = _csv(tmp_path, "arch,batch_size,input_shape,latency_ms", rows)
    report = calibrate_networks(p, "raspberry-pi-4", tmp_path / "pi.toml")
    assert report.table["batch_sizes"] == [1, 2] and report.notes == ()
    assert load_profile(tmp_path / "pi.toml").calibration["batch_sizes"] == [1, 2]


def test_a_profile_whose_hardware_changed_since_calibration_says_so(tmp_path):
    from hwtune.predictor import predict_latency_detail
    from hwtune.predictor._toml import replace_table

    table = {"method": "networks", "form": "macs", "form_coefficients": {"compute": 4.0, "intercept_ms": 0.5},
             "precisions": ["fp32"], "batch_sizes": [1], "hardware": {"peak_gflops": {"fp32": 48.0}, "bandwidth_gbps": 12.8}}
    path = tmp_path / "dev.toml"
    path.write_text(replace_table((REPO / "profiles" / "raspberry-pi-4.toml").read_text(), "calibration", table))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).eval()
    notes = predict_latency_detail(net, (1, 3, 16, 16), device=path).notes
    assert len(notes) == 1 and "peak fp32 48 -> 96 GFLOP/s" in notes[0] and "re-calibrate" in notes[0]
