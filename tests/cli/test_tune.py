"""``hwtune tune``'s options: numbers are finite and in range, refused in one line before anything is written."""

from __future__ import annotations

import pytest
from support import cli_error


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "-inf"),
        ("--timeout", "0"),
        ("--max-latency-ms", "NaN"),
        ("--epochs", "-1"),
        ("--rungs", "0.5,nan"),
        ("--rungs", "0.5,2"),
        ("--max-params", "0"),
        ("--max-params", "1.5"),
    ],
)
def test_cli_numbers_are_finite_and_in_range(capsys, tmp_path, option, value):
    line = cli_error(
        capsys, ["tune", "fashion-convnet", "--device", "host", option, value, "--out", str(tmp_path / "r")]
    )
    assert option in line and repr(value) in line
    assert not (tmp_path / "r").exists()


def test_demo_ships_the_most_accurate_small_quantized_front_member():
    from types import SimpleNamespace as NS

    from hwtune.cli.tune import DEMO_MAX_PARAMS, _demo_pick

    def rec(number, precision, params, acc):
        return NS(number=number, precision=precision, accuracy=acc, figures=NS(params=params))

    small_int8, big_mixed, fp32 = (
        rec(1, "int8", 40_000, 0.88),
        rec(2, "mixed", DEMO_MAX_PARAMS + 1, 0.9),
        rec(3, "fp32", 50_000, 0.91),
    )
    best_fit = rec(4, "mixed", 90_000, 0.89)
    assert _demo_pick(NS(knee=small_int8, front=[small_int8, big_mixed, fp32])) is small_int8
    assert _demo_pick(NS(knee=fp32, front=[small_int8, big_mixed, fp32, best_fit])) is best_fit
    # a small quantized knee gives way to a more accurate small quantized member (the accuracy target's best odds)
    assert _demo_pick(NS(knee=small_int8, front=[small_int8, big_mixed, fp32, best_fit])) is best_fit
    assert _demo_pick(NS(knee=big_mixed, front=[big_mixed, fp32])) is big_mixed  # nothing fits: the knee
    assert _demo_pick(NS(knee=None, front=[])) is None
