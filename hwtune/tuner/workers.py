"""Several local worker processes on one study (``tune(workers=K)``), and honest latency afterwards.

``tune(workers=K)`` prepares the study in the calling process (settings, reference point, parent),
then starts K ``hwtune worker`` processes on it: the same command a user runs on other machines, so
there is one way to join a study. Each worker registers itself (its index offsets the sampler seed),
claims candidates under the study lock and stops when the study has its complete trials.

Latency measured while other workers train on the same CPU is not the device's: such figures carry
``latency_conditions = "shared CPU (N workers)"`` and, when the workers are done, the front's members
are measured again with nothing of the study running (:func:`remeasure_front_alone`), recorded as
study attributes ``hwtune.remeasured.<trial>`` and shown in place of the shared figure (labelled
"alone (re-measured)"). The machine may still be loaded by other programs; that is not hwtune's to
hide.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._tempdirs import work_dir
from hwtune.errors import ConfigError
from hwtune.signals import SigtermGuard
from hwtune.tuner.storage import REMEASURED_PREFIX, fetch_artifact, fresh_trials, result_from_study

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.tuner.context import SearchContext

__all__ = [
    "check_local_workers",
    "gpu_assignment",
    "import_pipeline",
    "pipeline_ref",
    "remeasure_front_alone",
    "run_local_workers",
    "worker_command",
]

# How often the coordinating process reads the study's progress while local workers run.
POLL_S = 2.0
# Re-measuring may change who is on the front; a member measured alone can let another in.
MAX_REMEASURE_ROUNDS = 3


def pipeline_ref(pipeline: Any) -> str | None:
    """``module:Class`` of a pipeline class a new process can import (None for the default pipeline).

    Raises:
        ConfigError: a class defined in ``__main__`` or inside a function, or not a class.
    """
    if pipeline is None:
        return None
    module = getattr(pipeline, "__module__", None)
    qualname = getattr(pipeline, "__qualname__", None)
    if not isinstance(pipeline, type) or not module or not qualname or module == "__main__" or "<locals>" in qualname:
        raise ConfigError(
            f"workers > 1 runs trials in new processes: pipeline must be a class importable as module:Class, "
            f"got {pipeline!r}"
        )
    return f"{module}:{qualname}"


def import_pipeline(ref: str) -> type:
    """The pipeline class named ``module:Class`` (``hwtune worker --pipeline``).

    Raises:
        ConfigError: not ``module:Class``, not importable, or not a ``CandidatePipeline`` subclass.
    """
    from hwtune.tuner.pipeline import CandidatePipeline

    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(f"pipeline: expected module:Class, got {ref!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pipeline {ref!r}: cannot import it ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(obj, type) and issubclass(obj, CandidatePipeline)):
        raise ConfigError(f"pipeline {ref!r} is not a hwtune.tuner.CandidatePipeline subclass")
    return obj


def check_local_workers(workers: int, data_load: Mapping[str, Any] | None, sampler: Any, pipeline: Any) -> str | None:
    """Check what ``tune(workers=K>1)`` needs (each process reloads data and rebuilds its pipeline).

    Returns the pipeline's ``module:Class`` (None for the default).

    Raises:
        ConfigError: data given as loaded splits, a sampler instance, or a pipeline that cannot be imported.
    """
    if workers <= 1:
        return None
    if data_load is None:
        raise ConfigError(
            "workers > 1: give data as a name or a mapping of load_dataset arguments (each worker loads it)"
        )
    if not isinstance(sampler, str):
        raise ConfigError(
            f"workers > 1: give the sampler by name (each worker builds its own), got {type(sampler).__name__}"
        )
    return pipeline_ref(pipeline)


def worker_command(
    url: str,
    study_name: str,
    *,
    n_trials: int | None,
    timeout: float | None,
    artifacts: str | None,
    threads: int | None,
    pipeline_ref: str | None,
    train_device: str | None = None,
    amp: str | None = None,
) -> list[str]:
    """The ``hwtune worker`` command line of one local worker."""
    cmd = [sys.executable, "-m", "hwtune", "worker", "--storage", url, "--study", study_name, "--quiet"]
    for flag, value in (
        ("--trials", n_trials),
        ("--timeout", timeout),
        ("--artifacts", artifacts),
        ("--threads", threads),
        ("--pipeline", pipeline_ref),
        ("--train-device", train_device),
        ("--amp", amp),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def gpu_assignment(workers: int, train_device: str | None) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each local worker: worker i gets GPU i mod G when they train on
    CUDA (``auto`` or ``cuda``) on a machine with G >= 2 GPUs; ``None`` (inherit) otherwise, and for
    an explicit ``cuda:N`` or ``cpu``."""
    if train_device not in (None, "auto", "cuda"):
        return [None] * workers
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    ids = ids or [str(i) for i in range(torch.cuda.device_count())]
    return [ids[i % len(ids)] for i in range(workers)]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the workers import what this process can (a user's pipeline module next to their script)
    paths = [p for p in sys.path if p] + [os.getcwd()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_local_workers(
    url: str,
    study_name: str,
    workers: int,
    *,
    n_trials: int | None,
    timeout: float | None,
    artifacts: str | None,
    threads: int | None,
    pipeline_ref: str | None,
    progress: bool,
    log: Callable[[str], None],
    train_device: str | None = None,
    amp: str | None = None,
) -> bool:
    """Run ``workers`` ``hwtune worker`` processes on the study until they end; True when interrupted."""
    cmd = worker_command(
        url,
        study_name,
        n_trials=n_trials,
        timeout=timeout,
        artifacts=artifacts,
        threads=threads,
        pipeline_ref=pipeline_ref,
        train_device=train_device,
        amp=amp,
    )
    log(f"starting {workers} local workers on study {study_name!r} (each: {' '.join(cmd[1:4])} ...)")
    env = _child_env()
    gpus = gpu_assignment(workers, train_device)
    if any(gpus):
        log(f"one GPU per worker: CUDA_VISIBLE_DEVICES {', '.join(str(g) for g in gpus)}")
    procs = [
        subprocess.Popen(
            cmd, env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}, stdout=subprocess.DEVNULL
        )
        for gpu in gpus
    ]
    interrupted = False
    bar = _progress_bar(n_trials) if progress else None
    try:
        with SigtermGuard():  # a SIGTERM to this process stops the workers like Ctrl-C
            _watch(procs, url, study_name, bar)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the workers (finished trials are saved)")
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
    finally:
        if bar is not None:
            bar.close()
    for i, p in enumerate(procs):
        if p.returncode not in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM):
            log(f"warning: worker {i} (pid {p.pid}) exited with code {p.returncode}")
    return interrupted or any(p.returncode in (130, 143, -signal.SIGINT, -signal.SIGTERM) for p in procs)


def _progress_bar(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="trials (all workers)", unit="trial", file=sys.stderr, dynamic_ncols=True)


def _watch(procs: list[subprocess.Popen[bytes]], url: str, study_name: str, bar: Any) -> None:
    study = None
    while any(p.poll() is None for p in procs):
        time.sleep(POLL_S)
        if bar is None:
            continue
        with contextlib.suppress(Exception):
            if study is None:
                from hwtune.tuner.storage import load_study

                study, _ = load_study(url, study_name)
            states = [t.state.name for t in fresh_trials(study)]
            bar.n = states.count("COMPLETE")
            bar.set_postfix_str(f"running={states.count('RUNNING')} failed={states.count('FAIL')}")
            bar.refresh()


def _measure_alone(rec: Any, ctx: SearchContext, store: Any, work: Path) -> dict[str, dict[str, Any]]:
    """Latency of one trial's model on every device measured here (no other worker of the study runs)."""
    from hwtune.runtimes import ShippedModel
    from hwtune.space import Candidate

    pipe, budget = ctx.pipeline, ctx.schedule.latency_budget_s
    cand = Candidate.from_dict(rec.candidate or {})
    plan = pipe.plan(cand)
    out: dict[str, dict[str, Any]] = {}
    for dev in ctx.devices:
        if dev.latency_source != "measure":
            continue
        if plan.precisions == ("fp32",):
            # fp32 latency comes from the cheap profile (weights do not change it): the same method again
            prof = pipe.profile(pipe.build(cand), plan, measure=True, time_budget_s=budget, device=dev)
            lat, ms = dict(prof.get("latency") or {}), prof.get("latency_ms")
            label = f"{prof.get('latency_label') or 'measured'} [alone, re-measured after the search]"
        else:
            shipped_id = rec.figures.shipped_artifact_id
            if not shipped_id:
                continue  # written before shipped files were stored: keep the search figure
            path = fetch_artifact(
                store, shipped_id, work / f"{rec.number}{pipe.runtime.suffix}", what="shipped file", where="store"
            )
            shipped = ShippedModel(path, pipe.runtime_name, pipe.runtime.format, plan.label, pipe.input_shape, {})
            lat = pipe.measure(shipped, time_budget_s=budget, device=dev)
            ms = lat.get("median_ms")
            label = (
                f"{lat.get('label', 'measured')} (the shipped {plan.label} file) [alone, re-measured after the search]"
            )
        if ms is not None:
            lat["label"] = label
            out[dev.id] = {
                "latency_ms": float(ms),
                "latency": lat,
                "latency_label": label,
                "latency_conditions": "alone",
            }
    return out


def remeasure_front_alone(study: Any, ctx: SearchContext, store: Any) -> list[int]:
    """Measure the front's shared-CPU latencies again, now that no worker of the study runs; returns trial numbers.

    Repeated (up to :data:`MAX_REMEASURE_ROUNDS`) while the front still holds members measured on a
    shared CPU: a member that is slower alone can let another candidate onto the front.
    """
    done: list[int] = []
    if not any(d.latency_source == "measure" for d in ctx.devices):
        return done
    with work_dir("remeasure") as tmp:
        for _ in range(MAX_REMEASURE_ROUNDS):
            result = result_from_study(study)
            todo = [
                r
                for r in result.front
                if str(r.figures.get("latency_conditions") or "").startswith("shared") and r.number not in done
            ]
            if not todo:
                break
            for rec in todo:
                try:
                    per = _measure_alone(rec, ctx, store, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - one member that cannot be measured keeps its label
                    ctx.log(f"warning: trial {rec.number}: could not re-measure latency alone: {exc}")
                    per = {}
                if per:
                    study.set_user_attr(f"{REMEASURED_PREFIX}{rec.number}", per)
                done.append(rec.number)
    if done:
        ctx.log(
            f"front latency measured again alone (no other worker running) for trial(s) {', '.join(map(str, done))}"
        )
    return done
