"""The real pipeline end to end: profile, train, quantize, evaluate, store; and a crash + resume.

Small real Fashion-MNIST slices and a 16-candidate convnet space keep each trial to a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_real_tune_reaches_a_front_with_real_figures(tuned_study):
    res = tuned_study
    assert res.counts()["complete"] == 4 and res.counts()["failed"] == 0
    assert res.front and res.knee is not None and res.hypervolume > 0
    trained = [t for t in res.trials if t.trained and t.duplicate_of is None]
    assert {t.precision for t in trained} == {"fp32", "int8"}
    for t in trained:
        f = t.figures
        assert f["macs"] > 0 and f["flops"] == 2 * f["macs"] and f["params"] > 0
        assert f["latency_source"] == "measured" and f["latency_ms"] > 0
        assert f["latency"]["runtime"] == "onnxruntime" and "ci_half_width_ms" in f["latency"]
        assert 0.0 <= f["val_accuracy"] <= 1.0
        assert f["budget_epochs"] in (0.5, 1.0)
        assert f["rungs"][0]["epochs"] == 0.5
        assert f["artifact_id"]
    promoted = [t for t in trained if t.figures.get("continue_from") is not None]
    assert promoted and all(t.figures["budget_epochs"] == 1.0 for t in promoted)  # 3 rung-0 results -> 1 promotion
    int8 = next(t for t in trained if t.precision == "int8")
    q = int8.figures["quantization"]
    assert q["calibration_source"] == "data" and q["activation_type"] in ("u8", "s8")
    acc = int8.figures["accuracy_by_precision"]
    assert set(acc) == {"fp32", "int8"} and abs(acc["fp32"] - acc["int8"]) < 0.1
    assert "shipped" in int8.figures["latency_label"]
    # int8 weights are ~4x smaller than the same net at fp32 would be
    assert int8.figures["weight_bytes"] < int8.figures["params"] * 2
    out = res.out_dir
    for name in ("study.db", "front.json", "pareto.png", "hypervolume.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "artifacts").iterdir())
    assert json.loads((out / "front.json").read_text())["front"][0]["number"] == res.knee.number


CHILD = """\
import sys
from hwtune.tuner import tune
tune(sys.argv[1], device="host", data={{"name": "fashion-mnist", "train_limit": 600, "val_limit": 200}},
     n_trials=30, out_dir=sys.argv[2], study_name="crash", sampler="random", seed=11,
     budget={{"epochs": 0.5, "rungs": [1.0], "batch_size": 64, "latency_budget_s": 0.1, "calibration_samples": 32}},
     progress=False, reports=False)
"""


def _states(db: Path) -> list[tuple[int, str, int, int]]:
    """(number, state, has a recorded worker, parameters chosen) of every trial, read without Optuna."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return list(
                con.execute(
                    "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_user_attributes a "
                    "WHERE a.trial_id = t.trial_id AND a.key = 'worker'), (SELECT COUNT(*) FROM trial_params p "
                    "WHERE p.trial_id = t.trial_id) FROM trials t ORDER BY t.number"
                )
            )
    except sqlite3.Error:
        return []


@pytest.mark.slow
def test_resume_after_a_killed_process_loses_and_repeats_nothing(tmp_path, tuner_recipe, fashion_dir):
    from hwtune.tuner import load_result, tune

    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(), str(tuner_recipe), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = out / "study.db"
    deadline = time.monotonic() + 240
    try:
        while True:
            states = _states(db)
            done = [n for n, s, _, _ in states if s == "COMPLETE"]
            # kill inside a trial that has chosen its candidate (before that there is nothing to retry)
            if len(done) >= 2 and states and states[-1][1] == "RUNNING" and states[-1][2] and states[-1][3] >= 4:
                break
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"child too slow: {states}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # mid-trial, no chance to clean up
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    before = load_result(f"sqlite:///{db}", "crash")
    killed = [t.number for t in before.trials if t.state == "running"]
    assert killed, "the kill should leave a trial RUNNING"
    kept = {t.number: (t.values, t.figures["candidate_key"]) for t in before.trials if t.complete}

    target = len(kept) + 2
    res = tune(
        tuner_recipe,
        device="host",
        data={"name": "fashion-mnist", "train_limit": 600, "val_limit": 200},
        n_trials=target,
        out_dir=out,
        study_name="crash",
        sampler="random",
        seed=11,
        budget={"epochs": 0.5, "rungs": [1.0], "batch_size": 64, "latency_budget_s": 0.1, "calibration_samples": 32},
        progress=False,
        reports=False,
    )
    # completed trials survive exactly
    for n, (values, key) in kept.items():
        t = res.trial(n)
        assert t.complete and t.values == values and t.figures["candidate_key"] == key
    # the interrupted trial is failed with a reason, and its candidate was retried
    for n in killed:
        t = res.trial(n)
        assert t.state == "fail" and "killed" in t.failure
        retry = [r for r in res.trials if r.figures.get("retry_of") == n]
        assert retry and retry[0].complete
    assert res.counts()["complete"] == target
    # nothing completed was trained twice: each candidate has one original (non-repeat) trial
    originals = [t.figures["candidate_key"] for t in res.trials if t.complete and t.duplicate_of is None]
    assert len(originals) == len(set(originals))


@pytest.mark.parametrize("strategy", ["inherit", "compress"])
def test_inherit_and_compress_fine_tune_distilled_from_their_parent(strategy, monkeypatch):
    """Both strategies train through DistilledPipeline.train: supernet.finetune with the parent as teacher."""
    import torch

    from hwtune import supernet
    from hwtune.device import load_profile
    from hwtune.space import SearchSpace
    from hwtune.tuner.compress import CompressPipeline
    from hwtune.tuner.inherit import InheritPipeline
    from hwtune.tuner.pipeline import DistilledPipeline

    calls = []

    def fake_finetune(model, data, **kw):
        calls.append((model, data, kw))
        return "stats"

    monkeypatch.setattr(supernet, "finetune", fake_finetune)
    parent, model = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    cls = InheritPipeline if strategy == "inherit" else CompressPipeline
    pipe = cls(SearchSpace.from_recipe("fashion-convnet"), load_profile("host"), parent=parent)
    assert isinstance(pipe, DistilledPipeline) and pipe.strategy == strategy
    pipe.train_device, pipe.amp = "cpu", "off"
    out = pipe.train(model, "data", epochs=0.5, batch_size=32, lr=None, seed=3, threads=1)
    assert out == "stats"
    assert calls == [
        (
            model,
            "data",
            {
                "epochs": 0.5,
                "teacher": parent,
                "lr": None,
                "batch_size": 32,
                "seed": 3,
                "threads": 1,
                "train_device": "cpu",
                "amp": "off",
            },
        )
    ]
