"""hwtune demo's choice of the member it ships (the run itself: tests/test_readme.py and CI)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from hwtune.cli.demo import (
    DEMO_MAX_PARAMS,
    demo_pick,
    epochs_that_fit,
    finalize_speed_probe,
    search_seconds_per_epoch,
    tie_band,
)


def rec(number, precision, params, macs, acc, *, seconds=10.0, rung=1, duplicate_of=None):
    """A trial record as demo_pick reads it: trained to `rung` of 2 (0.75 epochs in `seconds`)."""
    figures = NS(params=params, macs=macs, rung=rung, max_rung=1, epochs_trained=0.75, train_seconds=seconds)
    return NS(
        number=number, precision=precision, accuracy=acc, trained=True, duplicate_of=duplicate_of, figures=figures
    )


def pick(trials, knee=None, *, left=1000.0, n_val=10_000, **kw):
    return demo_pick(NS(trials=trials, knee=knee, front=[]), epochs=30, seconds_left=left, n_val=n_val, **kw)


def test_tie_band_is_two_standard_errors_of_a_difference():
    assert tie_band(0.89, 10_000) == pytest.approx(2 * (2 * 0.89 * 0.11 / 10_000) ** 0.5)
    assert tie_band(0.89, 2_500) == pytest.approx(2 * tie_band(0.89, 10_000))
    assert tie_band(1.0, 100) == 0.0


def test_the_most_macs_within_the_noise_of_the_best_is_shipped():
    best = rec(1, "int8", 40_000, 1_800_000, 0.895)
    big_tied = rec(2, "mixed", 97_000, 3_980_000, 0.889)  # 0.6 points below: within 0.88
    bigger_behind = rec(3, "mixed", 90_000, 5_030_000, 0.880)  # 1.5 points below: not tied
    assert pick([best, big_tied, bigger_behind]).trial is big_tied
    # fewer validation images: a wider band takes the 5 M-MAC member in too
    assert pick([best, big_tied, bigger_behind], n_val=1_000).trial is bigger_behind
    # equal MACs: the more parameters, then the more accurate
    twin = rec(4, "int8", 98_000, 3_980_000, 0.889)
    assert pick([best, big_tied, twin]).trial is twin


@pytest.mark.parametrize(
    "other",
    [
        rec(9, "fp32", 97_000, 9_000_000, 0.9),  # fp32: not what the target is for
        rec(9, "mixed", DEMO_MAX_PARAMS + 1, 9_000_000, 0.9),  # over the parameter target
        rec(9, "mixed", 97_000, 9_000_000, 0.9, rung=0),  # not trained to the full budget
        rec(9, "mixed", 97_000, 9_000_000, 0.9, duplicate_of=1),  # a repeat
    ],
)
def test_members_the_target_is_not_for_are_never_shipped(other):
    small = rec(1, "int8", 40_000, 1_800_000, 0.89)
    assert pick([small, other]).trial is small


def test_the_finalize_must_fit_the_time_left():
    small = rec(1, "int8", 40_000, 1_800_000, 0.89, seconds=5.0)  # 200 s at the search's speed
    big = rec(2, "mixed", 97_000, 3_980_000, 0.89, seconds=9.0)  # 360 s
    assert search_seconds_per_epoch(big) * 30 == pytest.approx(360.0)
    # the most MACs, for fewer epochs when two thirds of them fit (here 25 of 30 in 300 s), and it says so
    chosen = pick([small, big], left=300.0)
    assert chosen.trial is big and chosen.epochs == 25 and chosen.projected_s == pytest.approx(300.0)
    assert "the most MACs of 2 int8/mixed member(s)" in chosen.reason
    assert "25 of 30 epochs fit the 300 s left" in chosen.reason
    # fewer than two thirds (19.1 epochs in 230 s): the next in order that can, with all its epochs
    chosen = pick([small, big], left=230.0)
    assert chosen.trial is small and chosen.epochs is None and chosen.projected_s == pytest.approx(200.0)
    assert "the most MACs after 1 that could not finalize long enough" in chosen.reason
    # the speed the demo timed decides, asked for in order of preference and only until one can
    asked = []

    def timed(t):
        asked.append(t.number)
        return 9.0

    chosen = pick([small, big], left=300.0, seconds_per_epoch=timed)
    assert chosen.trial is big and chosen.projected_s == pytest.approx(270.0) and chosen.epochs is None
    assert asked == [2]
    # none can finalize two thirds: the quickest, for the epochs that fit (tenths, rounded down; at least one)
    chosen = pick([small, big], left=100.0)
    assert chosen.trial is small and chosen.epochs == 15 and chosen.projected_s == pytest.approx(100.0)
    assert "none fits 20 of 30 epochs in the 100 s left, so 15 epochs" in chosen.reason
    assert pick([small, big], left=0.0).epochs == 1.0
    chosen = pick([small, big], left=149.0)  # 22.3 epochs of the small one: two thirds
    assert chosen.trial is small and chosen.epochs == 22.3
    assert pick([small, big], left=400.0).epochs is None  # all fit: as asked
    # no speed known: the most MACs
    assert pick([small, big], seconds_per_epoch=lambda t: None).trial is big


def test_the_time_spent_timing_members_comes_off_the_time_left():
    small = rec(1, "int8", 40_000, 1_800_000, 0.89, seconds=5.0)
    big = rec(2, "mixed", 97_000, 3_980_000, 0.89, seconds=9.0)
    now = [1000.0]

    def timed(t):  # each timing takes 12 s of the clock
        now[0] += 12.0
        return search_seconds_per_epoch(t)

    # 312 s left when the pick starts, 300 s once the big member is timed: 25 of its 30 epochs
    chosen = pick([small, big], left=312.0, seconds_per_epoch=timed, clock=lambda: now[0])
    assert chosen.trial is big and chosen.epochs == 25 and "fit the 300 s left" in chosen.reason
    # 242 s: the big one gets 230 s (19.1 epochs, too few), the small one 218 s (all 30 in 200 s)
    now[0] = 1000.0
    chosen = pick([small, big], left=242.0, seconds_per_epoch=timed, clock=lambda: now[0])
    assert chosen.trial is small and chosen.epochs is None and "218 s left" in chosen.reason


def test_epochs_that_fit_are_all_of_them_or_tenths_rounded_down():
    assert epochs_that_fit(30, 360, 360) == 30 and epochs_that_fit(30, 359, 360) == 29.9
    assert epochs_that_fit(30, -5, 360) == 1.0


def test_the_speed_probe_times_a_short_finalize(fashion_dir):
    from hwtune.data import load_dataset
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe("fashion-convnet")
    cand = next(iter(space.enumerate()))
    probe = finalize_speed_probe(load_dataset("fashion-mnist", train_limit=512, val_limit=64, test_limit=64))
    assert probe(NS(candidate=cand.to_dict())) > 0


def test_without_a_shippable_member_the_knee_or_nothing():
    knee = rec(5, "fp32", 50_000, 2_000_000, 0.9)
    assert pick([knee], knee=knee).trial is knee
    assert pick([], knee=None) is None
