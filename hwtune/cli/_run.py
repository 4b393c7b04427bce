"""Where a finished search is: a run directory, a ``.db`` file or ``--storage URL [--study NAME]``.

``hwtune tune --out DIR`` writes ``DIR/study.db`` (the SQLite study) and ``DIR/front.json`` (which
also names the storage and study, so a run that used a remote ``--storage`` is found from its
directory too). ``front``, ``report``, ``export`` and ``finalize`` take ``DIR`` directly; ``--storage``
and ``--study`` keep working. ``--trial`` takes ``knee``, ``front`` (every member) or numbers.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwtune.errors import ConfigError

__all__ = ["RunSource", "TrialSpec", "add_source_arguments", "parse_trial_spec", "resolve_source"]

STUDY_FILE = "study.db"
FRONT_FILE = "front.json"


@dataclass(frozen=True)
class RunSource:
    """A study to read: its storage URL, its name (None: the only one there) and its run directory."""

    storage: str
    study_name: str | None
    run_dir: Path | None = None


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


def _front_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable run summary ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def resolve_source(run: str | None, storage: str | None, study: str | None) -> RunSource:
    """The study named by ``RUN`` or by ``--storage``/``--study``.

    Raises:
        ConfigError: neither or both given, or ``RUN`` is not a run directory, ``.db`` file or URL.
    """
    if run is not None and storage is not None:
        raise ConfigError(f"give a run directory or --storage, not both (got {run!r} and --storage {storage!r})")
    if run is None and storage is None:
        raise ConfigError("which study? give its run directory (hwtune tune --out DIR) or --storage URL")
    if storage is not None:
        return RunSource(storage, study)
    run = str(run)  # not None: refused above
    if "://" in run:
        return RunSource(run, study)
    path = Path(run)
    if path.is_file():
        if path.suffix != ".db":
            raise ConfigError(f"{run}: expected a run directory, a study .db file or a storage URL")
        return RunSource(_sqlite_url(path), study, path.parent)
    if not path.is_dir():
        raise ConfigError(f"{run}: no such run directory (hwtune tune --out DIR writes one)")
    summary = _front_json(path / FRONT_FILE) if (path / FRONT_FILE).is_file() else {}
    if study is None and summary.get("study"):
        study = str(summary["study"])
    if (path / STUDY_FILE).is_file():
        return RunSource(_sqlite_url(path / STUDY_FILE), study, path)
    if summary.get("storage"):
        return RunSource(str(summary["storage"]), study, path)
    raise ConfigError(f"{run}: not a hwtune run directory (no {STUDY_FILE} or {FRONT_FILE}); give --storage URL")


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
