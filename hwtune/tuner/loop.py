"""The run loop: trials until the target, the timeout or a stop; promotions after every trial; progress."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from hwtune.errors import StorageUnavailableError
from hwtune.front import TuneResult, hypervolume, pareto_front
from hwtune.signals import SigtermGuard, Terminated
from hwtune.tuner.context import SearchContext
from hwtune.tuner.halving import Coordination, promote_pending
from hwtune.tuner.objective import TrialFailed, make_objective
from hwtune.tuner.retry import outage_behind
from hwtune.tuner.storage import (
    fresh_trials,
    liveness_text,
    optuna_module,
    quiet_optuna,
    record_of,
    recover_stale,
    requeue,
    settle_stale,
)

__all__ = [
    "MAX_CONSECUTIVE_DUPLICATES",
    "MAX_CONSECUTIVE_SAME_FAILURES",
    "TrialMonitor",
    "make_log",
    "print_summary",
    "run_trials",
]

# A sampler that keeps proposing candidates that are already evaluated has converged (or the space
# is nearly exhausted): stop instead of spinning on free duplicates.
MAX_CONSECUTIVE_DUPLICATES = 30
# If this many trials of a run fail in a row with the same reason, something systematic is wrong
# (a bug, a broken runtime): stop and say so instead of recording failures forever.
MAX_CONSECUTIVE_SAME_FAILURES = 5


def make_log(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if progress:
            from hwtune.progress import write

            write(msg, file=sys.stderr)  # without breaking a progress bar; nothing under --quiet

    return log


def print_summary(result: TuneResult, log: Callable[[str], None]) -> None:
    c = result.counts()
    head = (
        f"{'interrupted: ' if result.interrupted else ''}{c['complete']} complete trial(s) "
        f"({c['trained']} trained, {c['infeasible']} infeasible, {c['duplicates']} repeats), "
        f"{c['failed']} failed; front of {len(result.front)}, hypervolume {result.hypervolume:.4f}"
    )
    log(head)
    print(result.front_table())


class TrialMonitor:
    """Optuna callback after every trial: logs, promotions, progress bar and the stop rules.

    The trial target is the study's: complete trials of every worker count, and this worker stops
    starting trials once the study has them (its trial in flight, if any, finishes).
    """

    def __init__(
        self,
        study: Any,
        ctx: SearchContext,
        target: int | None,
        progress: bool,
        coord: Coordination | None = None,
    ) -> None:
        self.study, self.ctx = study, ctx
        self.target = target
        self.coord = coord
        self.successes = 0
        self.bar = None
        if progress:
            from hwtune.progress import progress_bar

            # a bar on a terminal, plain periodic lines in a log, nothing with --quiet
            self.bar = progress_bar(
                target, initial=self.n_complete() if target else 0, desc="trials", unit="trial", leave=True
            )
        self.space_size = None
        with contextlib.suppress(Exception):
            self.space_size = int(ctx.space.size())

    def n_complete(self) -> int:
        complete = optuna_module().trial.TrialState.COMPLETE
        return len(fresh_trials(self.study, states=(complete,)))

    def stop(self, reason: str) -> None:
        if self.ctx.stop_reason is None:
            self.ctx.stop_reason = reason
            self.ctx.log(f"stopping: {reason}")
        self.study.stop()

    def _systematic_failure(self) -> str | None:
        """The reason when the last failures are one systematic problem, not a few bad candidates.

        Five failures in a row with the same reason stop the run only when nothing succeeded in this run
        or that reason accounts for most (>= 80%) of the run's attempts.
        """
        tail = self.ctx.failures[-MAX_CONSECUTIVE_SAME_FAILURES:]
        if len(tail) < MAX_CONSECUTIVE_SAME_FAILURES or len(set(tail)) != 1:
            return None
        same = sum(1 for f in self.ctx.failures if f == tail[0])
        if self.successes == 0 or same >= 0.8 * self.ctx.attempts:
            return tail[0]
        return None

    def __call__(self, study: Any, frozen: Any) -> None:
        ctx = self.ctx
        ctx.attempts += 1
        # A worker of this machine that died mid-trial: its trial is failed and re-queued now, not
        # after the heartbeat grace period (Optuna checks heartbeats when the next trial starts).
        recover_stale(study, ctx.log)
        rec = record_of(frozen)
        if rec.state == "fail":
            ctx.failures.append(str(rec.failure))
            ctx.log(f"trial {rec.number} failed: {rec.failure}")
            reason = self._systematic_failure()
            if reason is not None:
                self.stop(f"the last {MAX_CONSECUTIVE_SAME_FAILURES} trials all failed with: {reason}")
        else:
            self.successes += 1
            if rec.state == "complete" and not rec.feasible and rec.duplicate_of is None:
                ctx.log(f"trial {rec.number} infeasible (not trained): {'; '.join(rec.figures.infeasible or [])}")
        for origin, rung in self.promote():
            ctx.log(f"trial {origin} promoted to rung {rung} ({ctx.schedule.rung_epochs[rung]:g} epochs): queued")
        records = [record_of(t) for t in fresh_trials(study)]
        if self.target is not None:
            n_complete = sum(1 for r in records if r.state == "complete")
            if n_complete >= self.target:
                self.study.stop()  # the study has its trials (counted over every worker)
        if self.bar is not None:
            front = pareto_front(records, ctx.objectives, ctx.reference)
            hv = hypervolume(records, ctx.objectives, ctx.reference)
            if rec.state == "complete":
                self.bar.update(1)
            self.bar.set_postfix_str(f"front={len(front)} hv={hv:.4f} last=#{rec.number} {rec.state}")
        if ctx.consecutive_duplicates >= MAX_CONSECUTIVE_DUPLICATES:
            self.stop(
                f"the sampler proposed {MAX_CONSECUTIVE_DUPLICATES} already-evaluated candidates in a row "
                "(converged or space nearly exhausted)"
            )
        if self.space_size is not None and not any(r.state == "waiting" for r in records):
            keys = {r.candidate_key for r in records if r.state == "complete"}
            if len(keys) >= self.space_size:
                self.stop(f"all {self.space_size} candidates of the space are evaluated")

    def promote(self) -> list[tuple[int, int]]:
        """Queue due promotions (under the study lock: two workers never queue the same one)."""
        with self.coord.lock() if self.coord is not None else contextlib.nullcontext():
            return promote_pending(self.study, self.ctx)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trials(
    study: Any,
    ctx: SearchContext,
    target: int | None,
    timeout: float | None,
    progress: bool,
    *,
    store: Any = None,
    coord: Coordination | None = None,
) -> bool:
    """Run trials until ``target`` completed trials are in the study (or the timeout, or a stop).

    ``target`` counts the study's complete trials, whichever worker ran them. Failed trials do not
    count towards it, so the loop goes on after a failure; a run makes at most ``2 * missing + 10``
    attempts so a space where everything fails still ends. ``store`` is the study's artifact store,
    ``coord`` the study lock shared with other workers. Returns True when interrupted by Ctrl-C
    or SIGTERM (handled alike while the loop runs in the main thread: see :mod:`hwtune.signals`).
    """
    monitor = TrialMonitor(study, ctx, target, progress, coord)
    deadline = None if timeout is None else time.monotonic() + timeout
    ctx.deadline = deadline
    if coord is not None:
        ctx.log(f"study {study.study_name!r}: {liveness_text()}")
    recover_stale(study, ctx.log)
    for origin, rung in monitor.promote():  # promotions left pending by an earlier run
        ctx.log(f"trial {origin} promoted to rung {rung}: queued")
    interrupted = False
    # the guard covers the clean-up too: a second SIGTERM must not cut the requeue short
    with SigtermGuard():
        try:
            with quiet_optuna():
                _optimize(study, ctx, monitor, target, deadline, store=store, coord=coord)
        except StorageUnavailableError:
            raise
        except Exception as exc:
            outage = outage_behind(exc)
            if outage is None:
                raise
            raise outage from None
        except KeyboardInterrupt as exc:
            interrupted = True
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            ctx.log(f"{how}: finished trials are saved; the interrupted candidate will be retried on resume")
            # The interrupted trial is already FAIL (Optuna marks it); queue its candidate for the next run.
            with contextlib.suppress(Exception):
                last = study.trials[-1]
                if last.state.name == "FAIL":
                    requeue(study, last)
        finally:
            monitor.close()
    return interrupted


def _optimize(
    study: Any,
    ctx: SearchContext,
    monitor: TrialMonitor,
    target: int | None,
    deadline: float | None,
    *,
    store: Any,
    coord: Coordination | None,
) -> None:
    """``study.optimize`` in rounds until the target, the deadline, a stop or the attempt limit."""
    max_attempts = None if target is None else 2 * max(0, target - monitor.n_complete()) + 10
    settled = coord is None  # several workers: a dead one's trial is recovered before the study is left
    while ctx.stop_reason is None:
        missing = None if target is None else target - monitor.n_complete()
        if missing is not None and missing <= 0:
            if settled:
                break
            settled = True
            missing = settle_stale(study, ctx.log)  # its re-queued candidates run now (once each)
            if missing <= 0:
                break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        n_trials = None
        if max_attempts is not None and missing is not None:
            n_trials = min(missing, max_attempts - ctx.attempts)
            if n_trials <= 0:
                ctx.log(
                    f"stopping: {ctx.attempts} attempts made, {missing} trial(s) short of {target} (too many failures)"
                )
                break
        study.optimize(
            make_objective(ctx, study, store=store, coord=coord),
            n_trials=n_trials,
            timeout=left,
            catch=(TrialFailed,),
            callbacks=[monitor],
        )
        if target is None:
            break  # timeout-only run: optimize returned because time is up or a stop
