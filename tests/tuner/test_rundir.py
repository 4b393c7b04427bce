"""The Python API takes what the CLI takes: a run directory as the source, ``"knee"`` as the trial.

``hwtune.export(RUN_DIR, "knee", out)`` and ``hwtune.finalize(RUN_DIR, "knee")`` resolve the run the
way ``hwtune export RUN_DIR --trial knee`` does (``hwtune.tuner.rundir``); selectors that make no
sense (``"front"`` for one out_dir, unknown words, bools) are one-line ConfigErrors naming the value.
Trials use ``fake_pipeline.FastPipeline`` (real build/ship/evaluate of tiny convnets, fake training).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fake_pipeline import BUDGET, DATA, RECIPE, FastPipeline

import hwtune
from hwtune.errors import ConfigError, StudyError
from hwtune.tuner import load_result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial study in its run directory (study.db, artifacts)."""
    base = tmp_path_factory.mktemp("selectors")
    recipe = base / "fast.toml"
    recipe.write_text(RECIPE)
    out = base / "run"
    hwtune.tune(
        recipe,
        device="host",
        data=DATA,
        n_trials=3,
        out_dir=out,
        study_name="sel",
        sampler="random",
        seed=0,
        budget=BUDGET,
        pipeline=FastPipeline,
        reports=False,
        progress=False,
    )
    return out


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_export_takes_a_run_directory_and_the_knee(run_dir, tmp_path):
    result = load_result(f"sqlite:///{run_dir / 'study.db'}")
    knee = result.knee
    assert knee is not None
    exp = hwtune.export(run_dir, "knee", tmp_path / "a", pipeline=FastPipeline)
    assert exp.manifest["study"]["trial"] == knee.number
    assert json.loads(exp.manifest_path.read_text())["study"]["name"] == "sel"
    # a str path, "KNEE" in any case, and the knee's record all name the same trial
    again = hwtune.export(str(run_dir), " KNEE ", tmp_path / "b", pipeline=FastPipeline)
    assert again.manifest["study"]["trial"] == knee.number
    by_record = hwtune.export(result, knee, tmp_path / "c", pipeline=FastPipeline)
    assert by_record.manifest["sha256"] == exp.manifest["sha256"]


def test_export_takes_the_study_file_and_a_trial_number(run_dir, tmp_path):
    result = load_result(f"sqlite:///{run_dir / 'study.db'}")
    member = result.front[-1]
    exp = hwtune.export(run_dir / "study.db", member.number, tmp_path / "n", pipeline=FastPipeline)
    assert exp.manifest["study"]["trial"] == member.number


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        ("front", "loop over result.front"),
        ("kne", "trial must be a trial number (int) or 'knee', got 'kne'"),
        ("3", "trial must be a trial number (int) or 'knee', got '3'"),
        (True, "got True"),
        (2.0, "got 2.0"),
        (None, "got None"),
    ],
)
def test_export_refuses_selectors_it_cannot_honour_in_one_line(run_dir, tmp_path, trial, message):
    with pytest.raises(ConfigError) as exc:
        hwtune.export(run_dir, trial, tmp_path / "x", pipeline=FastPipeline)
    assert message in _one_line(exc)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_sources_that_are_not_runs_are_one_line_errors(run_dir, tmp_path):
    with pytest.raises(ConfigError) as exc:
        hwtune.export(tmp_path / "nowhere", "knee", tmp_path / "x")
    assert "no such run directory" in _one_line(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as exc:
        hwtune.finalize(tmp_path / "empty")
    assert "not a hwtune run directory" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        hwtune.export(42, "knee", tmp_path / "x")
    assert "got int" in _one_line(exc)
    with pytest.raises(StudyError) as exc:  # a .db that is not there: said by the storage, not created
        hwtune.export(tmp_path / "missing.db", "knee", tmp_path / "x")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("trials", "message"),
    [
        ("knees", "got 'knees'"),
        ([], "got []"),
        ([1, "2"], "got [1, '2']"),
        (True, "got True"),
        (1.5, "got 1.5"),
    ],
)
def test_finalize_refuses_unknown_selectors_in_one_line(run_dir, trials, message):
    with pytest.raises(ConfigError) as exc:
        hwtune.finalize(run_dir, trials, epochs=0.1, pipeline=FastPipeline, progress=False)
    text = _one_line(exc)
    assert message in text and "'knee', 'front', a trial number or a list of trial numbers" in text


def test_finalize_takes_a_run_directory_and_the_knee(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # finalize records into the study: keep the shared one as it was
    before = load_result(f"sqlite:///{copy / 'study.db'}")
    result = hwtune.finalize(copy, "Knee", epochs=0.05, pipeline=FastPipeline, progress=False)
    done = [t.number for t in result.trials if t.figures.finalized]
    assert done == [before.knee.number]
    assert result.storage == f"sqlite:///{(copy / 'study.db').resolve()}"


def test_finalize_augments_when_asked_and_refuses_unknown_augmentations(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'") as exc:
        hwtune.finalize(copy, "knee", epochs=0.05, pipeline=FastPipeline, progress=False, augment="flip")
    assert "\n" not in str(exc.value)
    assert not [t for t in load_result(f"sqlite:///{copy / 'study.db'}").trials if t.figures.finalized]  # nothing ran
    result = hwtune.finalize(copy, "knee", epochs=0.05, pipeline=FastPipeline, progress=False, augment="shift-flip")
    assert [t.figures.finalized["augment"] for t in result.trials if t.figures.finalized] == ["shift-flip"]


def test_load_result_takes_a_run_directory_like_the_cli(run_dir):
    by_dir = load_result(run_dir)
    by_url = load_result(f"sqlite:///{run_dir / 'study.db'}")
    assert by_dir.study_name == by_url.study_name and [t.number for t in by_dir.front] == [
        t.number for t in by_url.front
    ]


@pytest.mark.parametrize("stored", ["text", 3, ["a"]])
def test_stored_settings_that_are_not_a_mapping_are_one_line(stored):
    from hwtune.errors import StudyError
    from hwtune.records import StudyMeta, TrialFigures

    for cls in (StudyMeta, TrialFigures):
        with pytest.raises(StudyError, match="expected a mapping, got") as exc:
            cls.from_dict(stored)
        assert "\n" not in str(exc.value)


def test_finalize_on_train_and_val_trains_on_both_and_says_validation_is_not_held_out(run_dir, tmp_path, monkeypatch):
    import hwtune.supernet

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with pytest.raises(ConfigError, match="train_on must be one of 'train', 'train\\+val', got 'val'"):
        hwtune.finalize(copy, "knee", epochs=0.05, pipeline=FastPipeline, progress=False, train_on="val")
    seen = []
    real = hwtune.supernet.finetune

    def spy(model, data, **kw):
        seen.append((len(data.train), len(data.val)))
        return real(model, data, **kw)

    monkeypatch.setattr(hwtune.supernet, "finetune", spy)
    result = hwtune.finalize(copy, "knee", epochs=0.05, pipeline=FastPipeline, progress=False, train_on="train+val")
    (done,) = [t for t in result.trials if t.figures.finalized]
    fin = done.figures.finalized
    assert fin["trained_on"] == "train+val" and fin["val_held_out"] is False and "kept" not in fin
    assert "(trained on)" in result.front_table(finalized=True)
    exp = hwtune.export(copy, done.number, tmp_path / "out", pipeline=FastPipeline)
    assert exp.manifest["val_held_out"] is False
    plain = hwtune.finalize(copy, "knee", epochs=0.05, pipeline=FastPipeline, progress=False)
    (again,) = [t for t in plain.trials if t.figures.finalized]
    assert again.figures.finalized["val_held_out"] is True
    (merged, val), (train, val2) = seen
    assert merged == train + val and val == val2
