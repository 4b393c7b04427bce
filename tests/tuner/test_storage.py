"""hwtune.tuner.storage: read-only commands on a missing study create nothing."""

from __future__ import annotations

from support import cli_error


def test_front_on_a_missing_study_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nothing" / "study.db"
    cli_error(capsys, ["front", "--storage", f"sqlite:///{missing}"])
    assert not missing.exists() and not missing.parent.exists()
