"""benchmarks/_provenance.py: every benchmark figure says which machine, software and load it came from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))

import _provenance


def test_machine_info_records_cpu_isa_threads_versions_and_load():
    info = _provenance.machine_info(threads=3, packages=("pytest",))
    json.dumps(info)  # JSON-ready
    assert info["cpu_model"] and isinstance(info["isa"], list)
    assert set(info["isa_families"]) == {"avx2", "avx512", "vnni", "neon", "dotprod"}
    assert info["threads"] == 3 and info["cpus"] >= 1 and info["cpus_usable"] >= 1
    assert {"python", "hwtune", "numpy", "pytest"} <= set(info["versions"])
    assert len(info["loadavg"]) == 3 and info["recorded_at"].endswith("Z")


@pytest.mark.parametrize("load, word", [(0.1, "quiet"), (50.0, "loaded")])
def test_machine_info_says_whether_the_machine_was_loaded(monkeypatch, load, word):
    monkeypatch.setattr(_provenance.os, "getloadavg", lambda: (load, load, load))
    assert _provenance.machine_info()["load_note"].startswith(word)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_says_which_machine_produced_it(path):
    machine = json.loads(path.read_text()).get("machine")
    if isinstance(machine, str):
        assert machine.startswith("not recorded"), f"{path.name}: machine {machine!r}"
        return
    assert isinstance(machine, dict), f"{path.name} records no machine"
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}  # hwtune.hostcpu.HostCPU.to_dict()
    isa = machine.get("isa", cpu.get("isa"))
    assert (machine.get("cpu_model") or cpu.get("model")) and isinstance(isa, list), (
        f"{path.name}: machine must name the CPU model and its ISA flags (benchmarks/_provenance.machine_info()), "
        f"got keys {sorted(machine)}")
