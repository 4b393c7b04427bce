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
