"""Finalize: train the chosen candidates of a finished search to convergence, then re-score what ships.

A search spends little training per candidate (inherited weights, short rungs); the few models a user
will ship deserve real training. For each chosen trial: its stored weights are fine-tuned for
``epochs`` with a cosine schedule (distilled from the parent when the study inherited weights),
re-quantized as the trial's precision says, evaluated on the validation split (and the test split,
for the record) as shipped, and its latency re-measured on devices measured here. The result is
stored with the study (``hwtune.finalized.<trial>``: the figures and the finalized weights' artifact);
the search figures stay as they were, so the report shows both fronts, and ``export`` of a finalized
trial ships the finalized weights and says so in its manifest.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hwtune._io import check_writable_dir
from hwtune._tempdirs import remove_stale, work_dir
from hwtune._util import is_int, is_num, jsonable
from hwtune.errors import ConfigError, StudyError
from hwtune.front import TrialRecord, TuneResult
from hwtune.tuner.artifacts import sqlite_dir
from hwtune.tuner.compress import export_archive, load_compress_model
from hwtune.tuner.config import Schedule
from hwtune.tuner.inputs import load_stored_data, space_from_info
from hwtune.tuner.loop import make_log
from hwtune.tuner.pipeline import CandidatePipeline
from hwtune.tuner.rundir import locate_study
from hwtune.tuner.storage import (
    FINALIZED_PREFIX,
    artifact_location,
    download_artifact_file,
    download_weights,
    load_study,
    result_from_study,
    upload_study_artifact,
)

__all__ = ["DEFAULT_FINALIZE_EPOCHS", "TRAIN_ON", "finalize", "select_trials"]

DEFAULT_FINALIZE_EPOCHS = 10.0
# What finalize trains on: the training split, or the training and validation splits together.
TRAIN_ON = ("train", "train+val")


def select_trials(result: TuneResult, trials: Any) -> list[TrialRecord]:
    """Trials to finalize: ``None``/``"knee"`` the knee, ``"front"`` every front member, or trial numbers."""
    if trials is None or trials == "knee":
        knee = result.knee
        if knee is None:
            raise StudyError(f"study {result.study_name!r} has no front yet: nothing to finalize")
        return [knee]
    if trials == "front":
        if not result.front:
            raise StudyError(f"study {result.study_name!r} has no front yet: nothing to finalize")
        return list(result.front)
    if isinstance(trials, (int, str)):
        trials = [trials]
    out = []
    for t in trials:
        if not is_int(t):
            raise ConfigError(f"trials must be trial numbers, 'knee' or 'front', got {t!r}")
        rec = result.trial(int(t))
        if rec.duplicate_of is not None:
            rec = result.trial(rec.duplicate_of)
        if not (rec.complete and rec.trained):
            raise StudyError(f"trial {t} of study {result.study_name!r} has no trained weights to finalize")
        out.append(rec)
    return out


def _parent_of(result: TuneResult, work: Path) -> Any:
    """The teacher for distillation: the trained parent (inherit), the user's model (compress), or None."""
    import torch

    source = result.meta.source_model or {}
    if source.get("artifact_id"):
        return load_compress_model(download_artifact_file(result, str(source["artifact_id"]), work / "source.pt2"))
    parent_rec = result.meta.parent
    if result.meta.strategy != "inherit" or not parent_rec:
        return None
    from hwtune.space import SearchSpace
    from hwtune.supernet import largest_candidate

    space = space_from_info(result.meta.recipe or {})
    if not isinstance(space, SearchSpace):  # a parent is sliced from a recipe's space, never a user model's
        raise StudyError(
            f"study {result.study_name!r}: strategy inherit with a {type(space).__name__} space; "
            "expected a recipe's SearchSpace (the stored study is inconsistent)"
        )
    path = download_artifact_file(result, str(parent_rec["artifact_id"]), work / "parent.pt")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    parent = space.build(largest_candidate(space))
    parent.load_state_dict(blob["state_dict"])
    return parent.eval()


def _score(
    rec: TrialRecord, pipe: CandidatePipeline, model: Any, plan: Any, data: Any, sched: Schedule, seed: int, work: Path
) -> tuple[dict[str, Any], Any]:
    """Validation (and test) accuracy of ``model`` as it ships, and the shipped model (None for fp32)."""
    acc_fp32 = pipe.evaluate(model, data.val, batch_size=sched.val_batch_size)
    if not math.isfinite(acc_fp32):
        raise StudyError(f"trial {rec.number}: finalized validation accuracy is {acc_fp32}")
    scores: dict[str, Any] = {
        "val_accuracy_fp32": acc_fp32,
        "val_accuracy": acc_fp32,
        "accuracy_source": "torch (fp32)",
    }
    has_test = getattr(data, "test", None) is not None and len(data.test) > 0
    if plan.precisions == ("fp32",):
        if has_test:
            scores["test_accuracy"] = pipe.evaluate(model, data.test, batch_size=sched.val_batch_size)
        return scores, None
    from hwtune.data import calibration_batch

    calib = calibration_batch(data, min(sched.calibration_samples, len(data.train)), seed=seed)
    shipped = pipe.ship(model, plan, work / f"ship{rec.number}", calibration=calib, seed=seed)
    scores["val_accuracy"] = pipe.evaluate(shipped, data.val, batch_size=sched.val_batch_size)
    scores["accuracy_source"] = f"{shipped.runtime} (shipped file)"
    if has_test:
        scores["test_accuracy"] = pipe.evaluate(shipped, data.test, batch_size=sched.val_batch_size)
    return scores, shipped


def _finalize_one(
    rec: TrialRecord,
    result: TuneResult,
    pipe: CandidatePipeline,
    data: Any,
    parent: Any,
    *,
    epochs: float,
    sched: Schedule,
    seed: int,
    threads: int | None,
    lr: float | None,
    work: Path,
    augment: str | None = None,
    train_device: str | None = None,
    amp: str | None = None,
    train_data: Any = None,
) -> dict[str, Any]:
    """Fine-tune, score, measure and store one trial; ``train_data``: what it trains on (default ``data``)."""
    import torch

    from hwtune.supernet import finetune

    t0 = time.monotonic()
    cand = pipe.space.candidate_from_dict(rec.candidate or {})
    if rec.figures.model_artifact_id:  # a compression study: the pruned model is stored whole
        path = download_artifact_file(result, rec.figures.model_artifact_id, work / f"m{rec.number}.pt2")
        model = load_compress_model(path)
    else:
        model = pipe.build(cand)
        blob = torch.load(download_weights(result, rec.number, work / f"w{rec.number}.pt"), weights_only=True)
        model.load_state_dict(blob["state_dict"])
    searched_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    held_out = train_data is None or train_data is data
    stats = finetune(
        model,
        data if train_data is None else train_data,
        epochs=epochs,
        teacher=parent,
        lr=lr,
        batch_size=sched.batch_size,
        seed=seed,
        threads=threads,
        augment=augment,
        train_device=train_device,
        amp=amp,
    )
    plan = pipe.plan(cand)
    figures: dict[str, Any] = {
        "epochs": epochs,
        "teacher": "parent" if parent is not None else None,
        "augment": augment or "none",
        "final_loss": getattr(stats, "final_loss", None),
        "train_device": f"{stats.device}, {stats.amp}, {stats.memory_format}",
        "trained_on": TRAIN_ON[0] if held_out else TRAIN_ON[1],
        "val_held_out": held_out,
    }
    scores, shipped = _score(rec, pipe, model, plan, data, sched, seed, work)
    # With the validation split trained on, its accuracy cannot say fine-tuning made things worse.
    if held_out and rec.accuracy is not None and scores["val_accuracy"] < rec.accuracy:
        # Fine-tuning made what ships worse than what the search scored (too short a budget, a learning
        # rate too high for a pruned model): keep the search's weights, and say so.
        figures.update(kept="search weights", finetuned_val_accuracy=scores["val_accuracy"])
        model.load_state_dict(searched_state)
        scores, shipped = _score(rec, pipe, model, plan, data, sched, seed, work)
    figures.update(scores)
    if shipped is not None and pipe.device.latency_source == "measure":
        lat = pipe.measure(shipped, time_budget_s=sched.latency_budget_s)
        figures.update(latency_ms=lat.get("median_ms"), latency=lat)
    weights = work / f"final{rec.number}.pt"
    torch.save({"state_dict": model.state_dict(), "candidate": cand.to_dict(), "finalized": True}, weights)
    figures["artifact_id"] = upload_study_artifact(result, weights)
    if rec.figures.model_artifact_id:
        archive = export_archive(model, pipe.input_shape, work / f"final{rec.number}.pt2")
        figures["model_artifact_id"] = upload_study_artifact(result, archive)
    figures["seconds"] = time.monotonic() - t0
    return jsonable(figures)


def finalize(
    source: Any,
    trials: Any = None,
    *,
    epochs: float = DEFAULT_FINALIZE_EPOCHS,
    study_name: str | None = None,
    data: Any = None,
    seed: int | None = None,
    lr: float | None = None,
    threads: int | None = None,
    progress: bool = True,
    pipeline: Any = None,
    download: bool = False,
    augment: str | None = None,
    val_data: Any = None,
    train_device: str | None = "auto",
    amp: str | None = None,
    train_on: str = "train",
) -> TuneResult:
    """Fine-tune the chosen trials to convergence and record their final, shipped accuracy.

    Where the results go (the study file and its artifact directory) is checked writable before
    any training starts.

    Args:
        source: A :class:`TuneResult`, a run directory (``tune(out_dir=DIR)``, ``hwtune tune --out
            DIR``: the directory holding ``study.db``), a study ``.db`` file, a storage URL (with
            ``study_name`` when it holds several studies) or an ``optuna.Study``.
        trials: ``None`` or ``"knee"`` (the knee), ``"front"`` (every front member), a trial number
            or a list of trial numbers.
        epochs: Fine-tuning epochs per trial (cosine schedule; distilled from the parent when the
            study inherited weights).
        study_name: The study, when ``source`` is a storage URL holding several.
        data: The data the search used, given again (``DataSplits``, a name or directory, or
            ``load_dataset`` arguments): needed for user datasets and for directories outside the
            study's run directory (a study file never chooses what is read).
        seed: Seed of the fine-tuning (default: the study's).
        lr: Peak learning rate (default: the trainer's).
        threads: Torch threads.
        progress: Print a line per trial.
        pipeline: The :class:`CandidatePipeline` class the search used.
        download: Allow downloading a missing named dataset (never taken from the study).
        augment: Augmentation of the fine-tuning batches (:mod:`hwtune.augment`: comma-separated
            steps ``crop:P``, ``hflip``, ``erasing:P``, e.g. ``"crop:4,hflip"``, or ``"shift"``,
            ``"shift-flip"``; default: the recipe's ``[train] augment``, else none). Only for data it keeps the labels of (a flip
            turns a digit into another shape).
        val_data: The held-out validation data the study was tuned with, given again when it lies
            outside the run directory (as ``data``).
        train_device: Where the fine-tuning (and the teacher's forward passes) run: ``auto`` (CUDA,
            else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; the shipped model is still
            exported and scored on the CPU. Recorded in ``finalized["train_device"]``.
        amp: Mixed precision of the fine-tuning (``auto``, ``bf16``, ``fp16``, ``off``).
        train_on: ``"train"`` (the training split: the validation accuracy stays held out) or
            ``"train+val"`` (the validation images too, as a dataset's published figures train on its
            whole training set: the search has already used the validation split to choose; the
            test accuracy is then the held-out figure, and the validation accuracy is recorded with
            ``val_held_out: false``). Recorded in ``finalized["trained_on"]``.

    Returns:
        The study re-read, with ``trial.figures.finalized`` filled for the finalized trials.

    Raises:
        ConfigError: a bad argument, a source that is not a run, or an unknown ``trials`` selector.
        StudyError: no such study or trial, no front yet, a trial without trained weights, or
            results that cannot be written.

    Example:
        >>> result = hwtune.finalize(result, "knee", epochs=10)  # doctest: +SKIP
        >>> result = hwtune.finalize("hwtune-runs/my-run", "front")  # doctest: +SKIP
    """
    _check_args(epochs, seed, lr, threads)
    if train_on not in TRAIN_ON:
        raise ConfigError(f"train_on must be one of {', '.join(map(repr, TRAIN_ON))}, got {train_on!r}")
    from hwtune.augment import augmenter

    augmenter(augment, 0)  # an unknown name fails before any work
    from hwtune.engine import resolve_amp, resolve_device

    resolve_amp(amp, resolve_device(train_device))  # so does a device this machine lacks
    trials = _check_selector(trials)
    remove_stale()
    src = locate_study(source, study_name, what="finalize source")
    study, url = load_study(src.storage, src.study_name)
    result = result_from_study(study, url=url)  # the storage opened, not the one the study recorded
    chosen = select_trials(result, trials)
    meta = result.meta
    from hwtune.device import DeviceProfile

    device = DeviceProfile.from_dict(meta.device or {}, source=f"study {result.study_name}")
    pipe = (pipeline or CandidatePipeline)(space_from_info(meta.recipe or {}), device)
    if augment is None:  # the recipe's [train] augment, when it declares one
        augment = ",".join(getattr(getattr(pipe.space, "train", None), "augment", ()) or ()) or None
    _check_outputs(result)
    data = load_stored_data(
        (meta.data or {}).get("load"),
        study=result.study_name,
        run_dir=sqlite_dir(result.storage),
        data=data,
        download=download,
        val_data=val_data,
    )
    train_data = data.val_in_train() if train_on == TRAIN_ON[1] else data
    sched = Schedule.from_dict(meta.budget or {})
    seed = int(meta.seed or 0) if seed is None else seed
    log: Callable[[str], None] = make_log(progress)
    with work_dir("finalize") as work:
        parent = _parent_of(result, work)
        for rec in chosen:
            on = "" if train_data is data else f", on train+val ({len(train_data.train):,} images)"
            log(f"finalizing trial #{rec.number} ({epochs:g} epochs{', distilled from the parent' if parent else ''}{on})")
            figs = _finalize_one(
                rec,
                result,
                pipe,
                data,
                parent,
                epochs=float(epochs),
                sched=sched,
                seed=seed,
                threads=threads,
                lr=lr,
                work=work,
                augment=augment,
                train_device=train_device,
                amp=amp,
                train_data=train_data,
            )
            study.set_user_attr(f"{FINALIZED_PREFIX}{rec.number}", figs)
            before = rec.accuracy or 0.0
            kept = (
                f"; fine-tuning reached {100 * figs['finetuned_val_accuracy']:.2f}%, so the search's weights are kept"
                if figs.get("kept")
                else ""
            )
            trained_on = "" if figs.get("val_held_out", True) else ", trained on: not held out"
            test = "" if figs.get("test_accuracy") is None else f", test {100 * figs['test_accuracy']:.2f}%"
            log(
                f"trial #{rec.number}: validation {100 * before:.2f}% (search) -> {100 * figs['val_accuracy']:.2f}% "
                f"(finalized, {figs['accuracy_source']}{trained_on}){test} in {figs['seconds']:.0f} s{kept}"
            )
    return result_from_study(study, url=url)


def _check_selector(trials: Any) -> Any:
    """``trials`` checked before any work: ``"knee"``/``"front"`` (any case), an int or a non-empty list of ints.

    Raises:
        ConfigError: anything else (one line naming the value and what is expected).
    """
    expected = "'knee', 'front', a trial number or a list of trial numbers"
    if trials is None:
        return "knee"
    if isinstance(trials, str):
        word = trials.strip().lower()
        if word not in ("knee", "front"):
            raise ConfigError(f"trials must be {expected}, got {trials!r}")
        return word
    if is_int(trials):
        return [int(trials)]
    if not isinstance(trials, (list, tuple)) or not trials or not all(is_int(t) for t in trials):
        raise ConfigError(f"trials must be {expected}, got {trials!r}")
    return [int(t) for t in trials]


def _check_args(epochs: Any, seed: Any, lr: Any, threads: Any) -> None:
    problems = []
    if not is_num(epochs) or epochs <= 0:
        problems.append(f"epochs must be a number > 0, got {epochs!r}")
    if seed is not None and (not is_int(seed) or not 0 <= seed < 2**32):
        problems.append(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if lr is not None and (not is_num(lr) or lr <= 0):
        problems.append(f"lr must be a number > 0, got {lr!r}")
    if threads is not None and (not is_int(threads) or threads < 1):
        problems.append(f"threads must be an integer >= 1, got {threads!r}")
    if problems:
        raise ConfigError("\n".join(problems))


def _check_outputs(result: TuneResult) -> None:
    """The study file and the artifact directory finalize writes to must be writable (before training)."""
    run = sqlite_dir(result.storage)
    if run is not None:
        db = Path(result.storage[len("sqlite:///") :])
        # SQLite writes a journal next to the file: the directory must be writable too
        check_writable_dir(run, what=f"the results of study {result.study_name!r}", error=StudyError)
        if db.exists() and not os.access(db, os.W_OK):
            raise StudyError(f"study file {db} is read-only; finalize records its results there")
    location = artifact_location(result.meta, result.storage)
    if location.path is not None:
        check_writable_dir(location.path, what=f"the artifacts of study {result.study_name!r}", error=StudyError)


def finalized_numbers(result: TuneResult) -> Sequence[int]:
    """Trial numbers that have finalized figures."""
    return [t.number for t in result.trials if t.figures.finalized]
