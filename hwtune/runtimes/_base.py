"""What a deployment runtime must offer hwtune, and the value objects it hands back.

A runtime turns a trained ``torch.nn.Module`` into the file that ships (``export``), loads such a
file into something that runs a batch (``load``), and is measured and scored on it
(``measure_latency``, ``evaluate``, ``op_times``). Profiler, tuner, evaluation and export all go
through this seam, so a new runtime is one new module registered in :mod:`hwtune.runtimes`.

The shared parts a runtime does not rewrite live next to this protocol: the timed loop with its
stopping rule (:func:`hwtune.runtimes.measure_callable`) and the evaluation loop over a dataset
(:func:`hwtune.runtimes.evaluate_loaded`, which :meth:`Runtime.evaluate` calls).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import RuntimeUnavailableError
from hwtune.runtimes._evaluate import DEFAULT_EVAL_BATCH, EvalResult, check_eval_args, evaluate_loaded

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes._timing import LatencyMeasurement, OpTime, TimingBudget

__all__ = ["LoadedModel", "Runtime", "ShippedModel", "TimedCall"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ShippedModel:
    """The deployable file a runtime produced for one model at one precision plan.

    Attributes:
        path: The file that ships (``.onnx``, ``.pt2``, ``.pte``, ``.tflite`` ...).
        runtime: Registered name of the runtime that runs it.
        format: File format (``onnx``, ``torch``, ``pte``, ``tflite``).
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
        """Size of the shipped file on disk."""
        return Path(self.path).stat().st_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "path": str(self.path),
            "runtime": self.runtime,
            "format": self.format,
            "precision_label": self.precision_label,
            "input_shape": list(self.input_shape),
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShippedModel:
        return cls(
            path=Path(data["path"]),
            runtime=str(data["runtime"]),
            format=str(data["format"]),
            precision_label=str(data["precision_label"]),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            info=dict(data.get("info", {})),
        )


class LoadedModel(abc.ABC):
    """A shipped file (or a module) loaded into a runtime: runs one batch of NCHW float32 input."""

    #: Fixed batch size the file was exported with, or None when any batch size runs.
    fixed_batch: int | None = None

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (or the model's first output) for ``batch`` (float32 NCHW) as a float32 array.

        Raises:
            ModelError: The runtime rejected the batch (wrong shape or type).
        """


@dataclass(frozen=True)
class TimedCall:
    """What :meth:`Runtime.measure_latency` times: one prepared batch run.

    Attributes:
        run: Runs one batch (the input already set up); its result is ignored.
        label: Runtime name the measurement is labelled with (default: the runtime's own).
        threads: Threads the run really uses, when not the ones asked for.
    """

    run: Callable[[], Any]
    label: str | None = None
    threads: int | None = None


class Runtime(abc.ABC):
    """One deployment runtime. Subclasses are registered with :func:`hwtune.runtimes.register_runtime`.

    Class attributes:
        name: Registry name (``onnxruntime``, ``torch``, ``executorch`` ...).
        format: File format it ships (``onnx``, ``pte``, ``tflite``, ``torch``).
        suffix: File suffix of that format (``.onnx``); :func:`~hwtune.runtimes.runtime_for_file` uses it.
        precisions: Precisions it can ship (``fp32``, ``fp16``, ``int8``); ``mixed`` is a plan of these.
        extra: The pip extra that installs it (``None`` for the core install).
        modules: Python modules it needs; :meth:`available` checks they import.
        runs_modules: Whether ``load``/``measure_latency``/``evaluate`` take a torch ``nn.Module`` as it
            is (no export first). True for ``torch`` eager only; the profiler then measures the module
            itself for an fp32 plan.
    """

    name: str = ""
    format: str = ""
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    extra: str | None = None
    modules: tuple[str, ...] = ()
    runs_modules: bool = False

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

    def supports(self, plan: PrecisionPlan) -> bool:
        """Whether every precision of ``plan`` is one this runtime ships."""
        return all(p in self.precisions for p in plan.precisions)

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
        quant_config: Any = None,
    ) -> ShippedModel:
        """Write the file that ships ``model`` at ``plan`` to ``out_path`` (atomically) and describe it.

        ``calibration`` (float32 NCHW samples from the train split) should be given when ``plan`` has
        int8; without it a runtime may calibrate on random data (fine for latency, not for accuracy)
        and must say so in ``info["notes"]``. ``device`` picks ISA-dependent choices (int8
        activation type); ``quant_config`` carries runtime-specific quantization settings
        (``hwtune.quant.QuantConfig`` for ``onnxruntime``), None for the runtime's defaults.

        Raises:
            ConfigError: a precision the runtime cannot ship.
            ModelError / ExportError / QuantizationError: conversion failed.
        """

    @abc.abstractmethod
    def load(self, target: Path | ShippedModel | torch.nn.Module, *, threads: int | None = 1) -> LoadedModel:
        """Load a shipped file (or, for ``runs_modules`` runtimes, a module) ready to run batches.

        ``threads`` intra-op threads; None keeps the runtime's own default.
        """

    def measure_latency(
        self,
        target: Path | ShippedModel | torch.nn.Module,
        example: Any,
        *,
        threads: int = 1,
        timing: TimingBudget | None = None,
        **settings: Any,
    ) -> LatencyMeasurement:
        """Batch latency of ``target`` on this machine (median with its 95% CI, labelled measured).

        The run prepared by :meth:`timed_call` is timed by :func:`hwtune.runtimes.measure_callable`
        with ``timing`` (a :class:`~hwtune.runtimes.TimingBudget`; ``**settings`` replaces any of its
        fields, e.g. ``time_budget_s=0.5``), so every runtime uses the same stopping rule.
        """
        from hwtune.runtimes._timing import TimingBudget, check_timing_args, measure_callable

        check_timing_args(threads=threads, time_budget_s=1.0)
        timing = TimingBudget.coerce(timing, **settings)  # a bad setting fails before anything loads
        with self.timed_call(target, example, threads=threads) as call:
            return measure_callable(
                call.run,
                runtime=call.label or self.name,
                threads=threads if call.threads is None else call.threads,
                timing=timing,
            )

    def timed_call(
        self, target: Path | ShippedModel | Any, example: Any, *, threads: int
    ) -> contextlib.AbstractContextManager[TimedCall]:
        """A context holding one batch run of ``target``, loaded and with its input prepared.

        :meth:`measure_latency` times ``run`` inside it; what the run needs for as long as it is
        timed (a temporary file, a thread setting, ``inference_mode``) lives in the context.
        Every built-in runtime defines it; a runtime may override :meth:`measure_latency` instead.
        """
        raise NotImplementedError(f"runtime {self.name!r} defines neither timed_call nor measure_latency")

    def op_times(
        self, target: Path | ShippedModel, example: Any, *, threads: int = 1, runs: int = 50, warmup_runs: int = 3
    ) -> Sequence[OpTime] | None:
        """Per-op median times when the runtime's profiler gives them, else None."""
        return None

    def layer_times(self, layers: Sequence[Any], op_times: Sequence[OpTime]) -> tuple[dict[str, float], float]:
        """Map :meth:`op_times` onto traced layers (``hwtune.graph.LayerInfo``).

        The default matches op names to layer names exactly; runtimes whose op names encode the
        module path (ONNX Runtime) override it.

        Returns:
            (ms per layer name, ms of ops that belong to no layer).
        """
        names = {layer.name for layer in layers}
        times: dict[str, float] = {}
        unattributed = 0.0
        for op in op_times:
            if op.node in names:
                times[op.node] = times.get(op.node, 0.0) + op.median_ms
            else:
                unattributed += op.median_ms
        return times, unattributed

    def evaluate(
        self,
        target: Path | ShippedModel | torch.nn.Module,
        dataset: Any,
        *,
        batch_size: int = DEFAULT_EVAL_BATCH,
        limit: int | None = None,
        threads: int | None = None,
    ) -> EvalResult:
        """Accuracy and mean cross-entropy of ``target`` on one split, run by this runtime.

        ``threads`` None keeps the runtime's default. See :func:`hwtune.runtimes.evaluate_loaded`.
        """
        check_eval_args(dataset, batch_size=batch_size, limit=limit)  # before a slow load
        loaded = self.load(target, threads=threads)
        return evaluate_loaded(loaded, dataset, batch_size=batch_size, limit=limit, runtime=self.name)

    # -- helpers for subclasses ---------------------------------------------------------------
    def _path_of(self, target: Path | ShippedModel | str) -> Path:
        return Path(target.path) if isinstance(target, ShippedModel) else Path(target)

    def describe(self) -> dict[str, Any]:
        """Name, format, suffix, precisions, extra and availability, JSON-able (for ``hwtune runtimes``)."""
        return {
            "name": self.name,
            "format": self.format,
            "suffix": self.suffix,
            "precisions": list(self.precisions),
            "extra": self.extra,
            "available": self.available(),
        }


RunBatch = Callable[["np.ndarray"], "np.ndarray"]
