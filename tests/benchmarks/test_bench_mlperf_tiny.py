"""benchmarks/bench_mlperf_tiny.py: the report is written only from the stages whose rows it reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_mlperf_tiny


def test_a_report_without_its_stages_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    argv = ["bench_mlperf_tiny.py", "--data", str(tmp_path), "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr(sys, "argv", [*argv, "--results", str(results), "--stages", "eval-time,report"])
    with pytest.raises(SystemExit) as exit_info:
        bench_mlperf_tiny.main()
    assert exit_info.value.code == 2
    assert "--stages report needs search,front,compress,curve" in capsys.readouterr().err
    assert not results.exists() and not (tmp_path / "cache").exists()
