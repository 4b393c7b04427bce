"""Where a finished search is: a run directory, a ``.db`` file or ``--storage URL [--study NAME]``.

``hwtune tune --out DIR`` writes ``DIR/study.db`` (the SQLite study) and ``DIR/front.json`` (which
also names the storage and study, so a run that used a remote ``--storage`` is found from its
directory too; see :mod:`hwtune.tuner.rundir`, shared with the Python API). ``front``, ``report``,
``export`` and ``finalize`` take ``DIR`` directly; ``--storage`` and ``--study`` keep working.
``--trial`` takes ``knee``, ``front`` (every member) or numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hwtune.errors import ConfigError

if TYPE_CHECKING:  # imported when used: building the parser must not load the tuner (numpy, Optuna)
    from hwtune.tuner.rundir import RunSource

__all__ = ["TrialSpec", "add_source_arguments", "parse_trial_spec", "resolve_source"]


@dataclass(frozen=True)
class TrialSpec:
    """What ``--trial`` asked for: ``kind`` is ``knee``, ``front`` or ``numbers`` (then ``numbers``)."""

    kind: str
    numbers: tuple[int, ...] = ()


def add_source_arguments(p: argparse.ArgumentParser, *, what: str) -> None:
    """The positional ``RUN`` and the ``--storage``/``--study`` pair, with help text."""
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        metavar="RUN",
        help=f"run directory of the study to {what} (hwtune tune --out DIR), a study .db file or a storage URL",
    )
    p.add_argument(
        "--storage", default=None, metavar="URL", help="Optuna storage URL instead of RUN (e.g. sqlite:///runs/x/study.db)"
    )
    p.add_argument(
        "--study", default=None, metavar="NAME", help="study name (needed only when the storage holds several)"
    )


def resolve_source(run: str | None, storage: str | None, study: str | None) -> RunSource:
    """The study named by ``RUN`` or by ``--storage``/``--study`` (``RUN`` as :func:`~hwtune.tuner.rundir.locate_run`).

    Raises:
        ConfigError: neither or both given, or ``RUN`` is not a run directory, ``.db`` file or URL.
    """
    from hwtune.tuner.rundir import RunSource, locate_run

    if run is not None and storage is not None:
        raise ConfigError(f"give a run directory or --storage, not both (got {run!r} and --storage {storage!r})")
    if run is None and storage is None:
        raise ConfigError("which study? give its run directory (hwtune tune --out DIR) or --storage URL")
    if storage is not None:
        return RunSource(storage, study)
    return locate_run(str(run), study)


def parse_trial_spec(text: str | None, *, option: str = "--trial") -> TrialSpec:
    """``knee`` / ``front`` / ``7`` / ``3,7`` -> :class:`TrialSpec`; None means the knee.

    Raises:
        ConfigError: anything else.
    """
    if text is None:
        return TrialSpec("knee")
    word = text.strip().lower()
    if word in ("knee", "front"):
        return TrialSpec(word)
    parts = [p.strip() for p in word.split(",") if p.strip()]
    if parts and all(p.isdigit() for p in parts):
        return TrialSpec("numbers", tuple(int(p) for p in parts))
    raise ConfigError(f"{option} must be knee, front or trial numbers like 7 or 3,7, got {text!r}")
