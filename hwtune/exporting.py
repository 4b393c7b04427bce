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
    >>> exp = hwtune.export(result, result.knee.number, "deploy/")          # doctest: +SKIP
    >>> exp.manifest["val_accuracy"], exp.manifest["latency"]["latency_ms"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hwtune.errors import ConfigError, ExportError, StudyError
from hwtune.front import TuneResult

__all__ = ["EXPORT_FORMATS", "MANIFEST_SCHEMA_VERSION", "ExportResult", "export"]

EXPORT_FORMATS = ("onnx",)
MANIFEST_SCHEMA_VERSION = 1
# The exported file must reproduce the recorded validation accuracy within this (fraction): ORT vs
# torch float differences move a few samples at most; more means the export changed the model.
ACCURACY_TOLERANCE = 0.01


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
    from hwtune import search

    if isinstance(source, TuneResult):
        # Re-read the study: the result may be older than the storage (another worker, a resume).
        try:
            return search.load_result(source.storage, source.study_name)
        except StudyError:
            return source
    if isinstance(source, (str, Path)):
        return search.load_result(source, study_name)
    if hasattr(source, "study_name") and hasattr(source, "_storage"):  # an optuna.Study
        url = getattr(getattr(source, "_storage", None), "url", None)
        if url is None:
            raise StudyError("export needs a study in an RDB storage (sqlite:///..., postgresql://...)")
        return search.load_result(url, source.study_name)
    raise ConfigError(
        f"export source must be a TuneResult, a storage URL or an optuna.Study, got {type(source).__name__}"
    )


def _versions() -> dict[str, str]:
    from importlib import metadata

    from hwtune._version import __version__

    out = {"hwtune": __version__}
    for pkg in ("torch", "onnxruntime", "onnx", "optuna", "numpy"):
        with contextlib.suppress(Exception):
            out[pkg] = metadata.version(pkg)
    return out


def export(
    source: Any,
    trial: int,
    out_dir: str | Path,
    format: str = "onnx",
    *,
    study_name: str | None = None,
    data: Any = None,
    tolerance: float = ACCURACY_TOLERANCE,
) -> ExportResult:
    """Write trial ``trial``'s model at its precision and a ``manifest.json`` into ``out_dir``.

    Args:
        source: a :class:`~hwtune.front.TuneResult`, a storage URL (with ``study_name``) or an
            ``optuna.Study``.
        trial: trial number.
        out_dir: output directory (created).
        format: ``"onnx"``.
        study_name: the study, when ``source`` is a storage URL holding several.
        data: the :class:`~hwtune.data.DataSplits` the search used, needed only when the study was
            run on user datasets hwtune cannot reload by name.
        tolerance: largest allowed |exported - recorded| validation accuracy (fraction).

    Returns:
        An :class:`ExportResult` (paths and the manifest).

    Raises:
        StudyError: unknown study or trial, or a trial without trained weights (infeasible, failed).
        ExportError: the exported file disagrees with the recorded validation accuracy.
        ConfigError: unknown format.
    """
    import torch

    from hwtune import search
    from hwtune.device import DeviceProfile
    from hwtune.training import evaluate

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    result = _resolve(source, study_name)
    if isinstance(trial, bool) or not isinstance(trial, int):
        raise ConfigError(f"trial must be an integer trial number, got {trial!r}")
    rec = result.trial(trial)
    if rec.state != "complete" or not rec.trained:
        why = rec.failure if rec.state == "fail" else ("; ".join(rec.figures.get("infeasible") or []) or "not trained")
        raise StudyError(f"trial {trial} of study {result.study_name!r} cannot be exported: {rec.state}, {why}")
    if rec.duplicate_of is not None:
        rec = result.trial(rec.duplicate_of)
    meta = result.meta
    space = search._space_from_info(meta["recipe"])
    device = DeviceProfile.from_dict(meta["device"], source=f"study {result.study_name}")
    data_meta = meta.get("data") or {}
    if data is None:
        if not data_meta.get("load"):
            raise StudyError(
                f"study {result.study_name!r} was run on a user dataset hwtune cannot reload; pass data= to export()"
            )
        data = search.load_data(data_meta["load"])
    from hwtune.space import Candidate

    cand = Candidate.from_dict(rec.candidate or {})
    if cand.key != rec.candidate_key:
        raise StudyError(f"trial {trial}: stored candidate does not match its key {rec.candidate_key}")
    sched = search.Schedule.from_dict(meta.get("budget") or {})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hwtune-export-") as tmp:
        work = Path(tmp)
        weights = search.download_weights(result, rec.number, work / "weights.pt")
        blob = torch.load(weights, map_location="cpu", weights_only=True)
        model = search._build(space, cand)
        model.load_state_dict(blob["state_dict"])
        model.eval()
        from hwtune.precision import PrecisionPlan

        plan = PrecisionPlan.coerce(search._plan(space, cand))
        calib = None
        if "int8" in plan.precisions:
            from hwtune.data import calibration_batch

            n = min(sched.calibration_samples, len(data.train))
            calib = calibration_batch(data, n, seed=int(meta.get("seed") or 0))
        path, qinfo = search._ship(model, space, plan, device, calib, work, seed=int(meta.get("seed") or 0))
        model_path = out / "model.onnx"
        model_path.write_bytes(Path(path).read_bytes())

    val = evaluate(str(model_path), data.val, batch_size=sched.val_batch_size)
    recorded = rec.accuracy
    if recorded is None:
        raise StudyError(f"trial {trial} has no recorded validation accuracy")
    if abs(val.accuracy - recorded) > tolerance:
        model_path.unlink(missing_ok=True)
        raise ExportError(
            f"exported model of trial {trial} scores {100 * val.accuracy:.2f}% on the validation split but the study "
            f"recorded {100 * recorded:.2f}% (tolerance {100 * tolerance:g} points); the export changed the model, "
            "refusing to write it"
        )
    test = None
    if getattr(data, "test", None) is not None and len(data.test) > 0:
        test = evaluate(str(model_path), data.test, batch_size=sched.val_batch_size)

    ch, size, ncls = search._input_spec(space)
    info = dict(data_meta.get("info") or {})
    mean = getattr(data, "mean", None) or info.get("mean")
    std = getattr(data, "std", None) or info.get("std")
    class_names = list(getattr(data, "class_names", ()) or info.get("class_names") or []) or None
    f = rec.figures
    lat = dict(f.get("latency") or {})
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "format": format,
        "model_file": model_path.name,
        "sha256": search.sha256_file(model_path),
        "file_bytes": model_path.stat().st_size,
        "device": {
            "id": device.id,
            "name": device.name,
            "kind": device.kind,
            "runtime": device.runtime,
            "latency_source": device.latency_source,
        },
        "precision": rec.precision,
        "precision_label": plan.label,
        "precision_per_stage": dict(f.get("stage_precision") or {}),
        "quantization": qinfo if plan.precisions != ("fp32",) else None,
        "input": {
            "name": "input",
            "shape": [1, ch, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "mean": None if mean is None else [float(x) for x in mean],
            "std": None if std is None else [float(x) for x in std],
            "normalization": "x = (pixel / 255 - mean) / std, per channel",
            "batch": "dynamic (first dimension)",
        },
        "output": {"name": "logits", "shape": [1, ncls]},
        "num_classes": ncls,
        "class_names": class_names,
        "val_accuracy": float(val.accuracy),
        "recorded_val_accuracy": float(recorded),
        "test_accuracy": None if test is None else float(test.accuracy),
        "evaluation": {
            "runtime": "onnxruntime",
            "val_samples": int(val.n),
            "test_samples": None if test is None else int(test.n),
            "dataset": info.get("name"),
            "split_seed": info.get("split_seed"),
        },
        "latency": {
            "latency_ms": f.get("latency_ms"),
            "source": f.get("latency_source"),
            "runtime": lat.get("runtime") or f.get("runtime") or device.runtime,
            "threads": lat.get("threads", device.threads),
            "p10_ms": lat.get("p10_ms"),
            "p90_ms": lat.get("p90_ms"),
            "ci_half_width_ms": lat.get("ci_half_width_ms"),
            "runs": lat.get("runs"),
            "batch": 1,
        },
        "memory": {
            "weight_bytes": f.get("weight_bytes"),
            "peak_activation_bytes": f.get("peak_activation_bytes"),
            "file_bytes": model_path.stat().st_size,
            "device_ram_bytes": device.ram_bytes,
            "device_storage_bytes": device.storage_bytes,
        },
        "macs": f.get("macs"),
        "flops": f.get("flops"),
        "params": f.get("params"),
        "candidate": rec.candidate,
        "training": {
            "epochs": f.get("budget_epochs"),
            "rung": f.get("rung"),
            "max_rung": f.get("max_rung"),
            "seed": f.get("seed"),
        },
        "study": {"name": result.study_name, "storage": result.storage, "trial": rec.number, "recipe": result.recipe},
        "versions": _versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return ExportResult(model_path=model_path, manifest_path=manifest_path, manifest=manifest)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)
