"""Measured latency on this machine: PyTorch eager or ONNX Runtime, with a stopping rule on the median's CI.

Protocol (``measure_latency``): warm up, then time single batch runs one by one until the 95% confidence
interval of the median is within ``±target_ci_pct`` % of the median (at least ``min_runs`` runs) or the time
budget runs out. The CI is distribution-free: order statistics ``x_(j) .. x_(n-j+1)`` of the sorted times
with ``j`` from the Binomial(n, 1/2) distribution (the sign test), so no normality of latencies is assumed
(they are skewed by preemption on a shared machine).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import ConfigError, ModelError, did_you_mean

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import torch

__all__ = [
    "RUNTIMES",
    "LatencyMeasurement",
    "OpTime",
    "attribute_op_times",
    "measure_latency",
    "median_ci",
    "onnx_node_module",
    "ort_session",
    "profile_ort_ops",
]

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencyMeasurement:
    """Batch latency measured on this machine.

    Attributes:
        median_ms: Median of the timed runs.
        p10_ms, p90_ms: 10th / 90th percentiles.
        ci_half_width_ms: Half width of the distribution-free 95% CI of the median (``inf`` if too few runs).
        runs: Timed runs (warm-up excluded).
        runtime: ``torch`` or ``onnxruntime``.
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
    """Median per-run time of one ONNX Runtime node (from its profiler)."""

    node: str
    op_type: str
    median_ms: float
    runs: int


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


def _timed_loop(
    run: Callable[[], Any],
    *,
    time_budget_s: float,
    target_ci_pct: float,
    min_runs: int,
    max_runs: int,
    warmup_runs: int,
    min_time_s: float,
) -> tuple[list[float], int, bool, float]:
    """Warm up, then time ``run`` until the median's CI is tight enough. Returns (times_ms, warmups, converged, s)."""
    start = time.perf_counter()
    # Warm-up: first runs pay allocation, weight prepacking and cache misses. At least ``warmup_runs``
    # runs and ~2% of the budget (max 0.1 s: hundreds of runs of a small model), so caches settle.
    warm_until = start + min(0.1, 0.02 * time_budget_s)
    warm = 0
    while warm < warmup_runs or (time.perf_counter() < warm_until and warm < 200):
        run()
        warm += 1
    deadline = start + time_budget_s
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


# ----------------------------------------------------------------------------------------------
# Runtimes


def ort_session(
    path: str | Path,
    threads: int = 1,
    *,
    profiling: bool = False,
    profile_prefix: str | Path | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session set up the way hwtune measures.

    ``threads`` intra-op threads, one inter-op thread, sequential execution, all graph optimizations
    (constant folding, conv+bn+activation fusion, NCHWc layout on x86).

    Raises:
        ModelError: If the file is missing or not a model ONNX Runtime can load.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initializers are noise to users
    if profiling:
        so.enable_profiling = True
        if profile_prefix is not None:
            so.profile_file_prefix = str(profile_prefix)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load this model: {first}") from exc


_ORT_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def _ort_feed(session: onnxruntime.InferenceSession, example: Any) -> dict[str, np.ndarray]:
    import numpy as np

    arr = example.detach().cpu().numpy() if hasattr(example, "detach") else np.asarray(example)
    inp = session.get_inputs()[0]
    want = _ORT_NP_TYPES.get(inp.type)
    if want is not None and arr.dtype != want:
        arr = arr.astype(want)
    shape = tuple(arr.shape)
    if len(inp.shape) != len(shape) or any(
        isinstance(d, int) and d != s for d, s in zip(inp.shape, shape, strict=False)
    ):
        expected = "x".join(str(d) if isinstance(d, int) else "N" for d in inp.shape)
        raise ModelError(f"ONNX model input {inp.name!r} expects shape {expected}, got {'x'.join(map(str, shape))}")
    return {inp.name: arr}


def measure_latency(
    target: torch.nn.Module | str | Path,
    example: torch.Tensor | np.ndarray,
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    time_budget_s: float = 10.0,
    target_ci_pct: float = 2.0,
    min_runs: int = 10,
    max_runs: int = 100_000,
    warmup_runs: int = 3,
    min_time_s: float | None = None,
) -> LatencyMeasurement:
    """Measure the batch latency of a model on this machine.

    Args:
        target: An ``nn.Module`` or a path to an ``.onnx`` file. A module on ``onnxruntime`` is exported
            to a temporary ONNX file first (fp32).
        example: The input batch (tensor or array).
        runtime: ``torch`` (eager, ``inference_mode``) or ``onnxruntime``.
        threads: Intra-op threads (``torch.set_num_threads`` / ``intra_op_num_threads``); restored after.
        time_budget_s: Stop timing after this long even if the CI target is not met.
        target_ci_pct: Stop once the 95% CI of the median is within ± this % of the median.
        min_runs: Timed runs before the stopping rule is consulted.
        max_runs: Hard cap on timed runs.
        warmup_runs: Untimed runs first (more for tiny models, see ``_timed_loop``).
        min_time_s: Keep timing at least this long before the stopping rule may end it (default
            ``min(0.2, 0.02 * time_budget_s)``): a sub-millisecond model then gets thousands of runs, which
            steadies its median across repeated measurements more than the CI of 10 runs suggests.

    Returns:
        A ``LatencyMeasurement`` (``source="measured"``).

    Raises:
        ConfigError: Unknown runtime, bad thread count or an ``.onnx`` file on ``torch``.
        ModelError: The model rejects the input or cannot be loaded.

    Example:
        >>> import torch
        >>> m = measure_latency(torch.nn.Linear(8, 4), torch.randn(1, 8), runtime="torch", time_budget_s=0.2)
        >>> m.source, m.runtime, m.runs > 0
        ('measured', 'torch', True)
    """
    if runtime not in RUNTIMES:
        raise ConfigError(
            f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}{did_you_mean(runtime, RUNTIMES)}"
        )
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    if time_budget_s <= 0:
        raise ConfigError(f"time_budget_s must be > 0, got {time_budget_s!r}")
    loop = {
        "time_budget_s": float(time_budget_s),
        "target_ci_pct": float(target_ci_pct),
        "min_runs": max(int(min_runs), 1),
        "max_runs": max(int(max_runs), 1),
        "warmup_runs": max(int(warmup_runs), 0),
        "min_time_s": min(0.2, 0.02 * time_budget_s) if min_time_s is None else max(float(min_time_s), 0.0),
    }
    if runtime == "torch":
        if isinstance(target, (str, Path)):
            raise ConfigError(f"runtime 'torch' cannot run an ONNX file ({target}); use runtime 'onnxruntime'")
        times, warm, converged, secs = _measure_torch(target, example, threads, loop)
    else:
        if isinstance(target, (str, Path)):
            times, warm, converged, secs = _measure_ort(Path(target), example, threads, loop)
        else:
            import torch

            from hwtune.onnx_export import export_onnx

            x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
            with tempfile.TemporaryDirectory(prefix="hwtune-") as tmp:
                path = export_onnx(target, x, Path(tmp) / "model.onnx")
                times, warm, converged, secs = _measure_ort(path, example, threads, loop)
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
        threads=threads,
        mean_ms=float(statistics.fmean(xs)),
        min_ms=float(xs[0]),
        warmup_runs=warm,
        converged=converged,
        target_ci_pct=float(target_ci_pct),
        seconds=float(secs),
    )


def _measure_torch(
    model: torch.nn.Module, example: Any, threads: int, loop: dict[str, Any]
) -> tuple[list[float], int, bool, float]:
    import torch

    x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
    param = next(iter(model.parameters()), None)
    if param is not None and param.is_floating_point() and x.is_floating_point() and x.dtype != param.dtype:
        x = x.to(param.dtype)
    old_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            try:
                model(x)
            except Exception as exc:  # any torch error on the first call means the input does not fit
                from hwtune.profiler.graph import _shape_message

                raise ModelError(_shape_message(model, tuple(x.shape), exc)) from exc
            return _timed_loop(lambda: model(x), **loop)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)


def _measure_ort(path: Path, example: Any, threads: int, loop: dict[str, Any]) -> tuple[list[float], int, bool, float]:
    session = ort_session(path, threads)
    feed = _ort_feed(session, example)
    try:
        session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own types for shape/type mismatches
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime rejected the input: {first}") from exc
    return _timed_loop(lambda: session.run(None, feed), **loop)


# ----------------------------------------------------------------------------------------------
# Per-op times


_SUFFIXES = re.compile(r"(_kernel_time|_fence_before|_fence_after)$")
_ORT_RENAMES = re.compile(r"(_output_\d+)?(_nchwc)?$")


def _clean_node_name(name: str) -> str:
    """Undo ONNX Runtime's suffixes: ``/a/a.b/Clip_output_0_nchwc_kernel_time`` -> ``/a/a.b/Clip``."""
    return _ORT_RENAMES.sub("", _SUFFIXES.sub("", name))


def onnx_node_module(node_name: str) -> str:
    """Module path encoded in a legacy-exporter node name.

    The exporter writes one scope per module, each relative to its parent:
    ``/features/features.1/conv/conv.0/conv.0.2/Clip`` is module ``features.1.conv.0.2``
    (``conv.0.2`` under ``conv.0`` means child ``2``). Root-level nodes (``/Flatten``) give ``""``.
    """
    if not node_name.startswith("/"):
        return ""
    parts = [p for p in _clean_node_name(node_name).split("/") if p != ""]
    full, prev = "", ""
    for comp in parts[:-1]:
        if prev and comp.startswith(prev + "."):
            full += comp[len(prev) :]
        else:
            full = f"{full}.{comp}" if full else comp
        prev = comp
    return full


def profile_ort_ops(
    path: str | Path,
    example: Any,
    *,
    threads: int = 1,
    runs: int = 20,
    warmup_runs: int = 3,
) -> list[OpTime]:
    """Per-node times from ONNX Runtime's profiler (median over ``runs``), in execution order.

    Node names are those of the optimized graph: fused nodes are named after their fused output, e.g.
    ``/features/features.0/features.0.2/Clip`` for conv+bn+relu6 (see ``attribute_op_times``).
    """
    with tempfile.TemporaryDirectory(prefix="hwtune-ortprof-") as tmp:
        session = ort_session(path, threads, profiling=True, profile_prefix=Path(tmp) / "ort")
        feed = _ort_feed(session, example)
        for _ in range(max(warmup_runs, 0)):
            session.run(None, feed)
        for _ in range(max(runs, 1)):
            session.run(None, feed)
        trace_file = session.end_profiling()
        events = json.loads(Path(trace_file).read_text())
        try:
            os.remove(trace_file)
        except OSError:
            pass
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        durations.setdefault(name, []).append(float(ev.get("dur", 0)) / 1000.0)
        op_types.setdefault(name, str((ev.get("args") or {}).get("op_name", "")))
    total_runs = max(warmup_runs, 0) + max(runs, 1)
    out = []
    for name, ds in durations.items():
        timed = ds[-runs:] if len(ds) >= total_runs else ds  # drop warm-up runs
        out.append(
            OpTime(node=name, op_type=op_types[name], median_ms=float(statistics.median(timed)), runs=len(timed))
        )
    return out


_ORT_TO_CANONICAL = {
    "Conv": ("conv", "dwconv", "pwconv"),
    "FusedConv": ("conv", "dwconv", "pwconv"),
    "Gemm": ("linear",),
    "MatMul": ("matmul", "linear"),
    "FusedMatMul": ("matmul", "linear"),
    "Add": ("add",),
    "Sum": ("add",),
    "Mul": ("mul",),
    "Concat": ("cat",),
    "Relu": ("relu",),
    "Clip": ("relu6",),
    "HardSwish": ("hardswish",),
    "Sigmoid": ("sigmoid",),
    "MaxPool": ("maxpool",),
    "AveragePool": ("avgpool",),
    "GlobalAveragePool": ("gap",),
    "ReduceMean": ("gap",),
    "Flatten": ("flatten",),
    "Reshape": ("flatten",),
    "Softmax": ("softmax",),
    "BatchNormalization": ("bn",),
}


def attribute_op_times(layers: Sequence[Any], op_times: Sequence[OpTime]) -> tuple[dict[str, float], float]:
    """Map ONNX Runtime node times onto traced layers.

    A node whose (cleaned) name equals a layer name goes to that layer (models given as ONNX files).
    Otherwise the node's module path picks the layer: the module's own layer, or a functional layer
    in that module with a matching op type; a layer that is ``fused_into`` another hands its time to
    that one (ORT names a fused conv+bn+relu6 after the relu6). Layout reorders and copies that belong
    to no layer are returned as the unattributed remainder.

    Returns:
        (ms per layer name, unattributed ms).
    """
    by_name = {layer.name: layer for layer in layers}
    by_module: dict[str, list[Any]] = {}
    for layer in layers:
        by_module.setdefault(layer.module, []).append(layer)
    times: dict[str, float] = {}
    taken: set[str] = set()
    unattributed = 0.0
    for op in op_times:
        clean = _clean_node_name(op.node)
        layer = by_name.get(clean) or by_name.get(op.node)
        if layer is None:
            module = onnx_node_module(op.node)
            kinds = _ORT_TO_CANONICAL.get(op.op_type, ())
            candidates = by_module.get(module, []) if module else []
            own = [c for c in candidates if c.name == module]
            if own:
                layer = own[0]
            else:
                matching = [c for c in candidates if c.op_type in kinds and c.name not in taken]
                layer = matching[0] if matching else None
        if layer is None:
            unattributed += op.median_ms
            continue
        taken.add(layer.name)
        while getattr(layer, "fused_into", None) and layer.fused_into in by_name:
            layer = by_name[layer.fused_into]
        times[layer.name] = times.get(layer.name, 0.0) + op.median_ms
    return times, unattributed
