"""Export a trial for deployment: the model file at its precision plus ``manifest.json``.

The trained weights come from the trial's artifact (no retraining). The model is rebuilt from its
candidate, exported to ONNX, converted to the trial's precision the same way the search did it
(same calibration samples from the train split), and then **checked**: the exported file is
evaluated with ONNX Runtime on the validation split and must agree with the accuracy the study
recorded within 1 point, or the export is refused (something in the chain broke). The test split,
never used for selection, is evaluated here to fill ``test_accuracy``.

Example:
    >>> import hwtune
    >>> result = hwtune.tune("fashion-convnet", device="host", n_trials=8)   # doctest: +SKIP
    >>> exp = hwtune.export(result, "knee", "deploy/")                      # doctest: +SKIP
    >>> exp = hwtune.export("hwtune-runs/my-run", "knee", "deploy/")        # doctest: +SKIP
    >>> exp.manifest["val_accuracy"], exp.manifest["latency"]["latency_ms"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import atomic_output, check_writable_dir
from hwtune._tempdirs import remove_stale, work_dir
from hwtune._util import is_int, is_num, versions
from hwtune.errors import ConfigError, ExportError, StudyError, did_you_mean
from hwtune.front import TrialRecord, TuneResult
from hwtune.runtimes import search_scoring_runtime
from hwtune.tuner import CandidatePipeline, Schedule, download_weights, load_result, sha256_file
from hwtune.tuner.artifacts import sqlite_dir
from hwtune.tuner.inputs import input_spec, load_stored_data, space_from_info
from hwtune.tuner.rundir import locate_study
from hwtune.tuner.storage import download_artifact_file

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.space import SpaceLike

__all__ = ["MANIFEST_SCHEMA_VERSION", "ExportResult", "export"]

MANIFEST_SCHEMA_VERSION = 1
# The exported file must reproduce the recorded validation accuracy within this (fraction): ORT vs
# torch float differences move a few samples at most; more means the export changed the model.
ACCURACY_TOLERANCE = 0.01
# A quantized file exported for another runtime than the one the study scored on is quantized again
# by that runtime's own quantizer (ai-edge-quantizer vs XNNPACKQuantizer vs ORT): on 300 validation
# images the knee's int8 .pte scored 59.7% where its int8 .tflite had 61.7%. Only a larger change is a
# broken export.
CROSS_RUNTIME_TOLERANCE = 0.03
# An int8 file scored on a CPU whose int8 instructions differ from those of the machine that made the study
# runs other kernels there: the 0.1.0 test study's barely trained int8 trial (made on a Xeon with VNNI and AMX)
# scored 14.40% on a 2-core AVX2-only EPYC against its recorded 16.00% (500 validation images), whichever int8
# scheme it was quantized with. Only a larger change is a broken export.
CROSS_CPU_TOLERANCE = 0.03
# Images on which two kernel sets running one int8 file may disagree (see ``search_scoring_runtime``).
KERNEL_FLIPS = 3


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        model_path: the model file (``model.onnx``).
        manifest_path: ``manifest.json`` next to it.
        manifest: the manifest's content.
    """

    model_path: Path
    manifest_path: Path
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path), "manifest_path": str(self.manifest_path), "manifest": self.manifest}


def _resolve(source: Any, study_name: str | None) -> TuneResult:
    """The study of ``source`` as stored now (see :func:`~hwtune.tuner.rundir.locate_study`)."""
    if isinstance(source, TuneResult):
        # Re-read the study: the result may be older than the storage (another worker, a resume).
        try:
            return load_result(source.storage, source.study_name)
        except StudyError:
            return source
    src = locate_study(source, study_name, what="export source")
    return load_result(src.storage, src.study_name)


def _trial_selector(trial: Any) -> int | None:
    """``trial`` checked before any work: its number, or None for ``"knee"``.

    Raises:
        ConfigError: ``"front"`` (several trials, one ``out_dir``) or anything else unknown.
    """
    if isinstance(trial, TrialRecord):
        return trial.number
    if is_int(trial):
        return int(trial)
    word = trial.strip().lower() if isinstance(trial, str) else None
    if word == "knee":
        return None
    if word == "front":
        raise ConfigError(
            "trial 'front' names every front member but export writes one out_dir: loop over result.front, "
            "e.g. for t in result.front: export(result, t.number, f'deploy/trial-{t.number}')"
        )
    raise ConfigError(f"trial must be a trial number (int) or 'knee', got {trial!r}")


def _knee_number(result: TuneResult) -> int:
    if result.knee is None:
        raise StudyError(f"study {result.study_name!r} has no front yet: no knee to export")
    return result.knee.number


def _pick_format(format: str | None, pipeline: CandidatePipeline, scored_on: str | None = None) -> str:
    """The runtime that writes ``format`` (default: the runtime the trial was scored on -- a study tuned
    with ``runtime=`` keeps it -- else the one the study ships to for its device)."""
    from hwtune.runtimes import get_runtime, list_runtimes

    if format is None:
        if scored_on and scored_on in list_runtimes() and get_runtime(scored_on).format != "torch":
            return scored_on
        return pipeline.runtime_name
    by_format: dict[str, str] = {}
    for n in list_runtimes():  # sorted: for .tflite, litert comes before tflite-micro
        if get_runtime(n).format != "torch":
            by_format.setdefault(get_runtime(n).format, n)
    if format not in by_format:
        raise ConfigError(
            f"format must be one of {', '.join(sorted(by_format))}, got {format!r}{did_you_mean(str(format), by_format)}"
        )
    get_runtime(by_format[format]).require()
    return by_format[format]


def _load_trained(
    result: TuneResult, rec: TrialRecord, pipeline: CandidatePipeline, work: Path, *, finalized: bool
) -> tuple[Any, Any]:
    """(model with the trial's trained -- or finalized -- weights, its candidate).

    A compression study's trials store their pruned model as a ``torch.export`` archive (loaded without
    unpickling); the others store weights that go into a model rebuilt from the candidate.
    """
    import torch

    cand = pipeline.space.candidate_from_dict(rec.candidate or {})
    if cand.key != rec.candidate_key:
        raise StudyError(f"trial {rec.number}: stored candidate does not match its key {rec.candidate_key}")
    final = rec.figures.finalized or {}
    archive_id = final.get("model_artifact_id") if finalized else rec.figures.model_artifact_id
    if archive_id:
        from hwtune.tuner.compress import load_compress_model

        path = download_artifact_file(result, str(archive_id), work / "model.pt2", what=f"the model of trial {rec.number}")
        return load_compress_model(path), cand
    weights = download_weights(result, rec.number, work / "weights.pt", finalized=finalized)
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    model = pipeline.build(cand)
    try:
        model.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise StudyError(f"trial {rec.number}: stored weights do not fit its candidate: {exc}") from exc
    return model.eval(), cand


def export(
    source: Any,
    trial: int | str | TrialRecord,
    out_dir: str | Path,
    format: str | None = None,
    *,
    study_name: str | None = None,
    data: Any = None,
    tolerance: float = ACCURACY_TOLERANCE,
    pipeline: Any = None,
    finalized: bool | None = None,
    download: bool = False,
    val_data: Any = None,
) -> ExportResult:
    """Write trial ``trial``'s model at its precision and a ``manifest.json`` into ``out_dir``.

    Both files are written to temporary names in ``out_dir`` and renamed into place, the model first
    and the manifest last, so a failure (full disk, kill) leaves the previous export or nothing,
    never a truncated model or a manifest describing another file. ``out_dir`` is checked writable
    before any work starts.

    Args:
        source: a :class:`~hwtune.front.TuneResult`, a run directory (``tune(out_dir=DIR)``,
            ``hwtune tune --out DIR``: the directory holding ``study.db``), a study ``.db`` file, a
            storage URL (with ``study_name`` when it holds several studies) or an ``optuna.Study``.
        trial: a trial number, ``"knee"`` (the knee of the study's front as stored now) or a
            :class:`~hwtune.front.TrialRecord` (``result.knee``). To export every front member,
            loop over ``result.front`` with one ``out_dir`` each (``"front"`` is refused).
        out_dir: output directory (created).
        format: ``"onnx"`` (or another registered runtime's format); default: the format of the
            runtime the study shipped to.
        study_name: the study, when ``source`` is a storage URL holding several.
        data: the data the search used, given again: :class:`~hwtune.data.DataSplits`, a dataset name
            or directory, or ``load_dataset`` arguments. Needed when the study was run on user datasets
            or on a directory outside its run directory (a study file never chooses what is read).
        tolerance: largest allowed |exported - recorded| validation accuracy (fraction in [0, 1]).
        pipeline: the :class:`~hwtune.tuner.CandidatePipeline` class the search used (default: the
            standard one).
        finalized: export the finalized weights (``hwtune finalize``); default: when the trial has them.
        download: allow downloading a missing named dataset (never taken from the study).
        val_data: the held-out validation data the study was tuned with (``val_data=``), given again
            when it lies outside the run directory.

    Returns:
        An :class:`ExportResult` (paths and the manifest).

    Raises:
        StudyError: unknown study or trial, no front yet (``"knee"``), or a trial without trained
            weights (infeasible, failed).
        ExportError: the exported file disagrees with the recorded validation accuracy, or ``out_dir``
            cannot be written.
        ConfigError: unknown format, a source that is not a run, an unknown trial selector, or a
            bad argument.
    """
    from hwtune.device import DeviceProfile

    number = _trial_selector(trial)
    if not is_num(tolerance) or not 0 <= tolerance <= 1:
        raise ConfigError(f"tolerance must be a number in [0, 1] (a fraction of accuracy), got {tolerance!r}")
    remove_stale()
    result = _resolve(source, study_name)
    number = _knee_number(result) if number is None else number
    rec = result.trial(number)
    if rec.state != "complete" or not rec.trained:
        why = rec.failure if rec.state == "fail" else ("; ".join(rec.figures.infeasible or []) or "not trained")
        raise StudyError(f"trial {number} of study {result.study_name!r} cannot be exported: {rec.state}, {why}")
    if rec.duplicate_of is not None:
        rec = result.trial(rec.duplicate_of)
    final = rec.figures.finalized if finalized is not False else None
    if finalized and not final:
        raise StudyError(f"trial {rec.number} of study {result.study_name!r} was not finalized (hwtune finalize)")
    out = check_writable_dir(out_dir, what="the export", error=ExportError)  # before the long work
    meta = result.meta
    space = space_from_info(meta.recipe or {})
    device = DeviceProfile.from_dict(meta.device or {}, source=f"study {result.study_name}")
    pipe = (pipeline or CandidatePipeline)(space, device)
    pipe.runtime_name = _pick_format(format, pipe, rec.figures.runtime)
    data_meta = meta.data or {}
    data = load_stored_data(
        data_meta.get("load"),
        study=result.study_name,
        run_dir=sqlite_dir(result.storage),
        data=data,
        download=download,
        val_data=val_data,
    )
    with work_dir("export") as work:
        try:
            return _export_in(result, rec, pipe, data, out, work, final=final, tolerance=tolerance)
        except OSError as exc:  # the work directory: a full or read-only temporary file system
            raise ExportError(
                f"export failed writing {exc.filename or work} ({exc.strerror or exc}); free space or set TMPDIR"
            ) from exc


def _other_int8_cpu(study_device: Any) -> bool:
    """Whether the study was made (and its trials scored) on a host whose int8 instructions differ from this
    machine's: its device record is a detected host profile naming other ones. False when it names none (a
    remote device's profile, an older study)."""
    from hwtune.hostcpu import detect_cpu
    from hwtune.int8_scheme import int8_isa

    if not isinstance(study_device, dict) or study_device.get("detected") is not True:
        return False
    isa = study_device.get("isa")
    return isinstance(isa, list) and int8_isa(isa) != int8_isa(detect_cpu().isa)


def _export_in(
    result: TuneResult,
    rec: TrialRecord,
    pipe: CandidatePipeline,
    data: Any,
    out: Path,
    work: Path,
    *,
    final: Any,
    tolerance: float,
) -> ExportResult:
    """Ship and check the model in ``work``, then write model and manifest into ``out`` (manifest last)."""
    meta = result.meta
    sched = Schedule.from_dict(meta.budget or {})
    seed = int(meta.seed or 0)
    model, cand = _load_trained(result, rec, pipe, work, finalized=bool(final))
    plan = pipe.plan(cand)
    calib = None
    if "int8" in plan.precisions:
        from hwtune.data import calibration_batch

        calib = calibration_batch(data, min(sched.calibration_samples, len(data.train)), seed=seed)
    shipped = pipe.ship(model, plan, work, calibration=calib, seed=seed)
    suffix = Path(shipped.path).suffix
    staged = work / f"staged{suffix}"
    shutil.copyfile(shipped.path, staged)  # what is checked is byte for byte what is written
    recorded = (final or {}).get("val_accuracy", rec.accuracy)
    if recorded is None:
        raise StudyError(f"trial {rec.number} has no recorded validation accuracy")
    scored_on = rec.figures.runtime or pipe.device.runtime
    if plan.precisions != ("fp32",) and shipped.runtime != scored_on:
        tolerance = max(tolerance, CROSS_RUNTIME_TOLERANCE)
    elif search_scoring_runtime(shipped.runtime):
        # The study scored this very file with other kernels (tflite-micro: LiteRT's), which round a few
        # near-tied logits the other way: allow KERNEL_FLIPS images of disagreement on small splits.
        tolerance = max(tolerance, KERNEL_FLIPS / max(1, len(data.val)))
    if "int8" in plan.precisions and _other_int8_cpu(meta.device):
        tolerance = max(tolerance, CROSS_CPU_TOLERANCE)
    # Evaluated by the runtime that shipped it (a .tflite for tflite-micro runs in TFLite Micro, not LiteRT).
    val, test = _check_accuracy(
        dataclasses.replace(shipped, path=staged), data, rec.number, recorded, sched, tolerance
    )
    model_path, manifest_path = out / f"model{suffix}", out / "manifest.json"
    manifest = _manifest(
        result, rec, pipe.device, shipped, plan, staged, model_path.name, pipe.space, data, meta.data or {}, val, test
    )
    manifest["recorded_val_accuracy"] = float(recorded)
    # finalize --train-on train+val trains on the validation split: its accuracy is then not held out
    manifest["val_held_out"] = bool((final or {}).get("val_held_out", True))
    manifest["finalized"] = final or None
    if final and final.get("latency_ms") is not None:
        manifest["latency"].update(latency_ms=final["latency_ms"], label=(final.get("latency") or {}).get("label"))
    text = json.dumps(manifest, indent=2, default=_json_default) + "\n"
    # Exits run inner first: the model is renamed into place, then the manifest that describes it.
    with (
        atomic_output(manifest_path, what="the manifest", error=ExportError) as tmp_manifest,
        atomic_output(model_path, what="the model", error=ExportError) as tmp_model,
    ):
        shutil.copyfile(staged, tmp_model)
        tmp_manifest.write_text(text)
    return ExportResult(model_path=model_path, manifest_path=manifest_path, manifest=manifest)


def _check_accuracy(
    target: Any, data: Any, number: int, recorded: float, sched: Schedule, tolerance: float
) -> tuple[Any, Any]:
    """Evaluate the file to be written (a ShippedModel: on its runtime); refuse it when it disagrees."""
    from hwtune.training import evaluate

    val = evaluate(target, data.val, batch_size=sched.val_batch_size)
    if abs(val.accuracy - recorded) > tolerance:
        raise ExportError(
            f"exported model of trial {number} scores {100 * val.accuracy:.2f}% on the validation split but the "
            f"study recorded {100 * recorded:.2f}% (tolerance {100 * tolerance:g} points); the export changed the "
            "model, refusing to write it"
        )
    test = None
    if getattr(data, "test", None) is not None and len(data.test) > 0:
        test = evaluate(target, data.test, batch_size=sched.val_batch_size)
    return val, test


def _manifest(
    result: TuneResult,
    rec: TrialRecord,
    device: Any,
    shipped: Any,
    plan: Any,
    model_file: Path,
    model_name: str,
    space: SpaceLike,
    data: Any,
    data_meta: dict[str, Any],
    val: Any,
    test: Any,
) -> dict[str, Any]:
    ch, size, ncls = input_spec(space)
    info = dict(data_meta.get("info") or {})
    mean = getattr(data, "mean", None) or info.get("mean")
    std = getattr(data, "std", None) or info.get("std")
    class_names = list(getattr(data, "class_names", ()) or info.get("class_names") or []) or None
    f = rec.figures
    lat = dict(f.latency or {})
    file_in = dict(shipped.info.get("input") or {})  # the file's own input tensor, when the runtime reports it
    shape = file_in.get("shape") or [1, ch, size, size]
    arena = shipped.info.get("arena_bytes")  # measured on this very file (tflite-micro)
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "format": shipped.format,
        "model_file": model_name,
        "sha256": sha256_file(model_file),
        "file_bytes": model_file.stat().st_size,
        "device": {
            "id": device.id,
            "name": device.name,
            "kind": device.kind,
            "runtime": device.runtime,
            "latency_source": device.latency_source,
        },
        "runtime": shipped.runtime,
        "precision": rec.precision,
        "precision_label": plan.label,
        "precision_per_stage": dict(f.stage_precision or {}),
        "quantization": shipped.info if plan.precisions != ("fp32",) else None,
        "int8_scheme": shipped.info.get("int8_scheme") if "int8" in plan.precisions else None,
        "input": {
            "name": "input",
            "shape": shape,
            "dtype": file_in.get("dtype", "float32"),
            "scale": file_in.get("scale"),
            "zero_point": file_in.get("zero_point"),
            "layout": "NCHW",
            "mean": None if mean is None else [float(x) for x in mean],
            "std": None if std is None else [float(x) for x in std],
            "normalization": "x = (pixel / 255 - mean) / std, per channel"
            + ("; then q = clamp(round(x / scale) + zero_point)" if file_in.get("scale") is not None else ""),
            "batch": "dynamic (first dimension)" if shipped.format == "onnx" else f"fixed ({shape[0]})",
        },
        "output": {"name": "logits", "shape": [1, ncls], **dict(shipped.info.get("output") or {})},
        "num_classes": ncls,
        "class_names": class_names,
        "val_accuracy": float(val.accuracy),
        "recorded_val_accuracy": float(rec.accuracy or 0.0),
        "test_accuracy": None if test is None else float(test.accuracy),
        "evaluation": {
            "runtime": shipped.runtime,
            "val_samples": int(val.n),
            "test_samples": None if test is None else int(test.n),
            "dataset": info.get("name"),
            "split_seed": info.get("split_seed"),
        },
        "latency": {
            "latency_ms": f.latency_ms,
            "source": f.latency_source,
            "label": f.latency_label,
            "runtime": lat.get("runtime") or f.runtime or device.runtime,
            "threads": lat.get("threads", device.threads),
            "p10_ms": lat.get("p10_ms"),
            "p90_ms": lat.get("p90_ms"),
            "ci_half_width_ms": lat.get("ci_half_width_ms"),
            "runs": lat.get("runs"),
            "batch": 1,
        },
        "memory": {
            "weight_bytes": f.weight_bytes,
            "peak_activation_bytes": f.peak_activation_bytes,
            "file_bytes": model_file.stat().st_size,
            "working_memory_bytes": int(arena) if arena is not None else (f.working_memory_bytes or f.peak_activation_bytes),
            "working_memory_source": str(shipped.info.get("arena_source"))
            if arena is not None
            else (f.working_memory_source or "estimated (liveness, lower bound)"),
            "storage_bytes": model_file.stat().st_size,
            "device_ram_bytes": device.ram_bytes,
            "device_storage_bytes": device.storage_bytes,
        },
        "macs": f.macs,
        "flops": f.flops,
        "params": f.params,
        "candidate": rec.candidate,
        "training": {
            "epochs": f.budget_epochs,
            "rung": f.rung,
            "max_rung": f.max_rung,
            "seed": f.seed,
            # "cuda:0 (NVIDIA H100 80GB HBM3), bf16"; the finalized weights' own device when finalized
            "trained_on": (f.finalized or {}).get("train_device") or f.train_device,
        },
        "study": {"name": result.study_name, "storage": result.storage, "trial": rec.number, "recipe": result.recipe},
        "versions": versions(_runtime_packages(shipped.runtime)),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


def _runtime_packages(runtime: str) -> tuple[str, ...]:
    """Distributions behind a runtime's modules (their versions go into the manifest)."""
    from importlib import metadata

    from hwtune.runtimes import get_runtime, list_runtimes

    if runtime not in list_runtimes():
        return ()
    dists = metadata.packages_distributions()
    return tuple(sorted({d for m in get_runtime(runtime).modules for d in dists.get(m, ())}))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)
