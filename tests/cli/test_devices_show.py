"""``hwtune devices show ID`` says what a predicted latency on the device is worth: its held-out error."""

from __future__ import annotations

import pytest

from hwtune.cli import main
from hwtune.cli.calibrate import calibration_lines
from hwtune.device import list_profiles, load_profile


@pytest.mark.parametrize("device", list_profiles())
def test_show_prints_the_calibrations_held_out_error(device, capsys):
    profile = load_profile(device)
    assert profile.calibration, f"bundled profile {device} has no calibration"
    assert main(["devices", "show", device]) == 0
    out = capsys.readouterr().out
    assert "latency predictor, held-out error" in out
    for line in calibration_lines(profile.calibration):  # form, error, Spearman, FLOPs alone, how measured
        assert f"  {line}\n" in out
    err = profile.calibration["error_pct"]
    assert f"{err:.3g}%" in out  # the figure itself, not only a heading


def test_a_measured_device_says_where_the_predictor_is_used(capsys):
    assert main(["devices", "show", "host"]) == 0
    out = capsys.readouterr().out
    assert "measured (onnxruntime)" in out and "used only where latency is predicted" in out


def test_an_uncalibrated_profile_says_it_has_no_error_bars(tmp_path, capsys):
    text = load_profile("raspberry-pi-5").path.read_text()
    assert "\n[calibration]" in text
    bare = tmp_path / "pi5-bare.toml"
    bare.write_text(text[: text.index("\n[calibration]")] + "\n")  # [calibration] is the file's last table
    assert load_profile(bare).calibration is None
    assert main(["devices", "show", str(bare)]) == 0
    out = capsys.readouterr().out
    assert "estimated (roofline, uncalibrated)" in out
    assert "none calibrated" in out and "no held-out error" in out
    assert "median err" not in out
