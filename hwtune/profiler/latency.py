"""Measured latency on this machine, through the runtime registry (per-op comparisons: :mod:`.op_times`).

The timing protocol (warm-up, then runs until the median's 95% CI is within ``±target_ci_pct`` %, or the
budget runs out) and the runtimes themselves live in :mod:`hwtune.runtimes`; this module is the
profiler's front to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.runtimes import LatencyMeasurement, TimingBudget, get_runtime

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["measure_latency"]


def measure_latency(
    target: torch.nn.Module | str | Path,
    example: torch.Tensor | np.ndarray,
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    timing: TimingBudget | None = None,
    **settings: Any,
) -> LatencyMeasurement:
    """Measure the batch latency of a model on this machine with a registered runtime.

    Args:
        target: An ``nn.Module`` or a file the runtime runs (``.onnx`` for ``onnxruntime``). A module on
            ``onnxruntime`` is exported to a temporary fp32 ONNX file first.
        example: The input batch (tensor or array).
        runtime: A registered runtime name (``hwtune.runtimes.list_runtimes()``): ``onnxruntime``,
            ``torch`` (eager, ``inference_mode``) ...
        threads: Intra-op threads; torch's setting is restored after.
        timing: How long and how precisely to time (:class:`hwtune.runtimes.TimingBudget`: time budget,
            CI target, min/max/warm-up runs, min time); default: its defaults (10 s, ±2%).
        **settings: Any ``TimingBudget`` field by name (``time_budget_s=0.5``, ``target_ci_pct=1``,
            ``min_runs``, ``max_runs``, ``warmup_runs``, ``min_time_s``), replacing the one in ``timing``.

    Returns:
        A ``LatencyMeasurement`` (``source="measured"``).

    Raises:
        UnknownNameError: Unknown runtime (a ConfigError, with close matches).
        ConfigError: Bad thread count or budget, an unknown timing setting, or a file the runtime does not run.
        ModelError: The model rejects the input or cannot be loaded.
        RuntimeUnavailableError: The runtime's packages are not installed.

    Example:
        >>> import torch
        >>> m = measure_latency(torch.nn.Linear(8, 4), torch.randn(1, 8), runtime="torch", time_budget_s=0.2)
        >>> m.source, m.runtime, m.runs > 0
        ('measured', 'torch', True)
    """
    timing = TimingBudget.coerce(timing, **settings)
    rt = get_runtime(runtime)
    rt.require()
    return rt.measure_latency(
        Path(target) if isinstance(target, str) else target, example, threads=threads, timing=timing
    )
