"""What a deployment runtime must offer hwtune, and the value objects it hands back.

A runtime turns a trained ``torch.nn.Module`` into the file that ships (``export``), loads such a
file into something that runs a batch (``load``), and is measured and scored on it
(``measure_latency``, ``evaluate``, ``op_times``). Profiler, tuner, evaluation and export all go
through this seam, so a new runtime is one new module registered in :mod:`hwtune.runtimes`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import RuntimeUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes._timing import LatencyMeasurement, OpTime

__all__ = ["EvalResult", "LoadedModel", "Runtime", "ShippedModel"]


@dataclass(frozen=True)
class ShippedModel:
    """The deployable file a runtime produced for one model at one precision plan.

    Attributes:
        path: The file that ships (``.onnx``, ``.pte``, ``.tflite`` ...).
        runtime: Registered name of the runtime that runs it.
        format: File format (``onnx``, ``pte``, ``tflite``, ``torch``).
        precision_label: The plan's label (``fp32``, ``int8``, ``mixed(...)``).
        input_shape: The example input shape the file was exported for (batch first).
        info: Runtime-specific facts (quantization details, ops left in float, ...), JSON-able.
    """

    path: Path
    runtime: str
    format: str
    precision_label: str
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return Path(self.path).stat().st_size


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on one split, and which runtime produced it."""

    accuracy: float
    loss: float
    n: int
    seconds: float
    runtime: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "n": self.n,
            "seconds": self.seconds,
            "runtime": self.runtime,
        }


class LoadedModel(abc.ABC):
    """A shipped file loaded into a runtime: runs one batch of NCHW float32 input."""

    #: Fixed batch size the file was exported with, or None when any batch size runs.
    fixed_batch: int | None = None

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (or the model's first output) for ``batch`` as float32."""


class Runtime(abc.ABC):
    """One deployment runtime. Subclasses are registered with :func:`hwtune.runtimes.register_runtime`.

    Class attributes:
        name: Registry name (``onnxruntime``, ``torch``, ``executorch`` ...).
        format: File format it ships (``onnx``, ``pte``, ``tflite``, ``torch``).
        suffix: File suffix of that format (``.onnx``).
        precisions: Precisions it can ship (``fp32``, ``fp16``, ``int8``); ``mixed`` is a plan of these.
        extra: The pip extra that installs it (``None`` for the core install).
        modules: Python modules it needs; :meth:`available` checks they import.
    """

    name: str = ""
    format: str = ""
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    extra: str | None = None
    modules: tuple[str, ...] = ()

    # -- availability -------------------------------------------------------------------------
    def available(self) -> bool:
        """Whether this runtime's Python packages import on this machine."""
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def require(self) -> None:
        """Raise a one-line :class:`RuntimeUnavailableError` with the pip command when not installed."""
        if not self.available():
            how = f"pip install 'hwtune[{self.extra}]'" if self.extra else "reinstall hwtune"
            missing = ", ".join(self.modules)
            raise RuntimeUnavailableError(f"runtime {self.name!r} needs {missing}, which is not installed: {how}")

    # -- the seam -----------------------------------------------------------------------------
    @abc.abstractmethod
    def export(
        self,
        model: torch.nn.Module,
        example: torch.Tensor,
        plan: PrecisionPlan,
        out_path: Path,
        *,
        calibration: np.ndarray | None = None,
        device: DeviceProfile | None = None,
        seed: int = 0,
    ) -> ShippedModel:
        """Write the file that ships ``model`` at ``plan`` to ``out_path`` (atomically) and describe it.

        ``calibration`` (float32 NCHW samples from the train split) is required when ``plan`` has int8.
        Raises ConfigError for a precision the runtime cannot ship, ExportError / QuantizationError
        when conversion fails.
        """

    @abc.abstractmethod
    def load(self, target: Path | ShippedModel | torch.nn.Module, *, threads: int = 1) -> LoadedModel:
        """Load a shipped file (or, for ``torch``, a module) ready to run batches."""

    @abc.abstractmethod
    def measure_latency(
        self,
        target: Path | ShippedModel | torch.nn.Module,
        example: Any,
        *,
        threads: int = 1,
        time_budget_s: float = 10.0,
        target_ci_pct: float = 2.0,
    ) -> LatencyMeasurement:
        """Batch latency of ``target`` on this machine (median with its 95% CI, labelled measured)."""

    def op_times(
        self, target: Path | ShippedModel, example: Any, *, threads: int = 1, runs: int = 50
    ) -> Sequence[OpTime] | None:
        """Per-op median times when the runtime's profiler gives them, else None."""
        return None

    def evaluate(
        self,
        target: Path | ShippedModel | torch.nn.Module,
        dataset: Any,
        *,
        batch_size: int = 512,
        limit: int | None = None,
        threads: int | None = None,
    ) -> EvalResult:
        """Accuracy and mean cross-entropy of ``target`` on one split, run by this runtime."""
        from hwtune.runtimes._evaluate import evaluate_loaded

        loaded = self.load(target, threads=threads or 1)
        return evaluate_loaded(loaded, dataset, batch_size=batch_size, limit=limit, runtime=self.name)

    # -- helpers for subclasses ---------------------------------------------------------------
    def _path_of(self, target: Path | ShippedModel | str) -> Path:
        return Path(target.path) if isinstance(target, ShippedModel) else Path(target)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "suffix": self.suffix,
            "precisions": list(self.precisions),
            "extra": self.extra,
            "available": self.available(),
        }


RunBatch = Callable[["np.ndarray"], "np.ndarray"]
