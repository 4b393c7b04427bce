"""Riding out a storage outage: every call to the study database retried with back-off, for a bounded time.

A PostgreSQL server that restarts, a network that drops every connection, or an SQLite file that
another worker keeps locked past SQLite's own busy timeout: the call that hit it is tried again with
a jittered exponential back-off (0.25 s doubling to 10 s) until it succeeds or the outage has lasted
:func:`outage_bound_s` seconds (``HWTUNE_STORAGE_OUTAGE_S``, default 600). A process logs one line
when an outage starts (not one per call or per thread); a success ends it. Past the bound,
:class:`~hwtune.errors.StorageUnavailableError` is raised (``hwtune worker`` prints it as one line
and exits 1; finished trials are in the database, so running the same command again resumes). While
that outage goes on, later calls of the process fail at once instead of waiting again.

Queued trials are also started atomically (one conditional ``UPDATE``), which Optuna's read-then-write
does not do on SQLite (see :func:`_pop_waiting`).

Only connection-level failures are retried (SQLAlchemy ``OperationalError``/``InterfaceError``, a
connection invalidated under a statement, Optuna's ``StorageInternalError`` raised from one of them);
a constraint violation or bad SQL is not. Retrying a write whose commit reached the server before the
connection broke is made safe where it matters: a trial whose final state was recorded is not
reported as failed (see :func:`retrying_rdb_storage`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hwtune.errors import ConfigError, StorageUnavailableError

__all__ = [
    "OUTAGE_ENV",
    "SQLITE_BUSY_S",
    "is_connection_error",
    "outage_behind",
    "outage_bound_s",
    "retry_storage_call",
    "retrying_rdb_storage",
]

OUTAGE_ENV = "HWTUNE_STORAGE_OUTAGE_S"
DEFAULT_OUTAGE_S = 600.0
# SQLite's own wait for a lock held by another worker, before "database is locked" reaches the retry.
SQLITE_BUSY_S = 30.0
_FIRST_DELAY_S = 0.25
_MAX_DELAY_S = 10.0
# Storage methods of Optuna's RDBStorage that talk to the database (the retry wraps each).
_METHODS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_params",
    "get_n_trials",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    # what Optuna's cache in front of the storage calls directly
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
)


def outage_bound_s() -> float:
    """Seconds a process waits for its storage to come back (``HWTUNE_STORAGE_OUTAGE_S``, default 600).

    Raises:
        ConfigError: the variable is not a number >= 0.
    """
    raw = os.environ.get(OUTAGE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_OUTAGE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"environment variable {OUTAGE_ENV} must be a number of seconds >= 0, got {raw!r}")
    return value


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a lost / refused / locked database connection."""
    import sqlalchemy.exc

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, (sqlalchemy.exc.DisconnectionError, ConnectionError)):
            return True
        e = e.__cause__ or e.__context__
    return False


class _Outage:
    """One process's view of its storage: since when it is unreachable, and whether it gave up."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.since: float | None = None
        self.ended: float | None = None
        self.gave_up = False

    def ok(self) -> None:
        if self.since is not None or self.gave_up:
            with self.guard:
                self.since, self.gave_up, self.ended = None, False, time.monotonic()

    def recent(self, within_s: float) -> bool:
        """Whether an outage is going on or ended less than ``within_s`` seconds ago."""
        return self.since is not None or (self.ended is not None and time.monotonic() - self.ended < within_s)

    def failed(self, exc: BaseException, where: str, bound: float) -> float:
        """Record a failed call; returns the seconds left to retry, or raises past the bound."""
        now = time.monotonic()
        with self.guard:
            if self.since is None:
                self.since = now
                _warn(
                    f"warning: storage {where} unreachable ({_first_line(exc)}); retrying with back-off "
                    f"for up to {bound:g} s ({OUTAGE_ENV})"
                )
            elapsed = now - self.since
            if self.gave_up or elapsed >= bound:
                self.gave_up = True
                raise StorageUnavailableError(
                    f"storage {where} unreachable for {elapsed:.0f} s (bound {bound:g} s, {OUTAGE_ENV}; "
                    f"last error {_first_line(exc)}): stopping; finished trials are saved, run the same "
                    "command again to resume"
                ) from exc
            return bound - elapsed


_outage = _Outage()


def _first_line(exc: BaseException) -> str:
    # Optuna's StorageInternalError blames "invalid data"; the cause underneath says what happened.
    cause = exc.__cause__ if type(exc).__name__ == "StorageInternalError" and exc.__cause__ else exc
    orig = getattr(cause, "orig", None)
    shown = orig if orig is not None else cause
    text = str(shown).strip()
    return f"{type(shown).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def outage_behind(exc: BaseException) -> StorageUnavailableError | None:
    """The :class:`StorageUnavailableError` that ``exc`` was raised while handling, if any.

    Optuna's own clean-up after a failed trial touches the storage again and can fail with an error of
    its own (e.g. an ``UnboundLocalError`` in its ``finally``); the outage is what to report.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageUnavailableError):
            return e
        e = e.__cause__ or e.__context__
    return None


def retry_storage_call(call: Callable[[], Any], *, where: str, bound: float | None = None) -> Any:
    """``call()``, retried with back-off while the storage is unreachable (at most the outage bound).

    Raises:
        StorageUnavailableError: the outage lasted past the bound.
    """
    limit = outage_bound_s() if bound is None else bound
    delay = _FIRST_DELAY_S
    while True:
        try:
            result = call()
        except StorageUnavailableError:
            raise
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            left = _outage.failed(exc, where, limit)
            time.sleep(min(left, delay * random.uniform(0.8, 1.2)))
            delay = min(delay * 2, _MAX_DELAY_S)
            continue
        _outage.ok()
        return result


_storage_class: type | None = None


def retrying_rdb_storage(url: str, where: str, **kwargs: Any) -> Any:
    """An Optuna ``RDBStorage`` on ``url`` whose database calls ride out outages (``where`` names it in messages).

    ``set_trial_state_values`` retried after its commit reached the server finds the trial finished
    already: when it is in the state being set, that is the success it was (not an error).
    """
    global _storage_class
    if _storage_class is None:
        _storage_class = _make_class()
    storage = _storage_class(url, **kwargs)
    storage._hwtune_where = where
    return storage


def _pop_waiting(storage: Any, trial_id: int) -> bool:
    """WAITING -> RUNNING in one conditional UPDATE; True for the one worker whose UPDATE changed the row.

    Optuna reads the state and then updates it. PostgreSQL locks the row in between (``FOR UPDATE``);
    SQLite through pysqlite starts its transaction only at the UPDATE, so two workers could both read
    WAITING and both start the queued trial (a promotion trained twice, one ``tell`` refused).
    """
    import sqlalchemy

    with storage.engine.begin() as conn:
        done = conn.execute(
            sqlalchemy.text(
                "UPDATE trials SET state = 'RUNNING', datetime_start = :now WHERE trial_id = :id AND state = 'WAITING'"
            ),
            {"now": datetime.now(), "id": int(trial_id)},
        )
        return int(done.rowcount) == 1


def _make_class() -> type:
    import optuna

    base = optuna.storages.RDBStorage

    def wrap(name: str) -> Callable[..., Any]:
        method = getattr(base, name)

        @functools.wraps(method)
        def retried(self: Any, *args: Any, **kwargs: Any) -> Any:
            return retry_storage_call(lambda: method(self, *args, **kwargs), where=self._hwtune_where)

        return retried

    def set_trial_state_values(self: Any, trial_id: int, state: Any, values: Any = None) -> bool:
        if state == optuna.trial.TrialState.RUNNING:
            return bool(retry_storage_call(lambda: _pop_waiting(self, trial_id), where=self._hwtune_where))
        broke = False

        def call() -> bool:
            nonlocal broke
            try:
                return bool(base.set_trial_state_values(self, trial_id, state, values))
            except optuna.exceptions.UpdateFinishedTrialError:
                if broke and base.get_trial(self, trial_id).state == state:
                    return True  # the first try was committed; its answer was lost with the connection
                raise
            except Exception as exc:
                broke = broke or is_connection_error(exc)
                raise

        return bool(retry_storage_call(call, where=self._hwtune_where))

    def record_heartbeat(self: Any, trial_id: int) -> None:
        # The heartbeat thread: an outage it cannot outlast is the main thread's to report.
        try:
            retry_storage_call(lambda: base.record_heartbeat(self, trial_id), where=self._hwtune_where)
        except StorageUnavailableError:
            return

    stale_ids = wrap("_get_stale_trial_ids")

    def _get_stale_trial_ids(self: Any, study_id: int) -> list[int]:
        # After an outage every worker's heartbeats are missing for its length: live trials would look
        # dead. Until the heartbeats had a grace period to catch up, no trial is judged by them.
        if _outage.recent(float(self.grace_period or 0) + float(self.heartbeat_interval or 0)):
            return []
        ids = list(stale_ids(self, study_id))
        for trial_id in ids:  # the reason, while the trial can still take attributes (Optuna fails it next)
            with contextlib.suppress(Exception):
                base.set_trial_user_attr(
                    self,
                    trial_id,
                    "failure",
                    f"no heartbeat from its worker for {self.grace_period} s (worker gone?); marked failed",
                )
        return ids

    namespace: dict[str, Any] = {name: wrap(name) for name in _METHODS if hasattr(base, name)}
    namespace.update(
        set_trial_state_values=set_trial_state_values,
        record_heartbeat=record_heartbeat,
        _get_stale_trial_ids=_get_stale_trial_ids,
    )
    namespace["__doc__"] = "Optuna's RDBStorage whose database calls are retried through an outage."
    return type("RetryingRDBStorage", (base,), namespace)
