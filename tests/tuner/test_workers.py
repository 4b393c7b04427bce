"""Many workers on one study (SQLite here; PostgreSQL in test_postgres.py): study-level targets, race-free
start, read-only commands that create nothing, the artifact store, no duplicated work, relocatable runs,
``hwtune worker`` and ``tune(workers=K)``, the dashboard view and the S3 store (moto, when installed).

Trials use ``fake_pipeline.FastPipeline`` (real build/ship/evaluate of tiny convnets, fake profile/train).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_pipeline import BUDGET, DATA, RECIPE, FastPipeline
from support import start_together, trained_twice

from hwtune.errors import ConfigError, StudyError

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "fast.toml"
    p.write_text(RECIPE)
    return p


def run(recipe: Path, out: Path, **kw):
    from hwtune.tuner import tune

    args = {
        "device": "host", "data": DATA, "n_trials": 3, "out_dir": out, "study_name": "t", "sampler": "random",
        "seed": 0, "budget": BUDGET, "pipeline": FastPipeline, "reports": False, "progress": False,
    }
    args.update(kw)
    return tune(recipe, **args)


# -- read-only commands create nothing ------------------------------------------------------------


def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path, capsys):
    from hwtune.cli import main
    from hwtune.tuner import load_result

    missing = tmp_path / "nope" / "study.db"
    with pytest.raises(StudyError, match="no study database at") as exc:
        load_result(f"sqlite:///{missing}")
    assert "\n" not in str(exc.value)
    assert not missing.exists() and not missing.parent.exists()
    assert main(["front", "--storage", f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not missing.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StudyError, match="holds no Optuna study"):
        load_result(f"sqlite:///{empty}")
    assert sqlite3.connect(empty).execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.slow
def test_workers_creating_a_fresh_sqlite_study_at_once_all_succeed(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'fresh' / 'study.db'}"
    done = start_together(url, 4)
    assert [d.returncode for d in done] == [0] * 4, [d.stderr[-500:] for d in done]
    assert [s.study_name for s in optuna.get_all_study_summaries(url, include_best_trial=False)] == ["race"]


# -- the artifact store -------------------------------------------------------------------------------


def test_artifact_locations_are_relative_for_sqlite_and_never_obey_foreign_paths(tmp_path):
    from hwtune.tuner.artifacts import location_for_reading, location_for_run, parse_location

    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    default = location_for_run(None, url, None, "s")
    assert default.stored == "artifacts" and default.path == (tmp_path / "run" / "artifacts").resolve()
    inside = parse_location(tmp_path / "run" / "store", url)
    assert inside.stored == "store"
    outside = parse_location(tmp_path / "shared", url)
    assert outside.stored == str((tmp_path / "shared").resolve())
    s3 = parse_location("s3://bucket/some/prefix/", url)
    assert (s3.bucket, s3.prefix, s3.stored) == ("bucket", "some/prefix", "s3://bucket/some/prefix")
    # stored relative -> next to the study file, wherever it is now
    assert location_for_run("store", url, None, "s").path == (tmp_path / "run" / "store").resolve()
    assert location_for_reading("store", url).path == tmp_path / "run" / "store"
    # a stored directory outside the run directory (or escaping it) is not obeyed unless given again
    for stored in (str(tmp_path / "elsewhere"), "../escape", "/etc"):
        with pytest.raises(ConfigError, match="outside the run directory; give --artifacts"):
            location_for_run(stored, url, None, "s")
    assert location_for_run("/etc", url, tmp_path / "mine", "s").path == (tmp_path / "mine").resolve()
    # a server storage needs --artifacts, said in one line
    with pytest.raises(ConfigError, match="give --artifacts") as exc:
        location_for_run(None, "postgresql://u:secret@db/x", None, "s")
    assert "\n" not in str(exc.value) and "secret" not in str(exc.value)
    for bad in ("", "s3://", "ftp://x/y"):
        with pytest.raises(ConfigError):
            parse_location(bad, url)


def test_a_moved_run_directory_exports_and_the_dashboard_view(recipe, tmp_path, fashion_dir, monkeypatch):
    import optuna

    from hwtune.exporting import export
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import DASHBOARD_KEYS, dashboard_command, open_storage

    res = run(recipe, tmp_path / "run", n_trials=3)
    assert res.meta.artifact_dir == "artifacts"  # relative to study.db: the run directory can move
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "run"), moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    url = f"sqlite:///{moved / 'study.db'}"
    again = load_result(url, "t")
    member = again.front[0]
    exp = export(again, member.number, tmp_path / "exported", pipeline=FastPipeline)
    assert exp.model_path.is_file() and exp.manifest["study"]["trial"] == member.number
    # dashboard: named objectives, flat sortable figures, the shipped file next to the weights, compact recipe
    study = optuna.load_study(study_name="t", storage=open_storage(url, heartbeat=False, create=False))
    assert study.metric_names == ["val_accuracy", "latency_ms"]
    trained = [t for t in study.trials if t.user_attrs.get("hw", {}).get("trained")]
    assert trained
    for t in trained:
        flat = {k for k in DASHBOARD_KEYS if k in t.user_attrs}
        assert {"precision", "rung", "budget_epochs", "latency_ms", "latency_source", "macs", "params",
                "peak_activation_bytes", "weight_bytes"} <= flat
        assert isinstance(t.user_attrs["macs"], int) and t.user_attrs["latency_conditions"] == "alone"
        names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)}
        assert names == {"weights.pt", "model.onnx"}
    meta = study.user_attrs["hwtune"]
    assert meta["recipe"].get("text") and "space" not in meta["recipe"]
    cmd = dashboard_command(again)
    assert cmd.startswith("optuna-dashboard sqlite:///") and f"--artifact-dir {moved / 'artifacts'}" in cmd


# -- claims: no candidate evaluated twice at the same rung --------------------------------------------


def test_a_candidate_running_elsewhere_is_claimed_once_and_waited_for(tmp_path):
    import optuna

    from hwtune.tuner.halving import CLAIM_KEY, claim_or_twin, wait_until_done
    from hwtune.tuner.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="c",
                                directions=["maximize"])
    a, b = study.ask(), study.ask()
    assert claim_or_twin(study, a, "k1", 0) is None and a.user_attrs[CLAIM_KEY] == "k1@0"
    twin = claim_or_twin(study, b, "k1", 0)
    assert twin is not None and twin.number == a.number and CLAIM_KEY not in b.user_attrs
    assert claim_or_twin(study, b, "k1", 1) is None  # another rung of the same candidate is other work
    threading.Timer(0.5, lambda: study.tell(a, 0.5)).start()
    t0 = time.monotonic()
    assert wait_until_done(study, twin, poll_s=0.1) == "COMPLETE" and time.monotonic() - t0 >= 0.4


def test_a_leaving_worker_runs_requeued_trials_not_promotions_queued_meanwhile(tmp_path, monkeypatch):
    """A worker whose study has its trials settles stale ones and runs what that re-queued; a promotion
    another worker queued meanwhile is not one of them (it made a worker run a trial past the target)."""
    import optuna

    from hwtune.tuner import storage
    from hwtune.tuner.storage import open_storage, settle_stale

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s",
                                directions=["maximize"])
    study.enqueue_trial({}, user_attrs={"retry_of": 0, "retries": 1})  # re-queued earlier: not this settle's
    real = storage.recover_stale

    def others_meanwhile(st, log):
        if len(st.trials) == 1:
            st.enqueue_trial({}, user_attrs={"continue_from": 1, "rung_target": 1, "candidate_key": "k"})
            st.enqueue_trial({}, user_attrs={"retry_of": 2, "retries": 1})  # a dead worker's candidate
        return real(st, log)

    monkeypatch.setattr(storage, "recover_stale", others_meanwhile)
    assert settle_stale(study, lambda msg: None) == 1
    assert [t.state.name for t in study.trials] == ["WAITING"] * 3


# -- joining a study ---------------------------------------------------------------------------------


def test_join_uses_stored_settings_but_not_stored_paths(recipe, tmp_path, fashion_dir, monkeypatch):
    import optuna

    from hwtune.tuner import api
    from hwtune.tuner.api import join_study
    from hwtune.tuner.storage import META_KEY, WORKERS_KEY, open_storage

    res = run(recipe, tmp_path / "run", n_trials=2)
    study = optuna.load_study(study_name="t", storage=open_storage(res.storage, heartbeat=False))
    meta = dict(study.user_attrs[META_KEY])
    meta["data"] = {**meta["data"], "load": {**meta["data"]["load"], "root": "/etc", "download": True}}
    (tmp_path / "somebody-elses-dir").mkdir()  # exists: the moved-run fallback does not apply
    meta["artifact_dir"] = str(tmp_path / "somebody-elses-dir")
    study.set_user_attr(META_KEY, meta)
    with pytest.raises(ConfigError, match="outside the run directory; give --artifacts"):
        join_study(res.storage, "t", n_trials=3, pipeline=FastPipeline, progress=False)
    seen = []
    real_load = api.load_data
    monkeypatch.setattr(api, "load_data", lambda spec: seen.append(dict(spec)) or real_load(spec))
    out = join_study(res.storage, "t", n_trials=3, pipeline=FastPipeline, progress=False,
                     artifacts=tmp_path / "run" / "artifacts")
    assert out.counts()["complete"] == 3  # the stored target mechanism: 3 in the study, not 3 more
    assert seen and "root" not in seen[0] and "download" not in seen[0]
    assert seen[0]["train_limit"] == DATA["train_limit"]
    workers = study.user_attrs[WORKERS_KEY]
    assert [w["index"] for w in workers] == [0, 1]  # distinct sampler seed offsets


# -- local worker processes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_four_local_workers_share_one_sqlite_study(recipe, tmp_path, fashion_dir, monkeypatch):
    import optuna

    from hwtune.exporting import export
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import REMEASURED_PREFIX, WORKERS_KEY, open_storage

    log = tmp_path / "train.log"
    monkeypatch.setenv("HWTUNE_FAKE_TRAIN_LOG", str(log))
    res = run(recipe, tmp_path / "run", n_trials=10, workers=4)
    c = res.counts()
    assert 10 <= c["complete"] <= 13 and c["failed"] == 0, c
    assert trained_twice(log) == []
    assert len({ln.split()[0] for ln in log.read_text().splitlines()}) >= 2  # work was shared
    study = optuna.load_study(study_name="t", storage=open_storage(res.storage, heartbeat=False))
    assert sorted(w["index"] for w in study.user_attrs[WORKERS_KEY]) == [0, 1, 2, 3]
    # latency taken while workers shared the CPU says so; the front was measured again alone
    shared = [t for t in res.trials if str(t.figures.get("latency_conditions", "")).startswith("shared CPU")]
    assert shared
    for member in res.front:
        assert member.figures.get("latency_conditions") in ("alone", "alone (re-measured)")
        if member.figures.get("latency_conditions") == "alone (re-measured)":
            assert f"{REMEASURED_PREFIX}{member.number}" in study.user_attrs
            assert "alone" in member.figures.latency_label
    # every front member exports from a directory none of the workers used
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    again = load_result(res.storage, "t")
    for member in again.front:
        exp = export(again, member.number, fresh / f"t{member.number}", pipeline=FastPipeline)
        assert exp.model_path.is_file()


@pytest.mark.slow
def test_cli_worker_joins_and_stops_at_the_study_target(recipe, tmp_path, fashion_dir):
    res = run(recipe, tmp_path / "run", n_trials=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    cmd = [sys.executable, "-m", "hwtune", "worker", "--storage", res.storage, "--study", "t", "--trials", "4",
           "--pipeline", "fake_pipeline:FastPipeline", "--quiet"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-800:]
    from hwtune.tuner import load_result

    assert load_result(res.storage, "t").counts()["complete"] == 4


# -- S3 artifact store against a local moto server ---------------------------------------------------


@pytest.mark.slow
def test_s3_artifact_store(recipe, tmp_path, fashion_dir, s3_server, monkeypatch):
    import boto3

    from hwtune.exporting import export
    from hwtune.tuner import load_result

    res = run(recipe, tmp_path / "run", n_trials=2, artifacts="s3://hwtune-test/runs/t")
    assert res.meta.artifact_dir == "s3://hwtune-test/runs/t"
    assert not (tmp_path / "run" / "artifacts").exists()
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="hwtune-test")["Contents"]]
    assert keys and all(k.startswith("runs/t/") for k in keys)
    monkeypatch.chdir(tmp_path)
    again = load_result(res.storage, "t")
    exp = export(again, again.front[0].number, tmp_path / "exp", pipeline=FastPipeline)
    assert exp.model_path.is_file()
    assert json.loads(exp.manifest_path.read_text())["study"]["trial"] == again.front[0].number


@pytest.mark.slow
def test_inherit_keeps_its_parent_in_an_s3_store(recipe, tmp_path, fashion_dir, s3_server, monkeypatch):
    import shutil

    import boto3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kw = {"artifacts": "s3://hwtune-test/runs/inh", "strategy": "inherit", "parent_epochs": 0.2, "pipeline": None}
    res = run(recipe, tmp_path / "run", n_trials=2, **kw)
    parent = res.meta.parent
    assert parent["source"] == "trained" and not (tmp_path / "run" / "artifacts").exists()
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="hwtune-test")["Contents"]]
    assert f"runs/inh/{parent['artifact_id']}" in keys
    shutil.rmtree(tmp_path / "cache")  # a resume on another machine: no local cache, the store has the parent
    again = run(recipe, tmp_path / "run", n_trials=3, **kw)
    assert again.meta.parent["artifact_id"] == parent["artifact_id"]
    assert again.counts()["complete"] >= 3
