"""Deployment runtimes behind one registry: export, load, measure, evaluate, per-op times.

The package face only re-exports. ``list_runtimes()`` names what is registered (whether or not its
optional extra is installed); ``get_runtime(name)`` returns the runtime object, or raises with close
matches (the registry is :mod:`hwtune.runtimes._registry`; built-in runtimes are imported on first use
so ``import hwtune`` stays light). A runtime is a :class:`Runtime` subclass; what every runtime shares
is here too: the timed loop with its stopping rule (:func:`measure_callable`) and the evaluation loop
(:func:`evaluate_loaded`).

Importing this package also makes :mod:`hwtune.device` check every profile's ``runtime`` against
the registry (device sits below the runtimes, so the registry hands it the names).

Example:
    >>> from hwtune.runtimes import get_runtime, list_runtimes
    >>> "onnxruntime" in list_runtimes() and "torch" in list_runtimes()
    True
    >>> get_runtime("onnxruntime").precisions
    ('fp32', 'fp16', 'int8')
"""

from __future__ import annotations

from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel, TimedCall
from hwtune.runtimes._evaluate import DEFAULT_EVAL_BATCH, EvalResult, evaluate_loaded
from hwtune.runtimes._registry import (
    get_runtime,
    list_runtimes,
    register_runtime,
    runtime_for_file,
    search_scoring_runtime,
)
from hwtune.runtimes._timing import LatencyMeasurement, OpTime, TimingBudget, measure_callable, median_ci

__all__ = [
    "DEFAULT_EVAL_BATCH",
    "EvalResult",
    "LatencyMeasurement",
    "LoadedModel",
    "OpTime",
    "Runtime",
    "ShippedModel",
    "TimedCall",
    "TimingBudget",
    "evaluate_loaded",
    "get_runtime",
    "list_runtimes",
    "measure_callable",
    "median_ci",
    "register_runtime",
    "runtime_for_file",
    "search_scoring_runtime",
]
