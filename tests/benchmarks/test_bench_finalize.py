"""benchmarks/bench_finalize.py: its --grid settings (epochs, augmentation with its own colons and commas, seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_finalize


@pytest.mark.parametrize(
    "item, expected",
    [
        ("30/none", (30.0, None, None)),
        ("30/hflip", (30.0, "hflip", None)),
        ("30/hflip,erasing:0.25", (30.0, "hflip,erasing:0.25", None)),
        ("12.5/shift-flip/2", (12.5, "shift-flip", 2)),
    ],
)
def test_grid_settings_keep_multi_step_augmentations_and_seeds(item, expected):
    assert bench_finalize._setting(item) == expected


@pytest.mark.parametrize("item", ["30", "30/hflip/1/2", "x/hflip", "30/hflip/one"])
def test_a_bad_grid_setting_is_one_line_naming_it(item):
    with pytest.raises(SystemExit, match=r"--grid .*expected EPOCHS/AUGMENT\[/SEED\]"):
        bench_finalize._setting(item)
