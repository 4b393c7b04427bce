"""hwtune.report: reports go where the user can write, atomically (a full disk keeps the previous files)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from support import cli_error

from hwtune.errors import ConfigError


def test_front_report_into_unwritable_place(old_run, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    url = f"sqlite:///{old_run / 'study.db'}"
    line = cli_error(capsys, ["front", "--storage", url, "--study", "tiny", "--report", str(a_file / "rep")])
    assert str(a_file / "rep") in line and "a parent of it is a file" in line
    line = cli_error(capsys, ["front", "--storage", url, "--study", "tiny", "--report", str(a_file)])
    assert "exists and is not a directory" in line


def test_reports_are_written_atomically(old_run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from hwtune.report import write_reports
    from hwtune.tuner import load_result

    result = load_result(f"sqlite:///{old_run / 'study.db'}", "tiny")
    out = tmp_path / "rep"
    write_reports(result, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"front.json", "pareto.png", "hypervolume.png", "report.md"}

    def full_disk(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(ConfigError, match=r"pareto\.png \(No space left on device\)"):
        write_reports(result, out)
    assert (out / "pareto.png").read_bytes() == before["pareto.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary file left
