"""File and stream plumbing the optional runtimes share: atomic writes, C-level stderr capture.

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
from pathlib import Path

__all__ = ["CapturedText", "atomic_write_bytes", "capture_fd2"]


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


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``.

    A reader never sees a half-written model file, and a failed write leaves no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
