"""hwtune: accuracy/latency/memory Pareto search for a named device, and export for it.

Importing hwtune is fast and silent: every public name below is resolved on first use, so
torch, ONNX Runtime and Optuna load only when a function that needs them is called.

Example:
    >>> import hwtune
    >>> hwtune.list_profiles()[:2]
    ['host', 'jetson-nano']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import hwtune.runtimes  # noqa: F401  (light: registers runtime names so profiles naming others are refused)
from hwtune._version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "HwtuneError": "hwtune.errors",
    "DeviceProfile": "hwtune.device",
    "load_profile": "hwtune.device",
    "list_profiles": "hwtune.device",
    "PrecisionPlan": "hwtune.precision",
    "Candidate": "hwtune.space",
    "SearchSpace": "hwtune.space",
    "create_model": "hwtune.families",
    "list_families": "hwtune.families",
    "profile_model": "hwtune.profiler",
    "ProfileReport": "hwtune.profiler",
    "predict_latency": "hwtune.predictor",
    "QuantConfig": "hwtune.quant",
    "quantize": "hwtune.quant",
    "load_dataset": "hwtune.data",
    "TrainBudget": "hwtune.training",
    "train": "hwtune.training",
    "evaluate": "hwtune.training",
    "tune": "hwtune.tuner",
    "TuneResult": "hwtune.front",
    "export": "hwtune.exporting",
    "finalize": "hwtune.tuner.finalize",
    "compress": "hwtune.tuner.compress",
    "list_runtimes": "hwtune.runtimes",
    "get_runtime": "hwtune.runtimes",
}

# Spelled out (not computed from _EXPORTS) so linters and type checkers see the re-exports below;
# tests/test_package.py checks that the two agree.
__all__ = [
    "Candidate",
    "DeviceProfile",
    "HwtuneError",
    "PrecisionPlan",
    "ProfileReport",
    "QuantConfig",
    "SearchSpace",
    "TrainBudget",
    "TuneResult",
    "__version__",
    "compress",
    "create_model",
    "evaluate",
    "export",
    "finalize",
    "get_runtime",
    "list_families",
    "list_profiles",
    "list_runtimes",
    "load_dataset",
    "load_profile",
    "predict_latency",
    "profile_model",
    "quantize",
    "train",
    "tune",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from hwtune.data import load_dataset
    from hwtune.device import DeviceProfile, list_profiles, load_profile
    from hwtune.errors import HwtuneError
    from hwtune.exporting import export
    from hwtune.families import create_model, list_families
    from hwtune.front import TuneResult
    from hwtune.precision import PrecisionPlan
    from hwtune.predictor import predict_latency
    from hwtune.profiler import ProfileReport, profile_model
    from hwtune.quant import QuantConfig, quantize
    from hwtune.runtimes import get_runtime, list_runtimes
    from hwtune.space import Candidate, SearchSpace
    from hwtune.training import TrainBudget, evaluate, train
    from hwtune.tuner import tune
    from hwtune.tuner.compress import compress
    from hwtune.tuner.finalize import finalize
