"""Temporary work directories that do not outlive their process.

A work directory is named ``hwtune-<kind>-p<pid>-<start>-<random>`` in the system temporary
directory: ``<pid>`` and ``<start>`` (the process start time from ``/proc``, so a reused pid is
not mistaken for the owner) say which process made it. :func:`work_dir` removes it on every way
out of its ``with`` block (return, exception, Ctrl-C); a ``kill -9`` cannot be caught, so
:func:`remove_stale`, run when a long command starts, removes the directories whose process is
gone (and the pid-less ``hwtune-<kind>-*`` directories of older versions once they are a day old).

Example:
    >>> with work_dir("trial") as tmp:  # doctest: +SKIP
    ...     (tmp / "model.onnx").write_bytes(b"...")
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from hwtune.errors import ConfigError

__all__ = ["LEGACY_AGE_S", "PREFIX", "process_start", "remove_stale", "work_dir"]

PREFIX = "hwtune-"
#: Pid-less work directories (older versions) are removed once untouched this long.
LEGACY_AGE_S = 24 * 3600.0
_KIND = re.compile(r"[a-z0-9]{1,20}")
_OWNED = re.compile(r"hwtune-[a-z0-9]{1,20}-p(?P<pid>\d{1,10})-(?P<start>\d{1,20}|x)-[A-Za-z0-9_]+")
# Older versions' names: a known kind and tempfile's 8 random characters (nothing broader, so a
# user's own /tmp/hwtune-something is never matched).
# Kinds still made with plain ``tempfile`` somewhere are listed too, so a killed run's leftovers go after a day.
_LEGACY_KINDS = (
    "trial",
    "quant",
    "export",
    "finalize",
    "parent",
    "profile",
    "ortprof",
    "etdump",
    "microbench",
    "remeasure",
    "compress",
    "tflm",
)
_LEGACY = re.compile(rf"hwtune-(?:{'|'.join(_LEGACY_KINDS)})-[a-z0-9_]{{8}}")


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, from ``/proc``), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str) -> bool:
    if pid == os.getpid():
        return True
    now = process_start(pid)
    if now is not None:
        return start == "x" or now == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours (EPERM), or cannot be asked: keep its files
        return True
    return True


@contextlib.contextmanager
def work_dir(kind: str, *, parent: str | Path | None = None) -> Iterator[Path]:
    """A fresh directory ``hwtune-<kind>-p<pid>-...``, removed with everything in it on exit.

    Args:
        kind: Short lowercase word saying what it is for (``trial``, ``quant``, ``export`` ...).
        parent: Where to create it (default: the system temporary directory, ``$TMPDIR``).

    Raises:
        ConfigError: the temporary directory cannot be created (full disk, read-only, missing);
            the message names it and says to set ``TMPDIR``.
    """
    if not _KIND.fullmatch(kind):
        raise ConfigError(f"work directory kind must be 1-20 lowercase letters or digits, got {kind!r}")
    pid = os.getpid()
    prefix = f"{PREFIX}{kind}-p{pid}-{process_start(pid) or 'x'}-"
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    except OSError as exc:
        raise ConfigError(
            f"cannot create a temporary directory in {where} ({exc.strerror or exc}); "
            "set TMPDIR to a writable directory with free space"
        ) from exc
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _is_stale(entry: os.DirEntry[str], now: float, legacy_age_s: float) -> bool:
    m = _OWNED.fullmatch(entry.name)
    if m is None and not _LEGACY.fullmatch(entry.name):
        return False
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    # Only real directories of this user: never follow a link, never touch another user's files.
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return False
    if m is not None:
        return not _alive(int(m["pid"]), m["start"])
    return now - st.st_mtime > legacy_age_s


def remove_stale(parent: str | Path | None = None, *, legacy_age_s: float = LEGACY_AGE_S) -> list[Path]:
    """Remove work directories left by processes that are gone (killed runs); never raises.

    Args:
        parent: Directory to clean (default: the system temporary directory).
        legacy_age_s: Age after which pid-less ``hwtune-<kind>-*`` directories of older versions go.

    Returns:
        The directories removed.
    """
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(where))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(PREFIX) and _is_stale(entry, now, legacy_age_s):
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):
                removed.append(Path(entry.path))
    return removed
