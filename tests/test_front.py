"""Front, hypervolume, knee and promotion logic on hand-made trial records (no Optuna, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwtune.errors import ConfigError, StudyError
from hwtune.front import (
    OBJECTIVES,
    TrialRecord,
    TuneResult,
    crowding_distance,
    hypervolume,
    hypervolume_history,
    knee_point,
    pareto_front,
    promotion_order,
    resolve_objectives,
)

ACC_LAT = resolve_objectives("accuracy,latency")
REF = {"val_accuracy": 0.0, "latency_ms": 10.0, "peak_activation_bytes": 1000.0}


def rec(number, acc, lat, *, mem=100, feasible=True, trained=True, state="complete", dup=None, t=None, prec="fp32"):
    figures = {
        "val_accuracy": acc,
        "latency_ms": lat,
        "peak_activation_bytes": mem,
        "trained": trained,
        "precision": prec,
        "candidate": {"family": "convnet", "knobs": {"width": number}, "precision": prec},
        "candidate_key": f"c{number}",
        "latency_source": "measured",
        "rung": 1,
        "max_rung": 1,
    }
    if dup is not None:
        figures["duplicate_of"] = dup
    started = None if t is None else f"2025-01-01T00:00:{t[0]:02d}"
    finished = None if t is None else f"2025-01-01T00:00:{t[1]:02d}"
    return TrialRecord(
        number=number,
        state=state,
        figures=figures,
        constraints={"ram": -0.5 if feasible else 0.3},
        values=(acc or 0.0, lat),
        started=started,
        finished=finished,
    )


def test_resolve_objectives_errors_collect_all_and_suggest():
    assert [o.name for o in resolve_objectives(["accuracy", "latency", "memory"])] == ["accuracy", "latency", "memory"]
    with pytest.raises(ConfigError) as exc:
        resolve_objectives("accuracy,latncy,memroy")
    msg = str(exc.value)
    assert "did you mean 'latency'" in msg and "did you mean 'memory'" in msg
    with pytest.raises(ConfigError, match="must include 'accuracy'"):
        resolve_objectives("latency,memory")
    with pytest.raises(ConfigError, match="at least two"):
        resolve_objectives("accuracy")


def test_front_excludes_dominated_infeasible_untrained_failed_and_duplicates():
    records = [
        rec(0, 0.80, 1.0),
        rec(1, 0.85, 2.0),
        rec(2, 0.84, 3.0),  # dominated by 1
        rec(3, 0.95, 0.5, feasible=False),  # infeasible: never on the front
        rec(4, None, 0.4, trained=False, feasible=False),
        rec(5, 0.99, 0.1, state="fail"),
        rec(6, 0.85, 2.0, dup=1),  # repeat of 1
        rec(7, 0.90, 4.0),
    ]
    front = pareto_front(records, ACC_LAT, REF)
    assert [r.number for r in front] == [0, 1, 7]  # sorted by latency
    # ties: the lowest trial number wins
    tie = pareto_front([rec(3, 0.8, 1.0), rec(2, 0.8, 1.0)], ACC_LAT, REF)
    assert [r.number for r in tie] == [2]


def test_hypervolume_matches_hand_computation_and_ignores_points_beyond_reference():
    # costs: (1-acc, lat/10): (0.2, 0.1) and (0.1, 0.5); HV wrt (1,1):
    # 0.8*0.9 + (0.9-0.8)*(1-0.5) = 0.72 + 0.05 = 0.77
    records = [rec(0, 0.8, 1.0), rec(1, 0.9, 5.0)]
    assert hypervolume(records, ACC_LAT, REF) == pytest.approx(0.77)
    # a point slower than the reference latency adds nothing
    assert hypervolume(records + [rec(2, 0.99, 20.0)], ACC_LAT, REF) == pytest.approx(0.77)
    # a dominated point adds nothing; an infeasible one neither
    assert hypervolume(records + [rec(3, 0.7, 6.0), rec(4, 0.99, 0.1, feasible=False)], ACC_LAT, REF) == pytest.approx(
        0.77
    )
    assert hypervolume([], ACC_LAT, REF) == 0.0


def test_hypervolume_three_objectives():
    objs = resolve_objectives("accuracy,latency,memory")
    # one point: (1-0.5) * (1-0.5) * (1-0.5) box
    r = rec(0, 0.5, 5.0, mem=500)
    assert hypervolume([r], objs, REF) == pytest.approx(0.125)


def test_hypervolume_history_is_monotone_and_counts_trials():
    records = [
        rec(0, 0.8, 1.0, t=(0, 5)),
        rec(1, 0.7, 2.0, t=(5, 9)),
        rec(2, 0.9, 5.0, t=(9, 20)),
        rec(3, 0.0, 0.0, state="fail", t=(20, 21)),
    ]
    hist = hypervolume_history(records, ACC_LAT, REF)
    assert [h[2] for h in hist] == [1, 2, 3, 4]
    assert [h[0] for h in hist] == [5.0, 9.0, 20.0, 21.0]
    hvs = [h[1] for h in hist]
    assert hvs == sorted(hvs)
    assert hvs[0] == pytest.approx(0.72) and hvs[1] == pytest.approx(0.72) and hvs[2] == pytest.approx(0.77)


def test_knee_is_the_balanced_member():
    # A convex front: the middle point gives up little of either objective.
    front = [rec(0, 0.70, 0.5), rec(1, 0.88, 1.0), rec(2, 0.90, 8.0)]
    assert knee_point(front, ACC_LAT).number == 1
    assert knee_point([front[2]], ACC_LAT).number == 2
    assert knee_point([], ACC_LAT) is None


def test_promotion_order_is_rank_then_crowding():
    # costs to minimize; the front is {0, 1, 2}; 3 is dominated by 1; 4 by everything
    pts = [[0.1, 0.9], [0.3, 0.3], [0.9, 0.1], [0.35, 0.35], [1.0, 1.0]]
    order = promotion_order(pts)
    assert set(order[:3]) == {0, 1, 2} and order[3:] == [3, 4]
    # within the front the extremes (infinite crowding distance) come before the middle
    assert order[2] == 1
    assert promotion_order([]) == []
    d = crowding_distance(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]))
    assert np.isinf(d[0]) and np.isinf(d[2]) and d[1] == pytest.approx(2.0)


def _result(records, **kw):
    return TuneResult(
        study_name="s",
        storage="sqlite:///x.db",
        out_dir=None,
        device="host",
        recipe="r",
        objectives=("accuracy", "latency"),
        reference_point=REF,
        trials=tuple(records),
        **kw,
    )


def test_tune_result_json_round_trip_knee_first_and_table():
    records = [rec(0, 0.70, 0.5), rec(1, 0.88, 1.0), rec(2, 0.90, 8.0), rec(3, 0.5, 9.0, state="fail")]
    res = _result(records)
    rows = res.front_json()
    assert rows[0]["number"] == 1 and rows[0]["knee"] is True
    for row in rows:
        assert {"number", "candidate", "precision", "accuracy", "latency_ms", "latency_source"} <= set(row)
    text = res.to_json()
    back = TuneResult.from_dict(json.loads(text))
    assert [r.number for r in back.front] == [0, 1, 2]
    assert back.hypervolume == pytest.approx(res.hypervolume)
    table = res.front_table()
    assert table.splitlines()[0].split()[0] == "trial" and "*" in table
    assert "88.00%" in table
    md = res.front_table(markdown=True)
    assert md.startswith("| knee |")
    assert res.counts() == {
        "total": 4,
        "complete": 3,
        "trained": 3,
        "infeasible": 0,
        "failed": 1,
        "duplicates": 0,
        "running": 0,
    }


def test_unknown_trial_is_a_one_line_study_error():
    res = _result([rec(0, 0.7, 0.5)])
    with pytest.raises(StudyError, match="has no trial 7 .trials: 0..0."):
        res.trial(7)


def test_objective_table_is_consistent():
    assert OBJECTIVES["accuracy"].maximize and not OBJECTIVES["latency"].maximize
    assert np.isfinite(hypervolume([rec(0, 1.0, 0.0)], ACC_LAT, REF))
