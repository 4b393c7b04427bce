"""Checking a study database before Optuna opens it: a damaged or foreign file is one StudyError line.

Optuna reads a study lazily and trusts what it reads: a truncated file, a foreign SQLite file, a
schema of another Optuna version or an attribute that is not JSON surfaces as
``StorageInternalError``, a SQLAlchemy error or a ``JSONDecodeError`` deep inside a report, and
opening a database without Optuna's tables or version rows *writes* them. :func:`check_study_database`
reads the database first, read-only, and names the file and the first thing wrong with it:

* the file: a directory, not a regular file, empty, not SQLite, truncated, failing SQLite's
  ``quick_check``;
* the schema: no ``studies`` table, missing Optuna tables or version rows, a schema revision of an
  older or newer Optuna;
* the content Optuna parses when it loads trials: JSON attributes, distributions, enum names,
  numbers, dates; and, through the caller's checks, hwtune's own records (``StudyMeta``,
  ``TrialFigures``).

Nothing here writes: SQLite files are opened with ``mode=ro`` (only a hot journal left by a killed
writer is rolled back, as any reader would). No hwtune tuner imports (``storage`` uses this module).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import stat
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hwtune.errors import StudyError
from hwtune.tuner.artifacts import redact_url

__all__ = ["OPTUNA_TABLES", "check_study_database", "sqlite_file"]

#: The tables Optuna's RDB storage reads (schema v3.2.0.a, Optuna 3.2 to 5.x).
OPTUNA_TABLES = (
    "studies",
    "study_directions",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_heartbeats",
    "version_info",
    "alembic_version",
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_VALUE_TYPES = frozenset({"FINITE", "INF_POS", "INF_NEG"})
_INTERMEDIATE_TYPES = _VALUE_TYPES | {"NAN"}
# A problem list is cut here: the message names the first one and counts the rest.
_MAX_PROBLEMS = 50

# check_study(study name, user attributes); check_trial(how to name the trial, user attributes).
StudyCheck = Callable[[str, Mapping[str, Any]], None]
TrialCheck = Callable[[str, Mapping[str, Any]], None]


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite storage URL (None for servers and in-memory databases)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            return Path(path)
    return None


def check_study_database(
    url: str,
    *,
    create: bool,
    check_study: StudyCheck | None = None,
    check_trial: TrialCheck | None = None,
) -> None:
    """Raise one :class:`StudyError` line naming the database and what is wrong with it.

    Args:
        url: Storage URL (SQLite file or server).
        create: The caller may create the study database (a worker): a missing file, an empty
            database, or Optuna's schema left half-created with no study in it are then fine.
            Without it (read-only commands) each of those is an error.
        check_study: Called with a study's name and its user attributes (parsed JSON); raises
            ``StudyError`` for settings the caller cannot use.
        check_trial: Called with how messages name a trial (``"trial 3"``, or ``"study 'x' trial 3"``
            when the database holds several studies) and its user attributes; raises ``StudyError``.

    Raises:
        StudyError: ``"<file>: <what is wrong>"``; the database is not modified.
    """
    path = sqlite_file(url)
    where = str(path) if path is not None else redact_url(url)
    if path is not None and not _check_sqlite_file(path, create=create):
        return  # a new file: Optuna creates it
    try:
        with _connect(url, path) as conn:
            if path is not None:
                _quick_check(conn, where)
            if not _check_schema(conn, where, url, create=create):
                return
            problems = _Problems(where)
            _check_content(conn, problems, check_study, check_trial)
            problems.raise_if_any()
    except StudyError:
        raise
    except Exception as exc:
        if path is None:  # a server: a bad URL, a missing driver, no connection
            raise StudyError(f"cannot open study storage {where!r}: {type(exc).__name__}: {_first_line(exc)}") from exc
        raise StudyError(f"{where}: cannot read the study database ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # sqlalchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# -- the file ----------------------------------------------------------------------------------------


def _check_sqlite_file(path: Path, *, create: bool) -> bool:
    """File-level checks; False when there is no file yet and ``create`` allows making one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if create:
            return False
        raise StudyError(f"no study database at {path} (the file does not exist)") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study database ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise StudyError(f"{path}: is a directory, not an SQLite study database")
    if not stat.S_ISREG(st.st_mode):
        raise StudyError(f"{path}: not a regular file; expected an SQLite study database")
    if st.st_size == 0:
        raise StudyError(
            f"{path}: holds no Optuna study (an empty file, 0 bytes, not an SQLite database)"
            + ("; remove it to start a new study there" if create else "")
        )
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study database ({exc.strerror or exc})") from exc
    if not header.startswith(_SQLITE_MAGIC):
        raise StudyError(f"{path}: not an SQLite database (it starts with {header[:16]!r})")
    if len(header) < 100:
        raise StudyError(f"{path}: truncated SQLite database ({st.st_size} bytes, shorter than its header)")
    expected = _size_from_header(header)
    if expected is not None and st.st_size < expected and not Path(f"{path}-wal").exists():
        raise StudyError(f"{path}: truncated SQLite database ({st.st_size} of {expected} bytes)")
    return True


def _size_from_header(header: bytes) -> int | None:
    """The file size SQLite's header promises (page size x page count), when the header says it is valid."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid only when the change counter matches "version-valid-for".
    if pages == 0 or header[24:28] != header[92:96] or page_size < 512 or page_size & (page_size - 1):
        return None
    return page_size * pages


@contextlib.contextmanager
def _connect(url: str, path: Path | None) -> Iterator[Any]:
    """A read-only SQLAlchemy connection (SQLite: ``mode=ro``, or ``rw`` only to roll back a hot journal)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if path is None:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    else:
        mode = "ro" if _readonly_opens(path) else "rw"
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(uri, uri=True, timeout=120)
            conn.text_factory = _text  # text that is not UTF-8 is reported, not a decoding error
            return conn

        engine = sqlalchemy.create_engine("sqlite://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


class NotText(bytes):
    """A text cell whose bytes are not UTF-8 (Optuna could not read it)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, not UTF-8 text>"


def _text(raw: bytes) -> str | NotText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return NotText(raw)


def _readonly_opens(path: Path) -> bool:
    """False when a killed writer left a hot journal: SQLite must roll it back, which a read-only handle cannot."""
    if not os.path.exists(f"{path}-journal"):
        return True
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro", uri=True)
        ) as c:
            c.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.OperationalError as exc:
        return getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK"
    except sqlite3.DatabaseError:
        return True  # damaged: the read-only check below says how
    return True


def _quick_check(conn: Any, where: str) -> None:
    import sqlalchemy

    try:
        rows = [str(r[0]) for r in conn.execute(sqlalchemy.text("PRAGMA quick_check(5)"))]
    except Exception as exc:
        reason = _first_line(exc)
        if "not a database" in reason:
            raise StudyError(f"{where}: not an SQLite database ({reason})") from exc
        raise StudyError(f"{where}: damaged SQLite database ({reason})") from exc
    if rows != ["ok"]:
        lines = [ln.strip() for r in rows for ln in r.splitlines() if ln.strip() and not ln.startswith("***")]
        first = lines[0] if lines else "no answer"
        raise StudyError(f"{where}: damaged SQLite database (integrity check: {first[:200]})")


# -- the schema --------------------------------------------------------------------------------------


@functools.cache
def _optuna_revisions() -> tuple[str, tuple[str, ...]]:
    """(head, every known) Alembic revision of the installed Optuna's schema (read from a throw-away in-memory storage)."""
    import optuna

    st = optuna.storages.RDBStorage("sqlite:///:memory:")
    try:
        return st.get_head_version(), tuple(st.get_all_versions())
    finally:
        st.engine.dispose()


def _check_schema(conn: Any, where: str, url: str, *, create: bool) -> bool:
    """Raise for a foreign, incomplete or other-version schema; False when a worker may (re)create it.

    A server database may hold other applications' tables next to Optuna's (a worker adds Optuna's);
    an SQLite study file holds Optuna's only, so another SQLite file is never written into.
    """
    import optuna
    import sqlalchemy

    tables = set(sqlalchemy.inspect(conn).get_table_names())
    foreign_file = sqlite_file(url) is not None and not tables <= set(OPTUNA_TABLES)
    if not tables or ("studies" not in tables and create and not foreign_file):
        if create:
            return False
        raise StudyError(f"{where}: holds no Optuna study (an empty database, no 'studies' table)")
    if "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StudyError(f"{where}: not an Optuna study database (no 'studies' table; it holds {shown})")
    # A worker killed while creating the schema leaves part of it and no study: Optuna completes it.
    if create and not foreign_file and conn.execute(sqlalchemy.text("SELECT count(*) FROM studies")).scalar() == 0:
        return False
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    if missing:
        raise StudyError(f"{where}: incomplete Optuna schema (no table {', '.join(missing)})")
    versions = conn.execute(sqlalchemy.text("SELECT library_version FROM version_info")).fetchall()
    revisions = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).fetchall()
    if len(versions) != 1 or len(revisions) != 1:
        raise StudyError(
            f"{where}: no Optuna schema version (version_info holds {len(versions)} rows, alembic_version "
            f"{len(revisions)}; expected 1 each)"
        )
    revision, written_by = str(revisions[0][0]), str(versions[0][0])[:40]
    head, known = _optuna_revisions()
    if revision == head:
        return True
    if revision in known:
        raise StudyError(
            f"{where}: written by an older Optuna schema (revision {revision}, Optuna {written_by}); Optuna "
            f"{optuna.__version__} reads {head}: back the file up, then run "
            f"`optuna storage upgrade --storage {redact_url(url)}`"
        )
    raise StudyError(
        f"{where}: written by a newer Optuna schema (revision {revision[:40]!r}, Optuna {written_by}) than Optuna "
        f"{optuna.__version__} reads ({head}); upgrade Optuna (pip install -U optuna)"
    )


# -- the content -------------------------------------------------------------------------------------


class _Problems:
    """Collects what is wrong; raises one line: the first problem and how many more there are."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(text)

    def full(self) -> bool:
        return len(self.items) >= _MAX_PROBLEMS

    def raise_if_any(self) -> None:
        if not self.items:
            return
        more = len(self.items) - 1
        suffix = "" if more == 0 else f" (and {more}{'+' if self.full() else ''} more problem{'s' if more > 1 else ''})"
        raise StudyError(f"{self.where}: {self.items[0]}{suffix}")


def _rows(conn: Any, sql: str) -> list[Any]:
    import sqlalchemy

    return list(conn.execute(sqlalchemy.text(sql)))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    import decimal

    return v is None or (isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool))


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_json(text: Any) -> tuple[Any, str | None]:
    if isinstance(text, bytes):  # a BLOB, or TEXT that is not UTF-8 (NotText); Optuna's json.loads decodes it
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, f"is not UTF-8 text ({len(text)} bytes)"
    if not isinstance(text, str):
        return None, f"is not JSON text (got {type(text).__name__})"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as exc:
        return None, f"is not valid JSON ({_first_line(exc)[:80]})"


def _check_content(
    conn: Any, problems: _Problems, check_study: StudyCheck | None, check_trial: TrialCheck | None
) -> None:
    studies = {sid: name for sid, name in _rows(conn, "SELECT study_id, study_name FROM studies")}
    for sid, name in studies.items():
        if not isinstance(name, str) or not name:
            problems.add(f"study id {sid}: name {_short(name)} is not a string")
    several = len(studies) > 1
    trials = _check_trials(conn, problems, studies, several)
    _check_study_rows(conn, problems, studies, check_study)
    _check_trial_attrs(conn, problems, trials, check_trial)
    _check_trial_numbers(conn, problems, trials)


def _datetime_parser(conn: Any) -> Callable[[Any], Any] | None:
    """How SQLAlchemy turns a stored date and time into a ``datetime`` (None: the driver returns one already)."""
    import sqlalchemy

    parse: Callable[[Any], Any] | None = (
        sqlalchemy.DateTime().dialect_impl(conn.dialect).result_processor(conn.dialect, None)
    )
    return parse


def _is_datetime(parse: Callable[[Any], Any], value: Any) -> bool:
    try:
        parse(value)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _check_trials(conn: Any, problems: _Problems, studies: Mapping[int, Any], several: bool) -> dict[int, str]:
    """The trials' own rows; returns trial id -> how messages name it (``trial 3`` or ``study 'x' trial 3``)."""
    import optuna

    states = {s.name for s in optuna.trial.TrialState}
    to_datetime = _datetime_parser(conn)
    names: dict[int, str] = {}
    rows = _rows(conn, "SELECT trial_id, number, study_id, state, datetime_start, datetime_complete FROM trials")
    for tid, number, sid, state, start, complete in rows:
        if sid not in studies:
            continue  # an orphan row Optuna never reads
        if not _is_int(number):
            problems.add(f"trial id {tid}: number {_short(number)} is not an integer")
            number = f"id {tid}"
        names[tid] = f"study {studies[sid]!r} trial {number}" if several else f"trial {number}"
        if state not in states:
            problems.add(f"{names[tid]}: state {_short(state)} is not one of {', '.join(sorted(states))}")
        for label, value in (("start", start), ("completion", complete)):
            if value is not None and to_datetime is not None and not _is_datetime(to_datetime, value):
                problems.add(f"{names[tid]}: {label} time {_short(value)} is not a date and time")
    return names


def _user_attrs(conn: Any, problems: _Problems, kind: str, owners: Mapping[int, str]) -> dict[int, dict[str, Any]]:
    """Every ``kind`` (``study`` / ``trial``) attribute checked as JSON; the user attributes parsed, by owner id.

    ``owners`` maps the ids to check to the label their problems start with.
    """
    attrs: dict[int, dict[str, Any]] = {oid: {} for oid in owners}
    for table, label in ((f"{kind}_user_attributes", "attribute"), (f"{kind}_system_attributes", "system attribute")):
        for oid, key, text in _rows(conn, f"SELECT {kind}_id, key, value_json FROM {table}"):
            if oid not in owners:
                continue
            if not isinstance(key, str):
                problems.add(f"{owners[oid]}: {label} name {_short(key)} is not text")
                continue
            value, error = _parse_json(text)
            if error is not None:
                problems.add(f"{owners[oid]}: {label} {_short(key)} {error}")
            elif label == "attribute":
                attrs[oid][str(key)] = value
    return attrs


def _check_study_rows(
    conn: Any, problems: _Problems, studies: Mapping[int, Any], check_study: StudyCheck | None
) -> None:
    for sid, direction, objective in _rows(conn, "SELECT study_id, direction, objective FROM study_directions"):
        if sid in studies and (direction not in ("NOT_SET", "MINIMIZE", "MAXIMIZE") or not _is_int(objective)):
            problems.add(
                f"study {studies[sid]!r}: objective {_short(objective)} direction {_short(direction)} is not valid"
            )
    attrs = _user_attrs(conn, problems, "study", {sid: f"study {name!r}" for sid, name in studies.items()})
    if check_study is None:
        return
    for sid, name in studies.items():
        try:
            check_study(str(name), attrs[sid])
        except StudyError as exc:
            problems.add(str(exc))


def _check_trial_attrs(
    conn: Any, problems: _Problems, trials: Mapping[int, str], check_trial: TrialCheck | None
) -> None:
    attrs = _user_attrs(conn, problems, "trial", trials)
    if check_trial is None:
        return
    for tid, label in trials.items():
        if problems.full():
            return
        try:
            check_trial(label, attrs[tid])
        except StudyError as exc:
            problems.add(str(exc))


def _param_problem(name: Any, value: Any, dist_json: Any) -> str | None:
    """What Optuna would fail on when it turns a stored parameter into the trial's value, if anything."""
    import optuna

    if not isinstance(name, str):
        return "the name is not text"
    if value is None or not _is_number(value):
        return f"value {_short(value)} is not a number"
    if not isinstance(dist_json, str):
        return "distribution is not JSON text"
    try:
        optuna.distributions.json_to_distribution(dist_json).to_external_repr(float(value))
    except Exception as exc:  # noqa: BLE001 - JSON / KeyError / ValueError / IndexError of crafted text
        return f"unreadable distribution or value ({type(exc).__name__}: {_first_line(exc)[:80]})"
    return None


def _check_trial_numbers(conn: Any, problems: _Problems, trials: Mapping[int, str]) -> None:
    """Parameters (value and distribution), objective and intermediate values, heartbeats."""
    for tid, name, value, dist_json in _rows(
        conn, "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params"
    ):
        problem = _param_problem(name, value, dist_json) if tid in trials else None
        if problem is not None:
            problems.add(f"{trials[tid]}: parameter {_short(name)}: {problem}")
    for tid, objective, value, kind in _rows(conn, "SELECT trial_id, objective, value, value_type FROM trial_values"):
        if tid in trials and (not _is_int(objective) or not _is_number(value) or kind not in _VALUE_TYPES):
            problems.add(f"{trials[tid]}: objective value {_short(value)} ({_short(kind)}) is not a number")
    for tid, step, value, kind in _rows(
        conn, "SELECT trial_id, step, intermediate_value, intermediate_value_type FROM trial_intermediate_values"
    ):
        if tid in trials and (not _is_int(step) or not _is_number(value) or kind not in _INTERMEDIATE_TYPES):
            problems.add(f"{trials[tid]}: intermediate value at step {_short(step)} is not a number")
    to_datetime = _datetime_parser(conn)
    for tid, beat in _rows(conn, "SELECT trial_id, heartbeat FROM trial_heartbeats"):
        if tid in trials and to_datetime is not None and not _is_datetime(to_datetime, beat):
            problems.add(f"{trials[tid]}: heartbeat {_short(beat)} is not a date and time")
