"""Progress output that suits where it goes: a tqdm bar on a terminal, plain lines in a log.

A carriage-return progress bar is right in a terminal and wrong in a file: a log captured with
``2> run.log`` (or by a batch scheduler) fills with partial frames. So :func:`progress_bar` draws a
tqdm bar only when its stream is a terminal, and otherwise prints one plain line every
``interval_s`` seconds (and one when it ends, if it printed any). ``--quiet`` on the command line
(:func:`configure`) silences both, everywhere.

The choice can be forced with the environment variable ``HWTUNE_PROGRESS``: ``bar``, ``lines`` or
``off`` (for example ``HWTUNE_PROGRESS=lines`` in a CI job whose console is a pseudo-terminal).

Example:
    >>> import io
    >>> from hwtune.progress import progress_bar
    >>> log = io.StringIO()
    >>> with progress_bar(3, desc="train", unit="batch", file=log, interval_s=0.0) as bar:
    ...     bar.update(3)
    >>> log.getvalue().splitlines()[-1].startswith("train: 3/3 batch (100%)")
    True
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Self, TextIO

__all__ = [
    "DEFAULT_INTERVAL_S",
    "LineProgress",
    "NullProgress",
    "configure",
    "is_quiet",
    "mode",
    "progress_bar",
    "verbosity",
    "write",
]

ENV_VAR = "HWTUNE_PROGRESS"
MODES = ("bar", "lines", "off")
# One line every 30 s keeps a long run's log readable; -v prints one every 5 s.
DEFAULT_INTERVAL_S = 30.0
VERBOSE_INTERVAL_S = 5.0

_state: dict[str, Any] = {"quiet": False, "verbosity": 0}
_lock = threading.Lock()
_active_bars = 0  # tqdm bars currently drawn (messages must go through tqdm.write while > 0)


def configure(*, quiet: bool | None = None, verbosity: int | None = None) -> None:
    """Set the process-wide output level (the ``hwtune`` command calls this for ``-q`` / ``-v``).

    Args:
        quiet: No progress bars, no progress lines, no :func:`write` messages.
        verbosity: 0 normal, 1 (``-v``) more frequent progress lines, 2 (``-vv``) also debug detail.
    """
    if quiet is not None:
        _state["quiet"] = bool(quiet)
    if verbosity is not None:
        _state["verbosity"] = max(0, int(verbosity))


def is_quiet() -> bool:
    """True when ``--quiet`` was given (or ``HWTUNE_PROGRESS=off``)."""
    return bool(_state["quiet"]) or os.environ.get(ENV_VAR, "").strip().lower() == "off"


def verbosity() -> int:
    """0 normal, 1 for ``-v``, 2 for ``-vv``."""
    return int(_state["verbosity"])


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a real file
        return False


def mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: what progress output to ``stream`` (default stderr) looks like."""
    if is_quiet():
        return "off"
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in MODES:
        return forced
    return "bar" if _isatty(stream if stream is not None else sys.stderr) else "lines"


def write(message: str, *, file: TextIO | None = None) -> None:
    """Print one status line on stderr without breaking a bar that is being drawn; nothing when quiet."""
    if is_quiet():
        return
    out = file if file is not None else sys.stderr
    if _active_bars > 0:
        from tqdm import tqdm

        tqdm.write(message, file=out)
    else:
        print(message, file=out, flush=True)


class NullProgress:
    """A progress object that shows nothing (disabled or quiet); same methods as the others."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LineProgress(NullProgress):
    """Plain progress lines for logs: ``desc: n/total unit (pct%) elapsed, rate, postfix``.

    A line is printed at most every ``interval_s`` seconds, and a last one on ``close()`` when
    ``leave`` is true or an earlier line was printed (so short steps stay silent in a log).
    """

    def __init__(
        self,
        total: int | None,
        *,
        desc: str = "",
        unit: str = "it",
        file: TextIO | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        leave: bool = True,
        initial: int = 0,
    ) -> None:
        super().__init__(total)
        self.n = int(initial)
        self.desc, self.unit, self.leave = desc, unit, leave
        self.file = file
        self.interval_s = float(interval_s)
        self.postfix = ""
        self._start = time.monotonic()
        self._last = self._start
        self._printed = 0
        self._closed = False

    def line(self) -> str:
        """The progress line as it would be printed now."""
        elapsed = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / elapsed:.3g} {self.unit}/s" if elapsed > 0 and self.n else ""
        tail = f", {self.postfix}" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{done} {self.unit}{pct} {_duration(elapsed)}{rate}{tail}"

    def _emit(self) -> None:
        print(self.line(), file=self.file if self.file is not None else sys.stderr, flush=True)
        self._printed += 1
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval_s:
            self._emit()

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave or self._printed:
            self._emit()


class _TrackedBar:
    """A tqdm bar that counts itself as active so :func:`write` goes through ``tqdm.write``."""

    def __init__(self, bar: Any) -> None:
        global _active_bars
        self._bar = bar
        self._open = True
        with _lock:
            _active_bars += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def close(self) -> None:
        global _active_bars
        if self._open:
            self._open = False
            with _lock:
                _active_bars -= 1
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None,
    *,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
    file: TextIO | None = None,
    initial: int = 0,
    interval_s: float | None = None,
) -> Any:
    """A progress object with tqdm's ``update``/``set_postfix``/``set_postfix_str``/``close``.

    Args:
        total: Expected number of steps (None when unknown).
        desc: Label (``train``, ``trials``).
        unit: Unit of one step.
        enabled: False gives a silent :class:`NullProgress` (a caller's ``progress=False``).
        leave: Keep the finished bar on screen / print a final line even for a short run.
        file: Stream, default ``sys.stderr``; whether it is a terminal decides bar vs lines.
        initial: Steps already done (a resumed run).
        interval_s: Seconds between plain lines (default 30, 5 with ``-v``).

    Returns:
        A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a :class:`NullProgress` when
        disabled or quiet.
    """
    stream = file if file is not None else sys.stderr
    how = mode(stream) if enabled else "off"
    if how == "off":
        return NullProgress(total)
    if how == "bar":
        from tqdm import tqdm

        return _TrackedBar(
            tqdm(total=total, desc=desc or None, unit=unit, file=stream, leave=leave, initial=initial,
                 dynamic_ncols=True)
        )
    if interval_s is None:
        interval_s = VERBOSE_INTERVAL_S if verbosity() >= 1 else DEFAULT_INTERVAL_S
    return LineProgress(total, desc=desc, unit=unit, file=file, interval_s=interval_s, leave=leave, initial=initial)
