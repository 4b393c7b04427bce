"""hwtune.tuner.dbcheck: a damaged study database (the 0.1.0 study, damaged the way a disk, a copy or a
crafted file would) is one line naming the file and what is wrong, and is left as it was; a healthy one is
read without a write."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import STUDY_FIXTURE, cli_error

from hwtune.errors import StudyError

# ------------------------------------------------------------------------------- a damaged study database
# Each case damages a copy of the 0.1.0 study the way a disk, a copy or a crafted file would; every read
# path and a worker resuming the study must name the file and what is wrong, and leave it as it was.

_T3 = "(SELECT trial_id FROM trials WHERE number = 3)"
_HW3 = f"UPDATE trial_user_attributes SET value_json = {{}} WHERE key = 'hw' AND trial_id = {_T3}"


def _sql(*statements: str):
    def damage(db: Path) -> None:
        conn = sqlite3.connect(db)
        try:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    return damage


def _write(data: bytes):
    return lambda db: db.write_bytes(data)


def _foreign(db: Path) -> None:
    db.unlink()
    _sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)", "INSERT INTO notes (text) VALUES ('mine')")(db)


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()
    (db / "keep").write_text("x")


DAMAGED_STUDIES = {
    "text-file": (_write(b"schema_version = 1\n" * 40), "not an SQLite database (it starts with b'schema_version ="),
    "directory": (_directory, "is a directory, not an SQLite study database"),
    "zero-bytes": (_write(b""), "holds no Optuna study (an empty file, 0 bytes"),
    "truncated": (lambda db: db.write_bytes(db.read_bytes()[:50000]), "truncated SQLite database (50000 of 135168 bytes)"),
    "foreign-sqlite": (_foreign, "not an Optuna study database (no 'studies' table; it holds notes)"),
    "newer-schema": (
        _sql("UPDATE alembic_version SET version_num = 'v9.0.0.a'", "UPDATE version_info SET library_version = '9.0.0'"),
        "written by a newer Optuna schema (revision 'v9.0.0.a', Optuna 9.0.0)",
    ),
    "older-schema": (
        _sql("UPDATE alembic_version SET version_num = 'v3.0.0.d'"),
        "written by an older Optuna schema (revision v3.0.0.d",
    ),
    "missing-table": (_sql("DROP TABLE trial_heartbeats"), "incomplete Optuna schema (no table trial_heartbeats)"),
    "no-version": (_sql("DELETE FROM version_info"), "no Optuna schema version (version_info holds 0 rows"),
    "attribute-not-json": (_sql(_HW3.format("'{\"macs\": 1'")), "trial 3: attribute 'hw' is not valid JSON"),
    "attribute-not-utf8": (_sql(_HW3.format("X'7b22ff227d'")), "trial 3: attribute 'hw' is not UTF-8 text"),
    "attribute-not-utf8-text": (
        _sql(_HW3.format("CAST(X'7b22ff227d' AS TEXT)")),
        "trial 3: attribute 'hw' is not UTF-8 text",
    ),
    "attribute-not-object": (_sql(_HW3.format("'[1, 2]'")), "trial 3: attribute 'hw' must be a JSON object, got list"),
    "attribute-wrong-type": (
        _sql(_HW3.format("json_set(value_json, '$.macs', 'many')")),
        "trial 3: macs must be an integer or null, got 'many'",
    ),
    "settings-wrong-type": (
        _sql("UPDATE study_user_attributes SET value_json = '\"text\"' WHERE key = 'hwtune'"),
        "study 'tiny' settings: expected a mapping, got str",
    ),
    "trial-state": (_sql("UPDATE trials SET state = 'DONE' WHERE number = 3"), "trial 3: state 'DONE' is not one of"),
    "trial-date": (
        _sql("UPDATE trials SET datetime_start = 'yesterday' WHERE number = 3"),
        "trial 3: start time 'yesterday' is not a date and time",
    ),
    "objective-value": (
        _sql(f"UPDATE trial_values SET value = 'fast' WHERE trial_id = {_T3}"),
        "trial 3: objective value 'fast' ('FINITE') is not a number",
    ),
    "distribution": (
        _sql(f"UPDATE trial_params SET distribution_json = '{{}}' WHERE trial_id = {_T3} AND param_name = 'stem_width'"),
        "trial 3: parameter 'stem_width': unreadable distribution or value",
    ),
}


def _state(run: Path) -> dict[str, bytes | list[str]]:
    """Every file of the run directory (a directory where study.db should be: its listing)."""
    return {
        p.name: (sorted(q.name for q in p.iterdir()) if p.is_dir() else p.read_bytes())
        for p in run.iterdir()
        if p.name != "artifacts"
    }


@pytest.mark.parametrize("case", sorted(DAMAGED_STUDIES))
def test_a_damaged_study_database_is_one_line_and_left_as_it_was(case, old_run, capsys):
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import open_storage

    db = old_run / "study.db"
    damage, expected = DAMAGED_STUDIES[case]
    damage(db)
    before = _state(old_run)
    url = f"sqlite:///{db}"
    with pytest.raises(StudyError) as exc:
        load_result(url, "tiny")
    assert str(exc.value).startswith(f"{db}: ") and expected in str(exc.value) and "\n" not in str(exc.value)
    for argv in (
        ["front", "--storage", url],
        ["report", "--storage", url, "-o", str(old_run / "rep")],
        ["export", "--storage", url, "--trial", "0", "-o", str(old_run / "exp")],
    ):
        assert expected in cli_error(capsys, argv), argv
    assert _state(old_run) == before  # read-only commands create and change nothing
    with pytest.raises(StudyError) as exc:
        open_storage(url)  # a worker (tune, hwtune worker) resuming the study
    assert expected in str(exc.value)
    after = _state(old_run)
    after.pop("study.db.lock", None)  # the workers' lock file next to the database
    assert after == before


def test_tune_onto_a_damaged_study_stops_before_any_trial(old_run, capsys, fashion_dir):
    from hwtune.cli import main

    db = old_run / "study.db"
    _sql("UPDATE alembic_version SET version_num = 'v9.0.0.a'")(db)
    before = db.read_bytes()
    argv = ["tune", str(old_run / "tiny-convnet.toml"), "--device", "host", "--storage", f"sqlite:///{db}"]
    argv += ["--study", "tiny", "--trials", "1", "--out", str(old_run / "out"), "--quiet"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"{db}: written by a newer Optuna schema" in err[0], err
    assert db.read_bytes() == before


def test_a_healthy_study_is_read_without_a_write(old_run):
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import open_storage

    db = old_run / "study.db"
    before = _state(old_run)
    assert len(load_result(f"sqlite:///{db}", "tiny").trials) == 4
    assert _state(old_run) == before
    open_storage(f"sqlite:///{db}", heartbeat=False)  # a worker opening it checks it, then goes on
    assert (old_run / "study.db").read_bytes() == before["study.db"]


def test_a_worker_may_start_a_study_in_an_empty_sqlite_database(tmp_path):
    """An SQLite file with no table at all (or Optuna's tables only, half created) is a new study, not damage."""
    from hwtune.tuner.storage import open_storage

    for name, make in (("blank.db", []), ("half.db", ["CREATE TABLE studies (study_id INTEGER PRIMARY KEY)"])):
        db = tmp_path / name
        _sql("VACUUM", *make)(db)
        with pytest.raises(StudyError, match="holds no Optuna study|no Optuna schema version|incomplete"):
            open_storage(f"sqlite:///{db}", create=False)
        open_storage(f"sqlite:///{db}", heartbeat=False)
        conn = sqlite3.connect(db)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.close()
        assert {"studies", "trials", "version_info", "alembic_version"} <= tables


def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back_not_refused(tmp_path):
    """A writer killed inside a transaction leaves ``study.db-journal``: reading must recover, not fail."""
    from hwtune.tuner import load_result

    run = tmp_path / "run"
    shutil.copytree(STUDY_FIXTURE, run)
    db = run / "study.db"
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('PRAGMA cache_size = 1')\n"
        "c.execute('BEGIN'); c.execute(\"UPDATE trial_user_attributes SET value_json = 'garbage'\")\n"
        "print('in transaction', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "in transaction"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    if not Path(f"{db}-journal").exists():
        pytest.skip("SQLite kept the change in memory: no hot journal to recover")
    assert len(load_result(f"sqlite:///{db}", "tiny").trials) == 4
