"""Every front member of a compression study ships: export re-scores what the search scored.

A nested user model (SE blocks inside stages, a concatenating transition, names three levels deep)
is compressed on a small Fashion-MNIST slice with three forced candidates next to the baseline: one
mixed-precision, width-pruned and block-dropped; one uniform int8; one fp32 with dropped blocks.
Every trained trial is exported from its stored archive and re-scored within 0.5 point of the
search's figure; every front member is finalized without losing accuracy, and exports again.
"""

from __future__ import annotations

import re

import pytest
from support import nested_model

pytestmark = pytest.mark.slow

DATA = {"name": "fashion-mnist", "train_limit": 1500, "val_limit": 400, "test_limit": 300}
BUDGET = {"epochs": 0.3, "rungs": [1.0], "batch_size": 64, "latency_budget_s": 0.1, "calibration_samples": 64}
RESCORE_POINTS = 0.5


def _forced(space) -> list[dict]:
    """Parameters of the forced candidates (optuna names: ``stage1.width`` ...)."""
    stages = [st for st in space.stages if len(st.width) > 1 or len(st.depth) > 1]
    mixed, int8, fp32 = {}, {}, {}
    for i, st in enumerate(space.stages):
        half = sorted(st.width)[len(st.width) // 2]
        for params, width, depth, prec in (
            (mixed, half, max(st.depth) - 1 if len(st.depth) > 1 else 0, "int8" if i % 2 else "fp32"),
            (int8, sorted(st.width)[-2] if len(st.width) > 1 else 1.0, max(st.depth), "int8"),
            (fp32, max(st.width), min(st.depth), "fp32"),
        ):
            if len(st.width) > 1:
                params[f"{st.name}.width"] = width
            if len(st.depth) > 1:
                params[f"{st.name}.depth"] = depth
            if len(st.precision) > 1:
                params[f"{st.name}.precision"] = prec
    assert stages
    return [mixed, int8, fp32]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from support import FASHION_DIR

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed")
    import optuna
    import torch

    from hwtune.compression import derive_space
    from hwtune.data import load_dataset
    from hwtune.training import TrainBudget, train
    from hwtune.tuner.compress import compress

    model = nested_model()
    data = load_dataset("fashion-mnist", train_limit=1500, val_limit=400, test_limit=300)
    train(model, data, budget=TrainBudget(epochs=3.0), batch_size=64, seed=0, progress=False)  # ~70% val
    model.eval()
    out = tmp_path_factory.mktemp("compress-export")
    kw = {"device": "host", "out_dir": out, "study_name": "nested", "sampler": "random", "seed": 1, "budget": BUDGET,
          "progress": False}
    compress(model, DATA, n_trials=1, **kw)  # the baseline row
    forced = _forced(derive_space(model, torch.zeros(1, 1, 28, 28)))
    st = optuna.load_study(study_name="nested", storage=f"sqlite:///{out / 'study.db'}")
    seeded = len(st.get_trials(states=(optuna.trial.TrialState.WAITING,)))  # uniform pruning, queued first
    assert seeded >= 1
    for params in forced:
        st.enqueue_trial(params)
    res = compress(model, DATA, n_trials=1 + seeded + len(forced), **kw)
    return res, out


def _trained(res):
    return [t for t in res.trials if t.state == "complete" and t.trained and t.duplicate_of is None]


def test_forced_members_are_mixed_pruned_and_dropped(study):
    res, _ = study
    trained = _trained(res)
    assert len(trained) >= 5, [t.failure for t in res.trials if t.state == "fail"]
    uniform = [t for t in trained if len({s["width"] for n, s in t.candidate["stages"].items() if n != "head"}) == 1]
    assert any(t.figures.macs < res.trial(0).figures.macs for t in uniform)  # the seeded uniform pruning
    precisions = {t.precision for t in trained}
    assert {"fp32", "int8", "mixed"} <= precisions
    mixed = next(t for t in trained if t.precision == "mixed")
    stages = mixed.candidate["stages"]
    assert any(s["width"] < 1 for s in stages.values())
    full = res.trial(0).candidate["stages"]
    assert any(s["depth"] < full[name]["depth"] for name, s in stages.items())  # a block dropped
    base = res.trial(0)
    assert mixed.figures.macs < base.figures.macs
    table = res.front_table()
    assert re.search(r"stage1 [\d.]+w( d\d)? (fp32|int8)", table), table  # readable, not a raw dict
    assert "schema_version" not in table


def test_every_trained_trial_exports_and_rescores(study, tmp_path):
    from hwtune.exporting import export

    res, _ = study
    for t in _trained(res):
        exp = export(res, t.number, tmp_path / f"t{t.number}")
        assert exp.model_path.is_file()
        assert abs(exp.manifest["val_accuracy"] - t.accuracy) <= RESCORE_POINTS / 100, (t.number, t.precision)


def test_members_finalize_without_losing_accuracy_and_export(study, tmp_path):
    """Every trained trial (the front and the forced fp32 / int8 / mixed members) finalizes and ships."""
    from hwtune.exporting import export
    from hwtune.tuner.finalize import finalize

    res, _ = study
    per_precision = {t.precision: t.number for t in reversed(_trained(res))}  # one of each, the forced ones first
    numbers = sorted({t.number for t in res.front} | set(per_precision.values()))
    assert {res.trial(n).precision for n in numbers} >= {"fp32", "int8", "mixed"}
    res2 = finalize(res, numbers, epochs=0.5, progress=False)
    for n in numbers:
        searched = res.trial(n).accuracy
        final = res2.trial(n).figures.finalized
        assert final["val_accuracy"] >= searched - RESCORE_POINTS / 100, (n, searched, final["val_accuracy"])
        exp = export(res2, n, tmp_path / f"f{n}")
        assert abs(exp.manifest["val_accuracy"] - final["val_accuracy"]) <= RESCORE_POINTS / 100


@pytest.mark.extras
@pytest.mark.parametrize("fmt, module", [("pte", "executorch"), ("tflite", "ai_edge_litert")])
def test_mixed_member_exports_to_the_other_runtimes(study, tmp_path, fmt, module):
    pytest.importorskip(module)
    from hwtune.exporting import export

    res, _ = study
    mixed = next(t for t in _trained(res) if t.precision == "mixed")
    exp = export(res, mixed.number, tmp_path / fmt, fmt, finalized=False)  # the weights the search scored
    assert exp.model_path.suffix == f".{fmt}"
    assert abs(exp.manifest["val_accuracy"] - mixed.accuracy) <= 0.03  # another runtime's int8 kernels
    assert mixed.accuracy > 0.2  # pruned and not yet fine-tuned, but not chance level (0.1)
