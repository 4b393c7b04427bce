"""Weight inheritance in the tuner, several devices in one search, finalize and its export.

Real pipeline on a tiny space and a small slice of Fashion-MNIST: a parent trained for a fraction of
an epoch, candidates extracted from it, fronts per device, finalize round trip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_recipe

from hwtune.errors import ConfigError, UnknownNameError

DATA = {"name": "fashion-mnist", "train_limit": 2000, "val_limit": 300, "test_limit": 300}
BUDGET = {"epochs": 0.4, "rungs": [0.5, 1.0], "batch_size": 64, "latency_budget_s": 0.1, "calibration_samples": 32}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("recipe"))


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    d = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(d)
    yield d
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def inherited(recipe, tmp_path_factory, cache_home, fashion_dir_module):
    from hwtune.tuner import tune

    out = tmp_path_factory.mktemp("inherit")
    return tune(
        recipe,
        device="host,raspberry-pi-4",
        data=DATA,
        n_trials=5,
        out_dir=out,
        study_name="inh",
        sampler="random",
        seed=1,
        budget=BUDGET,
        strategy="inherit",
        parent_epochs=2.0,
        progress=False,
    )


@pytest.fixture(scope="module")
def fashion_dir_module():
    from support import FASHION_DIR

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.mark.slow
def test_inherit_scores_candidates_without_training_them_first(inherited):
    res = inherited
    assert res.meta.strategy == "inherit" and res.meta.parent["artifact_id"]
    assert res.meta.parent["source"] == "trained"
    rung0 = [t for t in res.trials if t.complete and t.trained and t.figures.continue_from is None]
    assert rung0, "no candidate was scored"
    assert any(t.precision != "fp32" for t in rung0), [t.precision for t in rung0]
    for t in rung0:
        assert t.figures.rung == 0 and t.figures.budget_epochs == 0.0 and t.figures.epochs_trained == 0.0
        # inherited weights: far better than the 10% of an untrained 10-class model
        assert t.accuracy > 0.18
        # scored once, as shipped: a quantized candidate's untrained weights are not scored in fp32 as well
        quantized = t.precision != "fp32"
        assert (t.figures.val_accuracy_fp32 is None) == quantized
        assert ("fp32" in (t.figures.accuracy_by_precision or {})) != quantized
    promoted = [t for t in res.trials if t.figures.continue_from is not None and t.complete]
    for t in promoted:
        assert t.figures.budget_epochs > 0  # rungs are fine-tuning budgets of the extracted model


@pytest.mark.slow
def test_multi_device_study_has_a_front_per_device(inherited, tmp_path):
    from hwtune.cli import main
    from hwtune.report import write_reports

    res = inherited
    assert res.devices == ["host", "raspberry-pi-4"]
    trained = [t for t in res.trials if t.trained and t.duplicate_of is None]
    assert all(set(t.figures.per_device) == {"host", "raspberry-pi-4"} for t in trained)
    host, pi = res.for_device("host"), res.for_device("raspberry-pi-4")
    assert host.front and pi.front
    assert all(t.latency_source.startswith("measured") for t in host.front)
    assert all(t.latency_source.startswith("predicted") for t in pi.front)
    # accuracy is the same trial figure on both devices; latency differs
    t = trained[0]
    assert t.for_device("host").accuracy == t.for_device("raspberry-pi-4").accuracy
    assert t.for_device("host").latency_ms != t.for_device("raspberry-pi-4").latency_ms
    with pytest.raises(UnknownNameError, match="no device 'pixel-3'"):
        res.for_device("pixel-3")
    paths = write_reports(res, tmp_path / "rep")
    assert "pareto-raspberry-pi-4" in paths and paths["pareto-raspberry-pi-4"].exists()
    assert "## Front on raspberry-pi-4" in paths["report"].read_text()
    assert main(["front", "--storage", res.storage, "--study", "inh", "--device", "raspberry-pi-4"]) == 0


@pytest.mark.slow
def test_a_second_study_reuses_the_parent(recipe, tmp_path, inherited, cache_home):
    from hwtune.tuner import tune

    res = tune(
        recipe,
        device="host",
        data=DATA,
        n_trials=1,
        out_dir=tmp_path / "again",
        study_name="again",
        sampler="random",
        seed=1,
        budget=BUDGET,
        strategy="inherit",
        parent_epochs=2.0,
        progress=False,
        reports=False,
    )
    assert res.meta.parent["source"] == "cache" and res.meta.parent["key"] == inherited.meta.parent["key"]


@pytest.mark.slow
def test_finalize_records_final_figures_and_export_ships_them(inherited, tmp_path):
    from hwtune.exporting import export
    from hwtune.tuner.finalize import finalize

    knee = inherited.knee
    res = finalize(inherited, [knee.number], epochs=0.2, progress=False)
    f = res.trial(knee.number).figures.finalized
    assert f["epochs"] == 0.2 and f["teacher"] == "parent" and 0 < f["val_accuracy"] <= 1
    assert f["test_accuracy"] is not None and f["artifact_id"]
    assert res.trial(knee.number).accuracy == knee.accuracy  # the search figure stays
    assert res.finalized_front and "final val" in res.front_table(finalized=True)
    exp = export(res, knee.number, tmp_path / "final")
    m = exp.manifest
    assert m["finalized"]["artifact_id"] == f["artifact_id"]
    assert abs(m["val_accuracy"] - f["val_accuracy"]) <= 0.01
    exp2 = export(res, knee.number, tmp_path / "search", finalized=False)
    assert exp2.manifest["finalized"] is None


def test_unsliceable_family_refuses_inherit_with_a_clear_message(tmp_path):
    from hwtune.tuner import tune

    with pytest.raises(ConfigError, match="strategy 'inherit' needs a sliceable family; nb201"):
        tune("cifar-nb201", device="host", strategy="inherit", out_dir=tmp_path, progress=False)


def test_bad_strategy_and_devices(recipe, tmp_path):
    from hwtune.tuner import tune

    with pytest.raises(ConfigError, match="strategy must be one of"):
        tune(recipe, strategy="clone", out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="host given more than once"):
        tune(recipe, device="host,host", out_dir=tmp_path, progress=False)
