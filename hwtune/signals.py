"""SIGTERM stops a search the way Ctrl-C does: the trial in flight fails and is queued again, finished trials stay.

A batch scheduler, ``timeout`` or ``kill PID`` sends SIGTERM, whose default action ends the process
at once (a running trial stays RUNNING until a resume finds it stale). While a search runs in the
main thread, :class:`SigtermGuard` turns the first SIGTERM into :class:`Terminated`, a
``KeyboardInterrupt``, so every clean-up written for Ctrl-C runs unchanged; the previous handler is
restored when the search ends. Later SIGTERMs are ignored while the clean-up runs (a scheduler
that loses patience sends SIGKILL).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Self

__all__ = ["SigtermGuard", "Terminated"]


class Terminated(KeyboardInterrupt):
    """The search was asked to stop by SIGTERM; handled everywhere as an interrupt (Ctrl-C)."""

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


class SigtermGuard:
    """``with SigtermGuard() as guard:`` -- SIGTERM raises :class:`Terminated` inside the block.

    Installed only in the main thread (Python delivers signals there; elsewhere the guard does
    nothing). Nested guards share the outermost one, so ``guard.received`` is true whichever level
    the signal arrived at.

    Attributes:
        received: a SIGTERM arrived while the guard (or the guard it joined) was active.
    """

    def __init__(self) -> None:
        self._outer: SigtermGuard | None = None
        self._previous: Any = None
        self._installed = False
        self._received = False

    @property
    def received(self) -> bool:
        return self._outer.received if self._outer is not None else self._received

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            return self
        current = signal.getsignal(signal.SIGTERM)
        owner = getattr(current, "__self__", None)
        if isinstance(owner, SigtermGuard):
            self._outer = owner
            return self
        self._previous = current
        signal.signal(signal.SIGTERM, self._handle)
        self._installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            # None: the previous handler was not installed from Python; the default is what it did
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._received:
            return  # one clean stop: a second SIGTERM must not interrupt its clean-up
        self._received = True
        raise Terminated()
