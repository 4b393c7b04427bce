"""The tuner: a multi-objective Optuna study over a search space, for one device.

This is the only module that imports Optuna (lazily, inside functions, so ``import hwtune`` and
``from hwtune.search import TuneResult`` stay fast).

One trial = one :class:`~hwtune.space.Candidate` at one training budget:

1. **Cheap profile first** (no training): build the model, count MACs/params, weight and peak
   activation bytes, and get its latency on the device (measured on ``measure`` devices, predicted
   or estimated otherwise, labelled as such). Hard constraints (the user's ``max_latency_ms``,
   ``max_ram_bytes``, ``max_storage_bytes``; the device's RAM and storage; precisions the device
   supports) are set with ``Trial.set_constraint``. A candidate that violates one is **never
   trained**: it is recorded as infeasible (constraint values > 0) with its measured figures.
2. **Multi-objective successive halving** (asynchronous, as ASHA / MO-ASHA; see ``docs/tuner.md``):
   a new candidate trains on the first rung's budget (a fraction of an epoch) and completes; after
   every trial, the best ``1/eta`` of each rung's candidates (Pareto rank, then crowding distance)
   get a continuation trial queued that trains *the same weights* on to the next rung. Optuna's
   pruners cannot do this: ``Trial.report`` and ``should_prune`` are single-objective only.
3. **What ships is what is scored**: int8/fp16/mixed candidates are exported to ONNX, quantized
   (calibration from the train split) and evaluated with ONNX Runtime; their latency is measured on
   the quantized file.
4. The trained weights (and the candidate) are stored as an Optuna artifact, so any trial can be
   exported later without retraining.

Storage is an SQLite file under the run directory by default (any Optuna RDB URL works). Running
the same call again resumes: completed candidates are reused, not retrained, and a trial left
``RUNNING`` by a killed process is marked failed and its candidate re-queued.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import socket
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwtune.errors import ConfigError, HwtuneError, StudyError, did_you_mean
from hwtune.front import (
    Objective,
    TrialRecord,
    TuneResult,
    cost_matrix,
    hypervolume,
    pareto_front,
    promotion_order,
    resolve_objectives,
)

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.data import DataSplits
    from hwtune.device import DeviceProfile
    from hwtune.space import Candidate, SearchSpace

__all__ = [
    "SAMPLERS",
    "Constraints",
    "Schedule",
    "TuneResult",
    "load_result",
    "open_storage",
    "tune",
]

SCHEMA_VERSION = 1
SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_N_TRIALS = 20
# A sampler that keeps proposing candidates that are already evaluated has converged (or the space
# is nearly exhausted): stop instead of spinning on free duplicates.
MAX_CONSECUTIVE_DUPLICATES = 30
# If this many trials of a run fail in a row with the same reason, something systematic is wrong
# (a bug, a broken runtime): stop and say so instead of recording failures forever.
MAX_CONSECUTIVE_SAME_FAILURES = 5
_META_KEY = "hwtune"
# A RUNNING trial that never recorded its worker is taken as dead after this long (Optuna's
# heartbeat grace period below uses the same figure).
STALE_UNKNOWN_WORKER_S = 120


# ---------------------------------------------------------------------------------------------
# Value objects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraints:
    """The user's hard limits (the device's own RAM/storage limits are always applied too).

    Attributes:
        max_latency_ms: Batch-1 latency on the device.
        max_ram_bytes: Working memory: peak activation bytes at batch 1.
        max_storage_bytes: Weight bytes at the candidate's precision.
    """

    max_latency_ms: float | None = None
    max_ram_bytes: int | None = None
    max_storage_bytes: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for key in ("max_latency_ms", "max_ram_bytes", "max_storage_bytes"):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                problems.append(f"constraints: {key} must be a number > 0, got {v!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    @classmethod
    def coerce(cls, value: Constraints | Mapping[str, Any] | None) -> Constraints:
        """Accept a ``Constraints``, ``None`` or a mapping (``*_kb`` keys are converted to bytes)."""
        if value is None:
            return cls()
        if isinstance(value, Constraints):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"constraints must be a mapping or Constraints, got {type(value).__name__}")
        known = {"max_latency_ms", "max_ram_bytes", "max_storage_bytes", "max_ram_kb", "max_storage_kb"}
        problems = [
            f"constraints: unknown key {k!r}, expected one of {', '.join(sorted(known))}{did_you_mean(k, known)}"
            for k in value
            if k not in known
        ]
        if problems:
            raise ConfigError("\n".join(problems))
        kw: dict[str, Any] = {
            k: value[k] for k in ("max_latency_ms", "max_ram_bytes", "max_storage_bytes") if value.get(k) is not None
        }
        for kb_key, byte_key in (("max_ram_kb", "max_ram_bytes"), ("max_storage_kb", "max_storage_bytes")):
            if value.get(kb_key) is not None:
                v = value[kb_key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise ConfigError(f"constraints: {kb_key} must be a number > 0, got {v!r}")
                kw[byte_key] = round(float(v) * 1024)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("max_latency_ms", self.max_latency_ms),
                ("max_ram_bytes", self.max_ram_bytes),
                ("max_storage_bytes", self.max_storage_bytes),
            )
            if v is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraints:
        return cls.coerce(dict(data))


@dataclass(frozen=True)
class Schedule:
    """The training budget per candidate and the successive-halving rungs.

    Attributes:
        epochs: Full budget: epochs of training a candidate gets at the last rung.
        rungs: Cumulative fractions of ``epochs`` at each rung, increasing, ending at 1.0. ``(1.0,)``
            trains every feasible candidate to the full budget (no early stopping).
        eta: Promotion rate: the best ``1/eta`` of the candidates at a rung (Pareto rank, then
            crowding distance) continue to the next rung.
        batch_size: Training batch size.
        lr: Learning rate (``None``: the trainer's default).
        calibration_samples: Samples from the train split to calibrate int8 quantization.
        latency_budget_s: Time budget of each latency measurement (measured devices).
        val_batch_size: Evaluation batch size.
    """

    epochs: float = 1.0
    rungs: tuple[float, ...] = (0.25, 1.0)
    eta: float = 3.0
    batch_size: int = 128
    lr: float | None = None
    calibration_samples: int = 256
    latency_budget_s: float = 1.0
    val_batch_size: int = 512

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.epochs, (int, float)) or isinstance(self.epochs, bool) or not self.epochs > 0:
            problems.append(f"budget: epochs must be a number > 0, got {self.epochs!r}")
        rungs = tuple(self.rungs)
        if not rungs or any(not isinstance(r, (int, float)) for r in rungs):
            problems.append(f"budget: rungs must be a non-empty sequence of fractions, got {self.rungs!r}")
        else:
            if any(b <= a for a, b in itertools.pairwise(rungs)) or rungs[0] <= 0:
                problems.append(f"budget: rungs must increase strictly from > 0, got {list(rungs)}")
            if abs(rungs[-1] - 1.0) > 1e-9:
                problems.append(f"budget: the last rung must be 1.0 (the full budget), got {rungs[-1]}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not self.eta > 1:
            problems.append(f"budget: eta must be a number > 1, got {self.eta!r}")
        for key in ("batch_size", "calibration_samples", "val_batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"budget: {key} must be an integer >= 1, got {v!r}")
        if problems:
            raise ConfigError("\n".join(problems))
        object.__setattr__(self, "rungs", tuple(float(r) for r in rungs))

    @classmethod
    def full(cls, epochs: float = 1.0, **kw: Any) -> Schedule:
        """Every feasible candidate trained to the full budget (plain search, no early stopping)."""
        return cls(epochs=epochs, rungs=(1.0,), **kw)

    @classmethod
    def coerce(cls, value: Schedule | Mapping[str, Any] | float | None) -> Schedule:
        if value is None:
            return cls()
        if isinstance(value, Schedule):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(epochs=float(value))
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(f"budget must be a Schedule, a mapping or a number of epochs, got {type(value).__name__}")

    @property
    def rung_epochs(self) -> tuple[float, ...]:
        """Cumulative epochs at each rung."""
        return tuple(self.epochs * r for r in self.rungs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "rungs": list(self.rungs),
            "eta": self.eta,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "calibration_samples": self.calibration_samples,
            "latency_budget_s": self.latency_budget_s,
            "val_batch_size": self.val_batch_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        known = set(cls.__dataclass_fields__)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError("\n".join(f"budget: unknown key {k!r}{did_you_mean(k, known)}" for k in unknown))
        kw = dict(data)
        if "rungs" in kw:
            kw["rungs"] = tuple(kw["rungs"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Optuna plumbing
# ---------------------------------------------------------------------------------------------


def _optuna() -> Any:
    import optuna

    return optuna


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial (and failed trials with tracebacks); hwtune prints its own lines."""
    optuna = _optuna()
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message=".*heartbeat.*")
            yield
    finally:
        optuna.logging.set_verbosity(old)


def _storage_url(storage: str | Path | None, out_dir: Path | None) -> str:
    if storage is None:
        if out_dir is None:
            raise ConfigError("storage: give a storage URL or an out_dir for the default SQLite file")
        return f"sqlite:///{(out_dir / 'study.db').resolve()}"
    text = str(storage)
    if "://" not in text:
        # A bare file path is an SQLite file (convenience; Optuna itself wants a URL).
        if text.endswith((".db", ".sqlite", ".sqlite3")):
            return f"sqlite:///{Path(text).expanduser().resolve()}"
        raise StudyError(
            f"storage {text!r} is not a database URL; expected e.g. sqlite:///path/study.db or "
            "postgresql://user@host/db"
        )
    return text


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna ``RDBStorage`` for ``url``, with a heartbeat so stale trials of dead workers fail.

    Raises:
        StudyError: the URL is malformed, its driver is missing or the database is unreachable.
    """
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) not in ("", ":memory:"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudyError(f"storage {url!r}: cannot create directory {path.parent}: {exc}") from exc
    kw: dict[str, Any] = {}
    if heartbeat:
        # Workers on other machines are known dead only by their silence: a trial without a
        # heartbeat for grace_period seconds is failed and re-queued by the next worker.
        kw = {
            "heartbeat_interval": 30,
            "grace_period": STALE_UNKNOWN_WORKER_S,
            "heartbeat_stale_trial_callback": _requeue_stale,
        }
    try:
        with _quiet_optuna():
            return optuna.storages.RDBStorage(url, **kw)
    except Exception as exc:  # sqlalchemy raises ArgumentError, NoSuchModuleError, OperationalError...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"cannot open study storage {url!r}: {type(exc).__name__}: {msg}") from exc


def _requeue(study: Any, trial: Any) -> bool:
    """Queue a failed (killed / interrupted) trial's candidate again, once, keeping its promotion."""
    top = trial.user_attrs
    if top.get("retry_of") is not None or not trial.params:
        return False
    attrs = {"retry_of": trial.number}
    for k in ("continue_from", "rung_target", "candidate_key"):
        if top.get(k) is not None:
            attrs[k] = top[k]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def _requeue_stale(study: Any, trial: Any) -> None:
    """Heartbeat callback: a stale trial's candidate goes back in the queue (once)."""
    with contextlib.suppress(Exception):
        _requeue(study, trial)


def _make_sampler(name: str, seed: int | None, population_size: int) -> Any:
    optuna = _optuna()
    with _quiet_optuna():
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=population_size)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=population_size)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}{did_you_mean(name, SAMPLERS)}")


_STATE_NAMES = {"COMPLETE": "complete", "FAIL": "fail", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned"}


def _record(t: Any) -> TrialRecord:
    figures = _attrs(t)
    state = _STATE_NAMES.get(t.state.name, t.state.name.lower())
    if state == "fail" and "failure" not in figures:
        figures["failure"] = "the worker stopped while the trial was running (killed?); marked failed"
    return TrialRecord(
        number=int(t.number),
        state=state,
        figures=figures,
        constraints={str(k): float(v) for k, v in (t.constraints or {}).items()},
        values=None if t.values is None else tuple(float(v) for v in t.values),
        started=None if t.datetime_start is None else t.datetime_start.isoformat(),
        finished=None if t.datetime_complete is None else t.datetime_complete.isoformat(),
    )


def _result_from_study(study: Any, *, interrupted: bool = False) -> TuneResult:
    meta = dict(study.user_attrs.get(_META_KEY) or {})
    trials = tuple(_record(t) for t in study.get_trials(deepcopy=False))
    storage_url = meta.get("storage") or ""
    out_dir = meta.get("out_dir")
    return TuneResult(
        study_name=study.study_name,
        storage=storage_url,
        out_dir=None if out_dir is None else Path(out_dir),
        device=str(meta.get("device", {}).get("id", "?")),
        recipe=str(meta.get("recipe", {}).get("name", "?")),
        objectives=tuple(meta.get("objectives", ("accuracy", "latency"))),
        reference_point={k: float(v) for k, v in (meta.get("reference_point") or {}).items()},
        constraints=dict(meta.get("constraints") or {}),
        trials=trials,
        interrupted=interrupted,
        meta=meta,
    )


def _load_study(storage: str | Path, study_name: str | None) -> tuple[Any, str]:
    optuna = _optuna()
    url = _storage_url(storage, None)
    st = open_storage(url, heartbeat=False)
    with _quiet_optuna():
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        if study_name is None:
            if len(names) == 1:
                study_name = names[0]
            else:
                raise StudyError(
                    f"storage {url!r} holds {len(names)} studies; name one with --study ({', '.join(names) or 'none'})"
                )
        if study_name not in names:
            raise StudyError(
                f"no study {study_name!r} in {url}{did_you_mean(study_name, names)}"
                + (f" (studies: {', '.join(names)})" if names else " (it holds no study)")
            )
        study = optuna.load_study(study_name=study_name, storage=st)
    if _META_KEY not in study.user_attrs:
        raise StudyError(f"study {study_name!r} in {url} was not created by hwtune (no '{_META_KEY}' attributes)")
    return study, url


def load_result(storage: str | Path, study_name: str | None = None) -> TuneResult:
    """Read a study back as a :class:`TuneResult` (front, hypervolume, every trial) without running it.

    Raises:
        StudyError: bad storage URL, no such study, or a study hwtune did not create.
    """
    study, _ = _load_study(storage, study_name)
    return _result_from_study(study)


def download_weights(result: TuneResult, number: int, dest: str | Path) -> Path:
    """Fetch trial ``number``'s trained-weights artifact into ``dest`` (a file path)."""
    optuna = _optuna()
    rec = result.trial(number)
    artifact_id = rec.figures.get("artifact_id")
    if not artifact_id:
        raise StudyError(
            f"trial {number} of study {result.study_name!r} has no stored weights "
            f"(state {rec.state}{', not trained' if not rec.trained else ''})"
        )
    base = result.meta.get("artifact_dir")
    if not base or not Path(base).is_dir():
        raise StudyError(f"artifact directory {base!r} of study {result.study_name!r} is missing")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    store = optuna.artifacts.FileSystemArtifactStore(base)
    try:
        optuna.artifacts.download_artifact(artifact_store=store, file_path=str(dest), artifact_id=artifact_id)
    except Exception as exc:
        raise StudyError(f"cannot read the weights of trial {number} ({artifact_id}) from {base}: {exc}") from exc
    return dest


# ---------------------------------------------------------------------------------------------
# Search-space and data helpers
# ---------------------------------------------------------------------------------------------


def _resolve_space(space_or_recipe: Any) -> tuple[SearchSpace, dict[str, Any]]:
    from hwtune.space import SearchSpace

    if isinstance(space_or_recipe, SearchSpace):
        space = space_or_recipe
        src = getattr(space, "path", None) or getattr(space, "source", None)
        name = getattr(space, "name", None) or (Path(src).stem if src else space.family)
    else:
        space = SearchSpace.from_recipe(space_or_recipe)
        src = getattr(space, "path", None) or getattr(space, "source", None)
        name = getattr(space, "name", None) or str(space_or_recipe)
    text = None
    if src and Path(str(src)).is_file():
        text = Path(str(src)).read_text()
    info = {"name": str(name), "path": None if not src else str(src), "text": text, "space": _space_dict(space)}
    return space, info


def _space_dict(space: SearchSpace) -> dict[str, Any]:
    to_dict = getattr(space, "to_dict", None)
    if callable(to_dict):
        with contextlib.suppress(Exception):
            return _jsonable(to_dict())
    return {
        "family": space.family,
        "knobs": {k: list(v) for k, v in space.knob_choices.items()},
        "precisions": list(space.precision_choices),
    }


def _space_from_info(info: Mapping[str, Any]) -> SearchSpace:
    from hwtune.space import SearchSpace

    path = info.get("path")
    if path and Path(path).is_file():
        return SearchSpace.from_recipe(path)
    text = info.get("text")
    if text:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / f"{Path(str(path or info.get('name') or 'recipe')).stem}.toml"
            p.write_text(text)
            return SearchSpace.from_recipe(p)
    return SearchSpace.from_recipe(info["name"])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _input_spec(space: SearchSpace) -> tuple[int, int, int]:
    """(channels, size, num_classes) of the space's input."""
    inp = space.input
    if isinstance(inp, Mapping):
        ch, size = int(inp["channels"]), int(inp["size"])
    elif hasattr(inp, "channels"):
        ch, size = int(inp.channels), int(inp.size)
    else:
        ch, size = int(inp[0]), int(inp[1])
    return ch, size, int(space.num_classes)


def _data_spec(data: Any, space: SearchSpace) -> tuple[dict[str, Any] | None, Any]:
    """(reloadable load_dataset kwargs or None, DataSplits or None if not loaded yet)."""
    from hwtune.data import DataSplits

    if isinstance(data, DataSplits):
        return None, data
    if data is None:
        name = getattr(space, "dataset", None) or "fashion-mnist"
        return {"name_or_path": str(name)}, None
    if isinstance(data, (str, Path)):
        return {"name_or_path": str(data)}, None
    if isinstance(data, Mapping):
        kw = dict(data)
        if "name" in kw:
            kw["name_or_path"] = kw.pop("name")
        kw.setdefault("name_or_path", getattr(space, "dataset", None) or "fashion-mnist")
        kw["name_or_path"] = str(kw["name_or_path"])
        return kw, None
    raise ConfigError(
        f"data must be a dataset name, a mapping of load_dataset arguments or DataSplits, got {type(data).__name__}"
    )


def load_data(spec: Mapping[str, Any]) -> DataSplits:
    """``hwtune.data.load_dataset(**spec)`` (the spec stored with a study)."""
    from hwtune.data import load_dataset

    kw = dict(spec)
    name = kw.pop("name_or_path")
    return load_dataset(name, **kw)


def _knob_label(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: tuples become ``"8/16/32"``."""
    if isinstance(v, (list, tuple)):
        return "/".join(str(x) for x in v)
    return v


def _distributions(space: SearchSpace) -> dict[str, tuple[list[Any], dict[Any, Any]]]:
    """Parameter name -> (Optuna categorical labels, label -> value) for every searched parameter."""
    out = {}
    for name, choices in space.param_choices().items():
        labels = [_knob_label(c) for c in choices]
        out[name] = (labels, dict(zip(labels, choices, strict=True)))
    return out


def _numeric_size(v: Any) -> float:
    if isinstance(v, (list, tuple)):
        return float(sum(_numeric_size(x) for x in v))
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return 0.0


def _extreme_candidate(space: SearchSpace, *, largest: bool, precision: str) -> Candidate:
    """Every numeric parameter at its largest (or smallest) value; others at their first choice."""
    params: dict[str, Any] = {}
    for name, choices in space.knob_choices.items():
        if all(isinstance(c, (int, float, list, tuple)) and not isinstance(c, bool) for c in choices):
            params[name] = (max if largest else min)(choices, key=_numeric_size)
        else:
            params[name] = choices[0]
    params["precision"] = precision
    return space.candidate(params)


def _candidate_seed(seed: int | None, key: str) -> int:
    # Stable across processes (hash() is salted): a retried candidate trains identically.
    return (int(seed or 0) * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------
# The per-candidate pipeline (module-level steps so tests can replace one with a fake)
# ---------------------------------------------------------------------------------------------


def _build(space: SearchSpace, cand: Candidate) -> Any:
    from hwtune.families import create_model

    ch, size, ncls = _input_spec(space)
    return create_model(space.family, cand, num_classes=ncls, in_channels=ch, input_size=size)


def _plan(space: SearchSpace, cand: Candidate) -> Any:
    from hwtune.families import get_family

    fam = get_family(space.family)
    return cand.precision_plan(fam.stage_prefixes(cand))


def _profile(
    model: Any, input_shape: tuple[int, ...], device: DeviceProfile, plan: Any, *, measure: bool, time_budget_s: float
) -> dict[str, Any]:
    from hwtune.profiler import profile_model

    rep = profile_model(
        model, input_shape, device=device, precision=plan, measure=measure, layers=False, time_budget_s=time_budget_s
    )
    d = rep.to_dict()
    d.pop("layers", None)
    d.pop("device", None)
    return d


def _train(
    model: Any,
    data: DataSplits,
    *,
    epochs: float,
    batch_size: int,
    lr: float | None,
    seed: int,
    threads: int | None = None,
) -> Any:
    from hwtune.training import TrainBudget, train

    kw: dict[str, Any] = {
        "budget": TrainBudget(epochs=epochs),
        "batch_size": batch_size,
        "seed": seed,
        "progress": False,
        "threads": threads,
    }
    if lr is not None:
        kw["lr"] = lr
    return train(model, data, **kw)


def _evaluate(model_or_path: Any, dataset: Any, *, batch_size: int) -> float:
    from hwtune.training import evaluate

    return float(evaluate(model_or_path, dataset, batch_size=batch_size).accuracy)


def _ship(
    model: Any,
    space: SearchSpace,
    plan: Any,
    device: DeviceProfile,
    calibration: np.ndarray | None,
    workdir: Path,
    *,
    seed: int,
) -> tuple[Path, dict[str, Any]]:
    """Export the trained model to ONNX at the candidate's precision; returns (path, quantization info)."""
    import torch

    from hwtune.onnx_export import export_onnx
    from hwtune.precision import PrecisionPlan
    from hwtune.quant import QuantConfig, quantize

    ch, size, _ = _input_spec(space)
    example = torch.zeros(1, ch, size, size)
    fp32 = export_onnx(model, example, workdir / "model.fp32.onnx")
    plan = PrecisionPlan.coerce(plan)
    if plan.precisions == ("fp32",):
        return fp32, {"precision_label": "fp32"}
    cfg = QuantConfig(calibration_samples=len(calibration) if calibration is not None else 256, seed=seed)
    q = quantize(fp32, workdir / "model.onnx", plan, calibration=calibration, config=cfg, device=device)
    info = q.to_dict() if hasattr(q, "to_dict") else {}
    return Path(q.path), _jsonable(info)


def _measure_file(path: Path, space: SearchSpace, device: DeviceProfile, time_budget_s: float) -> dict[str, Any]:
    from hwtune.profiler.latency import measure_latency

    ch, size, _ = _input_spec(space)
    example = np.zeros((1, ch, size, size), dtype=np.float32)
    m = measure_latency(path, example, runtime="onnxruntime", threads=device.threads, time_budget_s=time_budget_s)
    d = m.to_dict() if hasattr(m, "to_dict") else dict(vars(m))
    return _jsonable(d)


# ---------------------------------------------------------------------------------------------
# Constraints
# ---------------------------------------------------------------------------------------------


def constraint_values(
    figures: Mapping[str, Any], constraints: Constraints, device: DeviceProfile, stage_precisions: Sequence[str]
) -> dict[str, float]:
    """Constraint name -> value (> 0 violated, relative excess over the limit) for a profiled candidate."""
    out: dict[str, float] = {}
    ram = min(x for x in (constraints.max_ram_bytes, device.ram_bytes) if x)
    storage = min(x for x in (constraints.max_storage_bytes, device.storage_bytes) if x)
    out["ram"] = float(figures["peak_activation_bytes"]) / ram - 1.0
    out["storage"] = float(figures["weight_bytes"]) / storage - 1.0
    if constraints.max_latency_ms is not None:
        lat = figures.get("latency_ms")
        # A latency that cannot be obtained cannot be shown to meet the limit.
        out["latency"] = 1.0 if lat is None else float(lat) / constraints.max_latency_ms - 1.0
    unsupported = sorted({p for p in stage_precisions if not device.supports(p)})
    out["precision"] = float(len(unsupported))
    return out


def _violations_text(
    values: Mapping[str, float],
    figures: Mapping[str, Any],
    constraints: Constraints,
    device: DeviceProfile,
    stage_precisions: Sequence[str],
) -> list[str]:
    msgs = []
    if values.get("ram", 0) > 0:
        msgs.append(
            f"peak activations {figures['peak_activation_bytes']} B > limit "
            f"{min(x for x in (constraints.max_ram_bytes, device.ram_bytes) if x)} B"
        )
    if values.get("storage", 0) > 0:
        msgs.append(
            f"weights {figures['weight_bytes']} B > limit "
            f"{min(x for x in (constraints.max_storage_bytes, device.storage_bytes) if x)} B"
        )
    if values.get("latency", 0) > 0:
        msgs.append(f"latency {figures.get('latency_ms')} ms > limit {constraints.max_latency_ms} ms")
    if values.get("precision", 0) > 0:
        bad = sorted({p for p in stage_precisions if not device.supports(p)})
        msgs.append(f"precision {', '.join(bad)} not supported by {device.id} ({', '.join(device.precisions)})")
    return msgs


# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------


_FIG_KEY = "hw"


class _Buffered:
    """Wraps an Optuna trial: ``set_user_attr`` collects into one dict written by ``flush()``.

    Each user attribute is a database commit (~5-10 ms on SQLite); a trial records ~40 figures.
    One JSON attribute (``"hw"``) flushed at a few checkpoints (after the profile, after every
    rung, at the end or on failure) keeps the per-trial storage cost to a handful of commits.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.attrs: dict[str, Any] = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = _jsonable(value)

    def flush(self) -> None:
        self.trial.set_user_attr(_FIG_KEY, dict(self.attrs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)


def _attrs(t: Any) -> dict[str, Any]:
    """A trial's figures: its user attributes with the buffered ``"hw"`` dict merged in."""
    out = {k: v for k, v in t.user_attrs.items() if k != _FIG_KEY}
    out.update(t.user_attrs.get(_FIG_KEY) or {})
    return out


class _TrialFailed(Exception):
    """A candidate could not be evaluated; the reason is in the trial's ``failure`` attribute."""


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _worker_id() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _worker_alive(worker: Mapping[str, Any]) -> bool | None:
    """True/False for a worker on this host, None when it cannot be told (another host)."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    start = _process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return worker.get("start") is None
    return worker.get("start") in (None, start)


@dataclass
class _Context:
    space: Any
    device: Any
    data: Any
    objectives: tuple[Objective, ...]
    constraints: Constraints
    schedule: Schedule
    reference: dict[str, float]
    artifact_dir: Path
    seed: int | None
    dists: dict[str, tuple[list[Any], dict[Any, Any]]]
    calibration: np.ndarray | None = None
    log: Callable[[str], None] = print
    consecutive_duplicates: int = 0
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    stop_reason: str | None = None
    threads: int | None = None
    deadline: float | None = None


def _is_measured(device: DeviceProfile) -> bool:
    return device.latency_source == "measure"


def _need_calibration(ctx: _Context) -> np.ndarray | None:
    if ctx.calibration is None:
        from hwtune.data import calibration_batch

        n = min(ctx.schedule.calibration_samples, len(ctx.data.train))
        ctx.calibration = calibration_batch(ctx.data, n, seed=int(ctx.seed or 0))
    return ctx.calibration


def _values_for(ctx: _Context, figures: Mapping[str, Any]) -> list[float]:
    vals = []
    for o in ctx.objectives:
        v = figures.get(o.attr)
        if v is None:
            if o.maximize:
                v = 0.0
            else:
                # An unavailable cost is recorded as the reference (worst) so it never looks good.
                v = ctx.reference.get(o.attr, 1e12)
        vals.append(float(v))
    return vals


def _rung_cost(ctx: _Context, accuracy: float, figures: Mapping[str, Any]) -> list[float]:
    """A candidate's normalized cost point at a rung: its rung accuracy and its (rung-independent) costs."""
    fig = dict(figures)
    fig["val_accuracy"] = accuracy
    # Compare candidates on the cheap-profile latency every candidate has when its rungs run; a
    # later re-measurement of a quantized file must not move old points.
    if fig.get("latency_profile_ms") is not None:
        fig["latency_ms"] = fig["latency_profile_ms"]
    rec = TrialRecord(number=-1, state="complete", figures=fig)
    return [float(x) for x in cost_matrix([rec], ctx.objectives, ctx.reference)[0]]


def _promote_pending(study: Any, ctx: _Context) -> list[tuple[int, int]]:
    """Asynchronous multi-objective successive halving: queue the promotions due now.

    For every rung ``r`` below the last, the candidates with a result at ``r`` are ordered by
    non-dominated rank then crowding distance (:func:`hwtune.front.promotion_order`); the first
    ``floor(n_r / eta)`` that have not been promoted yet get a continuation trial queued
    (``enqueue_trial`` with ``continue_from`` = the trial holding their rung-``r`` weights). As a
    rung fills up, its quota grows and the next-best candidates follow (ASHA's rule). Returns
    ``[(origin trial, target rung), ...]`` queued by this call.
    """
    sched = ctx.schedule
    n_rungs = len(sched.rungs)
    if n_rungs < 2:
        return []
    optuna = _optuna()
    complete = optuna.trial.TrialState.COMPLETE
    results: list[dict[str, tuple[list[float], Any]]] = [{} for _ in range(n_rungs - 1)]
    promoted: list[set[str]] = [set() for _ in range(n_rungs - 1)]
    for t in study.get_trials(deepcopy=False):
        a = _attrs(t)
        key = a.get("candidate_key")
        if not key or a.get("duplicate_of") is not None:
            continue
        target = a.get("rung_target")
        if target is not None and 0 < int(target) < n_rungs:
            # queued, running, done, or failed (a failed continuation is not promoted again; one
            # killed mid-run is re-queued by the resume logic instead)
            promoted[int(target) - 1].add(key)
        if t.state != complete or not a.get("trained"):
            continue
        top = int(a.get("rung", 0))
        if top < n_rungs - 1:
            results[top][key] = (_rung_cost(ctx, float(a["val_accuracy_fp32"]), a), t)
        for r in range(min(top, n_rungs - 1)):
            promoted[r].add(key)  # this trial itself went past rung r
    queued: list[tuple[int, int]] = []
    for r in range(n_rungs - 1):
        keys = list(results[r])
        quota = int(len(keys) // sched.eta)
        if quota == 0:
            continue
        order = promotion_order([results[r][k][0] for k in keys])
        for i in order[:quota]:
            key = keys[i]
            if key in promoted[r]:
                continue
            origin = results[r][key][1]
            oa = _attrs(origin)
            if ctx.deadline is not None:
                # Do not queue a rung this run's timeout cannot accommodate (projected from the
                # candidate's own training speed): it would end long after the deadline.
                per_epoch = float(oa.get("train_seconds") or 0) / max(float(oa.get("budget_epochs") or 0), 1e-9)
                need = per_epoch * (sched.rung_epochs[r + 1] - float(oa.get("budget_epochs") or 0))
                if time.monotonic() + need > ctx.deadline:
                    continue
            study.enqueue_trial(
                dict(origin.params),
                user_attrs={"continue_from": origin.number, "rung_target": r + 1, "candidate_key": key},
            )
            promoted[r].add(key)
            queued.append((origin.number, r + 1))
    return queued


def _suggest(trial: Any, ctx: _Context) -> Candidate:
    params = {}
    for name, (labels, back) in ctx.dists.items():
        params[name] = back[trial.suggest_categorical(name, labels)]
    return ctx.space.candidate(params)


def _completed_by_key(study: Any) -> dict[str, Any]:
    """Candidate key -> its best completed original trial (highest rung reached, then lowest number)."""
    optuna = _optuna()
    out: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = _attrs(t)
        key = a.get("candidate_key")
        if not key or a.get("duplicate_of") is not None:
            continue
        best = out.get(key)
        if best is None or int(a.get("rung", 0) or 0) > int(_attrs(best).get("rung", 0) or 0):
            out[key] = t
    return out


_NO_COPY = {"worker", "wall_seconds", "retry_of", "duplicate_of", "continue_from", "rung_target", "retried"}


def _copy_result(trial: _Buffered, prior: Any, t_start: float, ctx: _Context) -> list[float]:
    """Record ``trial`` as a repeat of the completed ``prior`` (nothing trained)."""
    for k, v in _attrs(prior).items():
        if k not in _NO_COPY and k not in trial.attrs:
            trial.set_user_attr(k, v)
    for k, v in prior.constraints.items():
        trial.set_constraint(k, v)
    trial.set_user_attr("duplicate_of", prior.number)
    trial.set_user_attr("epochs_trained", 0.0)
    trial.set_user_attr("wall_seconds", time.monotonic() - t_start)
    trial.flush()
    ctx.consecutive_duplicates += 1
    return list(prior.values)


def _objective(ctx: _Context, study: Any) -> Callable[[Any], list[float]]:
    def objective(optuna_trial: Any) -> list[float]:
        t_start = time.monotonic()
        stage = ["suggest"]  # mutable so the failure message names the step that failed
        # Written at once (not buffered): a resume tells a killed worker's trial by this.
        optuna_trial.set_user_attr("worker", _worker_id())
        trial = _Buffered(optuna_trial)
        try:
            cand = _suggest(trial, ctx)
            key = cand.key
            trial.set_user_attr("candidate", cand.to_dict())
            trial.set_user_attr("candidate_key", key)
            trial.set_user_attr("precision", cand.precision)
            trial.set_user_attr("label", getattr(cand, "label", key))
            top = optuna_trial.user_attrs
            target = top.get("rung_target")
            prior = _completed_by_key(study).get(key)
            origin = None
            if target is not None and top.get("continue_from") is not None:
                # A promotion: continue the stored weights of the origin trial to rung `target`.
                origin = study._storage.get_trial(
                    study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(top["continue_from"]))
                )
                if prior is not None and int(_attrs(prior).get("rung", 0) or 0) >= int(target):
                    return _copy_result(trial, prior, t_start, ctx)  # already done by another worker
            elif prior is not None and prior.number != trial.number:
                # Same candidate already evaluated (a sampler repeat, or a resumed run): reuse it.
                return _copy_result(trial, prior, t_start, ctx)
            ctx.consecutive_duplicates = 0
            trial.flush()
            return _evaluate_candidate(
                trial,
                ctx,
                study,
                cand,
                t_start,
                stage,
                origin=origin,
                target_rung=None if target is None else int(target),
            )
        except KeyboardInterrupt:
            trial.set_user_attr("failure", "interrupted (Ctrl-C) while running; the candidate may be retried")
            trial.set_user_attr("wall_seconds", time.monotonic() - t_start)
            with contextlib.suppress(Exception):
                trial.flush()
            raise
        except Exception as exc:
            reason = f"{stage[0]}: {_reason(exc)}"
            trial.set_user_attr("failure", reason)
            trial.set_user_attr("failure_stage", stage[0])
            trial.set_user_attr("wall_seconds", time.monotonic() - t_start)
            trial.flush()
            raise _TrialFailed(reason) from exc

    return objective


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, MemoryError) or "out of memory" in first.lower():
        return f"out of memory ({type(exc).__name__}: {first})"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_PROFILE_KEYS = (
    "macs",
    "flops",
    "params",
    "weight_bytes",
    "peak_activation_bytes",
    "latency_ms",
    "latency_source",
    "latency_label",
    "latency",
    "runtime",
    "fits",
    "notes",
)


def _evaluate_candidate(
    trial: Any,
    ctx: _Context,
    study: Any,
    cand: Candidate,
    t_start: float,
    stage_ref: list[str],
    *,
    origin: Any = None,
    target_rung: int | None = None,
) -> list[float]:
    """Profile (or inherit the origin's profile), train to the target rung, ship, score, store."""
    import torch

    def stage(name: str) -> None:
        stage_ref[0] = name

    space, device, sched = ctx.space, ctx.device, ctx.schedule
    ch, size, _ = _input_spec(space)
    stage("build")
    model = _build(space, cand)
    plan = _plan(space, cand)
    stage_precisions = tuple(p for _, p in cand.stage_precision) or (cand.precision,)
    trial.set_user_attr("stage_precision", dict(cand.stage_precision))
    trial.set_user_attr("precision_plan", plan.to_dict() if hasattr(plan, "to_dict") else str(plan))
    seed = _candidate_seed(ctx.seed, cand.key)

    if origin is None:
        # 1. Cheap profile: no training yet.
        stage("profile")
        t0 = time.monotonic()
        prof = _profile(model, (1, ch, size, size), device, plan, measure=True, time_budget_s=sched.latency_budget_s)
        figures: dict[str, Any] = {k: prof.get(k) for k in _PROFILE_KEYS}
        figures["latency_profile_ms"] = figures["latency_ms"]
        figures["profile_seconds"] = time.monotonic() - t0
        for k, v in figures.items():
            trial.set_user_attr(k, v)
        trial.flush()
        cons = constraint_values(figures, ctx.constraints, device, stage_precisions)
        for k, v in cons.items():
            trial.set_constraint(k, v)
        if any(v > 0 for v in cons.values()):
            reasons = _violations_text(cons, figures, ctx.constraints, device, stage_precisions)
            trial.set_user_attr("trained", False)
            trial.set_user_attr("infeasible", reasons)
            trial.set_user_attr("budget_epochs", 0.0)
            trial.set_user_attr("epochs_trained", 0.0)
            trial.set_user_attr("val_accuracy", None)
            trial.set_user_attr("wall_seconds", time.monotonic() - t_start)
            trial.flush()
            return _values_for(ctx, {**figures, "val_accuracy": None})
        torch.manual_seed(seed)
        model = _build(space, cand)  # fresh weights from the candidate seed (profiling may have traced it)
        start_rung, trained_epochs, rungs = 0, 0.0, []
        target = 0
    else:
        # A promotion: the origin's profile stands (latency and memory do not change with training);
        # its weights continue training from where the origin stopped.
        oa = _attrs(origin)
        figures = {k: oa.get(k) for k in (*_PROFILE_KEYS, "latency_profile_ms", "quantization")}
        figures["profile_seconds"] = 0.0
        for k, v in figures.items():
            trial.set_user_attr(k, v)
        for k, v in origin.constraints.items():
            trial.set_constraint(k, v)
        trial.set_user_attr("continue_from", origin.number)
        trial.set_user_attr("rung_target", target_rung)
        stage("load weights")
        with tempfile.TemporaryDirectory(prefix="hwtune-trial-") as tmp:
            store = _optuna().artifacts.FileSystemArtifactStore(str(ctx.artifact_dir))
            path = Path(tmp) / "weights.pt"
            _optuna().artifacts.download_artifact(
                artifact_store=store, file_path=str(path), artifact_id=oa["artifact_id"]
            )
            blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        start_rung = int(oa.get("rung", 0)) + 1
        trained_epochs = float(oa.get("budget_epochs") or 0.0)
        rungs = list(oa.get("rungs") or [])
        target = int(target_rung if target_rung is not None else start_rung)
        trial.flush()

    # 2. Train the same weights up to the target rung.
    train_seconds = 0.0
    epochs_before = trained_epochs
    samples = 0
    acc_fp32 = None
    for r in range(start_rung, target + 1):
        stage(f"train (rung {r})")
        t0 = time.monotonic()
        train_kw = {"threads": ctx.threads} if ctx.threads is not None else {}
        stats = _train(
            model,
            ctx.data,
            epochs=sched.rung_epochs[r] - trained_epochs,
            batch_size=sched.batch_size,
            lr=sched.lr,
            seed=seed + r,
            **train_kw,
        )
        train_seconds += time.monotonic() - t0
        trained_epochs = sched.rung_epochs[r]
        samples += int(getattr(stats, "samples_seen", 0) or 0)
        stage(f"evaluate (rung {r})")
        acc_fp32 = _evaluate(model, ctx.data.val, batch_size=sched.val_batch_size)
        if not math.isfinite(acc_fp32):
            raise FloatingPointError(f"validation accuracy is {acc_fp32}")
        rungs.append(
            {
                "rung": r,
                "epochs": trained_epochs,
                "val_accuracy": acc_fp32,
                "trial": trial.number,
                "final_loss": _finite_or_none(getattr(stats, "final_loss", None)),
                "seconds": time.monotonic() - t0,
            }
        )
        trial.set_user_attr("rungs", rungs)

    total_train_seconds = train_seconds + (float(_attrs(origin).get("train_seconds") or 0) if origin else 0.0)
    trial.set_user_attr("rung", target)
    trial.set_user_attr("max_rung", len(sched.rung_epochs) - 1)
    trial.set_user_attr("budget_epochs", trained_epochs)
    trial.set_user_attr("epochs_trained", trained_epochs - epochs_before)
    trial.set_user_attr("samples_seen", samples)
    trial.set_user_attr("train_seconds", total_train_seconds)
    trial.set_user_attr("val_accuracy_fp32", acc_fp32)
    trial.set_user_attr("trained", True)
    trial.set_user_attr("seed", seed)
    trial.flush()

    # 3. What ships is what is scored.
    from hwtune.precision import PrecisionPlan

    accuracy_by_precision = {"fp32": acc_fp32}
    val_accuracy = acc_fp32
    accuracy_source = "torch (fp32)"
    pplan = PrecisionPlan.coerce(plan)
    with tempfile.TemporaryDirectory(prefix="hwtune-trial-") as tmp:
        work = Path(tmp)
        if pplan.precisions != ("fp32",):
            stage("quantize")
            calib = _need_calibration(ctx) if "int8" in pplan.precisions else None
            path, qinfo = _ship(model, space, pplan, device, calib, work, seed=int(ctx.seed or 0))
            trial.set_user_attr("quantization", qinfo)
            stage("evaluate quantized")
            val_accuracy = _evaluate(path, ctx.data.val, batch_size=sched.val_batch_size)
            accuracy_by_precision[getattr(pplan, "label", cand.precision)] = val_accuracy
            accuracy_source = "onnxruntime (shipped file)"
            trial.set_user_attr("onnx_bytes", path.stat().st_size)
            if _is_measured(device) and origin is None:
                # The graph of the shipped file does not change with training: measured once, at rung 0.
                stage("measure quantized")
                lat = _measure_file(path, space, device, sched.latency_budget_s)
                if lat.get("median_ms") is not None:
                    lat["label"] = f"{lat.get('label', 'measured')} (the shipped {pplan.label} file)"
                    trial.set_user_attr("latency", lat)
                    trial.set_user_attr("latency_label", lat["label"])
                    trial.set_user_attr("latency_ms", float(lat["median_ms"]))
                    figures["latency_ms"] = float(lat["median_ms"])
        stage("save weights")
        weights = work / "weights.pt"
        torch.save({"state_dict": model.state_dict(), "candidate": cand.to_dict(), "seed": seed}, weights)
        optuna = _optuna()
        store = optuna.artifacts.FileSystemArtifactStore(str(ctx.artifact_dir))
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(weights), study_or_trial=trial.trial, mimetype="application/x-pytorch"
        )
        trial.set_user_attr("artifact_id", artifact_id)

    trial.set_user_attr("val_accuracy", val_accuracy)
    trial.set_user_attr("accuracy_by_precision", accuracy_by_precision)
    trial.set_user_attr("accuracy_source", accuracy_source)
    trial.set_user_attr("wall_seconds", time.monotonic() - t_start)
    trial.flush()
    return _values_for(ctx, {**figures, "val_accuracy": val_accuracy})


def _finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------------------------
# Up-front checks: reference point and impossible constraints
# ---------------------------------------------------------------------------------------------


def _reference_point(ctx: _Context, given: Mapping[str, float] | None) -> dict[str, float]:
    ref: dict[str, float] = {}
    given = dict(given or {})
    for o in ctx.objectives:
        key = o.attr
        for alias in (o.name, o.attr):
            if alias in given:
                ref[key] = float(given[alias])
    if all(o.attr in ref for o in ctx.objectives):
        return ref
    ref.setdefault("val_accuracy", 0.0)
    limits = {
        "latency_ms": ctx.constraints.max_latency_ms,
        "peak_activation_bytes": ctx.constraints.max_ram_bytes,
        "weight_bytes": ctx.constraints.max_storage_bytes,
    }
    missing = [o.attr for o in ctx.objectives if o.attr not in ref and limits.get(o.attr) is None]
    for o in ctx.objectives:
        if o.attr not in ref and limits.get(o.attr) is not None:
            ref[o.attr] = float(limits[o.attr])  # type: ignore[arg-type]
    if missing:
        # The largest candidate at every precision the device can run: int8 is not always the
        # fastest (QDQ overhead dominates tiny models on x86), so take the worst figure of all.
        space = ctx.space
        precs = [p for p in space.precision_choices if _choice_supported(space, p, ctx.device)] or list(
            space.precision_choices
        )
        ch, size, _ = _input_spec(space)
        worst: dict[str, float] = {}
        last: dict[str, Any] = {}
        for prec in precs:
            cand = _extreme_candidate(space, largest=True, precision=prec)
            model = _build(space, cand)
            last = _profile(
                model,
                (1, ch, size, size),
                ctx.device,
                _plan(space, cand),
                measure="latency_ms" in missing,
                time_budget_s=ctx.schedule.latency_budget_s,
            )
            for attr in missing:
                if last.get(attr) is not None:
                    worst[attr] = max(worst.get(attr, 0.0), float(last[attr]))
        for attr in missing:
            v = worst.get(attr)
            if v is None or not v > 0:
                raise StudyError(
                    f"cannot set the hypervolume reference for {attr}: the largest candidate has no {attr} "
                    f"(latency_source {last.get('latency_source')}); pass reference_point={{{attr!r}: ...}}"
                )
            # Twice the largest candidate's figure: every candidate counts, with room for noise.
            ref[attr] = 2.0 * v
    return ref


def reference_point_for(
    space_or_recipe: Any,
    *,
    device: Any = "host",
    objectives: str | Sequence[str] = ("accuracy", "latency"),
    constraints: Constraints | Mapping[str, Any] | None = None,
    latency_budget_s: float = 1.0,
) -> dict[str, float]:
    """The hypervolume reference point ``tune`` would fix for a new study (see :mod:`hwtune.front`).

    Useful to compare several studies (methods, seeds) against one reference.
    """
    from hwtune.device import load_profile

    space, _ = _resolve_space(space_or_recipe)
    ctx = _Context(
        space=space,
        device=load_profile(device),
        data=None,
        objectives=resolve_objectives(objectives),
        constraints=Constraints.coerce(constraints),
        schedule=Schedule(latency_budget_s=latency_budget_s),
        reference={},
        artifact_dir=Path("."),
        seed=None,
        dists={},
    )
    return _reference_point(ctx, None)


def _check_feasible_at_all(ctx: _Context) -> None:
    """Raise ConfigError when no candidate can meet the hard limits (detected cheaply up front)."""
    space, device, cons = ctx.space, ctx.device, ctx.constraints
    supported = [p for p in space.precision_choices if _choice_supported(space, p, device)]
    if not supported:
        raise ConfigError(
            f"device {device.id} supports precisions {', '.join(device.precisions)} but the search space offers "
            f"only {', '.join(space.precision_choices)}: no candidate can run there"
        )
    ram = min(x for x in (cons.max_ram_bytes, device.ram_bytes) if x)
    storage = min(x for x in (cons.max_storage_bytes, device.storage_bytes) if x)
    ch, size, _ = _input_spec(space)
    problems: list[str] = []
    best: dict[str, float] = {}
    for prec in supported:
        cand = _extreme_candidate(space, largest=False, precision=prec)
        model = _build(space, cand)
        measure = cons.max_latency_ms is not None
        prof = _profile(
            model,
            (1, ch, size, size),
            device,
            _plan(space, cand),
            measure=measure,
            time_budget_s=ctx.schedule.latency_budget_s,
        )
        for k in ("peak_activation_bytes", "weight_bytes", "latency_ms"):
            if prof.get(k) is not None:
                best[k] = min(best.get(k, math.inf), float(prof[k]))
    smallest = _extreme_candidate(space, largest=False, precision=supported[0])
    desc = getattr(smallest, "label", smallest.key)
    if best.get("peak_activation_bytes", 0) > ram:
        problems.append(
            f"max RAM {ram / 1024:g} KiB is below the smallest candidate's peak activations "
            f"({best['peak_activation_bytes'] / 1024:.1f} KiB; {desc})"
        )
    if best.get("weight_bytes", 0) > storage:
        problems.append(
            f"max storage {storage / 1024:g} KiB is below the smallest candidate's weights "
            f"({best['weight_bytes'] / 1024:.1f} KiB; {desc})"
        )
    # Latency is noisy: only call a limit impossible when even the smallest candidate is 2x over it.
    if cons.max_latency_ms is not None and best.get("latency_ms", 0) > 2 * cons.max_latency_ms:
        problems.append(
            f"max latency {cons.max_latency_ms:g} ms is far below the smallest candidate's "
            f"{best['latency_ms']:.3g} ms on {device.id}"
        )
    if problems:
        raise ConfigError("impossible constraints: " + "; ".join(problems))


def _choice_supported(space: SearchSpace, precision: str, device: DeviceProfile) -> bool:
    try:
        cand = _extreme_candidate(space, largest=False, precision=precision)
    except HwtuneError:
        return False
    precs = [p for _, p in cand.stage_precision] or [precision]
    return all(device.supports(p) for p in precs)


# ---------------------------------------------------------------------------------------------
# Resume helpers
# ---------------------------------------------------------------------------------------------


def _recover_stale(study: Any, log: Callable[[str], None]) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone, and re-queue their candidates."""
    optuna = _optuna()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = _attrs(t).get("worker")
        if worker:
            if _worker_alive(worker) is not False:
                continue
        else:
            # Killed between creating the trial and recording its worker: only an old one is surely dead.
            started = t.datetime_start
            if started is None or (datetime.now() - started).total_seconds() < STALE_UNKNOWN_WORKER_S:
                continue
        with contextlib.suppress(Exception):
            study._storage.set_trial_user_attr(
                t._trial_id,
                "failure",
                "the worker process ended (killed?) while the trial was running; "
                "marked failed on resume and its candidate re-queued",
            )
        try:
            ok = study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another process failed it first (UpdateFinishedTrialError)
            ok = False
        if ok:
            failed.append(t.number)
            _requeue(study, t)
    if failed:
        log(
            f"resume: trial(s) {', '.join(map(str, failed))} were left running by a killed process; "
            "marked failed, candidates re-queued"
        )
    return failed


def _check_meta(stored: Mapping[str, Any], new: Mapping[str, Any], study_name: str) -> None:
    problems = []
    for key in ("objectives", "constraints", "budget"):
        old, cur = _jsonable(stored.get(key)), _jsonable(new.get(key))
        if old == cur:
            continue
        if isinstance(old, dict) and isinstance(cur, dict):
            for k in sorted(set(old) | set(cur)):
                if old.get(k) != cur.get(k):
                    problems.append(f"{key}.{k} {old.get(k)!r} (stored) != {cur.get(k)!r} (now)")
        else:
            problems.append(f"{key} {old} (stored) != {cur} (now)")
    if stored.get("device", {}).get("id") != new.get("device", {}).get("id"):
        problems.append(f"device {stored.get('device', {}).get('id')!r} (stored) != {new['device']['id']!r} (now)")
    if _jsonable(stored.get("recipe", {}).get("space")) != _jsonable(new.get("recipe", {}).get("space")):
        problems.append(
            f"search space of recipe {stored.get('recipe', {}).get('name')!r} differs from {new['recipe']['name']!r}"
        )
    sd, nd = stored.get("data") or {}, new.get("data") or {}
    if sd.get("load") != nd.get("load") or sd.get("sizes") != nd.get("sizes"):
        problems.append(
            f"data {sd.get('load') or sd.get('sizes')} (stored) != {nd.get('load') or nd.get('sizes')} (now)"
        )
    if problems:
        raise StudyError(
            f"study {study_name!r} exists with different settings ({'; '.join(problems)}); "
            "use another --study name or the same settings to resume"
        )


# ---------------------------------------------------------------------------------------------
# tune()
# ---------------------------------------------------------------------------------------------


def _default_study_name(recipe_name: str, device_id: str) -> str:
    return f"{Path(recipe_name).stem}-{device_id}"


def tune(
    space_or_recipe: Any,
    *,
    device: Any = "host",
    data: Any = None,
    objectives: str | Sequence[str] = ("accuracy", "latency"),
    constraints: Constraints | Mapping[str, Any] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | Path | None = None,
    study_name: str | None = None,
    sampler: str = "nsga2",
    seed: int | None = None,
    budget: Schedule | Mapping[str, Any] | float | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    reference_point: Mapping[str, float] | None = None,
    population_size: int = 10,
    reports: bool = True,
    threads: int | None = None,
) -> TuneResult:
    """Search ``space_or_recipe`` for the accuracy/latency(/memory) Pareto front on ``device``.

    Args:
        space_or_recipe: A :class:`~hwtune.space.SearchSpace`, a recipe name (``"fashion-convnet"``)
            or a recipe path.
        device: A device profile id, path or :class:`~hwtune.device.DeviceProfile`.
        data: ``None`` (the recipe's dataset), a dataset name or directory, a mapping of
            :func:`hwtune.data.load_dataset` arguments (``{"name": "fashion-mnist", "train_limit": 5000}``)
            or a :class:`~hwtune.data.DataSplits`. Names and mappings are stored with the study so
            ``hwtune export`` can reload the same splits.
        objectives: ``"accuracy"`` plus one or more of ``"latency"``, ``"memory"`` (peak activation
            bytes), ``"size"`` (weight bytes).
        constraints: Hard limits: ``{"max_latency_ms": 2.0, "max_ram_kb": 256, "max_storage_kb": 1024}``
            (or ``*_bytes``). The device's RAM/storage and precisions always apply.
        n_trials: Target number of completed trials **in the study** (a resumed run continues up to
            it). Default 20 when neither ``n_trials`` nor ``timeout`` is given.
        timeout: Wall-clock seconds for this run (a trial in flight finishes first).
        storage: Optuna storage URL; default ``sqlite:///<out_dir>/study.db``.
        study_name: Default ``<recipe>-<device>``. An existing study of that name is resumed.
        sampler: ``"nsga2"`` (default), ``"tpe"``, ``"gp"`` or ``"random"``.
        seed: Seeds the sampler and the training of every candidate.
        budget: A :class:`Schedule`, a mapping of its fields, or full-budget epochs (float).
        out_dir: Run directory (study.db, artifacts/, reports). Default ``hwtune-runs/<study_name>``.
        progress: Show a progress bar and print the front at the end.
        reference_point: Hypervolume reference per objective (``{"latency_ms": 5.0}``); default
            derived once per study (see :mod:`hwtune.front`).
        population_size: NSGA-II population (and startup trials of TPE/GP).
        reports: Write ``front.json``, ``pareto.png``, ``hypervolume.png`` and ``report.md`` to ``out_dir``.
        threads: Torch threads for training (default: unchanged). Latency is measured with the
            device profile's thread count.

    Returns:
        A :class:`TuneResult`; ``result.front``, ``result.knee``, ``result.front_table()``.

    Raises:
        ConfigError: bad arguments or constraints no candidate can meet.
        UnknownNameError: unknown recipe, device or dataset.
        StudyError: bad storage URL or a study of that name with other settings.

    Example:
        >>> import hwtune
        >>> result = hwtune.tune("fashion-convnet", device="host", n_trials=8)  # doctest: +SKIP
        >>> print(result.front_table())  # doctest: +SKIP
    """
    from hwtune.device import load_profile

    # --- validate everything cheap first (all before touching storage or data) ---
    space, recipe_info = _resolve_space(space_or_recipe)
    profile = load_profile(device)
    objs = resolve_objectives(objectives)
    cons = Constraints.coerce(constraints)
    budget_given = budget is not None
    if budget is None:
        train_spec = getattr(space, "train", None)
        budget = Schedule(
            epochs=float(getattr(train_spec, "epochs", 1.0)), batch_size=int(getattr(train_spec, "batch_size", 128))
        )
    sched = Schedule.coerce(budget)
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}{did_you_mean(sampler, SAMPLERS)}"
        )
    problems = []
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        problems.append(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        problems.append(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"seed must be an integer, got {seed!r}")
    if problems:
        raise ConfigError("\n".join(problems))
    if n_trials is None and timeout is None:
        n_trials = DEFAULT_N_TRIALS
    study_name = study_name or _default_study_name(recipe_info["name"], profile.id)
    out = Path(out_dir) if out_dir is not None else (None if storage is not None else Path("hwtune-runs") / study_name)
    url = _storage_url(storage, out)
    if out is None:
        # A remote storage without out_dir: artifacts and reports still need a local home.
        out = Path("hwtune-runs") / study_name
    out = out.resolve()

    log = _make_log(progress)
    optuna = _optuna()
    st = open_storage(url)
    data_load, splits = _data_spec(data, space)
    with _quiet_optuna():
        study = optuna.create_study(
            storage=st,
            study_name=study_name,
            load_if_exists=True,
            directions=[o.direction for o in objs],
        )
    stored_meta = study.user_attrs.get(_META_KEY)
    if stored_meta is not None and [d.name.lower() for d in study.directions] != [o.direction for o in objs]:
        raise StudyError(
            f"study {study_name!r} exists with different settings (objectives "
            f"{stored_meta.get('objectives')} (stored) != {[o.name for o in objs]} (now)); use another "
            "--study name or the same settings to resume"
        )

    if splits is None:
        splits = load_data(data_load)  # type: ignore[arg-type]
    data_meta = {"load": data_load, "sizes": splits.to_dict().get("sizes"), "info": _jsonable(splits.to_dict())}

    meta_new = {
        "schema_version": SCHEMA_VERSION,
        "recipe": recipe_info,
        "device": _jsonable(profile.to_dict()),
        "objectives": [o.name for o in objs],
        "constraints": cons.to_dict(),
        "budget": sched.to_dict(),
        "data": data_meta,
        "storage": url,
        "out_dir": str(out),
        "artifact_dir": str(out / "artifacts"),
        "created": datetime.now().isoformat(),
        "versions": _versions(),
    }
    if stored_meta is not None:
        if not budget_given and stored_meta.get("budget"):
            # Resuming without an explicit budget continues with the study's own schedule.
            sched = Schedule.from_dict(stored_meta["budget"])
            meta_new["budget"] = sched.to_dict()
        _check_meta(stored_meta, meta_new, study_name)

    artifact_dir = Path(stored_meta["artifact_dir"]) if stored_meta else out / "artifacts"
    artifact_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(
        space=space,
        device=profile,
        data=splits,
        objectives=objs,
        constraints=cons,
        schedule=sched,
        reference={},
        artifact_dir=artifact_dir,
        seed=seed,
        dists=_distributions(space),
        log=log,
        threads=threads,
    )

    if stored_meta is None:
        _check_feasible_at_all(ctx)
        ctx.reference = _reference_point(ctx, reference_point)
        meta_new["reference_point"] = ctx.reference
        meta_new["sampler"] = sampler
        meta_new["seed"] = seed
        study.set_user_attr(_META_KEY, _jsonable(meta_new))
        log(
            f"study {study_name!r}: {space.family} space of {_space_size(space)} candidates on {profile.id} "
            f"({'measured' if _is_measured(profile) else 'predicted'} latency); storage {url}"
        )
    else:
        ctx.reference = {k: float(v) for k, v in stored_meta["reference_point"].items()}
        n_done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        log(f"resuming study {study_name!r}: {n_done} completed trial(s) kept; storage {url}")
        _recover_stale(study, log)

    completed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    # Re-seed on resume so a seeded sampler does not replay the suggestions the study already has.
    sampler_seed = None if seed is None else seed + len(study.trials)
    study.sampler = _make_sampler(sampler, sampler_seed, population_size)

    interrupted = False
    if n_trials is None or completed < n_trials:
        interrupted = _run(study, ctx, n_trials, timeout, progress)
    elif progress:
        log(f"study {study_name!r} already has {completed} completed trial(s) (target {n_trials}); nothing to run")

    result = _result_from_study(study, interrupted=interrupted)
    if reports:
        from hwtune.report import write_reports

        try:
            paths = write_reports(result, out)
            if progress:
                log(f"reports: {', '.join(str(p) for p in paths.values())}")
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the search
            log(f"warning: could not write reports: {_reason(exc)}")
    if progress:
        _print_summary(result, log)
    return result


def _space_size(space: SearchSpace) -> str:
    try:
        return str(space.size())
    except Exception:  # noqa: BLE001
        return "?"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("hwtune", "torch", "onnxruntime", "onnx", "optuna", "numpy"):
        with contextlib.suppress(Exception):
            out[pkg] = metadata.version(pkg)
    if "hwtune" not in out:
        from hwtune._version import __version__

        out["hwtune"] = __version__
    return out


def _make_log(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not progress:
            return
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except ImportError:  # pragma: no cover
            print(msg, file=sys.stderr)

    return log


def _print_summary(result: TuneResult, log: Callable[[str], None]) -> None:
    c = result.counts()
    head = (
        f"{'interrupted: ' if result.interrupted else ''}{c['complete']} complete trial(s) "
        f"({c['trained']} trained, {c['infeasible']} infeasible, {c['duplicates']} repeats), "
        f"{c['failed']} failed; front of {len(result.front)}, hypervolume {result.hypervolume:.4f}"
    )
    log(head)
    print(result.front_table())


def _run(study: Any, ctx: _Context, target: int | None, timeout: float | None, progress: bool) -> bool:
    """Run trials until ``target`` completed trials are in the study (or the timeout, or a stop).

    Failed trials do not count towards the target, so the loop goes on after a failure; a run
    makes at most ``2 * missing + 10`` attempts so a space where everything fails still ends.
    Returns True when interrupted by Ctrl-C.
    """
    optuna = _optuna()
    complete = optuna.trial.TrialState.COMPLETE

    def n_complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(complete,)))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=target,
            initial=n_complete() if target else 0,
            desc="trials",
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
        )
    space_size = None
    with contextlib.suppress(Exception):
        space_size = int(ctx.space.size())

    def stop(reason: str) -> None:
        if ctx.stop_reason is None:
            ctx.stop_reason = reason
            ctx.log(f"stopping: {reason}")
        study.stop()

    def callback(study: Any, frozen: Any) -> None:
        ctx.attempts += 1
        rec = _record(frozen)
        if rec.state == "fail":
            ctx.failures.append(str(rec.failure))
            ctx.log(f"trial {rec.number} failed: {rec.failure}")
            tail = ctx.failures[-MAX_CONSECUTIVE_SAME_FAILURES:]
            if len(tail) == MAX_CONSECUTIVE_SAME_FAILURES and len(set(tail)) == 1:
                stop(f"the last {MAX_CONSECUTIVE_SAME_FAILURES} trials all failed with: {tail[0]}")
        else:
            ctx.failures.clear()
            if rec.state == "complete" and not rec.feasible and rec.duplicate_of is None:
                ctx.log(
                    f"trial {rec.number} infeasible (not trained): {'; '.join(rec.figures.get('infeasible') or [])}"
                )
        for origin, rung in _promote_pending(study, ctx):
            ctx.log(f"trial {origin} promoted to rung {rung} ({ctx.schedule.rung_epochs[rung]:g} epochs): queued")
        records = [_record(t) for t in study.get_trials(deepcopy=False)]
        if bar is not None:
            front = pareto_front(records, ctx.objectives, ctx.reference)
            hv = hypervolume(records, ctx.objectives, ctx.reference)
            if rec.state == "complete":
                bar.update(1)
            bar.set_postfix_str(f"front={len(front)} hv={hv:.4f} last=#{rec.number} {rec.state}")
        if ctx.consecutive_duplicates >= MAX_CONSECUTIVE_DUPLICATES:
            stop(
                f"the sampler proposed {MAX_CONSECUTIVE_DUPLICATES} already-evaluated candidates in a row "
                "(converged or space nearly exhausted)"
            )
        if space_size is not None and not any(r.state == "waiting" for r in records):
            keys = {r.candidate_key for r in records if r.state == "complete"}
            if len(keys) >= space_size:
                stop(f"all {space_size} candidates of the space are evaluated")

    deadline = None if timeout is None else time.monotonic() + timeout
    ctx.deadline = deadline
    for origin, rung in _promote_pending(study, ctx):  # promotions left pending by an earlier run
        ctx.log(f"trial {origin} promoted to rung {rung}: queued")
    max_attempts = None if target is None else 2 * max(0, target - n_complete()) + 10
    interrupted = False
    try:
        with _quiet_optuna():
            while ctx.stop_reason is None:
                missing = None if target is None else target - n_complete()
                if missing is not None and missing <= 0:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                budget = None
                if max_attempts is not None:
                    budget = min(missing, max_attempts - ctx.attempts)  # type: ignore[type-var]
                    if budget <= 0:
                        ctx.log(
                            f"stopping: {ctx.attempts} attempts made, {missing} trial(s) short of {target} "
                            "(too many failures)"
                        )
                        break
                study.optimize(
                    _objective(ctx, study), n_trials=budget, timeout=left, catch=(_TrialFailed,), callbacks=[callback]
                )
                if target is None:
                    break  # timeout-only run: optimize returned because time is up or a stop
    except KeyboardInterrupt:
        interrupted = True
        ctx.log("interrupted: finished trials are saved; the interrupted candidate will be retried on resume")
        # The interrupted trial is already FAIL (Optuna marks it); queue its candidate for the next run.
        with contextlib.suppress(Exception):
            last = study.trials[-1]
            if last.state.name == "FAIL":
                _requeue(study, last)
    finally:
        if bar is not None:
            bar.close()
    return interrupted


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ += ["constraint_values", "download_weights", "load_data", "reference_point_for", "sha256_file"]
