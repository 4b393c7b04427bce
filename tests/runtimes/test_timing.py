"""The timing settings as one object (``hwtune.runtimes.TimingBudget``) and the flat keywords users pass."""

from __future__ import annotations

import pytest

from hwtune.errors import ConfigError
from hwtune.runtimes import TimingBudget, measure_callable


def test_flat_keywords_and_the_object_are_the_same_settings() -> None:
    budget = TimingBudget(time_budget_s=0.05, min_runs=5, warmup_runs=1)
    assert TimingBudget.coerce(None, time_budget_s=0.05, min_runs=5, warmup_runs=1) == budget
    assert TimingBudget.coerce(budget, target_ci_pct=5.0) == TimingBudget(0.05, 5.0, 5, 100_000, 1)
    assert TimingBudget.from_dict(budget.to_dict()) == budget
    by_object = measure_callable(lambda: None, runtime="python", threads=1, timing=budget)
    by_keywords = measure_callable(lambda: None, runtime="python", threads=1, time_budget_s=0.05, min_runs=5)
    assert by_object.runs >= 3 and by_keywords.runs >= 3


def test_max_runs_and_warmup_are_honoured() -> None:
    calls = []
    m = measure_callable(
        lambda: calls.append(1),
        runtime="python",
        threads=1,
        timing=TimingBudget(time_budget_s=5.0, target_ci_pct=1e-9, max_runs=7, warmup_runs=2, min_time_s=0.0),
    )
    assert m.runs == 7 and m.warmup_runs >= 2 and len(calls) == m.runs + m.warmup_runs


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"time_budget_s": 0}, "time_budget_s must be a number > 0, got 0"),
        ({"target_ci_pct": -1}, "target_ci_pct must be a number > 0, got -1"),
        ({"min_runs": "ten"}, "min_runs must be a number of runs, got 'ten'"),
        ({"min_time_s": "1s"}, "min_time_s must be a number of seconds or None, got '1s'"),
        ({"time_budget": 1.0}, "unknown timing setting 'time_budget'; did you mean 'time_budget_s'?"),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TimingBudget.coerce(None, **settings)
    assert str(err.value) == message
