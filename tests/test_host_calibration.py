"""hwtune calibrate --host (hwtune.host_calibration): measure here, write the user 'host' profile that then serves."""

from __future__ import annotations

import json

import pytest

from hwtune.cli import main
from hwtune.device import calibrated_elsewhere, load_profile, profile_origin
from hwtune.hostcpu import detect_cpu


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "hwtune" / "profiles"


@pytest.mark.slow
def test_calibrate_host_writes_a_user_profile_that_serves_device_host(config_dir, capsys):
    # the quick suite (87 micro-benchmarks) on a 2-second budget (~20 s on 2 loaded cores with the device
    # script's fixed costs): the same path as the full run
    assert main(["calibrate", "--host", "--quick", "--budget-s", "2", "--json"]) == 0
    captured = capsys.readouterr()
    written = json.loads(captured.out)
    assert "measuring this machine: 87 micro-benchmarks" in captured.err and "pass 2/2" in captured.err
    assert written["path"] == str(config_dir / "host.toml") and written["seconds"] < 60
    assert json.loads((config_dir / "host_microbench.json").read_text())["device"]["threads"] == 1
    host = load_profile("host")
    assert profile_origin(host) == "user" and host.path == config_dir / "host.toml"
    assert host.detected and host.latency_source == "measure"
    cal = host.calibration
    assert cal["method"] == "microbench" and cal["n_samples"] >= 80 and cal["source"] == "host_microbench.json"
    cpu = detect_cpu()
    assert cal["hardware"]["cpu_model"] == cpu.model and cal["hardware"]["isa"] == list(cpu.isa)
    assert calibrated_elsewhere(host) == ""  # fitted on this CPU: predictions carry no "not this CPU"
    assert main(["devices"]) == 0
    assert f"user: {config_dir / 'host.toml'}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--host", "--budget-s", "0.5"], "--budget-s must be >= 2 seconds for --host, got 0.5"),
    (["--host", "--base", "pixel-3"], "--base must be omitted, got 'pixel-3'"),
    (["--host", "--spec"], "exactly one of RESULTS (micro-benchmarks), --networks CSV, --spec or --host, got 2"),
    (["--spec", "--base", "jetson-nano"], "hwtune calibrate needs --out (except with --host)"),
])
def test_calibrate_host_bad_arguments_are_one_line_exit_2(config_dir, capsys, argv, message):
    assert main(["calibrate", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (config_dir / "host.toml").exists()
