"""Asynchronous multi-objective successive halving (as ASHA / MO-ASHA; see ``docs/tuner.md``).

Optuna's pruners cannot do this (``Trial.report``/``should_prune`` are single-objective): after every
trial, the best ``1/eta`` of each rung's candidates (Pareto rank, then crowding distance) get a
continuation trial queued that trains *the same weights* on to the next rung.
"""

from __future__ import annotations

import time
from typing import Any

from hwtune.front import promotion_order
from hwtune.tuner.context import SearchContext
from hwtune.tuner.storage import optuna_module, trial_figures_dict

__all__ = ["completed_by_key", "promote_pending"]


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
    for t in study.get_trials(deepcopy=False):
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
            results[top][key] = (ctx.rung_cost(float(a["val_accuracy_fp32"]), a), t)
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


def completed_by_key(study: Any) -> dict[str, Any]:
    """Candidate key -> its best completed original trial (highest rung reached, then lowest number)."""
    optuna = optuna_module()
    out: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = trial_figures_dict(t)
        key = a.get("candidate_key")
        if not key or a.get("duplicate_of") is not None:
            continue
        best = out.get(key)
        if best is None or int(a.get("rung", 0) or 0) > int(trial_figures_dict(best).get("rung", 0) or 0):
            out[key] = t
    return out
