"""Study storage: Optuna RDB storages, study records, resume and worker liveness.

Everything that touches Optuna's storage API lives here (Optuna is imported lazily so importing the
tuner stays fast). A trial's figures are one JSON user attribute (``"hw"``, a
:class:`~hwtune.records.TrialFigures`), the study's settings another (``"hwtune"``, a
:class:`~hwtune.records.StudyMeta`); both are validated when read back, since a study file may come
from someone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from hwtune._util import jsonable
from hwtune.errors import ConfigError, StudyError, did_you_mean
from hwtune.front import TrialRecord, TuneResult
from hwtune.records import StudyMeta, TrialFigures

__all__ = [
    "FIG_KEY",
    "FINALIZED_PREFIX",
    "META_KEY",
    "BufferedTrial",
    "download_artifact_file",
    "download_weights",
    "load_result",
    "load_study",
    "open_storage",
    "optuna_module",
    "quiet_optuna",
    "record_of",
    "recover_stale",
    "requeue",
    "resolve_artifact_dir",
    "result_from_study",
    "sha256_file",
    "storage_url",
    "study_meta",
    "trial_figures_dict",
    "upload_study_artifact",
    "upload_to_store",
    "worker_alive",
    "worker_id",
]

_ARTIFACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
META_KEY = "hwtune"
FIG_KEY = "hw"
# Study attribute per finalized trial: "hwtune.finalized.<number>" -> the finalize figures.
FINALIZED_PREFIX = "hwtune.finalized."
# A RUNNING trial that never recorded its worker is taken as dead after this long (Optuna's
# heartbeat grace period below uses the same figure).
STALE_UNKNOWN_WORKER_S = 120


def optuna_module() -> Any:
    import optuna

    return optuna


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial (and failed trials with tracebacks); hwtune prints its own lines."""
    optuna = optuna_module()
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message=".*heartbeat.*")
            yield
    finally:
        optuna.logging.set_verbosity(old)


def storage_url(storage: str | Path | None, out_dir: Path | None) -> str:
    if storage is None:
        if out_dir is None:
            raise ConfigError("storage: give a storage URL or an out_dir for the default SQLite file")
        return f"sqlite:///{(out_dir / 'study.db').resolve()}"
    text = str(storage)
    if "://" not in text:
        # A bare file path is an SQLite file (convenience; Optuna itself wants a URL).
        if text.endswith((".db", ".sqlite", ".sqlite3")):
            return f"sqlite:///{Path(text).expanduser().resolve()}"
        raise StudyError(
            f"storage {text!r} is not a database URL; expected e.g. sqlite:///path/study.db or "
            "postgresql://user@host/db"
        )
    return text


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna ``RDBStorage`` for ``url``, with a heartbeat so stale trials of dead workers fail.

    Raises:
        StudyError: the URL is malformed, its driver is missing or the database is unreachable.
    """
    optuna = optuna_module()
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) not in ("", ":memory:"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudyError(f"storage {url!r}: cannot create directory {path.parent}: {exc}") from exc
    kw: dict[str, Any] = {}
    if heartbeat:
        # Workers on other machines are known dead only by their silence: a trial without a
        # heartbeat for grace_period seconds is failed and re-queued by the next worker.
        kw = {
            "heartbeat_interval": 30,
            "grace_period": STALE_UNKNOWN_WORKER_S,
            "heartbeat_stale_trial_callback": requeue_stale,
        }
    try:
        with quiet_optuna():
            return optuna.storages.RDBStorage(url, **kw)
    except Exception as exc:  # sqlalchemy raises ArgumentError, NoSuchModuleError, OperationalError...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"cannot open study storage {url!r}: {type(exc).__name__}: {msg}") from exc


def requeue(study: Any, trial: Any) -> bool:
    """Queue a failed (killed / interrupted) trial's candidate again, once, keeping its promotion."""
    top = trial.user_attrs
    if top.get("retry_of") is not None or not trial.params:
        return False
    attrs = {"retry_of": trial.number}
    for k in ("continue_from", "rung_target", "candidate_key"):
        if top.get(k) is not None:
            attrs[k] = top[k]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def requeue_stale(study: Any, trial: Any) -> None:
    """Heartbeat callback: a stale trial's candidate goes back in the queue (once)."""
    with contextlib.suppress(Exception):
        requeue(study, trial)


_STATE_NAMES = {"COMPLETE": "complete", "FAIL": "fail", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned"}


def record_of(t: Any) -> TrialRecord:
    """An Optuna trial as a :class:`TrialRecord` (figures validated; unreadable figures fail the trial only)."""
    state = _STATE_NAMES.get(t.state.name, t.state.name.lower())
    raw = trial_figures_dict(t)
    try:
        figures = TrialFigures.from_dict(raw, where=f"trial {t.number}")
    except StudyError as exc:
        figures = TrialFigures(failure=f"stored figures unreadable: {exc}")
        state = "fail" if state == "complete" else state
    if state == "fail" and figures.failure is None:
        figures = figures.updated(failure="the worker stopped while the trial was running (killed?); marked failed")
    return TrialRecord(
        number=int(t.number),
        state=state,
        figures=figures,
        constraints={str(k): float(v) for k, v in (t.constraints or {}).items()},
        values=None if t.values is None else tuple(float(v) for v in t.values),
        started=None if t.datetime_start is None else t.datetime_start.isoformat(),
        finished=None if t.datetime_complete is None else t.datetime_complete.isoformat(),
    )


def study_meta(study: Any) -> StudyMeta | None:
    """The study's stored settings, validated; None for a study hwtune did not create."""
    raw = study.user_attrs.get(META_KEY)
    if raw is None:
        return None
    return StudyMeta.from_dict(raw, where=f"study {study.study_name!r} settings")


def _with_finalized(rec: TrialRecord, finalized: Mapping[int, Any]) -> TrialRecord:
    figs = finalized.get(rec.number)
    if not isinstance(figs, Mapping):
        return rec
    return replace(rec, figures=rec.figures.updated(finalized=dict(figs)))


def result_from_study(study: Any, *, interrupted: bool = False) -> TuneResult:
    meta = study_meta(study) or StudyMeta()
    finalized = {}
    for k, v in study.user_attrs.items():
        if k.startswith(FINALIZED_PREFIX) and k[len(FINALIZED_PREFIX) :].isdigit():
            finalized[int(k[len(FINALIZED_PREFIX) :])] = v
    trials = tuple(_with_finalized(record_of(t), finalized) for t in study.get_trials(deepcopy=False))
    return TuneResult(
        study_name=study.study_name,
        storage=meta.storage or "",
        out_dir=None if meta.out_dir is None else Path(meta.out_dir),
        device=str((meta.device or {}).get("id", "?")),
        recipe=str((meta.recipe or {}).get("name", "?")),
        objectives=tuple(meta.objectives or ("accuracy", "latency")),
        reference_point={k: float(v) for k, v in (meta.reference_point or {}).items()},
        constraints=dict(meta.constraints or {}),
        trials=trials,
        interrupted=interrupted,
        meta=meta,
    )


def _sqlite_dir(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            return Path(path).parent
    return None


def resolve_artifact_dir(meta: StudyMeta, url: str) -> Path:
    """Where a study's artifacts are: relative paths are relative to the SQLite file's directory; an
    absolute path that no longer exists (a run directory that was moved) falls back to ``artifacts/``
    next to the study file.
    """
    stored = meta.artifact_dir
    base = _sqlite_dir(url)
    if stored:
        p = Path(stored)
        if not p.is_absolute() and base is not None:
            return base / p
        if p.is_dir() or base is None:
            return p
    if base is not None and (base / "artifacts").is_dir():
        return base / "artifacts"
    return Path(stored) if stored else Path("artifacts")


def load_study(storage: str | Path, study_name: str | None) -> tuple[Any, str]:
    optuna = optuna_module()
    url = storage_url(storage, None)
    st = open_storage(url, heartbeat=False)
    with quiet_optuna():
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        if study_name is None:
            if len(names) == 1:
                study_name = names[0]
            else:
                raise StudyError(
                    f"storage {url!r} holds {len(names)} studies; name one with --study ({', '.join(names) or 'none'})"
                )
        if study_name not in names:
            raise StudyError(
                f"no study {study_name!r} in {url}{did_you_mean(study_name, names)}"
                + (f" (studies: {', '.join(names)})" if names else " (it holds no study)")
            )
        study = optuna.load_study(study_name=study_name, storage=st)
    if study_meta(study) is None:
        raise StudyError(f"study {study_name!r} in {url} was not created by hwtune (no '{META_KEY}' attributes)")
    return study, url


def load_result(storage: str | Path, study_name: str | None = None) -> TuneResult:
    """Read a study back as a :class:`TuneResult` (front, hypervolume, every trial) without running it.

    Raises:
        StudyError: bad storage URL, no such study, or a study hwtune did not create.
    """
    study, _ = load_study(storage, study_name)
    return result_from_study(study)


def download_weights(result: TuneResult, number: int, dest: str | Path, *, finalized: bool = False) -> Path:
    """Fetch trial ``number``'s trained-weights artifact (or its finalized weights) into ``dest``."""
    rec = result.trial(number)
    artifact_id = rec.figures.artifact_id
    if finalized:
        artifact_id = (rec.figures.finalized or {}).get("artifact_id")
        if not artifact_id:
            raise StudyError(f"trial {number} of study {result.study_name!r} was not finalized (hwtune finalize)")
    if not artifact_id:
        raise StudyError(
            f"trial {number} of study {result.study_name!r} has no stored weights "
            f"(state {rec.state}{', not trained' if not rec.trained else ''})"
        )
    return download_artifact_file(result, str(artifact_id), dest, what=f"the weights of trial {number}")


def upload_study_artifact(result: TuneResult, path: Path) -> str:
    """Put a file into the study's artifact store (not attached to a trial); returns its id."""
    base = resolve_artifact_dir(result.meta, result.storage)
    return upload_to_store(base, path)


def upload_to_store(base: Path, path: Path) -> str:
    """Write ``path`` into the file-system artifact store at ``base`` under a new id."""
    import uuid

    optuna = optuna_module()
    store = optuna.artifacts.FileSystemArtifactStore(str(base))
    artifact_id = str(uuid.uuid4())
    with open(path, "rb") as fh:
        store.write(artifact_id, fh)
    return artifact_id


def download_artifact_file(result: TuneResult, artifact_id: str, dest: str | Path, *, what: str = "") -> Path:
    """Fetch one artifact of the study into ``dest`` (a file path)."""
    optuna = optuna_module()
    what = what or f"artifact {artifact_id}"
    if not _ARTIFACT_ID.fullmatch(str(artifact_id)):
        # ids come from the study file: never let one name a path outside the store
        raise StudyError(f"study {result.study_name!r}: artifact id {str(artifact_id)[:80]!r} is not a valid id")
    base = resolve_artifact_dir(result.meta, result.storage)
    if not base.is_dir():
        raise StudyError(f"artifact directory {str(base)!r} of study {result.study_name!r} is missing")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    store = optuna.artifacts.FileSystemArtifactStore(str(base))
    try:
        optuna.artifacts.download_artifact(artifact_store=store, file_path=str(dest), artifact_id=artifact_id)
    except Exception as exc:
        raise StudyError(f"cannot read {what} ({artifact_id}) from {base}: {exc}") from exc
    return dest


class BufferedTrial:
    """Wraps an Optuna trial: ``set_user_attr`` collects into one dict written by ``flush()``.

    Each user attribute is a database commit (~5-10 ms on SQLite); a trial records ~40 figures.
    One JSON attribute (``"hw"``) flushed at a few checkpoints (after the profile, after every
    rung, at the end or on failure) keeps the per-trial storage cost to a handful of commits.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.attrs: dict[str, Any] = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = jsonable(value)

    def flush(self) -> None:
        figures = TrialFigures.from_dict(self.attrs, where=f"trial {self.trial.number}")
        self.trial.set_user_attr(FIG_KEY, figures.to_dict())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)


def trial_figures_dict(t: Any) -> dict[str, Any]:
    """A trial's figures: its user attributes with the buffered ``"hw"`` dict merged in."""
    out = {k: v for k, v in t.user_attrs.items() if k != FIG_KEY}
    out.update(t.user_attrs.get(FIG_KEY) or {})
    return out


def process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def worker_alive(worker: Mapping[str, Any]) -> bool | None:
    """True/False for a worker on this host, None when it cannot be told (another host)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    start = process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return worker.get("start") is None
    return worker.get("start") in (None, start)


def recover_stale(study: Any, log: Callable[[str], None]) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone, and re-queue their candidates."""
    optuna = optuna_module()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial_figures_dict(t).get("worker")
        if worker:
            if worker_alive(worker) is not False:
                continue
        else:
            # Killed between creating the trial and recording its worker: only an old one is surely dead.
            started = t.datetime_start
            if started is None or (datetime.now() - started).total_seconds() < STALE_UNKNOWN_WORKER_S:
                continue
        with contextlib.suppress(Exception):
            study._storage.set_trial_user_attr(
                t._trial_id,
                "failure",
                "the worker process ended (killed?) while the trial was running; "
                "marked failed on resume and its candidate re-queued",
            )
        try:
            ok = study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another process failed it first (UpdateFinishedTrialError)
            ok = False
        if ok:
            failed.append(t.number)
            requeue(study, t)
    if failed:
        log(
            f"resume: trial(s) {', '.join(map(str, failed))} were left running by a killed process; "
            "marked failed, candidates re-queued"
        )
    return failed


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
