"""hwtune.tuner.finalize: its arguments and its output place are checked before any data is loaded."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from support import STUDY_FIXTURE, cli_error, mount_tmpfs

from hwtune.errors import ConfigError


def test_finalize_checks_where_it_writes_before_training(tmp_path, capsys, monkeypatch):
    import hwtune.tuner.finalize as fin

    where = tmp_path / "ro-run"
    if not mount_tmpfs(where, "size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        shutil.copytree(STUDY_FIXTURE, where, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        monkeypatch.setattr(fin, "load_stored_data", lambda *a, **k: pytest.fail("finalize loaded data first"))
        line = cli_error(capsys, ["finalize", str(where), "--epochs", "0.1"])
        assert f"cannot write the results of study 'tiny' into {where} (Read-only file system)" in line
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_api_numbers_are_checked_before_the_study_is_opened(tmp_path):
    from hwtune.exporting import export
    from hwtune.tuner.finalize import finalize

    url = f"sqlite:///{tmp_path / 'none' / 'study.db'}"
    for kw in ({"seed": -1}, {"seed": 2**32}, {"lr": float("nan")}, {"epochs": float("inf")}, {"threads": 0}):
        with pytest.raises(ConfigError):
            finalize(url, **kw)
    with pytest.raises(ConfigError, match="tolerance"):
        export(url, 0, tmp_path / "out", tolerance=float("nan"))
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()


def test_train_on_takes_train_or_train_and_val_on_the_cli(capsys, tmp_path):
    line = cli_error(capsys, ["finalize", str(tmp_path), "--train-on", "val"])
    assert "--train-on" in line and "'val'" in line and "train+val" in line
