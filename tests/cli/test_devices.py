from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hwtune.cli import main
from hwtune.device import list_profiles


def test_devices_json_lists_every_bundled_profile(capsys):
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == list_profiles()
    for row in rows:
        assert {"id", "kind", "latency_source", "ram_bytes", "storage_bytes", "precisions"} <= set(row)
        assert row["latency_source"] in ("measure", "predict")
        assert isinstance(row["ram_bytes"], int) and row["ram_bytes"] > 0
    host = next(r for r in rows if r["id"] == "host")
    assert host["latency_source"] == "measure"


def test_devices_table_labels_latency_source(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "measured (onnxruntime)" in out
    assert "stm32h743" in out


def test_devices_show_json(capsys):
    assert main(["devices", "show", "stm32h743", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == "stm32h743" and data["precisions"] == ["int8"]


def test_devices_show_text(capsys):
    assert main(["devices", "show", "raspberry-pi-4"]) == 0
    out = capsys.readouterr().out
    assert "Cortex-A72" in out and "source:" in out


def test_unknown_device_is_one_line_exit_2(capsys):
    assert main(["devices", "show", "raspbery-pi-4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown device 'raspbery-pi-4'" in err and "did you mean 'raspberry-pi-4'" in err


def test_malformed_profile_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\nkind = "cpu"\n[memory]\nram_kb = -5\n')
    assert main(["devices", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "memory.ram_kb must be an integer > 0, got -5" in err and "missing required key 'name'" in err


@pytest.mark.parametrize("debug", [False, True])
def test_console_error_has_traceback_only_with_debug(debug):
    args = [sys.executable, "-m", "hwtune"] + (["--debug"] if debug else []) + ["devices", "show", "nope"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == (1 if debug else 2)
    assert ("Traceback" in proc.stderr) is debug


def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    folder = tmp_path / "hwtune" / "profiles"
    folder.mkdir(parents=True)
    return folder


def test_devices_says_which_file_each_id_uses(tmp_path, monkeypatch, capsys):
    from hwtune.device import profile_files

    folder = _user_dir(tmp_path, monkeypatch)
    (folder / "pixel-3.toml").write_text(profile_files(user=False)["pixel-3"].read_text())
    assert main(["devices", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pixel-3"]["origin"] == "user" and rows["pixel-3"]["path"] == str(folder / "pixel-3.toml")
    assert rows["raspberry-pi-4"]["origin"] == "bundled"
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert f"user: {folder / 'pixel-3.toml'}" in out and str(folder) in out.splitlines()[-1]
    assert main(["devices", "show", "pixel-3"]) == 0
    assert f"user: {folder / 'pixel-3.toml'}" in capsys.readouterr().out


def test_devices_with_a_bad_user_profile_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    folder = _user_dir(tmp_path, monkeypatch)
    (folder / "host.toml").write_text('schema_version = 1\nid = "host"\nkind = "tpu"\n')
    assert main(["devices"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"hwtune: error: {folder / 'host.toml'}: kind must be one of cpu, gpu, npu, mcu, got 'tpu'")


def test_devices_show_host_says_when_its_calibration_is_from_another_cpu(monkeypatch, capsys):
    import hwtune.cli.devices as devices_cli

    monkeypatch.setattr(devices_cli, "calibrated_elsewhere", lambda p: "calibrated on X with AVX2, not this CPU (Y)")
    assert main(["devices", "show", "host"]) == 0
    assert "calibrated on X with AVX2, not this CPU (Y): its predictions describe that CPU" in capsys.readouterr().out
