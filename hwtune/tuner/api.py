"""``tune()``: validate everything cheap, open (or resume) the study, run trials, write reports."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import check_writable_dir
from hwtune._tempdirs import remove_stale
from hwtune._util import is_int, is_num, jsonable, versions
from hwtune.errors import ConfigError, StudyError
from hwtune.front import TuneResult, resolve_objectives
from hwtune.records import StudyMeta
from hwtune.tuner.artifacts import location_for_run, parse_location, redact_url, sqlite_dir
from hwtune.tuner.config import DEFAULT_N_TRIALS, Constraints, Schedule, Strategy
from hwtune.tuner.constraints import check_feasible_at_all
from hwtune.tuner.context import SearchContext
from hwtune.tuner.halving import Coordination
from hwtune.tuner.inherit import DEFAULT_PARENT_EPOCHS, InheritPipeline, choose_strategy, obtain_parent, parent_key
from hwtune.tuner.inputs import (
    check_data_fits,
    check_meta,
    check_study_name,
    data_spec,
    default_study_name,
    distributions,
    load_data,
    resolve_space,
    run_dir,
    sampler_params,
    space_from_info,
    space_size,
)
from hwtune.tuner.loop import make_log, print_summary, run_trials
from hwtune.tuner.objective import failure_reason
from hwtune.tuner.pipeline import CandidatePipeline
from hwtune.tuner.reference import reference_point as compute_reference_point
from hwtune.tuner.samplers import check_sampler, make_sampler, sampler_name
from hwtune.tuner.storage import (
    META_KEY,
    TARGET_KEY,
    create_or_load_study,
    fresh_trials,
    open_storage,
    optuna_module,
    quiet_optuna,
    recover_stale,
    register_worker,
    result_from_study,
    storage_url,
    study_lock,
    study_meta,
)
from hwtune.tuner.workers import check_local_workers, remeasure_front_alone, run_local_workers

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.device import DeviceProfile
    from hwtune.space import SearchSpace, SpaceLike

__all__ = ["PipelineFactory", "join_study", "tune"]

#: Builds the candidate pipeline for a (space, device): ``CandidatePipeline`` or a subclass of it.
PipelineFactory = Callable[..., CandidatePipeline]


def _check_run_args(n_trials: Any, timeout: Any, seed: Any, population_size: Any, workers: Any = 1) -> None:
    problems = []
    if not is_int(workers) or workers < 1:
        problems.append(f"workers must be an integer >= 1, got {workers!r}")
    if n_trials is not None and (not is_int(n_trials) or n_trials < 1):
        problems.append(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if timeout is not None and (not is_num(timeout) or timeout <= 0):
        problems.append(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if seed is not None and (not is_int(seed) or not 0 <= seed < 2**32):
        problems.append(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not is_int(population_size) or population_size < 2:
        problems.append(f"population_size must be an integer >= 2, got {population_size!r}")
    if problems:
        raise ConfigError("\n".join(problems))


def _store_source_model(source: Mapping[str, Any], store: Any) -> dict[str, Any]:
    """Keep the user's model (a ``torch.export`` archive) in the study's artifact store."""
    from hwtune.tuner.storage import upload_to_store

    rec = {k: v for k, v in source.items() if k != "archive"}
    if source.get("archive"):
        rec["artifact_id"] = upload_to_store(store, Path(str(source["archive"])))
    return rec


def _load_devices(device: Any) -> list[DeviceProfile]:
    """One profile, or several (a list, or ids joined by commas): the first is the primary device."""
    from hwtune.device import load_profile

    if isinstance(device, str) and "," in device:
        device = [d.strip() for d in device.split(",") if d.strip()]
    items = list(device) if isinstance(device, (list, tuple)) else [device]
    if not items:
        raise ConfigError("device: give at least one device profile")
    profiles = [load_profile(d) for d in items]
    ids = [p.id for p in profiles]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ConfigError(f"device: {', '.join(dups)} given more than once")
    return profiles


def _check_feasible_somewhere(
    space: SpaceLike,
    profiles: Sequence[DeviceProfile],
    cons: Constraints,
    pipe: CandidatePipeline,
    latency_budget_s: float,
    log: Callable[[str], None],
) -> None:
    """Raise when no candidate fits any device; warn about devices nothing fits."""
    problems: dict[str, ConfigError] = {}
    for p in profiles:
        try:
            check_feasible_at_all(space, p, cons, pipe, latency_budget_s)
        except ConfigError as exc:
            problems[p.id] = exc
    if len(problems) == len(profiles):
        if len(profiles) == 1:
            raise next(iter(problems.values()))
        raise ConfigError("; ".join(f"{d}: {e}" for d, e in problems.items()))
    for d, e in problems.items():
        log(f"warning: {d}: {e} (its front will be empty)")


def _schedule_for(space: SpaceLike, budget: Any) -> Schedule:
    if budget is None:
        train_spec = getattr(space, "train", None)
        return Schedule(
            epochs=float(getattr(train_spec, "epochs", 1.0)), batch_size=int(getattr(train_spec, "batch_size", 128))
        )
    return Schedule.coerce(budget)


def _open_study(st: Any, url: str, study_name: str, objectives: Sequence[Any]) -> tuple[Any, StudyMeta | None]:
    study = create_or_load_study(st, study_name, [o.direction for o in objectives])
    stored = study_meta(study)
    if stored is not None and [d.name.lower() for d in study.directions] != [o.direction for o in objectives]:
        raise StudyError(
            f"study {study_name!r} exists with different settings (objectives {stored.objectives} (stored) != "
            f"{[o.name for o in objectives]} (now)); use another --study name or the same settings to resume"
        )
    if not study.metric_names:
        with quiet_optuna():  # optuna-dashboard labels its axes with these (else "0" and "1")
            study.set_metric_names([o.attr for o in objectives])
    return study, stored


# Data options that say where files are (or may be downloaded), not which data: a worker on another
# machine passes its own; they never take part in "same settings" checks or the parent's cache key.
_DATA_LOCATION_KEYS = ("root", "download")
# The data itself given again on a joining machine (hwtune worker --data / --val-data).
_DATA_AGAIN_KEYS = ("name_or_path", "val_data")
# load_dataset options a worker takes from a study's stored settings.
_STORED_DATA_KEYS = (
    "name_or_path",
    "val_fraction",
    "seed",
    "train_limit",
    "val_limit",
    "test_limit",
    "image_size",
    "max_memory_bytes",
    "normalize",
    "val_data",
)


def _data_identity(load: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if load is None else {k: v for k, v in load.items() if k not in _DATA_LOCATION_KEYS}


def _comparable_load(load: Any) -> Any:
    """A data spec as compared on resume: a directory by its name only (a worker on another machine gives
    the same data again at its own path, ``hwtune worker --data DIR``)."""
    from hwtune.data import is_dataset_name

    if not isinstance(load, Mapping):
        return load
    out = _data_identity(load) or {}
    for key in ("name_or_path", "val_data"):
        value = out.get(key)
        if isinstance(value, str) and (not is_dataset_name(value) or os.sep in value):
            out[key] = Path(value).name
    return out


def _comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as compared on resume: data without its location options; the space dict rebuilt from
    the recipe text when only the text is stored."""
    out = dict(meta)
    data = dict(out.get("data") or {})
    data["load"] = _comparable_load(data.get("load"))
    out["data"] = data
    recipe = dict(out.get("recipe") or {})
    if recipe.get("space") is None and recipe.get("text"):
        with contextlib.suppress(Exception):  # unreadable text: check_meta reports the difference
            recipe["space"] = space_from_info(recipe).to_dict()
    out["recipe"] = recipe
    return out


def _compact_recipe(recipe_info: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The recipe as stored: name, origin and text (what export rebuilds the space from); the space
    dict only when the text does not rebuild an equal space (a space given as an object)."""
    info = dict(recipe_info)
    space_dict = info.get("space")
    if info.get("text") and not (isinstance(space_dict, Mapping) and space_dict.get("kind") == "compress"):
        try:
            same = space_from_info(info) == space
        except Exception:  # noqa: BLE001 - text that does not rebuild the space: keep the dict
            same = False
        if same:
            info.pop("space", None)
    return info


def _new_meta(
    recipe_info: Mapping[str, Any],
    profile: DeviceProfile,
    objectives: Sequence[Any],
    cons: Constraints,
    sched: Schedule,
    data_meta: Mapping[str, Any],
    url: str,
    out: Path,
    artifact_stored: str,
) -> dict[str, Any]:
    return {
        "recipe": dict(recipe_info),
        "device": jsonable(profile.to_dict()),
        "objectives": [o.name for o in objectives],
        "constraints": cons.to_dict(),
        "budget": sched.to_dict(),
        "data": dict(data_meta),
        "storage": url,
        "out_dir": str(out),
        "artifact_dir": artifact_stored,
        "created": datetime.now().isoformat(),
        "versions": versions(),
    }


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
    sampler: Any = "nsga2",
    seed: int | None = None,
    budget: Schedule | Mapping[str, Any] | float | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    reference_point: Mapping[str, float] | None = None,
    population_size: int = 10,
    reports: bool = True,
    threads: int | None = None,
    runtime: str | None = None,
    pipeline: PipelineFactory | None = None,
    strategy: str | Strategy | None = None,
    parent_epochs: float | None = None,
    artifacts: str | Path | None = None,
    workers: int = 1,
    val_data: Any = None,
    train_device: str | None = "auto",
    amp: str | None = None,
    start: Sequence[Mapping[str, Any]] = (),
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
        val_data: A held-out validation set (dataset name, directory, or torch dataset) that replaces
            the split carved from the training data: give it when the model or recipe was tuned on
            all of the training data, or model selection scores images it has seen.
        objectives: ``"accuracy"`` plus one or more of ``"latency"``, ``"memory"`` (peak activation
            bytes), ``"size"`` (weight bytes).
        constraints: Hard limits: ``{"max_latency_ms": 2.0, "max_ram_kb": 256, "max_storage_kb": 1024}``
            (or ``*_bytes``). The device's RAM/storage and precisions always apply.
        n_trials: Target number of completed trials **in the study**, whichever worker ran them (a
            resumed run continues up to it; each worker stops once the study has them, a trial in
            flight finishes). Default 20 when neither ``n_trials`` nor ``timeout`` is given.
        timeout: Wall-clock seconds for this call (per worker), a parent's training included (a
            trial in flight finishes first).
        storage: Optuna storage URL; default ``sqlite:///<out_dir>/study.db``.
        study_name: Default ``<recipe>-<device>``. An existing study of that name is resumed.
        sampler: ``"nsga2"`` (default), ``"tpe"``, ``"gp"``, ``"random"``, or any
            ``optuna.samplers.BaseSampler`` instance (used as given; ``seed`` does not reseed it).
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
        runtime: Runtime candidates are shipped to and scored on (default: the device profile's,
            ONNX Runtime when that one is not installed here).
        pipeline: A :class:`~hwtune.tuner.CandidatePipeline` subclass (or factory taking
            ``(space, device, runtime=...)``) to replace steps such as training.
        strategy: ``"inherit"`` (default for sliceable families: candidates are sub-networks of one
            parent trained once, scored in seconds, fine-tuned when promoted) or ``"scratch"`` (every
            candidate trained from its own initialization), or a :class:`~hwtune.tuner.Strategy` with
            its settings. A resumed study keeps its strategy.
        parent_epochs: Epochs of the parent's training (``inherit``; default the recipe's
            ``[parent] epochs``, else 3); replaces ``strategy.parent_epochs``.
        artifacts: The study's artifact store: a directory every worker sees, or
            ``s3://bucket/prefix`` (extra ``hwtune[s3]``). Default for SQLite: ``artifacts/`` next to the
            study file (stored relative to it, so the run directory can move); required for a server
            storage (PostgreSQL). Recorded in the study; workers joining later use it.
        workers: Local worker processes sharing the study (``hwtune worker`` each); latency measured
            while they share the CPU is labelled so, and the front is measured again alone at the
            end. ``pipeline`` must then be an importable class and ``data`` a name or mapping.
        train_device: Where candidates (and the parent) train: ``auto`` (CUDA, else MPS, else CPU),
            ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:func:`hwtune.engine.resolve_device`); each
            trial records it. Shipped models are exported, quantized and scored on the CPU still.
        amp: Mixed precision of training (``auto``: bf16/fp16 on accelerators, off on the CPU;
            ``bf16``, ``fp16``, ``off``).
        start: Candidates the search evaluates first, before its sampler's own (a seeded start), as
            parameter dicts (``space.params_of(candidate)``); queued when the study is created, not
            when it is resumed (as ``compress`` starts with the user's model and uniform pruning;
            ``hwtune demo`` starts with the space's capacity frontier, :mod:`hwtune.capacity`).

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
    t_call = time.monotonic()  # the timeout covers the whole call (a parent's training included)
    _check_run_args(n_trials, timeout, seed, population_size, workers)
    if n_trials is None and timeout is None:
        n_trials = DEFAULT_N_TRIALS
    run = _plan_run(
        space_or_recipe, device=device, data=data, val_data=val_data, objectives=objectives,
        constraints=constraints, budget=budget, strategy=Strategy.coerce(strategy, parent_epochs=parent_epochs),
        sampler=sampler, study_name=study_name, out_dir=out_dir, storage=storage, artifacts=artifacts,
        workers=workers, pipeline=pipeline, train_device=train_device, amp=amp, start=start,
    )  # fmt: skip
    log = make_log(progress)
    st = open_storage(run.url)
    study, stored = _open_study(st, run.url, run.study_name, run.objectives)
    # One worker at a time creates the study's settings; the others wait here, then find them.
    with study_lock(run.url, run.study_name) if stored is None else contextlib.nullcontext():
        if stored is None:
            stored = study_meta(study)
        ctx, store = _prepare_study(
            study, stored, run, pipeline=pipeline, runtime=runtime, artifacts=artifacts, seed=seed, threads=threads,
            log=log, reference_point=reference_point, sampler=sampler,
        )  # fmt: skip
        if n_trials is not None and study.user_attrs.get(TARGET_KEY) != n_trials:
            study.set_user_attr(TARGET_KEY, int(n_trials))  # workers joining later aim for the same
    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - t_call))
    if workers > 1:
        interrupted = _run_local_workers(
            study, ctx, run.url, store, workers, n_trials, left, artifacts, run.pipeline_ref, progress
        )
    else:
        interrupted = _run_here(study, ctx, run.url, store, n_trials, left, sampler, seed, population_size, progress)
    return _finish(result_from_study(study, interrupted=interrupted, url=run.url), run.out, reports, progress, log)


@dataclass
class _RunPlan:
    """What one ``tune()`` call works with, every part validated before any storage or data is touched."""

    space: Any
    recipe_info: dict[str, Any]
    profiles: list[DeviceProfile]
    objectives: Any
    constraints: Constraints
    schedule: Schedule
    budget_given: bool
    strategy: Strategy
    strategy_name: str
    study_name: str
    out: Path
    url: str
    data_load: Any
    splits: Any
    pipeline_ref: Any
    train_device: str | None
    amp: str | None
    start: tuple[dict[str, Any], ...] = ()


def _plan_run(
    space_or_recipe: Any,
    *,
    device: Any,
    data: Any,
    val_data: Any,
    objectives: Any,
    constraints: Any,
    budget: Any,
    strategy: Strategy,
    sampler: Any,
    study_name: str | None,
    out_dir: Any,
    storage: Any,
    artifacts: Any,
    workers: int,
    pipeline: Any,
    train_device: str | None,
    amp: str | None,
    start: Sequence[Mapping[str, Any]] = (),
) -> _RunPlan:
    """Validate everything cheap first: a bad argument fails before any storage is opened or data loaded."""
    from hwtune.engine import resolve_amp, resolve_device

    space, recipe_info = resolve_space(space_or_recipe)
    start_params = _start_params(space, start)
    profiles = _load_devices(device)
    objs = resolve_objectives(objectives)
    cons = Constraints.coerce(constraints)
    sched = _schedule_for(space, budget)
    check_sampler(sampler)
    resolve_amp(amp, resolve_device(train_device))  # a device this machine lacks fails before any work
    strategy_name = choose_strategy(space, strategy.name)  # validated before anything is opened
    remove_stale()  # work directories left by killed hwtune processes
    if study_name is not None:
        study_name = check_study_name(study_name)
    else:
        study_name = default_study_name(recipe_info["name"], "+".join(p.id for p in profiles))
    # The run directory (reports; artifacts and study.db by default) cannot leave hwtune-runs/ when
    # derived from the study name.
    out = run_dir(study_name, out_dir)
    url = storage_url(storage, out)
    data_load, splits = data_spec(data, space, val_data)
    if splits is None:
        splits = load_data(data_load)  # type: ignore[arg-type]
    check_data_fits(space, splits)  # before any storage is opened: a mismatch creates no study
    check_writable_dir(out, what=f"the run directory of study {study_name!r}")
    pipeline_ref = check_local_workers(workers, data_load, sampler, pipeline)
    if artifacts is not None:
        parse_location(artifacts, url)  # a malformed value fails before the study is opened
    return _RunPlan(
        space=space, recipe_info=recipe_info, profiles=profiles, objectives=objs, constraints=cons, schedule=sched,
        budget_given=budget is not None, strategy=strategy, strategy_name=strategy_name, study_name=study_name,
        out=out, url=url, data_load=data_load, splits=splits, pipeline_ref=pipeline_ref, train_device=train_device,
        amp=amp, start=start_params,
    )  # fmt: skip


def _start_params(space: Any, start: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """``tune(start=...)`` checked against the space: each a parameter dict of one of its candidates."""
    if isinstance(start, Mapping | str) or not isinstance(start, Sequence):
        raise ConfigError(f"start must be a list of parameter dicts, got {type(start).__name__}")
    out = []
    for i, params in enumerate(start):
        if not isinstance(params, Mapping):
            raise ConfigError(f"start[{i}] must be a parameter dict, got {type(params).__name__}")
        try:
            out.append(sampler_params(space, space.candidate(params)))
        except ConfigError as exc:
            raise ConfigError(f"start[{i}]: {exc}") from None
    return tuple(out)


def _prepare_study(
    study: Any,
    stored: StudyMeta | None,
    run: _RunPlan,
    *,
    pipeline: PipelineFactory | None,
    runtime: str | None,
    artifacts: Any,
    seed: int | None,
    threads: int | None,
    log: Callable[[str], None],
    reference_point: Mapping[str, float] | None,
    sampler: Any,
) -> tuple[SearchContext, Any]:
    """The search context of this run and the artifact store, the study's settings created or checked."""
    location = location_for_run(stored.artifact_dir if stored else None, run.url, artifacts, run.study_name)
    strategy, sched = _run_settings(stored, run.strategy.name, run.strategy_name, run.schedule, run.budget_given)
    default_pipeline = InheritPipeline if strategy == "inherit" else CandidatePipeline
    space, profiles = run.space, run.profiles
    pipe = (pipeline or default_pipeline)(space, profiles[0], runtime=runtime)
    pipe.train_device, pipe.amp = run.train_device, run.amp
    splits = run.splits if run.splits is not None else load_data(run.data_load)
    data_meta = {"load": run.data_load, "sizes": splits.to_dict().get("sizes"), "info": jsonable(splits.to_dict())}
    meta_new = _new_meta(
        _compact_recipe(run.recipe_info, space), profiles[0], run.objectives, run.constraints, sched, data_meta,
        run.url, run.out, location.stored,
    )  # fmt: skip
    meta_new.update(_run_extras(profiles, strategy, runtime))
    if stored is not None:
        check_meta(_comparable(stored.to_dict()), _comparable(meta_new), run.study_name)
    store = location.store()
    ctx = SearchContext(
        space=space, device=profiles[0], data=splits, objectives=run.objectives, constraints=run.constraints,
        schedule=sched, reference={}, artifact_dir=location.path or run.out / "artifacts", seed=seed,
        dists=distributions(space), pipeline=pipe, log=log, threads=threads, devices=profiles,
    )  # fmt: skip
    source_model = run.strategy.source_model
    if source_model is not None and stored is None:
        meta_new["source_model"] = _store_source_model(source_model, store)
    elif stored is not None and stored.source_model:
        meta_new["source_model"] = stored.source_model
    if strategy == "inherit":
        _attach_parent(
            ctx, pipe, space, run.recipe_info, run.data_load, run.strategy.parent_epochs, stored, meta_new, store
        )
    if stored is None:
        _start_study(study, ctx, profiles, reference_point, meta_new, sampler, seed, run.url, run.start)
    else:
        _resume_study(study, ctx, stored, meta_new, strategy, run.url)
    return ctx, store


def _run_settings(
    stored: StudyMeta | None, strategy_arg: str | None, strategy: str, sched: Schedule, budget_given: bool
) -> tuple[str, Schedule]:
    """The strategy and schedule this run uses: a resumed study keeps its own unless the caller named them."""
    if stored is not None and strategy_arg is None:
        strategy = stored.strategy or "scratch"
    if strategy in ("inherit", "compress") and not sched.zero_rung:
        sched = Schedule.from_dict({**sched.to_dict(), "zero_rung": True})
    if stored is not None and not budget_given and stored.budget:
        sched = Schedule.from_dict(stored.budget)  # resuming without a budget keeps the study's own
    return strategy, sched


def _run_extras(profiles: Sequence[DeviceProfile], strategy: str, runtime: str | None) -> dict[str, Any]:
    """Study settings beyond the basics: every device (several), the strategy, a runtime the caller chose."""
    extras: dict[str, Any] = {"strategy": strategy}
    if len(profiles) > 1:
        extras["devices"] = [jsonable(p.to_dict()) for p in profiles]
    if runtime is not None:
        extras["runtime"] = str(runtime)
    return extras


def _attach_parent(
    ctx: SearchContext,
    pipe: Any,
    space: SearchSpace,
    recipe_info: Mapping[str, Any],
    data_load: Mapping[str, Any] | None,
    parent_epochs: float | None,
    stored: StudyMeta | None,
    meta_new: dict[str, Any],
    store: Any,
) -> None:
    """Strategy ``inherit``: the trained parent (from the study, the cache, or trained now)."""
    seed = int(ctx.seed or 0)
    epochs = float(parent_epochs or (space.parent.epochs if space.parent else DEFAULT_PARENT_EPOCHS))
    key = parent_key(recipe_info["space"], _data_identity(data_load), epochs, seed)
    pipe.parent, meta_new["parent"] = obtain_parent(
        space,
        ctx.data,
        key=key,
        epochs=epochs,
        batch_size=space.parent.batch_size if space.parent else ctx.schedule.batch_size,
        seed=seed,
        artifact_store=store,
        stored=stored.parent if stored is not None else None,
        threads=ctx.threads,
        log=ctx.log,
        train_device=getattr(pipe, "train_device", None),
        amp=getattr(pipe, "amp", None),
    )


def _start_study(
    study: Any,
    ctx: SearchContext,
    profiles: Sequence[DeviceProfile],
    reference_point: Mapping[str, float] | None,
    meta_new: dict[str, Any],
    sampler: Any,
    seed: int | None,
    url: str,
    start: Sequence[Mapping[str, Any]] = (),
) -> None:
    """A new study: check feasibility, fix the reference point, store the settings."""
    sched, objs, cons, pipe = ctx.schedule, ctx.objectives, ctx.constraints, ctx.pipeline
    _check_feasible_somewhere(ctx.space, profiles, cons, pipe, sched.latency_budget_s, ctx.log)
    refs = {
        p.id: compute_reference_point(
            pipe, objs, cons, reference_point, latency_budget_s=sched.latency_budget_s, device=p
        )
        for p in profiles
    }
    ctx.reference = refs[ctx.device.id]
    meta_new.update(reference_point=ctx.reference, sampler=sampler_name(sampler), seed=seed)
    if len(profiles) > 1:
        meta_new["reference_points"] = refs
    for params in getattr(ctx.space, "initial_params", list)():
        study.enqueue_trial(params)  # e.g. the user's unmodified model: the baseline row (compress)
    for params in start:
        study.enqueue_trial(params)  # the caller's seeded start
    study.set_user_attr(META_KEY, StudyMeta.from_dict(meta_new).to_dict())
    ctx.log(
        f"study {study.study_name!r}: {ctx.space.family} space of {space_size(ctx.space)} candidates on "
        f"{ctx.device.id} ({'measured' if ctx.measured else 'predicted'} latency); storage {redact_url(url)}"
    )


def _resume_study(
    study: Any, ctx: SearchContext, stored: StudyMeta, meta_new: Mapping[str, Any], strategy: str, url: str
) -> None:
    ctx.reference = {k: float(v) for k, v in (stored.reference_point or {}).items()}
    complete = optuna_module().trial.TrialState.COMPLETE
    n_done = len(fresh_trials(study, states=(complete,)))
    ctx.log(f"resuming study {study.study_name!r}: {n_done} completed trial(s) kept; storage {redact_url(url)}")
    recover_stale(study, ctx.log)
    if strategy == "inherit" and meta_new.get("parent") != stored.parent:
        # the parent was re-created (its artifact was missing): record where it is now
        study.set_user_attr(META_KEY, stored.updated(parent=meta_new["parent"]).to_dict())


def _n_complete(study: Any) -> int:
    complete = optuna_module().trial.TrialState.COMPLETE
    return len(fresh_trials(study, states=(complete,)))


def _run_here(
    study: Any,
    ctx: SearchContext,
    url: str,
    store: Any,
    n_trials: int | None,
    left: float | None,
    sampler: Any,
    seed: int | None,
    population_size: int,
    progress: bool,
) -> bool:
    """Run trials in this process (one worker of the study); returns True when interrupted."""
    completed = _n_complete(study)
    if n_trials is not None and completed >= n_trials:
        ctx.log(
            f"study {study.study_name!r} already has {completed} completed trial(s) (target {n_trials}); nothing to run"
        )
        return False
    # Every worker (and every resumed run) gets its own index: seeding the sampler with seed + index keeps
    # workers from proposing the same candidates and a resumed run from replaying the first one's.
    index = register_worker(study, url)
    study.sampler = make_sampler(sampler, None if seed is None else seed + index, population_size)
    coord = Coordination(url, study.study_name)
    return run_trials(study, ctx, n_trials, left, progress, store=store, coord=coord)


def _run_local_workers(
    study: Any,
    ctx: SearchContext,
    url: str,
    store: Any,
    workers: int,
    n_trials: int | None,
    left: float | None,
    artifacts: Any,
    pipeline_ref: str | None,
    progress: bool,
) -> bool:
    """``workers`` local processes on the study, then the front's latency measured again alone."""
    if n_trials is not None and _n_complete(study) >= n_trials:
        ctx.log(f"study {study.study_name!r} already has its {n_trials} completed trial(s); nothing to run")
        return False
    interrupted = run_local_workers(
        url,
        study.study_name,
        workers,
        n_trials=n_trials,
        timeout=left,
        artifacts=None if artifacts is None else str(artifacts),
        threads=ctx.threads if ctx.threads is not None else 1,
        pipeline_ref=pipeline_ref,
        train_device=getattr(ctx.pipeline, "train_device", None),
        amp=getattr(ctx.pipeline, "amp", None),
        progress=progress,
        log=ctx.log,
    )
    if not interrupted:
        remeasure_front_alone(study, ctx, store)
    return interrupted


def _finish(result: TuneResult, out: Path, reports: bool, progress: bool, log: Callable[[str], None]) -> TuneResult:
    if reports:
        from hwtune.report import write_reports

        try:
            paths = write_reports(result, out)
            if progress:
                log(f"reports: {', '.join(str(p) for p in paths.values())}")
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the search
            log(f"warning: could not write reports: {failure_reason(exc)}")
    if progress:
        print_summary(result, log)
    return result


def _stored_data(meta: StudyMeta, study_name: str, url: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The study's ``load_dataset`` options for a joining worker, without the stored ``root``/``download``
    (where files are, or whether to fetch them: the user of this machine says, in ``overrides``)."""
    load = (meta.data or {}).get("load")
    if not isinstance(load, Mapping) or not isinstance(load.get("name_or_path"), str):
        raise StudyError(
            f"study {study_name!r} was run on data given as loaded splits (no reloadable data spec): "
            "it cannot be joined by another worker"
        )
    unknown = sorted(k for k in load if k not in _STORED_DATA_KEYS and k not in _DATA_LOCATION_KEYS)
    if unknown:
        raise StudyError(f"study {study_name!r} settings: unknown data option(s) {', '.join(unknown)}")
    kw = {k: v for k, v in load.items() if k in _STORED_DATA_KEYS}
    from hwtune.data import is_dataset_name

    overrides = dict(overrides or {})
    for k in overrides:
        if k not in _DATA_LOCATION_KEYS and k not in _DATA_AGAIN_KEYS:
            raise ConfigError(
                f"data: only {', '.join(_DATA_LOCATION_KEYS + _DATA_AGAIN_KEYS)} can be given to a joining worker, "
                f"got {k!r}"
            )
    for key, option in (("name_or_path", "--data"), ("val_data", "--val-data")):
        name = kw.get(key)
        if overrides.get(key) is not None or not isinstance(name, str):
            continue  # given again by the user of this machine
        if not is_dataset_name(name) or os.sep in name:
            base = sqlite_dir(url)
            inside = base is not None and Path(name).expanduser().resolve().is_relative_to(base.resolve())
            if not inside:
                raise StudyError(
                    f"study {study_name!r} was run on data at {name[:200]!r} ({key}), outside its run directory; "
                    f"a study file does not choose what hwtune reads: give it again ({option} DIR)"
                )
    for k, v in overrides.items():
        if v is not None:
            kw[k] = str(v) if k in _DATA_AGAIN_KEYS else v
    return kw


def join_study(
    storage: str | Path,
    study_name: str | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    artifacts: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
    threads: int | None = None,
    pipeline: PipelineFactory | None = None,
    sampler: str | None = None,
    progress: bool = True,
    train_device: str | None = "auto",
    amp: str | None = None,
) -> TuneResult:
    """Run trials for an existing study with its stored settings (what ``hwtune worker`` does).

    The space, device(s), data, objectives, constraints, schedule, strategy, seed and artifact store
    come from the study (validated like user input). Stored data options ``root``/``download`` and
    artifact directories outside the SQLite study's directory are not obeyed: pass them again.

    Args:
        storage: The study's storage URL (or SQLite file).
        study_name: The study (optional when the storage holds one).
        n_trials: Target of complete trials in the study (default: the study's stored target).
        timeout: Seconds this worker runs at most.
        artifacts: The artifact store on this machine (a directory, or ``s3://...``); default the study's.
        data: ``{"root": DIR, "download": bool}``: where this machine has the dataset; and
            ``name_or_path`` / ``val_data``: the study's data (or held-out validation data) given again
            when it is a directory outside the run directory.
        threads: Torch threads for training.
        pipeline: A :class:`~hwtune.tuner.CandidatePipeline` subclass (as given to the study's ``tune``).
        sampler: A registered sampler name, when the study was created with a sampler instance.
        progress: Progress bar and log lines.
        train_device: Where this worker trains (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).
        amp: Mixed precision of its training (``auto``, ``bf16``, ``fp16``, ``off``).

    Raises:
        StudyError: no such study, or settings that cannot be read or joined.
        ConfigError: a stored artifact directory outside the run directory without ``artifacts``.

    Example:
        >>> hwtune.tuner.join_study("postgresql://tuner@db/hw", "fashion-convnet-host")  # doctest: +SKIP
    """
    from hwtune.device import DeviceProfile
    from hwtune.tuner.storage import load_study, study_target

    study, url = load_study(storage, study_name)
    meta = study_meta(study)
    assert meta is not None  # load_study refuses studies hwtune did not create
    name = study.study_name
    where = f"study {name!r} settings"
    try:
        space = space_from_info(meta.recipe or {})
        devices = [DeviceProfile.from_dict(d, source=f"{where}: device") for d in (meta.devices or [meta.device or {}])]
    except ConfigError as exc:
        raise StudyError(str(exc)) from exc
    runtime = meta.extra.get("runtime")
    return tune(
        space,
        device=devices,
        data=_stored_data(meta, name, url, data),
        objectives=list(meta.objectives or ("accuracy", "latency")),
        constraints=meta.constraints,
        n_trials=n_trials if n_trials is not None else study_target(study),
        timeout=timeout,
        storage=url,
        study_name=name,
        sampler=sampler or meta.sampler or "nsga2",
        seed=meta.seed,
        budget=meta.budget,
        progress=progress,
        reports=False,
        threads=threads,
        runtime=runtime if isinstance(runtime, str) else None,
        pipeline=pipeline,
        strategy=meta.strategy or "scratch",
        parent_epochs=(meta.parent or {}).get("epochs"),
        artifacts=artifacts,
        train_device=train_device,
        amp=amp,
    )
