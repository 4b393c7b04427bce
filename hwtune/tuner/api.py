"""``tune()``: validate everything cheap, open (or resume) the study, run trials, write reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._util import is_int, is_num, jsonable, versions
from hwtune.errors import ConfigError, StudyError
from hwtune.front import TuneResult, resolve_objectives
from hwtune.records import StudyMeta
from hwtune.tuner.config import DEFAULT_N_TRIALS, Constraints, Schedule
from hwtune.tuner.constraints import check_feasible_at_all
from hwtune.tuner.context import SearchContext
from hwtune.tuner.inherit import DEFAULT_PARENT_EPOCHS, InheritPipeline, choose_strategy, obtain_parent, parent_key
from hwtune.tuner.inputs import (
    check_meta,
    data_spec,
    default_study_name,
    distributions,
    load_data,
    resolve_space,
    space_size,
)
from hwtune.tuner.loop import make_log, print_summary, run_trials
from hwtune.tuner.objective import failure_reason
from hwtune.tuner.pipeline import CandidatePipeline
from hwtune.tuner.reference import reference_point as compute_reference_point
from hwtune.tuner.samplers import check_sampler, make_sampler, sampler_name
from hwtune.tuner.storage import (
    META_KEY,
    open_storage,
    optuna_module,
    quiet_optuna,
    recover_stale,
    result_from_study,
    storage_url,
    study_meta,
)

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.device import DeviceProfile
    from hwtune.space import SearchSpace

__all__ = ["PipelineFactory", "tune"]

#: Builds the candidate pipeline for a (space, device): ``CandidatePipeline`` or a subclass of it.
PipelineFactory = Callable[..., CandidatePipeline]


def _check_run_args(n_trials: Any, timeout: Any, seed: Any, population_size: Any) -> None:
    problems = []
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


def _store_source_model(source: Mapping[str, Any], artifact_dir: Path) -> dict[str, Any]:
    """Keep the user's model (a ``torch.export`` archive) in the study's artifact store."""
    from hwtune.tuner.storage import upload_to_store

    rec = {k: v for k, v in source.items() if k != "archive"}
    if source.get("archive"):
        rec["artifact_id"] = upload_to_store(artifact_dir, Path(str(source["archive"])))
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
    space: SearchSpace,
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


def _schedule_for(space: SearchSpace, budget: Any) -> Schedule:
    if budget is None:
        train_spec = getattr(space, "train", None)
        return Schedule(
            epochs=float(getattr(train_spec, "epochs", 1.0)), batch_size=int(getattr(train_spec, "batch_size", 128))
        )
    return Schedule.coerce(budget)


def _open_study(url: str, study_name: str, objectives: Sequence[Any]) -> tuple[Any, StudyMeta | None]:
    optuna = optuna_module()
    st = open_storage(url)
    with quiet_optuna():
        study = optuna.create_study(
            storage=st, study_name=study_name, load_if_exists=True, directions=[o.direction for o in objectives]
        )
    stored = study_meta(study)
    if stored is not None and [d.name.lower() for d in study.directions] != [o.direction for o in objectives]:
        raise StudyError(
            f"study {study_name!r} exists with different settings (objectives {stored.objectives} (stored) != "
            f"{[o.name for o in objectives]} (now)); use another --study name or the same settings to resume"
        )
    return study, stored


def _new_meta(
    recipe_info: Mapping[str, Any],
    profile: DeviceProfile,
    objectives: Sequence[Any],
    cons: Constraints,
    sched: Schedule,
    data_meta: Mapping[str, Any],
    url: str,
    out: Path,
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
        "artifact_dir": str(out / "artifacts"),
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
    strategy: str | None = None,
    parent_epochs: float | None = None,
    source_model: Mapping[str, Any] | None = None,
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
        timeout: Wall-clock seconds for this call, a parent's training included (a trial in flight
            finishes first).
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
            candidate trained from its own initialization). A resumed study keeps its strategy.
        parent_epochs: Epochs of the parent's training (``inherit``; default the recipe's
            ``[parent] epochs``, else 3).
        source_model: Set by :func:`hwtune.compress`: the user's model this study compresses
            (``sha256``, ``class``, ``source`` and ``archive``, a ``torch.export`` file stored with the study).

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
    # --- validate everything cheap first (all before touching storage or data) ---
    space, recipe_info = resolve_space(space_or_recipe)
    profiles = _load_devices(device)
    profile = profiles[0]
    objs = resolve_objectives(objectives)
    cons = Constraints.coerce(constraints)
    budget_given = budget is not None
    sched = _schedule_for(space, budget)
    strategy_arg = strategy
    check_sampler(sampler)
    _check_run_args(n_trials, timeout, seed, population_size)
    if parent_epochs is not None and (not is_num(parent_epochs) or parent_epochs <= 0):
        raise ConfigError(f"parent_epochs must be a number > 0, got {parent_epochs!r}")
    if n_trials is None and timeout is None:
        n_trials = DEFAULT_N_TRIALS
    strategy = choose_strategy(space, strategy)  # validated before anything is opened
    study_name = study_name or default_study_name(recipe_info["name"], "+".join(p.id for p in profiles))
    out = Path(out_dir) if out_dir is not None else (None if storage is not None else Path("hwtune-runs") / study_name)
    url = storage_url(storage, out)
    # A remote storage without out_dir: artifacts and reports still need a local home.
    out = (out if out is not None else Path("hwtune-runs") / study_name).resolve()

    log = make_log(progress)
    study, stored = _open_study(url, study_name, objs)
    if stored is not None and strategy_arg is None:
        strategy = stored.strategy or "scratch"  # a resumed study keeps its strategy
    if strategy in ("inherit", "compress") and not sched.zero_rung:
        sched = Schedule.from_dict({**sched.to_dict(), "zero_rung": True})
    default_pipeline = InheritPipeline if strategy == "inherit" else CandidatePipeline
    pipe = (pipeline or default_pipeline)(space, profile, runtime=runtime)
    data_load, splits = data_spec(data, space)
    if splits is None:
        splits = load_data(data_load)  # type: ignore[arg-type]
    data_meta = {"load": data_load, "sizes": splits.to_dict().get("sizes"), "info": jsonable(splits.to_dict())}
    meta_new = _new_meta(recipe_info, profile, objs, cons, sched, data_meta, url, out)
    if len(profiles) > 1:
        meta_new["devices"] = [jsonable(p.to_dict()) for p in profiles]
    meta_new["strategy"] = strategy
    if stored is not None:
        if not budget_given and stored.budget:
            # Resuming without an explicit budget continues with the study's own schedule.
            sched = Schedule.from_dict(stored.budget)
            meta_new["budget"] = sched.to_dict()
        check_meta(stored.to_dict(), meta_new, study_name)

    artifact_dir = Path(stored.artifact_dir) if stored is not None and stored.artifact_dir else out / "artifacts"
    artifact_dir.mkdir(parents=True, exist_ok=True)
    ctx = SearchContext(
        space=space,
        device=profile,
        data=splits,
        objectives=objs,
        constraints=cons,
        schedule=sched,
        reference={},
        artifact_dir=artifact_dir,
        seed=seed,
        dists=distributions(space),
        pipeline=pipe,
        log=log,
        threads=threads,
        devices=profiles,
    )
    if source_model is not None and stored is None:
        meta_new["source_model"] = _store_source_model(source_model, artifact_dir)
    elif stored is not None and stored.source_model:
        meta_new["source_model"] = stored.source_model
    if strategy == "inherit":
        epochs = float(parent_epochs or (space.parent.epochs if space.parent else DEFAULT_PARENT_EPOCHS))
        key = parent_key(recipe_info["space"], data_load, epochs, int(seed or 0))
        pipe.parent, meta_new["parent"] = obtain_parent(  # type: ignore[attr-defined]
            space,
            splits,
            key=key,
            epochs=epochs,
            batch_size=space.parent.batch_size if space.parent else sched.batch_size,
            seed=int(seed or 0),
            artifact_dir=artifact_dir,
            stored=stored.parent if stored is not None else None,
            threads=threads,
            log=log,
        )
    optuna = optuna_module()
    complete = optuna.trial.TrialState.COMPLETE
    if stored is None:
        _check_feasible_somewhere(space, profiles, cons, pipe, sched.latency_budget_s, log)
        refs = {
            p.id: compute_reference_point(
                pipe, objs, cons, reference_point, latency_budget_s=sched.latency_budget_s, device=p
            )
            for p in profiles
        }
        ctx.reference = refs[profile.id]
        meta_new.update(reference_point=ctx.reference, sampler=sampler_name(sampler), seed=seed)
        if len(profiles) > 1:
            meta_new["reference_points"] = refs
        for params in getattr(space, "initial_params", list)():
            study.enqueue_trial(params)  # e.g. the user's unmodified model: the baseline row (compress)
        study.set_user_attr(META_KEY, StudyMeta.from_dict(meta_new).to_dict())
        log(
            f"study {study_name!r}: {space.family} space of {space_size(space)} candidates on {profile.id} "
            f"({'measured' if ctx.measured else 'predicted'} latency); storage {url}"
        )
    else:
        ctx.reference = {k: float(v) for k, v in (stored.reference_point or {}).items()}
        n_done = len(study.get_trials(deepcopy=False, states=(complete,)))
        log(f"resuming study {study_name!r}: {n_done} completed trial(s) kept; storage {url}")
        recover_stale(study, log)
        if strategy == "inherit" and meta_new.get("parent") != stored.parent:
            # the parent was re-created (its artifact was missing): record where it is now
            study.set_user_attr(META_KEY, stored.updated(parent=meta_new["parent"]).to_dict())

    completed = len(study.get_trials(deepcopy=False, states=(complete,)))
    # Re-seed on resume so a seeded sampler does not replay the suggestions the study already has.
    sampler_seed = None if seed is None else seed + len(study.trials)
    study.sampler = make_sampler(sampler, sampler_seed, population_size)

    interrupted = False
    if n_trials is None or completed < n_trials:
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - t_call))
        interrupted = run_trials(study, ctx, n_trials, left, progress)
    elif progress:
        log(f"study {study_name!r} already has {completed} completed trial(s) (target {n_trials}); nothing to run")
    return _finish(result_from_study(study, interrupted=interrupted), out, reports, progress, log)


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
