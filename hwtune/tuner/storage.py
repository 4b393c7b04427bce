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
import random
import re
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from hwtune._tempdirs import process_start
from hwtune._util import first_line, is_num, jsonable
from hwtune.errors import ConfigError, HwtuneError, StudyError, did_you_mean
from hwtune.front import TrialRecord, TuneResult
from hwtune.records import StudyMeta, TrialFigures
from hwtune.tuner.artifacts import ArtifactLocation, location_for_reading, redact_url, sqlite_dir
from hwtune.tuner.dbcheck import check_study_database, sqlite_file
from hwtune.tuner.retry import SQLITE_BUSY_S, outage_bound_s, retry_storage_call, retrying_rdb_storage

__all__ = [
    "DASHBOARD_KEYS",
    "FIG_KEY",
    "FINALIZED_PREFIX",
    "META_KEY",
    "REMEASURED_PREFIX",
    "TARGET_KEY",
    "WORKERS_KEY",
    "BufferedTrial",
    "artifact_location",
    "check_database",
    "create_or_load_study",
    "dashboard_command",
    "download_artifact_file",
    "download_weights",
    "fetch_artifact",
    "figures_dict",
    "fresh_trials",
    "heartbeat_ages",
    "heartbeat_settings",
    "live_local_workers",
    "liveness_text",
    "load_result",
    "load_study",
    "open_storage",
    "optuna_module",
    "quiet_optuna",
    "reading_errors",
    "record_of",
    "recover_stale",
    "register_worker",
    "requeue",
    "resolve_artifact_dir",
    "result_from_study",
    "settle_stale",
    "sha256_file",
    "storage_url",
    "study_lock",
    "study_meta",
    "study_target",
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
# Study attribute per trial whose latency was measured again with no other worker of the study running:
# "hwtune.remeasured.<number>" -> {device id: {latency_ms, latency, latency_label, latency_conditions}}.
REMEASURED_PREFIX = "hwtune.remeasured."
# The study's target of complete trials (any worker) and the workers that joined it (index = seed offset).
TARGET_KEY = "hwtune.n_trials"
WORKERS_KEY = "hwtune.workers"
# Flat, sortable trial attributes for optuna-dashboard, written once when a trial ends (next to the typed
# "hw" record, which is what hwtune reads).
DASHBOARD_KEYS = (
    "precision",
    "rung",
    "budget_epochs",
    "latency_ms",
    "latency_source",
    "latency_conditions",
    "macs",
    "params",
    "peak_activation_bytes",
    "weight_bytes",
    "devices",
)
# Schema creation / study creation races between workers starting at once are retried this often.
_CREATE_ATTEMPTS = 8
# Worker liveness. A trial's worker writes a heartbeat every HEARTBEAT_S; a RUNNING trial silent for the
# grace period (HWTUNE_HEARTBEAT_GRACE_S, default 60 s) is failed and its candidate re-queued by the next
# worker that starts a trial. A worker on this machine whose process is gone is known dead at once
# (its pid); a RUNNING trial that never recorded its worker is taken as dead after the grace period.
GRACE_ENV = "HWTUNE_HEARTBEAT_GRACE_S"
DEFAULT_GRACE_S = 60


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


def _retryable(exc: BaseException) -> bool:
    """A race between workers creating the same schema/study at once (not a bad URL or a dead server)."""
    import sqlalchemy.exc

    if isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.OperationalError) and ("locked" in text or "already exists" in text)


def _with_retry(what: Callable[[], Any]) -> Any:
    """Call ``what`` again (with a jittered back-off) while it fails with a start-up race."""
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return what()
        except Exception as exc:
            if attempt == _CREATE_ATTEMPTS - 1 or not _retryable(exc):
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite serialises writers; several local workers wait for the lock (then the outage retry takes over).
    # A server's pooled connections are checked before use: after a restart they are all dead.
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": min(SQLITE_BUSY_S, max(1.0, outage_bound_s() / 4))}}
    return {"pool_pre_ping": True}


def heartbeat_settings() -> tuple[int, int]:
    """``(heartbeat interval, grace period)`` in seconds for this process's workers (``HWTUNE_HEARTBEAT_GRACE_S``).

    Raises:
        ConfigError: the variable is not a whole number of seconds >= 2.
    """
    raw = os.environ.get(GRACE_ENV, "").strip()
    grace = DEFAULT_GRACE_S
    if raw:
        if not raw.isdigit() or int(raw) < 2:
            raise ConfigError(f"environment variable {GRACE_ENV} must be a whole number of seconds >= 2, got {raw!r}")
        grace = int(raw)
    return max(1, grace // 6), grace


def liveness_text() -> str:
    """The worker-liveness settings as printed with the study settings."""
    interval, grace = heartbeat_settings()
    return (
        f"worker heartbeat every {interval} s, grace period {grace} s (a trial whose worker is gone is failed "
        f"and re-run once); storage outages retried for up to {outage_bound_s():g} s"
    )


def check_database(url: str, *, create: bool) -> None:
    """Read the database at ``url`` before Optuna does: a damaged or foreign file is one StudyError line.

    Checks the file, Optuna's schema and version, everything Optuna parses when it loads trials, and
    hwtune's records (the study's settings, every trial's figures). Nothing is written. With
    ``create`` a missing file or an empty database passes (a worker creates it).

    Raises:
        StudyError: ``"<file>: <what is wrong>"`` (see :mod:`hwtune.tuner.dbcheck`).
    """
    check_study_database(url, create=create, check_study=_check_study_attrs, check_trial=_check_trial_attrs)


def _check_study_attrs(name: str, attrs: Mapping[str, Any]) -> None:
    _meta_of(name, attrs)


def _check_trial_attrs(label: str, attrs: Mapping[str, Any]) -> None:
    TrialFigures.from_dict(figures_dict(attrs, where=label), where=label)


def open_storage(url: str, *, heartbeat: bool = True, create: bool = True) -> Any:
    """An Optuna ``RDBStorage`` for ``url``, with a heartbeat so stale trials of dead workers fail.

    Args:
        url: Storage URL.
        heartbeat: Heartbeat and stale-trial recovery (workers).
        create: Create the database file and schema when missing (workers). With ``False`` (read-only
            commands) a missing file or schema is a :class:`StudyError` and nothing is written.

    Raises:
        StudyError: the URL is malformed, its driver is missing, the database is unreachable, or
            (``create=False``) it holds no study.
    """
    path = sqlite_file(url)
    if not create:
        check_database(url, create=False)
    elif path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"storage {url!r}: cannot create directory {path.parent}: {exc}") from exc
    kw: dict[str, Any] = {"engine_kwargs": _engine_kwargs(url), "skip_table_creation": not create}
    if heartbeat:
        # Workers on other machines are known dead only by their silence: a trial without a
        # heartbeat for grace_period seconds is failed and re-queued by the next worker.
        interval, grace = heartbeat_settings()
        kw.update(heartbeat_interval=interval, grace_period=grace, heartbeat_stale_trial_callback=requeue_stale)
    where = redact_url(url)

    def make() -> Any:
        with quiet_optuna():
            return retrying_rdb_storage(url, where, **kw)

    try:
        if create and "://" in url and not url.startswith("sqlite:///:memory:"):
            with study_lock(url, ""):  # schema creation: one worker at a time
                # Checked under the lock: another worker may be creating the schema right now.
                check_database(url, create=True)
                return _with_retry(make)
        return _with_retry(make)
    except StudyError:
        raise
    except Exception as exc:  # sqlalchemy raises ArgumentError, NoSuchModuleError, OperationalError...
        raise StudyError(
            f"cannot open study storage {redact_url(url)!r}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def create_or_load_study(storage: Any, study_name: str, directions: Sequence[str]) -> Any:
    """``optuna.create_study(load_if_exists=True)`` that survives many workers starting at once."""
    optuna = optuna_module()

    def make() -> Any:
        with quiet_optuna():
            return optuna.create_study(
                storage=storage, study_name=study_name, load_if_exists=True, directions=list(directions)
            )

    return _with_retry(make)


# -- locks -------------------------------------------------------------------------------------------
_held: dict[tuple[str, str], int] = {}
_held_guard = threading.Lock()
_pg_engines: dict[str, Any] = {}


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Exclusive access to a study among all its workers (re-entrant within a process).

    SQLite: ``fcntl.flock`` on ``<study file>.lock`` next to the database (every worker of an SQLite
    study is on a machine that sees the file). PostgreSQL: a session advisory lock, released by the
    server if the worker dies. Other servers: no lock (the retries and the RUNNING-twin check still
    apply).
    """
    key = (url, "" if sqlite_dir(url) is not None else study_name)  # SQLite: one lock file per database
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    with _acquire(url, study_name):
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)


@contextlib.contextmanager
def _acquire(url: str, study_name: str) -> Iterator[None]:
    base = sqlite_dir(url)
    if base is not None:
        import fcntl

        base.mkdir(parents=True, exist_ok=True)
        with open(base / (Path(url[len("sqlite:///") :]).name + ".lock"), "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return
    if url.startswith(("postgresql", "postgres")):
        import sqlalchemy

        engine = _pg_engines.get(url)
        if engine is None:
            engine = _pg_engines[url] = sqlalchemy.create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True)
        lock_id = int.from_bytes(hashlib.sha256(f"hwtune:{study_name}".encode()).digest()[:8], "big", signed=True)

        def lock() -> Any:
            conn = engine.connect()
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
            except BaseException:
                conn.close()
                raise
            return conn

        conn = retry_storage_call(lock, where=redact_url(url))
        try:
            yield
        finally:
            # A connection lost meanwhile took the lock with it (the server releases it).
            with contextlib.suppress(Exception):
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                conn.commit()
            conn.close()
        return
    yield


def register_worker(study: Any, url: str) -> int:
    """Record this process as a worker of the study; returns its index (0 for the first ever).

    The index offsets the sampler seed, so workers started with the same study seed do not propose
    the same candidates.
    """
    with study_lock(url, study.study_name):
        workers = list(study.user_attrs.get(WORKERS_KEY) or [])
        index = len(workers)
        workers.append({**worker_id(), "index": index, "since": datetime.now().isoformat(timespec="seconds")})
        study.set_user_attr(WORKERS_KEY, workers)
    return index


def live_local_workers(study: Any) -> int:
    """How many registered workers of the study are alive on this machine (at least 1: this one)."""
    n = 0
    for w in study.user_attrs.get(WORKERS_KEY) or []:
        if isinstance(w, Mapping) and worker_alive(w) is True:
            n += 1
    return max(n, 1)


def study_target(study: Any) -> int | None:
    """The study's stored target of complete trials (``tune(n_trials=...)``), if any."""
    v = study.user_attrs.get(TARGET_KEY)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def requeue(study: Any, trial: Any, *, max_tries: int = 1) -> bool:
    """Queue a failed (killed / interrupted) trial's candidate again, keeping its promotion.

    At most ``max_tries`` re-runs of one candidate in a row (a killed trial runs again once; a trial
    the artifact store failed, a few times: the store may stay down a while).
    """
    top = trial.user_attrs
    tries = int(top.get("retries") or (0 if top.get("retry_of") is None else 1))
    if tries >= max_tries or not trial.params:
        return False
    attrs = {"retry_of": trial.number, "retries": tries + 1}
    for k in ("continue_from", "rung_target", "candidate_key"):
        if top.get(k) is not None:
            attrs[k] = top[k]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def requeue_stale(study: Any, trial: Any) -> None:
    """Heartbeat callback: a stale trial's candidate goes back in the queue (once)."""
    with contextlib.suppress(Exception):
        again = requeue(study, trial)
        print(
            f"trial {trial.number}: no heartbeat from its worker for {heartbeat_settings()[1]} s (worker gone?); "
            f"marked failed{', candidate re-queued' if again else ''}",
            file=sys.stderr,
            flush=True,
        )


_STATE_NAMES = {"COMPLETE": "complete", "FAIL": "fail", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned"}


def record_of(t: Any) -> TrialRecord:
    """An Optuna trial as a :class:`TrialRecord`.

    Raises:
        StudyError: the stored figures are not a valid record (a damaged or crafted study; the
            readers check every trial when they open the study, see :func:`check_database`).
    """
    state = _STATE_NAMES.get(t.state.name, t.state.name.lower())
    figures = TrialFigures.from_dict(trial_figures_dict(t), where=f"trial {t.number}")
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
    return _meta_of(study.study_name, study.user_attrs)


def _meta_of(study_name: str, attrs: Mapping[str, Any]) -> StudyMeta | None:
    raw = attrs.get(META_KEY)
    if raw is None:
        return None
    where = f"study {study_name!r} settings"
    if not isinstance(raw, Mapping):  # StudyMeta.from_dict would fail on dict(raw) with a TypeError
        raise StudyError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return StudyMeta.from_dict(raw, where=where)


def _with_finalized(rec: TrialRecord, finalized: Mapping[int, Any]) -> TrialRecord:
    figs = finalized.get(rec.number)
    if not isinstance(figs, Mapping):
        return rec
    return replace(rec, figures=rec.figures.updated(finalized=dict(figs)))


def _with_remeasured(rec: TrialRecord, remeasured: Mapping[int, Any], primary: str) -> TrialRecord:
    """The trial with its latency measured alone (after the search) in place of the shared-CPU figure."""
    per = remeasured.get(rec.number)
    if not isinstance(per, Mapping):
        return rec
    f = rec.figures
    changes: dict[str, Any] = {}
    devices = dict(f.per_device or {})
    for dev, m in per.items():
        if not isinstance(m, Mapping) or not is_num(m.get("latency_ms")):
            continue
        update = {k: m[k] for k in ("latency_ms", "latency", "latency_label") if m.get(k) is not None}
        if dev in devices:
            devices[dev] = replace(devices[dev], **update)
        if dev == primary:
            changes.update(update)
    if not changes:
        return rec
    try:
        figures = f.updated(**changes)
    except StudyError:
        return rec  # unreadable stored re-measurement: keep the search figure
    extra = {**f.extra, "latency_conditions": "alone (re-measured)", "latency_shared_ms": f.latency_ms}
    return replace(rec, figures=replace(figures, extra=extra, per_device=devices or f.per_device))


def _numbered(attrs: Mapping[str, Any], prefix: str) -> dict[int, Any]:
    return {int(k[len(prefix) :]): v for k, v in attrs.items() if k.startswith(prefix) and k[len(prefix) :].isdigit()}


def result_from_study(study: Any, *, interrupted: bool = False, url: str | None = None) -> TuneResult:
    """The study as a :class:`TuneResult`; ``url`` is where it was opened (the stored one may be stale:
    a run directory that was moved)."""
    with reading_errors(url or f"study {study.study_name!r}"):
        meta = study_meta(study) or StudyMeta()
        attrs = study.user_attrs
        stored_trials = fresh_trials(study)
    finalized = _numbered(attrs, FINALIZED_PREFIX)
    remeasured = _numbered(attrs, REMEASURED_PREFIX)
    trials = tuple(
        _with_remeasured(_with_finalized(record_of(t), finalized), remeasured, meta.device_ids[0])
        for t in stored_trials
    )
    return TuneResult(
        study_name=study.study_name,
        storage=url or meta.storage or "",
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


def resolve_artifact_dir(meta: StudyMeta, url: str) -> Path:
    """Where a study's artifact directory is on this machine (see :func:`artifact_location`)."""
    loc = artifact_location(meta, url)
    return loc.path if loc.path is not None else Path(loc.describe())


def artifact_location(meta: StudyMeta, url: str) -> ArtifactLocation:
    """The study's artifact store for reading: relative paths are relative to the SQLite file's
    directory; an absolute path that no longer exists (a run directory that was moved) falls back to
    ``artifacts/`` next to the study file; ``s3://`` URLs name an S3 store.
    """
    return location_for_reading(meta.artifact_dir, url)


@contextlib.contextmanager
def reading_errors(url: str) -> Iterator[None]:
    """Optuna / SQLAlchemy / JSON errors while reading a study as one StudyError naming the database.

    :func:`check_database` catches what it can before Optuna opens a file; this is the net under
    it (e.g. damage SQLite's quick check does not see, or a file changed since).
    """
    optuna = optuna_module()
    import sqlalchemy.exc

    try:
        yield
    except HwtuneError:
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError, ValueError, LookupError, TypeError) as exc:
        path = sqlite_file(url)
        where = str(path) if path is not None else redact_url(url)
        raise StudyError(f"{where}: cannot read the study database ({type(exc).__name__}: {first_line(exc)})") from exc


def load_study(storage: str | Path, study_name: str | None) -> tuple[Any, str]:
    optuna = optuna_module()
    url = storage_url(storage, None)
    st = open_storage(url, heartbeat=False, create=False)
    with quiet_optuna(), reading_errors(url):
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        if study_name is None:
            if len(names) == 1:
                study_name = names[0]
            else:
                raise StudyError(
                    f"storage {redact_url(url)!r} holds {len(names)} studies; name one with --study "
                    f"({', '.join(names) or 'none'})"
                )
        if study_name not in names:
            raise StudyError(
                f"no study {study_name!r} in {redact_url(url)}{did_you_mean(study_name, names)}"
                + (f" (studies: {', '.join(names)})" if names else " (it holds no study)")
            )
        study = optuna.load_study(study_name=study_name, storage=st)
        meta = study_meta(study)
    if meta is None:
        raise StudyError(
            f"study {study_name!r} in {redact_url(url)} was not created by hwtune (no '{META_KEY}' attributes)"
        )
    return study, url


def load_result(storage: str | Path, study_name: str | None = None) -> TuneResult:
    """Read a study back as a :class:`TuneResult` (front, hypervolume, every trial) without running it.

    Raises:
        StudyError: bad storage URL, no such study, a study hwtune did not create, or a damaged or
            foreign database (one line naming the file and what is wrong; the file is not modified).
    """
    if isinstance(storage, (str, Path)) and "://" not in str(storage) and Path(storage).is_dir():
        from hwtune.tuner.rundir import locate_run  # a run directory, as the CLI takes it

        src = locate_run(storage, study_name)
        storage, study_name = src.storage, src.study_name
    study, url = load_study(storage, study_name)
    return result_from_study(study, url=url)


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


def dashboard_command(result: TuneResult) -> str:
    """The one command that opens optuna-dashboard on this study with its artifacts (``pip install optuna-dashboard``)."""
    import shlex

    loc = artifact_location(result.meta, result.storage)
    if not loc.is_s3:
        return f"optuna-dashboard {shlex.quote(result.storage)} --artifact-dir {shlex.quote(str(loc.path))}"
    code = (
        "import optuna_dashboard as d, hwtune.tuner.artifacts as a; "
        f"d.run_server({result.storage!r}, artifact_store=a.parse_location({loc.stored!r}, '').store())"
    )
    return f"python -c {shlex.quote(code)}"


def upload_study_artifact(result: TuneResult, path: Path) -> str:
    """Put a file into the study's artifact store (not attached to a trial); returns its id."""
    return upload_to_store(artifact_location(result.meta, result.storage).store(), path)


def upload_to_store(base: Path | Any, path: Path) -> str:
    """Write ``path`` into an artifact store (an Optuna store, or a directory for a file-system one) under a new id."""
    import uuid

    store: Any = base  # an Optuna artifact store
    if isinstance(base, (str, Path)):
        store = optuna_module().artifacts.FileSystemArtifactStore(str(base))
    artifact_id = str(uuid.uuid4())
    with open(path, "rb") as fh:
        store.write(artifact_id, fh)
    return artifact_id


def download_artifact_file(result: TuneResult, artifact_id: str, dest: str | Path, *, what: str = "") -> Path:
    """Fetch one artifact of the study into ``dest`` (a file path)."""
    what = what or f"artifact {artifact_id}"
    loc = artifact_location(result.meta, result.storage)
    if loc.path is not None and not loc.path.is_dir():
        raise StudyError(f"artifact directory {str(loc.path)!r} of study {result.study_name!r} is missing")
    return fetch_artifact(loc.store(), artifact_id, dest, what=what, where=loc.describe())


def fetch_artifact(store: Any, artifact_id: str, dest: str | Path, *, what: str, where: str) -> Path:
    """Download ``artifact_id`` from ``store`` into ``dest`` (replaced if present); ids are validated first."""
    optuna = optuna_module()
    if not _ARTIFACT_ID.fullmatch(str(artifact_id)):
        # ids come from the study file: never let one name a path outside the store
        raise StudyError(f"{what}: artifact id {str(artifact_id)[:80]!r} is not a valid id")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        optuna.artifacts.download_artifact(artifact_store=store, file_path=str(dest), artifact_id=artifact_id)
    except Exception as exc:
        raise StudyError(f"cannot read {what} ({artifact_id}) from {where}: {first_line(exc)}") from exc
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

    def flush(self, *, final: bool = False) -> None:
        """Write the figures (one ``hw`` attribute); ``final`` also writes the flat dashboard attributes."""
        figures = TrialFigures.from_dict(self.attrs, where=f"trial {self.trial.number}")
        self.trial.set_user_attr(FIG_KEY, figures.to_dict())
        if final:
            for key in DASHBOARD_KEYS:
                value = self.attrs.get(key)
                if value is not None and not isinstance(value, (dict, list)):
                    self.trial.set_user_attr(key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)


def fresh_trials(study: Any, states: Sequence[Any] | None = None) -> list[Any]:
    """The study's trials as its database holds them now (ordered by number).

    Optuna's per-process cache re-reads only the trials it knows to be unfinished and those whose id is
    above the last finished one it has seen. On PostgreSQL, concurrent workers take trial ids from a
    sequence and commit them out of order, so a trial another worker created can stay invisible to this
    process for good: a claim would then miss a twin and a count would miss a completed trial. Server
    storages are therefore read past the cache; SQLite commits in id order, and its cached reads are exact.
    """
    storage = study._storage
    backend = getattr(storage, "_backend", None)
    engine = getattr(backend, "engine", None)
    if backend is None or engine is None or engine.dialect.name == "sqlite":
        return list(study.get_trials(deepcopy=False, states=states))
    trials = backend.get_all_trials(study._study_id, deepcopy=False, states=states)
    return sorted(trials, key=lambda t: t.number)


def trial_figures_dict(t: Any) -> dict[str, Any]:
    """A trial's figures: its user attributes with the buffered ``"hw"`` dict merged in."""
    return figures_dict(t.user_attrs, where=f"trial {t.number}")


def figures_dict(user_attrs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Trial user attributes with the buffered ``"hw"`` dict merged in (``where`` names the trial in errors).

    Raises:
        StudyError: ``"hw"`` is not a JSON object.
    """
    out = {k: v for k, v in user_attrs.items() if k != FIG_KEY}
    buffered = user_attrs.get(FIG_KEY)
    if buffered is not None and not isinstance(buffered, Mapping):
        raise StudyError(f"{where}: attribute {FIG_KEY!r} must be a JSON object, got {type(buffered).__name__}")
    out.update(buffered or {})
    return out


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
    for t in fresh_trials(study, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial_figures_dict(t).get("worker")
        if worker:
            if worker_alive(worker) is not False:
                continue
        else:
            # Killed between creating the trial and recording its worker: only an old one is surely dead.
            started = t.datetime_start
            if started is None or (datetime.now() - started).total_seconds() < heartbeat_settings()[1]:
                continue
        with contextlib.suppress(Exception):
            study._storage.set_trial_user_attr(
                t._trial_id,
                "failure",
                "the worker process ended (killed?) while the trial was running; "
                "marked failed and its candidate re-queued",
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
            f"trial(s) {', '.join(map(str, failed))} were left running by a worker process that is gone (killed?); "
            "marked failed, candidates re-queued"
        )
    return failed


def heartbeat_ages(study: Any) -> dict[int, float | None]:
    """RUNNING trials of the study (by number) and seconds since their last heartbeat (None: none yet)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    backend = getattr(study._storage, "_backend", study._storage)

    def read() -> dict[int, float | None]:
        session = backend.scoped_session()
        try:
            now = session.execute(sqlalchemy.func.now()).scalar()
            rows = (
                session.query(models.TrialModel.number, models.TrialHeartbeatModel.heartbeat)
                .outerjoin(
                    models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id
                )
                .filter(models.TrialModel.study_id == study._study_id)
                .filter(models.TrialModel.state == optuna_module().trial.TrialState.RUNNING)
                .all()
            )
        finally:
            session.close()
        if isinstance(now, str):  # SQLite
            now = datetime.fromisoformat(now)
        now = now.replace(tzinfo=None)
        return {int(n): None if hb is None else (now - hb).total_seconds() for n, hb in rows}

    return dict(retry_storage_call(read, where=redact_url(str(backend.engine.url))))


def settle_stale(study: Any, log: Callable[[str], None]) -> int:
    """Before a worker leaves a study that has its trials: wait (at most the grace period) for RUNNING
    trials whose heartbeat stopped, and fail and re-queue them, so no trial of a dead worker stays
    RUNNING after the last worker is gone. Returns how many were re-queued (by this worker or another):
    queued trials that retry a failed one, not the promotions other workers queue meanwhile (counting
    those made a worker run one more trial past the study's target).
    """
    optuna = optuna_module()
    interval, grace = heartbeat_settings()
    deadline = time.monotonic() + grace + interval
    waiting = optuna.trial.TrialState.WAITING

    def requeued() -> set[int]:
        return {t.number for t in fresh_trials(study, states=(waiting,)) if t.user_attrs.get("retry_of") is not None}

    before = requeued()
    while True:
        recover_stale(study, log)
        with contextlib.suppress(optuna.exceptions.OptunaError), quiet_optuna():
            optuna.storages.fail_stale_trials(study)
        # a live worker beats every `interval` s; a silence of 2 intervals is a worker that may be gone
        silent = [n for n, age in heartbeat_ages(study).items() if age is not None and age > 2 * interval]
        if not silent or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return len(requeued() - before)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
