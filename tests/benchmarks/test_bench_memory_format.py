"""benchmarks/bench_memory_format.py: what a margin would have cost, from races and timed epochs."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_memory_format


def _row(contiguous: float, channels_last: float, *races: float) -> dict:
    return {"epoch_s": {"contiguous": contiguous, "channels_last": channels_last}, "races": list(races)}


def test_a_margin_above_a_members_gain_keeps_it_on_the_slower_format():
    rows = [_row(11.2, 10.0, 1.12, 1.14, 1.09), _row(10.0, 12.6, 0.79, 0.80, 0.78)]
    by = {s["margin"]: s for s in bench_memory_format.summarize(rows, (1.0, 1.05, 1.15))}
    assert [by[m]["wrong"] for m in (1.0, 1.05, 1.15)] == [0, 0, 3]
    assert by[1.05]["mean_extra_pct"] == 0.0 and by[1.05]["races"] == 6
    assert by[1.15]["mean_extra_pct"] == 6.0  # three of six races cost 12% each


def test_a_race_on_the_wrong_side_of_the_margin_costs_its_members_difference():
    rows = [_row(10.0, 10.5, 1.06)]  # channels-last 5% slower, but the race read 1.06x
    (s,) = bench_memory_format.summarize(rows, (1.05,))
    assert s["wrong"] == 1 and s["mean_extra_pct"] == 5.0
