"""The tuner's study layer with fake profile/train/evaluate steps: fast, deterministic.

Real models are built (tiny convnets) and real Optuna studies with SQLite storage are used; only
the expensive steps (profiling, training, evaluation, quantization) are replaced by fakes whose
results are a deterministic function of the model, so constraint, schedule, failure and resume
logic can be asserted exactly. The real pipeline end to end is in ``test_pipeline.py``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import tiny_recipe, write_recipe

from hwtune.errors import ConfigError, StudyError, TrainingDivergedError, UnknownNameError

# The shared tiny space of conftest.py, trained for half an epoch here.
TINY_RECIPE = tiny_recipe(epochs=0.5)

DATA = {"name": "fashion-mnist", "train_limit": 256, "val_limit": 128, "test_limit": 128}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path, text=TINY_RECIPE)


class Fakes:
    """Deterministic stand-ins for profile/train/evaluate/quantize; they log what they were asked."""

    def __init__(self) -> None:
        self.trained: list[tuple[str, float]] = []
        self.fail_keys: set[str] = set()
        self.files: dict[str, float] = {}

    def pipeline_class(self) -> type:
        """A CandidatePipeline subclass whose expensive steps are these fakes (real model building)."""
        from hwtune.runtimes import ShippedModel
        from hwtune.tuner import CandidatePipeline

        fakes = self
        real_build = CandidatePipeline.build  # captured before install() replaces it

        class FakePipeline(CandidatePipeline):
            def build(self, cand):
                model = real_build(self, cand)
                model._fake_key = cand.key
                model._fake_epochs = 0.0
                model._fake_int8 = cand.precision == "int8"
                return model

            def profile(self, model, plan, *, measure, time_budget_s, device=None):
                import torch

                n = sum(p.numel() for p in model.parameters())
                int8 = "int8" in plan.precisions
                convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
                stem = convs[0].out_channels
                macs = 60 * n
                eb = 1 if int8 else 4
                lat = macs / 1e6 * (0.6 if int8 else 1.0)
                return {
                    "macs": macs,
                    "flops": 2 * macs,
                    "params": n,
                    "weight_bytes": n * eb,
                    "peak_activation_bytes": stem * 14 * 14 * eb * 2,
                    "latency_ms": lat,
                    "latency_source": "measured",
                    "runtime": "onnxruntime",
                    "fits": {},
                    "latency": {"median_ms": lat, "ci_half_width_ms": lat / 100, "runtime": "onnxruntime", "threads": 1},
                }

            def train(self, model, data, *, epochs, batch_size, lr, seed, threads=None):
                if model._fake_key in fakes.fail_keys:
                    raise TrainingDivergedError("loss became nan at step 3")
                fakes.trained.append((model._fake_key, epochs))
                model._fake_epochs += epochs

                class Stats:
                    samples_seen = int(epochs * 256)
                    final_loss = 1.0

                return Stats()

            def evaluate(self, target, dataset, *, batch_size):
                if isinstance(target, ShippedModel):
                    return fakes.files[str(target.path)]
                n = sum(p.numel() for p in target.parameters())
                # more parameters and more training -> higher accuracy, saturating
                return 0.5 + 0.3 * (1 - math.exp(-n / 1500)) + 0.15 * min(target._fake_epochs, 1.0)

            def ship(self, model, plan, workdir, *, calibration, seed):
                path = Path(workdir) / "model.onnx"
                path.write_bytes(b"fake")
                fakes.files[str(path)] = self.evaluate(model, None, batch_size=1) - 0.004
                return ShippedModel(path, "onnxruntime", "onnx", plan.label, self.input_shape, {"precision_label": plan.label})

            def measure(self, shipped, *, time_budget_s, device=None):
                return {"median_ms": 0.01, "runtime": "onnxruntime", "threads": 1}

        return FakePipeline

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Fakes:
        """Make the default pipeline fake (its public step methods), for API and CLI runs alike."""
        from hwtune.tuner import CandidatePipeline

        fake = self.pipeline_class()
        for name in ("build", "profile", "train", "evaluate", "ship", "measure"):
            monkeypatch.setattr(CandidatePipeline, name, getattr(fake, name))
        return self


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, fashion_dir) -> Fakes:
    return Fakes().install(monkeypatch)


def run(recipe, tmp_path, **kw):
    from hwtune.tuner import tune

    args = {
        "device": "host",
        "data": DATA,
        "n_trials": 6,
        "out_dir": tmp_path / "run",
        "study_name": "t",
        "sampler": "random",
        "seed": 0,
        "progress": False,
        "reports": False,
    }
    args.update(kw)
    return tune(recipe, **args)


def test_tune_reaches_a_front_and_records_every_figure(recipe, tmp_path, fakes):
    res = run(recipe, tmp_path, n_trials=6, reports=True)
    assert res.counts()["complete"] == 6
    assert (tmp_path / "run" / "study.db").exists()
    assert res.storage.startswith("sqlite:///")
    front = res.front
    assert front and res.knee is not None and 0 < res.hypervolume < 1
    for t in res.trials:
        if t.duplicate_of is not None:
            continue
        f = t.figures
        for key in (
            "candidate",
            "candidate_key",
            "precision",
            "macs",
            "params",
            "weight_bytes",
            "peak_activation_bytes",
            "latency_ms",
            "latency_source",
            "latency",
            "val_accuracy",
            "accuracy_by_precision",
            "budget_epochs",
            "wall_seconds",
            "rungs",
            "artifact_id",
            "worker",
        ):
            assert key in f, key
        assert t.constraints and all(v <= 0 for v in t.constraints.values())
    # int8 candidates are scored on the shipped (quantized) file and say so
    int8 = [t for t in res.trials if t.precision == "int8" and t.duplicate_of is None]
    for t in int8:
        assert t.figures["accuracy_source"].startswith("onnxruntime")
        assert set(t.figures["accuracy_by_precision"]) == {"fp32", "int8"}
    # the reference point is fixed and stored with the study
    assert res.reference_point["val_accuracy"] == 0.0 and res.reference_point["latency_ms"] > 0
    for name in ("front.json", "pareto.png", "hypervolume.png", "report.md"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    payload = json.loads((tmp_path / "run" / "front.json").read_text())
    assert payload["front"][0]["knee"] is True
    assert "## Pareto front" in (tmp_path / "run" / "report.md").read_text()


def test_successive_halving_promotes_the_best_third_and_continues_the_same_weights(recipe, tmp_path, fakes):
    from hwtune.front import promotion_order
    from hwtune.tuner import Schedule

    res = run(recipe, tmp_path, n_trials=12, budget=Schedule(epochs=1.0, rungs=(0.25, 1.0), eta=3))
    trained = sorted((t for t in res.trials if t.trained and t.duplicate_of is None), key=lambda t: t.number)
    conts = [t for t in trained if t.figures.get("continue_from") is not None]
    firsts = [t for t in trained if t.figures.get("continue_from") is None]
    assert conts, "12 trials should promote some candidates"
    assert len(firsts) >= 2 * len(conts)  # the schedule trains most candidates for a quarter of the budget
    for t in firsts:
        assert t.figures["rung"] == 0 and t.figures["budget_epochs"] == pytest.approx(0.25)
    keys = [t.candidate_key for t in conts]
    assert len(keys) == len(set(keys))  # promoted once
    for t in conts:
        origin = res.trial(t.figures["continue_from"])
        assert origin.candidate_key == t.candidate_key and origin.figures["rung"] == 0
        assert t.figures["rung"] == 1 and t.figures["budget_epochs"] == pytest.approx(1.0)
        assert t.figures["epochs_trained"] == pytest.approx(0.75)
        assert [r["rung"] for r in t.figures["rungs"]] == [0, 1]
        assert t.figures["latency_ms"] == origin.figures["latency_ms"]  # profile inherited, not redone
        assert t.accuracy > origin.accuracy
        # a promotion is decided only once the rung holds eta results
        earlier = [f for f in firsts if f.number < t.number]
        assert len(earlier) >= 3
    # the same weights continue: per candidate, the trainer saw 0.25 then 0.75 epochs
    per_key: dict[str, list[float]] = {}
    for key, ep in fakes.trained:
        per_key.setdefault(key, []).append(ep)
    for t in conts:
        assert per_key[t.candidate_key] == pytest.approx([0.25, 0.75])
    # after the last scan the best floor(n/3) of rung 0 are all promoted (queued, running or done)
    rung0 = {}
    for t in trained:
        for r in t.figures["rungs"]:
            if r["rung"] == 0:
                rung0[t.candidate_key] = (1 - r["val_accuracy"], t.figures["latency_profile_ms"])
    ks = list(rung0)
    top = {ks[i] for i in promotion_order([rung0[k] for k in ks])[: len(ks) // 3]}
    promoted = {t.figures.get("candidate_key") for t in res.trials if t.figures.get("rung_target") == 1}
    assert top <= promoted


def test_constraint_violating_candidates_are_never_trained(recipe, tmp_path, fakes):
    # fake peak activations: stem_width * 14*14 * bytes * 2 -> stem 8 @ fp32 = 12544 B > 10 KiB
    res = run(recipe, tmp_path, n_trials=10, constraints={"max_ram_kb": 10})
    infeasible = [t for t in res.trials if t.complete and not t.feasible and t.duplicate_of is None]
    assert infeasible, "the seed should sample some stem_width=8 fp32 candidates"
    trained_keys = {k for k, _ in fakes.trained}
    for t in infeasible:
        assert t.constraints["ram"] > 0
        assert t.trained is False and t.figures["budget_epochs"] == 0.0
        assert t.candidate_key not in trained_keys
        assert t.figures["peak_activation_bytes"] > 10 * 1024  # measured figures are kept
        assert "peak activations" in t.figures["infeasible"][0]
    assert all(t.feasible for t in res.front)


def test_a_parameter_limit_leaves_larger_candidates_untrained(recipe, tmp_path, fakes):
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe(recipe)
    sizes = sorted({sum(p.numel() for p in space.build(c).parameters()) for c in space.enumerate()})
    limit = sizes[len(sizes) // 2]
    res = run(recipe, tmp_path, n_trials=12, constraints={"max_params": limit})
    assert res.constraints["max_params"] == limit
    over = [t for t in res.trials if t.complete and t.duplicate_of is None and t.figures["params"] > limit]
    assert over, "the seed should sample some larger candidates"
    trained_keys = {k for k, _ in fakes.trained}
    for t in over:
        assert t.constraints["params"] > 0 and not t.feasible and t.candidate_key not in trained_keys
        assert f"parameters > limit {limit}" in t.figures["infeasible"][0]
    assert res.front and all(t.figures["params"] <= limit for t in res.front)
    with pytest.raises(ConfigError, match=f"max params 10 is below the smallest candidate's {sizes[0]}"):
        run(recipe, tmp_path / "none", constraints={"max_params": 10})


def test_a_seeded_start_is_evaluated_first_and_only_once(recipe, tmp_path, fakes):
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe(recipe)
    cands = list(space.enumerate())
    chosen = [cands[-1], cands[3]]
    start = [space.params_of(c) for c in chosen]
    res = run(recipe, tmp_path, n_trials=4, start=start)
    first = sorted(res.trials, key=lambda t: t.number)[:2]
    assert [t.candidate_key for t in first] == [c.key for c in chosen]
    # resuming with the same start queues nothing again: each start candidate is evaluated once
    res = run(recipe, tmp_path, n_trials=8, start=start)
    for c in chosen:
        assert len([t for t in res.trials if t.candidate_key == c.key and t.figures.get("rung") == 0]) == 1
    with pytest.raises(ConfigError, match=r"start\[1\]: .*parameter 'nope'"):
        run(recipe, tmp_path / "bad", start=[start[0], {**start[0], "nope": 1}])
    with pytest.raises(ConfigError, match="start must be a list of parameter dicts, got dict"):
        run(recipe, tmp_path / "bad", start=start[0])
    assert not (tmp_path / "bad").exists()


def test_failed_trials_do_not_stop_the_study(recipe, tmp_path, fakes):
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe(recipe)
    bad = [c.key for c in space.enumerate() if c.knob("stem_width") == 4]
    fakes.fail_keys = set(bad)
    res = run(recipe, tmp_path, n_trials=5)
    failed = [t for t in res.trials if t.state == "fail"]
    assert failed, "the seed should sample some stem_width=4 candidates"
    for t in failed:
        assert "TrainingDivergedError" in t.failure and "train (rung 0)" in t.failure
    assert res.counts()["complete"] == 5  # the study went on to its target
    assert all(t.state in ("complete", "fail") for t in res.trials)


def test_resume_reuses_completed_trials(recipe, tmp_path, fakes):
    first = run(recipe, tmp_path, n_trials=4)
    numbers = {t.number: t.figures["candidate_key"] for t in first.trials if t.complete}
    n_trained = len(fakes.trained)
    second = run(recipe, tmp_path, n_trials=7)
    assert second.counts()["complete"] == 7
    for n, key in numbers.items():  # completed trials are kept as they were
        assert second.trial(n).figures["candidate_key"] == key
    # a candidate starts training at most once across both runs (repeats reuse the stored result)
    firsts = [k for k, ep in fakes.trained if ep == pytest.approx(0.125)]  # rung 0 of the recipe's 0.5 epochs
    assert len(fakes.trained) >= n_trained
    dup = [t for t in second.trials if t.duplicate_of is not None]
    for t in dup:
        orig = second.trial(t.duplicate_of)
        assert t.values == orig.values and t.figures["candidate_key"] == orig.figures["candidate_key"]
    assert len(set(firsts)) == len(firsts)
    # same target again: nothing to run
    third = run(recipe, tmp_path, n_trials=7)
    assert len(third.trials) == len(second.trials)


def test_search_stops_when_the_space_is_exhausted(recipe, tmp_path, fakes):
    small = (
        recipe.read_text()
        .replace("stem_width = [4, 8]", "stem_width = 4")
        .replace("width = [[4, 8], [8, 16]]", "width = [[4, 8], [8]]")
        .replace('choices = ["fp32", "int8"]', 'choices = ["fp32"]')
    )
    recipe.write_text(small)  # 2 candidates
    res = run(recipe, tmp_path, n_trials=15)
    keys = {t.candidate_key for t in res.trials if t.complete}
    assert len(keys) == 2
    assert len(res.trials) < 15
    trained = [k for k, _ in fakes.trained]
    assert sorted(set(trained)) == sorted(keys)


def test_stale_running_trial_is_failed_and_retried_on_resume(recipe, tmp_path, fakes):
    import optuna

    from hwtune.tuner import open_storage

    first = run(recipe, tmp_path, n_trials=2)
    # Simulate a worker killed mid-trial: a RUNNING trial owned by a dead process on this host.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = open_storage(first.storage, heartbeat=False)
    study = optuna.load_study(study_name="t", storage=storage)
    trial = study.ask()
    params = {
        "stem_width": trial.suggest_categorical("stem_width", [4, 8]),
        "stage1.width": trial.suggest_categorical("stage1.width", [4, 8]),
        "stage2.width": trial.suggest_categorical("stage2.width", [8, 16]),
        "precision": trial.suggest_categorical("precision", ["fp32", "int8"]),
    }
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid, "start": "0"})
    stale = trial.number
    res = run(recipe, tmp_path, n_trials=4)
    rec = res.trial(stale)
    assert rec.state == "fail" and "killed" in rec.failure
    retried = [t for t in res.trials if t.figures.get("retry_of") == stale]
    assert retried and retried[0].complete
    assert {k: retried[0].figures["candidate"]["knobs"].get(k) for k in ("stem_width",)} == {
        "stem_width": params["stem_width"]
    }
    assert res.counts()["complete"] == 4


def test_live_worker_trial_is_left_alone(recipe, tmp_path, fakes):
    import optuna

    from hwtune.tuner import open_storage

    first = run(recipe, tmp_path, n_trials=1)
    study = optuna.load_study(study_name="t", storage=open_storage(first.storage, heartbeat=False))
    trial = study.ask()
    from hwtune.tuner.storage import worker_id

    trial.set_user_attr("worker", worker_id())  # this (live) process
    res = run(recipe, tmp_path, n_trials=2)
    assert res.trial(trial.number).state == "running"


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_every_sampler_runs_and_is_seedable(recipe, tmp_path, fakes, sampler):
    a = run(recipe, tmp_path / "a", n_trials=3, sampler=sampler, seed=3)
    b = run(recipe, tmp_path / "b", n_trials=3, sampler=sampler, seed=3)
    keys = lambda r: [t.figures.get("candidate_key") for t in r.trials]
    assert keys(a) == keys(b)


def test_bad_inputs_give_clear_errors(recipe, tmp_path, fakes):
    from hwtune.tuner import load_result

    with pytest.raises(UnknownNameError, match="unknown recipe 'fashion-convnt'"):
        run("fashion-convnt", tmp_path)
    with pytest.raises(ConfigError, match="max_ram_bytes must be a number > 0|max_ram_kb must be a number > 0"):
        run(recipe, tmp_path, constraints={"max_ram_kb": 0})
    with pytest.raises(ConfigError, match="impossible constraints: max RAM"):
        run(recipe, tmp_path, constraints={"max_ram_kb": 0.5})
    with pytest.raises(ConfigError, match="did you mean 'max_latency_ms'"):
        run(recipe, tmp_path, constraints={"max_latency": 3})
    with pytest.raises(ConfigError, match="did you mean 'nsga2'"):
        run(recipe, tmp_path, sampler="nsga")
    with pytest.raises(StudyError, match="cannot open study storage 'nosuchdb://x'"):
        run(recipe, tmp_path, storage="nosuchdb://x")
    with pytest.raises(StudyError, match="not a database URL"):
        run(recipe, tmp_path, storage="just-a-name")
    with pytest.raises(ConfigError, match="device .* supports precisions int8"):
        run(recipe.parent / "fp32only.toml" if _write_fp32(recipe) else recipe, tmp_path, device="stm32h743")
    res = run(recipe, tmp_path, n_trials=1)
    with pytest.raises(StudyError, match="has no trial 99"):
        load_result(res.storage, "t").trial(99)
    with pytest.raises(StudyError, match="no study 'tt'.*did you mean 't'"):
        load_result(res.storage, "tt")
    with pytest.raises(StudyError, match="exists with different settings"):
        run(recipe, tmp_path, objectives="accuracy,latency,memory")
    for msg in _messages(recipe, tmp_path):
        assert "\n" not in msg


def _write_fp32(recipe: Path) -> bool:
    (recipe.parent / "fp32only.toml").write_text(recipe.read_text().replace('["fp32", "int8"]', '["fp32"]'))
    return True


def _messages(recipe, tmp_path):
    out = []
    for kw in ({"storage": "nosuchdb://x"}, {"constraints": {"max_ram_kb": 0.5}}):
        try:
            run(recipe, tmp_path, **kw)
        except Exception as exc:  # noqa: BLE001
            out.append(str(exc))
    return out


def test_cli_front_json_knee_first_and_errors(recipe, tmp_path, fakes, capsys):
    from hwtune.cli import main

    res = run(recipe, tmp_path, n_trials=4)
    assert main(["front", "--storage", res.storage, "--study", "t", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and rows[0]["knee"] is True and rows[0]["number"] == res.knee.number
    for row in rows:
        assert {"number", "candidate", "precision", "accuracy", "latency_ms", "latency_source"} <= set(row)
    assert main(["front", "--storage", res.storage, "--study", "t", "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "hypervolume" in out and (tmp_path / "rep" / "pareto.png").exists()
    assert main(["front", "--storage", res.storage, "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwtune: error: no study 'nope'") and err.count("\n") == 1
    assert (
        main(["export", "--storage", res.storage, "--study", "t", "--trial", "42", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "has no trial 42" in err and err.count("\n") == 1
    assert main(["tune", "no-such-recipe", "--device", "host", "--out", str(tmp_path / "y")]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["tune", str(recipe), "--device", "host", "--max-ram-kb", "0", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "--max-ram-kb" in err and "got '0'" in err


def test_cli_tune_runs_and_prints_the_front(recipe, tmp_path, fakes, capsys, monkeypatch):
    from hwtune.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "tune",
            str(recipe),
            "--device",
            "host",
            "--trials",
            "3",
            "--seed",
            "1",
            "--sampler",
            "random",
            "--train-limit",
            "256",
            "--val-limit",
            "128",
            "--out",
            "cli-run",
            "--study",
            "c",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "trial" in captured.out and "precision" in captured.out
    assert "knee: trial #" in captured.err
    assert (tmp_path / "cli-run" / "study.db").exists()


def test_worker_liveness_check():
    from hwtune.tuner.storage import worker_alive, worker_id

    me = worker_id()
    assert worker_alive(me) is True
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert worker_alive({"host": socket.gethostname(), "pid": p.pid, "start": "1"}) is False
    assert worker_alive({"host": "some-other-host", "pid": os.getpid()}) is None


def test_ctrl_c_keeps_finished_trials_and_requeues_the_interrupted_one(recipe, tmp_path, fakes, capsys):
    from hwtune.tuner import CandidatePipeline

    real_train = CandidatePipeline.train
    calls = {"n": 0}

    def train(self, model, data, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_train(self, model, data, **kw)

    import pytest as _pytest

    mp = _pytest.MonkeyPatch()
    mp.setattr(CandidatePipeline, "train", train)
    try:
        res = run(recipe, tmp_path, n_trials=8, budget={"epochs": 1.0, "rungs": [1.0]}, progress=True)
    finally:
        mp.undo()
    assert res.interrupted
    done = [t for t in res.trials if t.complete]
    assert len(done) >= 2
    broken = [t for t in res.trials if t.state == "fail"]
    assert len(broken) == 1 and "interrupted" in broken[0].failure
    waiting = [t for t in res.trials if t.state == "waiting"]
    assert waiting and waiting[0].figures.get("retry_of") == broken[0].number
    out = capsys.readouterr()
    assert "interrupted" in out.err and "trial" in out.out  # the front so far is printed
    # the next run picks the interrupted candidate up first
    again = run(recipe, tmp_path, n_trials=len(done) + 1)  # no budget given: the study's own is used
    retried = [t for t in again.trials if t.figures.get("retry_of") == broken[0].number]
    assert retried and retried[0].complete
