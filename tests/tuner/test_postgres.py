"""Many workers on a PostgreSQL study (the multi-machine setup), against a throw-away local server.

Runs when ``HWTUNE_TEST_POSTGRES_URL`` names a server hwtune may create databases on (``.ci/run``
starts one on 127.0.0.1) and psycopg is installed (``pip install 'hwtune[postgres]'``: SQLAlchemy 2.1
connects ``postgresql://`` URLs with psycopg 3); skipped otherwise. Every test gets a fresh database (no Optuna schema yet), as on a first start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_pipeline import BUDGET, DATA, RECIPE, FastPipeline
from support import start_together, trained_twice

from hwtune.errors import ConfigError, StudyError

ADMIN_URL = os.environ.get("HWTUNE_TEST_POSTGRES_URL")
TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="HWTUNE_TEST_POSTGRES_URL not set (see .ci/run)")


def _tables(url: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_read_only_commands_create_nothing_on_an_empty_database(pg_url):
    from hwtune.tuner import load_result

    with pytest.raises(StudyError, match="holds no Optuna study") as exc:
        load_result(pg_url)
    assert "\n" not in str(exc.value)
    assert _tables(pg_url) == []


def test_schema_and_study_creation_race_on_a_fresh_database(pg_url):
    import optuna

    done = start_together(pg_url, 4)
    assert [d.returncode for d in done] == [0] * 4, [d.stderr[-500:] for d in done]
    assert [s.study_name for s in optuna.get_all_study_summaries(pg_url, include_best_trial=False)] == ["race"]


def test_server_storage_without_artifacts_is_one_error_before_any_trial(pg_url, tmp_path, fashion_dir):
    import optuna

    from hwtune.tuner import tune

    recipe = tmp_path / "fast.toml"
    recipe.write_text(RECIPE)
    with pytest.raises(ConfigError, match="give --artifacts") as exc:
        tune(recipe, device="host", data=DATA, storage=pg_url, study_name="t", n_trials=2, budget=BUDGET,
             pipeline=FastPipeline, progress=False, reports=False)
    assert "\n" not in str(exc.value)
    assert all(not s.n_trials for s in optuna.get_all_study_summaries(pg_url, include_best_trial=False))


_WORKER_SNIPPET = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_pipeline import BUDGET, DATA, FastPipeline
from hwtune.tuner import tune
url, t0 = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, t0 - time.time()))
tune({recipe!r}, device="host", data=DATA, storage=url, study_name="pg", n_trials=10, sampler="random", seed=0,
     budget=BUDGET, pipeline=FastPipeline, artifacts={shared!r}, progress=False, reports=False, threads=1)
"""


@pytest.mark.slow
def test_four_workers_started_at_once_on_a_fresh_postgres_study(pg_url, tmp_path, fashion_dir, monkeypatch):
    from hwtune.exporting import export
    from hwtune.tuner import load_result

    recipe = tmp_path / "fast.toml"
    recipe.write_text(RECIPE)
    shared = tmp_path / "shared-artifacts"  # the "network file system" every worker sees
    log = tmp_path / "train.log"
    snippet = _WORKER_SNIPPET.format(tests=str(TESTS), recipe=str(recipe), shared=str(shared))
    env = {**os.environ, "HWTUNE_FAKE_TRAIN_LOG": str(log)}
    t0 = time.time() + 8.0
    procs = []
    for i in range(4):  # each worker in its own directory, as on its own machine
        cwd = tmp_path / f"machine{i}"
        cwd.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", snippet, pg_url, str(t0)], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [(p.wait(timeout=900), p.communicate()[1]) for p in procs]
    assert [rc for rc, _ in outs] == [0] * 4, [err[-800:] for _, err in outs]
    res = load_result(pg_url, "pg")
    c = res.counts()
    assert 10 <= c["complete"] <= 13 and c["failed"] == 0, c
    assert trained_twice(log) == []
    assert res.meta.artifact_dir == str(shared.resolve())
    fresh = tmp_path / "exporter"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    assert res.front
    for member in res.front:
        exp = export(res, member.number, fresh / f"t{member.number}", pipeline=FastPipeline)
        assert exp.model_path.is_file()


def test_a_claim_sees_a_twin_committed_out_of_id_order(pg_url):
    """Concurrent workers commit PostgreSQL trial ids out of order. Optuna's per-process cache skips a
    trial whose id is below the last finished one it has read, so a claim must read past the cache."""
    import optuna
    import sqlalchemy

    from hwtune.tuner.halving import CLAIM_KEY, claim_key, claim_or_twin, completed_by_key
    from hwtune.tuner.storage import fresh_trials, open_storage

    running, complete = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE
    here = optuna.create_study(study_name="gap", storage=open_storage(pg_url, heartbeat=False),
                               directions=["maximize"])
    there = optuna.load_study(study_name="gap", storage=open_storage(pg_url, heartbeat=False))
    engine = sqlalchemy.create_engine(pg_url)

    def next_trial_id(n: int) -> None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"ALTER SEQUENCE trials_trial_id_seq RESTART WITH {n}"))

    next_trial_id(100)
    done = there.ask()
    there.tell(done, [0.5])
    assert len(here.get_trials(states=(complete,))) == 1  # this process has now read a finished trial, id 100
    next_trial_id(50)  # another worker's trial whose id was taken before, committed only now
    twin = there.ask()
    twin.set_user_attr(CLAIM_KEY, claim_key("convnet-abc", 0))
    twin.set_user_attr("candidate_key", "convnet-abc")
    next_trial_id(200)
    mine = here.ask()
    assert [t.number for t in fresh_trials(here, states=(running,))] == sorted([twin.number, mine.number])
    found = claim_or_twin(here, mine, "convnet-abc", 0)
    assert found is not None and found._trial_id == twin._trial_id
    assert CLAIM_KEY not in mine.user_attrs
    there.tell(twin, [0.9])
    assert completed_by_key(here)["convnet-abc"]._trial_id == twin._trial_id
    engine.dispose()
