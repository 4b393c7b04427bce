from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import BINARY, REPO_ROOT, cli_error

import hwtune
from hwtune.device import DeviceProfile, list_profiles, load_profile
from hwtune.errors import ConfigError, UnknownNameError

BUNDLED = list_profiles(user=False)
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


# --- user profiles (the user config dir) shadow bundled ones by id --------------------------------

@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = tmp_path / "config" / "hwtune" / "profiles"
    folder.mkdir(parents=True)
    return folder


def test_user_profile_dir_follows_xdg(user_dir):
    from hwtune.device import user_profile_dir

    assert user_profile_dir() == user_dir


def test_user_profile_shadows_bundled_of_same_id_and_adds_new_ids(user_dir):
    from hwtune.device import profile_origin

    (user_dir / "board.toml").write_text(GOOD)
    pi = (Path(hwtune.__file__).parent.parent / "profiles" / "raspberry-pi-4.toml").read_text()
    (user_dir / "raspberry-pi-4.toml").write_text(pi.replace("ram_kb = 4194304", "ram_kb = 1048576"))
    assert "board" in list_profiles() and "board" not in list_profiles(user=False)
    mine = load_profile("raspberry-pi-4")
    assert mine.path == user_dir / "raspberry-pi-4.toml" and profile_origin(mine) == "user"
    assert mine.ram_bytes == 1048576 * 1024
    assert profile_origin(load_profile("pixel-3")) == "bundled"
    assert profile_origin(load_profile(user_dir / "board.toml")) == "user"


def test_bad_user_profile_is_one_line_naming_file_key_and_value(user_dir):
    host = (Path(hwtune.__file__).parent.parent / "profiles" / "host.toml").read_text()
    (user_dir / "host.toml").write_text(host.replace("bandwidth_gbps = 20.0", "bandwidth_gbps = -1"))
    with pytest.raises(ConfigError) as err:
        load_profile("host")
    assert str(err.value) == f"{user_dir / 'host.toml'}: memory.bandwidth_gbps must be a number > 0, got -1"


def test_user_profile_id_must_match_its_file_name(user_dir):
    (user_dir / "pixel-3.toml").write_text(GOOD)  # id = "board"
    with pytest.raises(ConfigError, match=r"pixel-3.toml: id must be the file's name 'pixel-3'.*got 'board'"):
        load_profile("pixel-3")


# --- a host profile fitted on another CPU says so -------------------------------------------------

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx fma f16c avx2 bmi2\n"
VNNI_EPYC = AVX2_EPYC.replace("bmi2", "avx512f avx512_vnni")


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """``cpu(text)``: the machine's /proc/cpuinfo reads ``text`` from now on (the detection cache is reset)."""
    from hwtune import hostcpu

    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(hostcpu, "CPUINFO", fake)
    monkeypatch.setattr(hostcpu.platform, "system", lambda: "Linux")

    def use(text: str) -> None:
        fake.write_text(text)
        hostcpu.detect_cpu.cache_clear()

    yield use
    hostcpu.detect_cpu.cache_clear()


def test_bundled_host_records_the_cpu_it_was_calibrated_on():
    hw = load_profile("host").calibration["hardware"]
    assert hw["cpu_model"] and "avx2" in hw["isa"] and "avx512_vnni" not in hw["isa"]


def test_host_calibrated_on_this_cpu_carries_no_note(cpu):
    from hwtune.device import calibrated_elsewhere

    cpu(AVX2_EPYC)
    assert calibrated_elsewhere(load_profile("host")) == ""


def test_host_calibrated_on_another_cpu_is_labelled_everywhere_it_is_predicted(cpu):
    import dataclasses

    import torch

    from hwtune.device import calibrated_elsewhere
    from hwtune.predictor import predict_latency
    from hwtune.profiler import profile_model

    cpu(VNNI_EPYC)
    host = load_profile("host")
    note = calibrated_elsewhere(host)
    assert note == "calibrated on AMD EPYC with AVX2, not this CPU (AMD EPYC with AVX2, AVX-512, VNNI)"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    pred = predict_latency(net, (1, 3, 16, 16), device=host)
    assert note in pred.label and any(note in n for n in pred.notes)
    report = profile_model(net, (1, 3, 16, 16), device=dataclasses.replace(host, latency_source="predict"))
    assert report.latency_source == "predicted" and note in report.latency_label
    cpu(AVX2_EPYC)
    again = predict_latency(net, (1, 3, 16, 16), device=load_profile("host"))
    assert "not this CPU" not in again.label


def test_remote_profiles_never_carry_the_host_note(cpu):
    from hwtune.device import calibrated_elsewhere

    cpu(VNNI_EPYC)
    assert all(calibrated_elsewhere(load_profile(p)) == "" for p in BUNDLED if p != "host")


def test_a_host_calibration_without_its_cpu_recorded_says_so(tmp_path, cpu):
    from hwtune.device import calibrated_elsewhere

    cpu(AVX2_EPYC)
    text = (Path(hwtune.__file__).parent.parent / "profiles" / "host.toml").read_text()
    old = tmp_path / "old-host.toml"
    old.write_text(text.replace('isa = ["sse4_2", "avx", "avx2", "fma", "f16c"]\n', ""))
    assert "did not record" in calibrated_elsewhere(load_profile(old))


# -- bad profile files (a binary file, unsafe ids) ----------------------------------------------------


def test_binary_profile_is_one_line_naming_the_file(tmp_path, capsys):
    from hwtune.device import load_profile

    bad = tmp_path / "board.toml"
    bad.write_bytes(BINARY)
    with pytest.raises(ConfigError, match=r"board\.toml: not a text file .*expected a profile in TOML"):
        load_profile(bad)
    assert "board.toml" in cli_error(capsys, ["devices", "show", str(bad)])
    assert "is a directory" in cli_error(capsys, ["devices", "show", str(tmp_path) + "/"])


@pytest.mark.parametrize("bad_id", ["../x", "a/b", ".hidden", "with space"])
def test_profile_ids_are_safe_names(tmp_path, bad_id):
    from hwtune.device import DeviceProfile, load_profile

    text = (REPO_ROOT / "profiles" / "stm32h743.toml").read_text().replace('id = "stm32h743"', f"id = {json.dumps(bad_id)}")
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"board\.toml: id must be a name of"):
        load_profile(path)
    stored = {**load_profile("stm32h743").to_dict(), "id": bad_id}
    with pytest.raises(ConfigError, match="id must be a name of"):
        DeviceProfile.from_dict(stored, source="study x")
