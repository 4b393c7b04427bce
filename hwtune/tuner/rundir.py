"""Where a finished search is: a run directory, a study ``.db`` file, a storage URL or a result object.

``hwtune tune --out DIR`` (``tune(out_dir=DIR)``) writes ``DIR/study.db`` (the SQLite study) and
``DIR/front.json`` (which also names the storage and the study, so a run that used a remote
storage is found from its directory too). The command line (``hwtune export DIR``) and the Python
API (``hwtune.export(DIR, "knee", ...)``) both resolve such a source here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwtune._io import load_json
from hwtune.errors import ConfigError
from hwtune.front import TuneResult

__all__ = ["FRONT_FILE", "STUDY_FILE", "RunSource", "locate_run", "locate_study"]

STUDY_FILE = "study.db"
FRONT_FILE = "front.json"


@dataclass(frozen=True)
class RunSource:
    """A study to read.

    Attributes:
        storage: its Optuna storage URL.
        study_name: its name (None: the only study in the storage).
        run_dir: its run directory, when it was named by one (or by the ``.db`` file in it).
    """

    storage: str
    study_name: str | None
    run_dir: Path | None = None


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _summary(path: Path) -> dict[str, Any]:
    data = load_json(path, kind="run summary (the front.json hwtune tune writes)")
    return data if isinstance(data, dict) else {}


def locate_run(run: str | Path, study_name: str | None = None) -> RunSource:
    """The study named by a run directory, a study ``.db`` file or a storage URL.

    Args:
        run: a run directory (holding ``study.db``, or a ``front.json`` naming a remote storage),
            a ``.db`` file or a storage URL (``sqlite:///...``, ``postgresql://...``).
        study_name: the study, when the storage holds several (default: the one ``front.json``
            names, else the only one).

    Raises:
        ConfigError: ``run`` is none of these (one line naming it).
    """
    text = str(run)
    if "://" in text:
        return RunSource(text, study_name)
    path = Path(text).expanduser()
    if path.suffix == ".db" and not path.is_dir():
        # a missing .db file is reported by the storage ("no study database at ..."), not created
        return RunSource(_sqlite_url(path), study_name, path.parent)
    if path.is_file():
        raise ConfigError(f"{text}: expected a run directory, a study .db file or a storage URL")
    if not path.is_dir():
        raise ConfigError(f"{text}: no such run directory (hwtune tune --out DIR writes one)")
    summary = _summary(path / FRONT_FILE) if (path / FRONT_FILE).is_file() else {}
    if study_name is None and summary.get("study"):
        study_name = str(summary["study"])
    if (path / STUDY_FILE).is_file():
        return RunSource(_sqlite_url(path / STUDY_FILE), study_name, path)
    if summary.get("storage"):
        return RunSource(str(summary["storage"]), study_name, path)
    raise ConfigError(f"{text}: not a hwtune run directory (no {STUDY_FILE} or {FRONT_FILE}); give a storage URL")


def locate_study(source: Any, study_name: str | None = None, *, what: str = "source") -> RunSource:
    """The study behind any source the Python API takes.

    Args:
        source: a :class:`~hwtune.front.TuneResult`, a run directory, a study ``.db`` file, a
            storage URL, or an ``optuna.Study`` in an RDB storage.
        study_name: the study, when ``source`` is a storage holding several (ignored for a result
            or a study object, which name their own).
        what: the argument's name in error messages (``export source``).

    Raises:
        ConfigError: an unsupported type or a path that is not a run.
    """
    if isinstance(source, TuneResult):
        return RunSource(source.storage, source.study_name)
    if isinstance(source, (str, Path)):
        return locate_run(source, study_name)
    if hasattr(source, "study_name") and hasattr(source, "_storage"):  # an optuna.Study
        url = getattr(getattr(source, "_storage", None), "url", None)
        if url is None:
            raise ConfigError(f"{what}: the optuna.Study must be in an RDB storage (sqlite:///..., postgresql://...)")
        return RunSource(str(url), str(source.study_name))
    raise ConfigError(
        f"{what} must be a TuneResult, a run directory, a study .db file, a storage URL or an optuna.Study, "
        f"got {type(source).__name__}"
    )
