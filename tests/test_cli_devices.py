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
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == (1 if debug else 2)
    assert ("Traceback" in proc.stderr) is debug
