"""hwtune.progress: a bar on a terminal, plain lines in a log, nothing when quiet."""

from __future__ import annotations

import io

import pytest

from hwtune import progress
from hwtune.progress import LineProgress, NullProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.delenv(progress.ENV_VAR, raising=False)
    progress.configure(quiet=False, verbosity=0)
    yield
    progress.configure(quiet=False, verbosity=0)


def test_a_file_gets_plain_lines_without_carriage_returns():
    log = io.StringIO()
    bar = progress_bar(10, desc="train", unit="batch", file=log, interval_s=0.0)
    assert isinstance(bar, LineProgress)
    for _ in range(10):
        bar.update(1)
    bar.set_postfix(loss="0.123")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train: 1/10 batch (10%)")
    assert lines[-1].startswith("train: 10/10 batch (100%)") and lines[-1].endswith("loss=0.123")


def test_lines_are_rate_limited_and_a_short_step_stays_silent():
    log = io.StringIO()
    bar = progress_bar(1000, desc="train", file=log, interval_s=3600.0)
    for _ in range(1000):
        bar.update(1)
    bar.close()  # leave=False and nothing printed before: no closing line either
    assert log.getvalue() == ""
    kept = progress_bar(5, desc="trials", file=log, interval_s=3600.0, leave=True)
    kept.update(5)
    kept.close()
    kept.close()  # closing twice prints once
    assert log.getvalue().count("trials: 5/5") == 1


def test_a_terminal_gets_a_tqdm_bar():
    tty = _Tty()
    bar = progress_bar(3, desc="train", file=tty)
    assert not isinstance(bar, (LineProgress, NullProgress))
    bar.update(3)
    bar.close()
    assert "\r" in tty.getvalue()  # tqdm redraws in place on a terminal


def test_quiet_silences_bars_lines_and_messages(capsys):
    progress.configure(quiet=True)
    assert isinstance(progress_bar(3, file=_Tty()), NullProgress)
    assert isinstance(progress_bar(3, file=io.StringIO(), interval_s=0.0), NullProgress)
    progress.write("hello")
    assert capsys.readouterr().err == ""


def test_disabled_is_silent_even_on_a_terminal():
    assert isinstance(progress_bar(3, file=_Tty(), enabled=False), NullProgress)


@pytest.mark.parametrize(("forced", "expected"), [("lines", LineProgress), ("off", NullProgress)])
def test_environment_variable_forces_the_mode(monkeypatch, forced, expected):
    monkeypatch.setenv(progress.ENV_VAR, forced)
    assert isinstance(progress_bar(3, file=_Tty()), expected)


def test_environment_variable_can_force_a_bar_into_a_file(monkeypatch):
    monkeypatch.setenv(progress.ENV_VAR, "bar")
    assert progress.mode(io.StringIO()) == "bar"


def test_verbose_shortens_the_line_interval():
    progress.configure(verbosity=1)
    bar = progress_bar(3, file=io.StringIO())
    assert isinstance(bar, LineProgress) and bar.interval_s == progress.VERBOSE_INTERVAL_S
    progress.configure(verbosity=0)
    assert progress_bar(3, file=io.StringIO()).interval_s == progress.DEFAULT_INTERVAL_S


def test_write_goes_through_tqdm_while_a_bar_is_drawn(capsys):
    tty = _Tty()
    bar = progress_bar(3, desc="x", file=tty)
    progress.write("a message", file=tty)
    bar.close()
    progress.write("after")
    assert "a message" in tty.getvalue()
    assert capsys.readouterr().err == "after\n"
