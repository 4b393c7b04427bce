"""Asynchronous multi-objective successive halving (as ASHA / MO-ASHA; see ``docs/tuner.md``), and
the rules that keep several workers from doing the same work.

Optuna's pruners cannot do this (``Trial.report``/``should_prune`` are single-objective): after every
trial, the best ``1/eta`` of each rung's candidates (Pareto rank, then crowding distance) get a
continuation trial queued that trains *the same weights* on to the next rung.

With several workers on one study, a trial *claims* its (candidate, rung) under the study lock
(:func:`~hwtune.tuner.storage.study_lock`) before training: a candidate already being evaluated to the
same rung by another worker is not started again; the trial waits for it and records its result as
a repeat (or trains it after all if the other one failed). Promotions are queued under the same lock,
so two workers never queue the same continuation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hwtune.front import promotion_order
from hwtune.tuner.context import SearchContext
from hwtune.tuner.storage import (
    fresh_trials,
    live_local_workers,
    optuna_module,
    quiet_optuna,
    study_lock,
    trial_figures_dict,
    worker_alive,
)

__all__ = ["CLAIM_KEY", "Coordination", "claim_or_twin", "completed_by_key", "promote_pending", "wait_until_done"]

# Flat trial attribute "<candidate key>@<rung>" written (under the study lock) by the trial that evaluates it.
CLAIM_KEY = "claim"
# How often a trial waiting for its twin polls the storage.
TWIN_POLL_S = 1.0


@dataclass(frozen=True)
class Coordination:
    """What the workers of one study share besides the storage: the study lock and the census of local workers.

    Attributes:
        url: Storage URL of the study.
        study_name: The study.
    """

    url: str
    study_name: str

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive section among every worker of the study."""
        with study_lock(self.url, self.study_name):
            yield

    def local_workers(self, study: Any) -> int:
        """Live workers of the study on this machine (this one included)."""
        return live_local_workers(study)


def claim_key(key: str, rung: int) -> str:
    return f"{key}@{int(rung)}"


def claim_or_twin(study: Any, trial: Any, key: str, rung: int, trials: Sequence[Any] | None = None) -> Any | None:
    """Claim (candidate ``key``, ``rung``) for ``trial``, or return the RUNNING trial that already has it.

    Call under :meth:`Coordination.lock`; the caller checks for a completed result in the same section,
    and on the same read of the study: pass that read as ``trials``. A twin finishes without the lock,
    so with two reads it can be RUNNING in the first (no result yet) and COMPLETE in the second (no
    twin): missed by both, and its candidate evaluated again. One read shows it in one state or the
    other (its claim is written before it runs, its result before it completes).
    A RUNNING trial whose worker on this machine is gone is not a twin (it will be failed and re-queued).
    """
    optuna = optuna_module()
    wanted = claim_key(key, rung)
    for t in _in_state(study, trials, optuna.trial.TrialState.RUNNING):
        if t.number == trial.number or t.user_attrs.get(CLAIM_KEY) != wanted:
            continue
        worker = t.user_attrs.get("worker")
        if isinstance(worker, dict) and worker_alive(worker) is False:
            continue
        return t
    trial.set_user_attr(CLAIM_KEY, wanted)
    return None


def wait_until_done(study: Any, twin: Any, *, poll_s: float = TWIN_POLL_S) -> str:
    """Block until ``twin`` is no longer RUNNING (or its worker is gone); returns its state name.

    Stale trials of workers that stopped sending heartbeats are failed meanwhile (Optuna's
    ``fail_stale_trials``), so a twin on a dead machine does not block forever.
    """
    optuna = optuna_module()
    storage = study._storage
    while True:
        t = storage.get_trial(twin._trial_id)
        if t.state != optuna.trial.TrialState.RUNNING:
            return str(t.state.name)
        worker = t.user_attrs.get("worker")
        if isinstance(worker, dict) and worker_alive(worker) is False:
            return "FAIL"
        time.sleep(poll_s)
        with contextlib.suppress(Exception), quiet_optuna():
            optuna.storages.fail_stale_trials(study)


def promote_pending(study: Any, ctx: SearchContext) -> list[tuple[int, int]]:
    """Asynchronous multi-objective successive halving: queue the promotions due now.

    For every rung ``r`` below the last, the candidates with a result at ``r`` are ordered by
    non-dominated rank then crowding distance (:func:`hwtune.front.promotion_order`); the first
    ``floor(n_r / eta)`` that have not been promoted yet get a continuation trial queued
    (``enqueue_trial`` with ``continue_from`` = the trial holding their rung-``r`` weights). As a
    rung fills up, its quota grows and the next-best candidates follow (ASHA's rule). Returns
    ``[(origin trial, target rung), ...]`` queued by this call.
    """
    sched = ctx.schedule
    n_rungs = len(sched.rung_epochs)
    if n_rungs < 2:
        return []
    optuna = optuna_module()
    complete = optuna.trial.TrialState.COMPLETE
    results: list[dict[str, tuple[list[float], Any]]] = [{} for _ in range(n_rungs - 1)]
    promoted: list[set[str]] = [set() for _ in range(n_rungs - 1)]
    for t in fresh_trials(study):
        a = trial_figures_dict(t)
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
            # fp32 accuracy where the rung scored it; a quantized candidate scored untrained has its shipped one
            acc = a.get("val_accuracy_fp32")
            results[top][key] = (ctx.rung_cost(float(a["val_accuracy"] if acc is None else acc), a), t)
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
            oa = trial_figures_dict(origin)
            if ctx.deadline is not None and float(oa.get("budget_epochs") or 0) > 0:
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


def completed_by_key(study: Any, trials: Sequence[Any] | None = None) -> dict[str, Any]:
    """Candidate key -> its best completed original trial (highest rung reached, then lowest number).

    ``trials``: the study's trials as already read (see :func:`claim_or_twin`); default: read them now.
    """
    optuna = optuna_module()
    out: dict[str, Any] = {}
    for t in _in_state(study, trials, optuna.trial.TrialState.COMPLETE):
        a = trial_figures_dict(t)
        key = a.get("candidate_key")
        if not key or a.get("duplicate_of") is not None:
            continue
        best = out.get(key)
        if best is None or int(a.get("rung", 0) or 0) > int(trial_figures_dict(best).get("rung", 0) or 0):
            out[key] = t
    return out


def _in_state(study: Any, trials: Sequence[Any] | None, state: Any) -> list[Any]:
    """The trials in ``state``: of ``trials`` when given (one read shared by several checks), else read now."""
    if trials is None:
        return fresh_trials(study, states=(state,))
    return [t for t in trials if t.state == state]
