from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwtune
from hwtune.device import DeviceProfile, list_profiles, load_profile
from hwtune.errors import ConfigError, UnknownNameError

BUNDLED = list_profiles()
REQUIRED = {"host", "raspberry-pi-4", "raspberry-pi-5", "pixel-3", "jetson-nano", "stm32h743"}


def test_required_profiles_are_bundled():
    assert REQUIRED <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profile_loads_validates_and_round_trips(name):
    profile = load_profile(name)
    assert profile.id == name
    assert profile.ram_bytes > 0 and profile.storage_bytes > 0
    assert profile.precisions and all(p in profile.peak_gflops for p in profile.precisions)
    assert profile.latency_source in ("measure", "predict")
    # every spec number carries a public source
    assert profile.sources
    data = json.loads(json.dumps(profile.to_dict()))
    again = DeviceProfile.from_dict(data, source=name)
    assert again == profile


@pytest.mark.parametrize("name", sorted(REQUIRED - {"host"}))
def test_remote_devices_are_predicted_not_measured(name):
    assert load_profile(name).latency_source == "predict"


def test_host_is_detected_and_measured():
    host = load_profile("host")
    assert host.detected and host.latency_source == "measure"
    assert host.cores >= 1 and host.clock_ghz > 0
    assert host.cpu_model
    assert host.threads <= host.cores


def test_microcontroller_is_int8_only_with_small_sram():
    mcu = load_profile("stm32h743")
    assert mcu.kind == "mcu" and mcu.precisions == ("int8",)
    assert mcu.ram_bytes == 512 * 1024 and mcu.storage_bytes == 2 * 1024 * 1024


def test_unknown_device_suggests_close_match():
    with pytest.raises(UnknownNameError, match="did you mean 'raspberry-pi-4'"):
        load_profile("raspbery-pi-4")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


GOOD = """
schema_version = 1
id = "board"
name = "Board"
kind = "cpu"
latency = "predict"
runtime = "onnxruntime"
precisions = ["fp32", "int8"]
[compute]
cores = 2
clock_ghz = 1.0
peak_gflops = { fp32 = 10.0, int8 = 20.0 }
[memory]
ram_kb = 1024
storage_kb = 4096
bandwidth_gbps = 2.0
[sources]
spec = "datasheet"
"""


def test_user_profile_from_path(tmp_path):
    profile = load_profile(_write(tmp_path, GOOD))
    assert profile.id == "board" and profile.threads == 2 and profile.ram_bytes == 1024 * 1024


def test_every_problem_reported_at_once_with_file_key_and_value(tmp_path):
    bad = GOOD.replace("ram_kb = 1024", "ram_kb = -1").replace('kind = "cpu"', 'kind = "toaster"')
    bad = bad.replace("clock_ghz = 1.0", "clock_ghz = 1.0\nclok_mhz = 3")
    with pytest.raises(ConfigError) as info:
        load_profile(_write(tmp_path, bad))
    msg = str(info.value)
    assert "board.toml: memory.ram_kb must be an integer > 0, got -1" in msg
    assert "kind must be one of cpu, gpu, npu, mcu, got 'toaster'" in msg
    assert "unknown key 'compute.clok_mhz'" in msg
    assert len(msg.splitlines()) == 3


def test_malformed_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"board.toml: not valid TOML"):
        load_profile(_write(tmp_path, "id = [unclosed"))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(tmp_path / "nope.toml")


def test_remote_profile_cannot_claim_measured_latency(tmp_path):
    with pytest.raises(ConfigError, match="only possible for this machine"):
        load_profile(_write(tmp_path, GOOD.replace('latency = "predict"', 'latency = "measure"')))


def test_peak_needed_for_each_precision(tmp_path):
    with pytest.raises(ConfigError, match="missing 'int8'"):
        load_profile(_write(tmp_path, GOOD.replace(", int8 = 20.0", "")))


def test_errors_subclass_builtins():
    assert issubclass(ConfigError, ValueError) and issubclass(UnknownNameError, LookupError)
    assert issubclass(UnknownNameError, hwtune.HwtuneError)
