"""File and stream plumbing the optional runtimes share: C-level stderr capture (atomic writes: hwtune._io).

The converters and interpreters behind ``executorch``, ``litert`` and ``tflite-micro`` are C++
libraries that print to file descriptor 2 directly (``print_allocations()`` of TFLite Micro reports
the arena only there), so capturing ``sys.stderr`` is not enough: the descriptor itself is swapped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["CapturedText", "capture_fd2"]


class CapturedText:
    """Text written to file descriptor 2 inside :func:`capture_fd2`, readable after the block."""

    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        """The last non-empty line (the most useful one in a native error dump), or ``""``."""
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


@contextlib.contextmanager
def capture_fd2() -> Iterator[CapturedText]:
    """Redirect file descriptor 2 (C/C++ stderr) into a buffer for the duration of the block."""
    out = CapturedText()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode("utf-8", errors="replace")
