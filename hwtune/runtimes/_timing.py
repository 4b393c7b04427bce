"""Timing on this machine, the same for every runtime: a timed loop with a stopping rule on the median's CI.

Protocol (:func:`measure_callable`): warm up, then time single batch runs one by one until the 95%
confidence interval of the median is within ``±target_ci_pct`` % of the median (at least
``min_runs`` runs) or the time budget runs out. The CI is distribution-free: order statistics
``x_(j) .. x_(n-j+1)`` of the sorted times with ``j`` from the Binomial(n, 1/2) distribution (the sign
test), so no normality of latencies is assumed (they are skewed by preemption on a shared machine).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

from hwtune._util import is_int, is_num
from hwtune.errors import ConfigError, did_you_mean

__all__ = ["LatencyMeasurement", "OpTime", "TimingBudget", "check_timing_args", "measure_callable", "median_ci"]


@dataclass(frozen=True)
class TimingBudget:
    """How long and how precisely a latency is measured: the settings of the timed loop, as one object.

    Attributes:
        time_budget_s: Stop timing after this long even if the CI target is not met.
        target_ci_pct: Stop once the 95% CI of the median is within ± this % of the median.
        min_runs: Timed runs before the stopping rule is consulted.
        max_runs: Hard cap on timed runs.
        warmup_runs: Untimed runs first (more for tiny models: at least ~2% of the budget, max 0.1 s).
        min_time_s: Keep timing at least this long before the stopping rule may end it (default
            ``min(0.2, 0.02 * time_budget_s)``): a sub-millisecond model then gets thousands of runs,
            which steadies its median across repeated measurements more than the CI of 10 runs suggests.

    Example:
        >>> TimingBudget.coerce(None, time_budget_s=0.5).target_ci_pct
        2.0
    """

    time_budget_s: float = 10.0
    target_ci_pct: float = 2.0
    min_runs: int = 10
    max_runs: int = 100_000
    warmup_runs: int = 3
    min_time_s: float | None = None

    def __post_init__(self) -> None:
        check_timing_args(threads=1, time_budget_s=self.time_budget_s, target_ci_pct=self.target_ci_pct)
        for name in ("min_runs", "max_runs", "warmup_runs"):
            if not is_num(getattr(self, name)):
                raise ConfigError(f"{name} must be a number of runs, got {getattr(self, name)!r}")
        if self.min_time_s is not None and not is_num(self.min_time_s):
            raise ConfigError(f"min_time_s must be a number of seconds or None, got {self.min_time_s!r}")

    @classmethod
    def coerce(cls, budget: TimingBudget | Mapping[str, Any] | None = None, **settings: Any) -> TimingBudget:
        """``budget`` (default: the defaults) with the given settings replaced: the flat keywords users pass.

        Raises:
            ConfigError: an unknown setting (with close matches) or a value the timed loop cannot use.
        """
        known = [f.name for f in fields(cls)]
        unknown = [k for k in [*settings, *(budget if isinstance(budget, Mapping) else ())] if k not in known]
        if unknown:
            raise ConfigError(f"unknown timing setting {unknown[0]!r}{did_you_mean(unknown[0], known)}")
        if budget is None or isinstance(budget, Mapping):
            return cls(**{**dict(budget or {}), **settings})
        if not is_dataclass(budget) or not hasattr(budget, "time_budget_s"):
            raise ConfigError(
                f"timing must be a TimingBudget or a mapping of its settings, got {type(budget).__name__}"
            )
        return replace(budget, **settings) if settings else budget

    @property
    def warm_up_s(self) -> float:
        """Minimum warm-up time: ~2% of the budget, at most 0.1 s (hundreds of runs of a small model)."""
        return min(0.1, 0.02 * self.time_budget_s)

    @property
    def min_timing_s(self) -> float:
        """``min_time_s``, or its default ``min(0.2, 0.02 * time_budget_s)``."""
        return min(0.2, 0.02 * self.time_budget_s) if self.min_time_s is None else max(float(self.min_time_s), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimingBudget:
        return cls.coerce(data)


@dataclass(frozen=True)
class LatencyMeasurement:
    """Batch latency measured on this machine.

    Attributes:
        median_ms: Median of the timed runs.
        p10_ms, p90_ms: 10th / 90th percentiles.
        ci_half_width_ms: Half width of the distribution-free 95% CI of the median (``inf`` if too few runs).
        runs: Timed runs (warm-up excluded).
        runtime: Registered name of the runtime that ran the model.
        threads: Intra-op threads the runtime used.
        source: Always ``measured``.
        mean_ms, min_ms: For reference.
        warmup_runs: Untimed runs before timing.
        converged: Whether the CI target was met before the budget ran out.
        target_ci_pct: The CI target (± % of the median).
        seconds: Wall time spent, warm-up included.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    ci_half_width_ms: float
    runs: int
    runtime: str
    threads: int
    source: str = "measured"
    mean_ms: float = 0.0
    min_ms: float = 0.0
    warmup_runs: int = 0
    converged: bool = False
    target_ci_pct: float = 2.0
    seconds: float = 0.0

    @property
    def latency_ms(self) -> float:
        return self.median_ms

    @property
    def ci_pct(self) -> float:
        """CI half width as % of the median."""
        return 100.0 * self.ci_half_width_ms / self.median_ms if self.median_ms > 0 else math.inf

    @property
    def label(self) -> str:
        """``measured on onnxruntime (1 thread): median 8.70 ms, 95% CI ±0.9%, 214 runs``."""
        plural = "" if self.threads == 1 else "s"
        ci = f"±{self.ci_pct:.1f}%" if math.isfinite(self.ci_pct) else "n/a"
        note = "" if self.converged else f", CI target ±{self.target_ci_pct:g}% not reached in budget"
        return (
            f"measured on {self.runtime} ({self.threads} thread{plural}): median {self.median_ms:.3f} ms, "
            f"95% CI {ci}, {self.runs} runs{note}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not math.isfinite(self.ci_half_width_ms):
            d["ci_half_width_ms"] = None  # JSON has no inf
        d["ci_pct"] = round(self.ci_pct, 3) if math.isfinite(self.ci_pct) else None
        d["label"] = self.label
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyMeasurement:
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in data.items() if k in known}
        if d.get("ci_half_width_ms") is None:
            d["ci_half_width_ms"] = math.inf
        return cls(**d)


@dataclass(frozen=True)
class OpTime:
    """Median per-run time of one op (node / kernel) from a runtime's profiler.

    Attributes:
        node: The op's name in the runtime's (optimized) graph.
        op_type: The runtime's op type (``FusedConv``, ``QLinearConv`` ...).
        median_ms: Median time per inference.
        runs: Profiled inferences the median is over.
    """

    node: str
    op_type: str
    median_ms: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpTime:
        return cls(str(data["node"]), str(data["op_type"]), float(data["median_ms"]), int(data["runs"]))


# ----------------------------------------------------------------------------------------------
# Statistics


def _binom_cdf(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k), in log space so large n does not underflow."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_half_n = -n * math.log(2.0)
    lg = math.lgamma
    total = 0.0
    for i in range(k + 1):
        total += math.exp(lg(n + 1) - lg(i + 1) - lg(n - i + 1) + log_half_n)
    return min(total, 1.0)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Median and a distribution-free confidence interval for it.

    Uses order statistics: with ``j`` the largest index such that P(B <= j-1) <= (1-confidence)/2 for
    B ~ Binomial(n, 1/2), the interval ``[x_(j), x_(n-j+1)]`` (1-based) covers the median with at
    least ``confidence``.

    Returns:
        (median, low, high); low/high are ``-inf``/``inf`` when there are too few samples (n < 6 at 95%).
    """
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return math.nan, -math.inf, math.inf
    med = statistics.median(xs)
    alpha2 = (1.0 - confidence) / 2.0
    if n > 2000:
        # Normal approximation of the binomial; exact sums get slow and agree to within one rank here.
        j = math.floor(n / 2.0 - 0.5 * 1.959963984540054 * math.sqrt(n))
    else:
        j = 0
        lo, hi = 1, n // 2
        while lo <= hi:  # the CDF is monotone in j: binary search the largest valid j
            mid = (lo + hi) // 2
            if _binom_cdf(mid - 1, n) <= alpha2:
                j, lo = mid, mid + 1
            else:
                hi = mid - 1
    if j < 1:
        return med, -math.inf, math.inf
    return med, xs[j - 1], xs[n - j]


def _percentile(xs_sorted: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not xs_sorted:
        return math.nan
    pos = (len(xs_sorted) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs_sorted) - 1)
    return xs_sorted[lo] + (xs_sorted[hi] - xs_sorted[lo]) * (pos - lo)


def _timed_loop(run: Callable[[], Any], budget: TimingBudget) -> tuple[list[float], int, bool, float]:
    """Warm up, then time ``run`` until the median's CI is tight enough. Returns (times_ms, warmups, converged, s)."""
    start = time.perf_counter()
    min_runs, max_runs = max(int(budget.min_runs), 1), max(int(budget.max_runs), 1)
    warmup_runs, min_time_s = max(int(budget.warmup_runs), 0), budget.min_timing_s
    target_ci_pct = float(budget.target_ci_pct)
    # Warm-up: first runs pay allocation, weight prepacking and cache misses. At least ``warmup_runs``
    # runs and ~2% of the budget (max 0.1 s: hundreds of runs of a small model), so caches settle.
    warm_until = start + budget.warm_up_s
    warm = 0
    while warm < warmup_runs or (time.perf_counter() < warm_until and warm < 200):
        run()
        warm += 1
    deadline = start + float(budget.time_budget_s)
    timing_start = time.perf_counter()
    times: list[float] = []
    converged = False
    next_check = min_runs
    perf = time.perf_counter_ns
    while len(times) < max_runs:
        t0 = perf()
        run()
        times.append((perf() - t0) / 1e6)
        if len(times) >= next_check and time.perf_counter() - timing_start >= min_time_s:
            med, lo, hi = median_ci(times)
            if math.isfinite(lo) and (hi - lo) / 2.0 <= target_ci_pct / 100.0 * med:
                converged = True
                break
            # Check about every 10% more runs: the CI only tightens like 1/sqrt(n).
            next_check = len(times) + max(5, len(times) // 10)
        if time.perf_counter() >= deadline and len(times) >= min(min_runs, 3):
            break
    return times, warm, converged, time.perf_counter() - start


def measure_callable(
    run: Callable[[], Any],
    *,
    runtime: str,
    threads: int,
    timing: TimingBudget | None = None,
    **settings: Any,
) -> LatencyMeasurement:
    """Time ``run()`` (one batch on a runtime, already set up) and summarize it.

    Args:
        run: Runs the model once on the prepared input; its result is ignored.
        runtime: Name recorded in the measurement (the runtime that ``run`` calls).
        threads: Intra-op threads ``run`` uses (recorded; the caller sets them up).
        timing: The timed loop's settings (:class:`TimingBudget`; default: its defaults).
        **settings: Any :class:`TimingBudget` field (``time_budget_s=0.5``, ``min_runs=5`` ...), replacing
            the one in ``timing``.

    Returns:
        A ``LatencyMeasurement`` (``source="measured"``).

    Raises:
        ConfigError: A bad thread count, budget or run count, or an unknown timing setting.

    Example:
        >>> m = measure_callable(lambda: sum(range(100)), runtime="python", threads=1, time_budget_s=0.05)
        >>> m.source, m.runs >= 3
        ('measured', True)
    """
    check_timing_args(threads=threads, time_budget_s=1.0)
    timing = TimingBudget.coerce(timing, **settings)
    times, warm, converged, secs = _timed_loop(run, timing)
    xs = sorted(times)
    med, lo, hi = median_ci(xs)
    half = (hi - lo) / 2.0 if math.isfinite(lo) else math.inf
    return LatencyMeasurement(
        median_ms=float(med),
        p10_ms=float(_percentile(xs, 10)),
        p90_ms=float(_percentile(xs, 90)),
        ci_half_width_ms=float(half),
        runs=len(xs),
        runtime=runtime,
        threads=int(threads),
        mean_ms=float(statistics.fmean(xs)),
        min_ms=float(xs[0]),
        warmup_runs=warm,
        converged=converged,
        target_ci_pct=float(timing.target_ci_pct),
        seconds=float(secs),
    )


def check_timing_args(*, threads: Any, time_budget_s: Any, target_ci_pct: Any = 2.0) -> None:
    """Raise a one-line ConfigError for a thread count, budget or CI target a measurement cannot use.

    Runtimes call it before loading or exporting anything, so a bad argument fails fast.
    """
    if not is_int(threads) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    if not is_num(time_budget_s) or not time_budget_s > 0:
        raise ConfigError(f"time_budget_s must be a number > 0, got {time_budget_s!r}")
    if not is_num(target_ci_pct) or not target_ci_pct > 0:
        raise ConfigError(f"target_ci_pct must be a number > 0, got {target_ci_pct!r}")
