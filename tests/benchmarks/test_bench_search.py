"""benchmarks/bench_search.py: the jobs it launches and what it concludes from the runs' rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_search


def _args(tmp_path: Path, workers: int) -> argparse.Namespace:
    return argparse.Namespace(
        runs_dir=str(tmp_path),
        parent_epochs=1.0,
        threads=1,
        recipe="fashion-convnet",
        device="host",
        epochs=1.0,
        workers=workers,
    )


def _row(method: str, seed: int, budget_s: float, hv: float, acc: float | None = None) -> dict:
    return {
        "method": method,
        "seed": seed,
        "budget_s": budget_s,
        "hypervolume": hv,
        "trials": 10 + seed,
        "best_accuracy_under_budget": acc,
        "seconds_per_candidate_median": 4.0 + seed,
    }


def test_every_round_of_runs_is_equally_loaded(tmp_path):
    plan = bench_search.Plan(["hwtune", "random"], [0, 1, 2], {"hwtune": 60.0, "random": 30.0}, {})
    jobs = bench_search._jobs(_args(tmp_path, 2), plan, {})
    real = [j for j in jobs if not j.get("filler")]
    assert [(j["method"], j["seed"], j["budget_s"]) for j in real[:2]] == [("hwtune", 0, 60.0), ("random", 0, 30.0)]
    assert len(real) == 6 and len(jobs) == 6  # a multiple of the workers: no filler
    jobs = bench_search._jobs(_args(tmp_path, 4), plan, {})
    fillers = [j for j in jobs if j.get("filler")]
    assert len(jobs) == 8 and len(fillers) == 2
    assert {j["method"] for j in fillers} == {"random"} and len({j["out_dir"] for j in jobs}) == 8


def test_the_summary_is_per_method_and_checkpoint():
    rows = [_row("hwtune", 0, 60.0, 0.70, 0.88), _row("hwtune", 1, 60.0, 0.74, None), _row("random", 0, 60.0, 0.60)]
    summary = bench_search._summarise(rows, ["hwtune", "random"], [30.0, 60.0])
    assert set(summary["hwtune"]) == {"60.0"}  # no row at 30 s: no entry
    h = summary["hwtune"]["60.0"]
    assert h["hv_mean"] == pytest.approx(0.72) and (h["hv_min"], h["hv_max"]) == (0.70, 0.74)
    assert h["best_accuracy_under_budget_mean"] == 0.88  # the run without one is left out
    assert h["trials_mean"] == 10.5 and h["seconds_per_candidate_median"] == 4.5
    assert summary["random"]["60.0"]["best_accuracy_under_budget_mean"] is None


def test_claims_compare_hwtune_with_each_other_method_and_inherit_with_scratch():
    rows = [_row("hwtune", 0, 60.0, 0.70), _row("random", 0, 60.0, 0.56), _row("inherit", 0, 60.0, 0.65)]
    methods = ["inherit", "hwtune", "random"]
    claims = bench_search._claims(bench_search._summarise(rows, methods, [60.0]), methods, [60.0], None)
    assert "inherit at 60 s HV 0.6500 < scratch (hwtune) at 60 s HV 0.7000" in claims
    assert "at 60 s hwtune HV 0.7000 vs random 0.5600 (+0.1400, +25.0%)" in claims
    assert "at 60 s hwtune HV 0.7000 vs inherit 0.6500 (+0.0500, +7.7%)" in claims
    assert len(claims) == 3
