"""TensorFlow Lite for Microcontrollers: the int8 ``.tflite`` an MCU runs, and its measured tensor arena.

On a microcontroller the memory that decides whether a model fits is the *tensor arena* TFLite
Micro allocates (activations after its memory planner, quantization parameters, per-op scratch and
the interpreter's own structs), not a peak-activation estimate from the PyTorch graph. This runtime
measures it with the ``tflite-micro`` Python interpreter, which runs the real TFLM allocator and
reference kernels on the host:

- :meth:`TFLiteMicroRuntime.arena_bytes` reads the total the ``RecordingMicroAllocator`` prints
  (``print_allocations()`` writes only to the C-level stderr, captured from file descriptor 2), or
  binary-searches the smallest arena that loads and runs (the two agree within alignment, < 64 B).
- :meth:`TFLiteMicroRuntime.export` writes the same int8 ``.tflite`` as the ``litert`` runtime
  (per-channel int8 weights, int8 activations and I/O, calibrated on ``calibration``) with every weight
  buffer inside the flatbuffer (ai-edge-quantizer appends them after it for models of ~1 MB and more,
  a layout TFLite Micro reads as zeros), measures its arena, and runs a few inputs through TFLite Micro
  and through LiteRT's reference kernels: when they disagree it refuses with an ExportError.

Accuracy: the export (``hwtune export``) scores in TFLite Micro; a search scores candidates with
LiteRT's kernels on the same file (``search_scoring_runtime``; 100x faster on the host).

Latency: :meth:`~TFLiteMicroRuntime.measure_latency` times the reference kernels *on this host*. That
number says nothing about an MCU (no SIMD kernels there, a different clock and memory system), so the
measurement is recorded under runtime ``tflite-micro (host reference kernels)`` and is never a device
latency; MCU profiles predict latency instead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import write_atomic
from hwtune.errors import ConfigError, ExportError, ModelError
from hwtune.precision import PrecisionPlan
from hwtune.runtimes import _tflite_common as tfl
from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel, TimedCall
from hwtune.runtimes._native_io import capture_fd2
from hwtune.runtimes.litert import io_spec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile

__all__ = ["ARENA_SOURCE", "HOST_LATENCY_RUNTIME", "TFLiteMicroRuntime"]

ARENA_SOURCE = "measured (tflite-micro arena)"
HOST_LATENCY_RUNTIME = "tflite-micro (host reference kernels)"
# Outputs of TFLite Micro and LiteRT's reference kernels may differ by rounding in a requantization
# step; more than this many output quantization steps is a wrong model, not rounding.
MAX_OUTPUT_STEPS = 1
CHECK_SAMPLES = 4
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_MAX_ARENA = 1 << 30


def _interpreter(content: bytes, arena_size: int) -> Any:
    from tflite_micro.python.tflite_micro import runtime as tflm

    return tflm.Interpreter.from_bytes(content, arena_size=int(arena_size))


class MicroModel(LoadedModel):
    """A ``.tflite`` in TFLite Micro's interpreter (reference kernels, one thread)."""

    fixed_batch: int  # the file's batch dimension: always set (LoadedModel allows None)

    def __init__(self, content: bytes, arena_size: int) -> None:
        err = None
        try:
            with capture_fd2() as err:
                self._it = _interpreter(content, arena_size)
        except (RuntimeError, ValueError) as e:
            detail = err.last_line() if err is not None else ""
            raise ModelError(
                f"tflite-micro cannot load the model with a {arena_size} B arena: {e}{' | ' + detail if detail else ''}"
            ) from e
        self._in = self._it.get_input_details(0)
        self._out = self._it.get_output_details(0)
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.fixed_batch = self.input_shape[0]
        self.input_dtype = self._in["dtype"]

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """The input tensor (int8 via the file's scale and zero point) for a float batch of ``fixed_batch``."""
        return tfl.quantize_input(batch, self._in)

    def run_native(self, x: np.ndarray) -> np.ndarray:
        """One invoke on a prepared input; the raw output tensor."""
        self._it.set_input(x, 0)
        self._it.invoke()
        return self._it.get_output(0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise ModelError(
                f"the .tflite expects input (N, {', '.join(map(str, self.input_shape[1:]))}), got {tuple(batch.shape)}"
            )
        return tfl.run_chunked(
            lambda c: tfl.dequantize_output(self.run_native(self.prepare(c)), self._out), batch, self.fixed_batch
        )

    def allocations_text(self) -> str:
        """What the RecordingMicroAllocator prints (call after one invoke)."""
        with capture_fd2() as out:
            self._it.print_allocations()
        return out.text


def _loads_and_runs(content: bytes, arena_size: int, shape: tuple[int, ...], dtype: Any) -> bool:
    import numpy as np

    try:
        with capture_fd2():
            it = _interpreter(content, arena_size)
            it.set_input(np.zeros(shape, dtype=dtype), 0)
            it.invoke()
    except RuntimeError:
        return False
    return True


class TFLiteMicroRuntime(Runtime):
    """int8 ``.tflite`` for microcontrollers, checked and measured with the ``tflite-micro`` interpreter."""

    name = "tflite-micro"
    format = "tflite"
    suffix = ".tflite"
    precisions = ("int8",)
    extra = "litert"
    modules = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer", "tflite_micro")
    # A search scores each candidate's .tflite with LiteRT's kernels: the same int8 flatbuffer, whose TFLite
    # Micro outputs export checked against LiteRT's reference kernels (within MAX_OUTPUT_STEPS). TFLite
    # Micro's reference kernels take 10-30 ms per 32x32 RGB image of a 12.5 M MAC network on the host (100x
    # LiteRT), so scoring 5,000 validation images would take minutes per candidate. ``hwtune export`` scores
    # validation and test in TFLite Micro itself and refuses a file whose figure disagrees with the study's.
    search_scoring_runtime = "litert"

    # -- memory --------------------------------------------------------------------------------
    def arena_bytes(self, target: Path | ShippedModel | str, *, method: str = "allocations") -> int:
        """Tensor arena TFLite Micro needs for the model, measured.

        Args:
            target: A ``.tflite`` file (or the ShippedModel of one).
            method: ``allocations`` reads the RecordingMicroAllocator's total after one invoke;
                ``search`` binary-searches the smallest arena with which the model loads and runs.

        Raises:
            ConfigError: an unknown method.
            ModelError: the model does not load in TFLite Micro even with a 1 GiB arena.
        """
        if method not in ("allocations", "search"):
            raise ConfigError(f"arena_bytes method must be 'allocations' or 'search', got {method!r}")
        self.require()
        content = tfl.read_target(self, target)
        loaded, size = _load_with_room(content)
        shape, dtype = loaded.input_shape, loaded.input_dtype
        if method == "allocations":
            loaded.run_native(loaded.prepare(_zeros(shape)))
            match = _ARENA_TOTAL.search(loaded.allocations_text())
            if match:
                return int(match.group(1))
        lo, hi = 1, size  # invariant: hi loads and runs
        while lo < hi:
            mid = (lo + hi) // 2
            if _loads_and_runs(content, mid, shape, dtype):
                hi = mid
            else:
                lo = mid + 1
        return hi

    # -- the seam ------------------------------------------------------------------------------
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
        """Write the int8 ``.tflite``, check TFLite Micro against LiteRT's reference kernels, measure its arena.

        ``info`` gains ``arena_bytes`` / ``arena_source``, ``reference_max_diff_steps`` (largest
        output difference, in output quantization steps, over ``CHECK_SAMPLES`` inputs) and the file's
        ``input`` / ``output`` tensors (:func:`hwtune.runtimes.litert.io_spec`).

        Raises:
            ConfigError: an fp32 plan (microcontroller deployments are int8 here; use ``litert`` for fp32).
            ExportError: TFLite Micro's outputs disagree with the reference kernels.
        """
        self.require()
        plan = PrecisionPlan.coerce(plan)
        if not self.supports(plan):
            raise ConfigError(
                f"runtime 'tflite-micro' ships fully int8 models, got {plan.label!r}; export fp32 or mixed "
                "plans with runtime 'litert'"
            )
        content, info = tfl.export_tflite(model, example, plan, calibration=calibration, seed=seed, runtime=self.name)
        external = info.get("external_buffers", 0)
        if external:  # TFLite Micro reads only buffers stored inside the flatbuffer
            content = tfl.inline_buffers(content)
            info["external_buffers"] = 0
            info.setdefault("notes", []).append(f"{external} weight buffers moved inside the flatbuffer for TFLM")
        info.update(io_spec(content))
        check = calibration if calibration is not None else tfl.random_calibration(tuple(example.shape), seed + 1)
        steps = _check_against_reference(content, check[: CHECK_SAMPLES * int(example.shape[0])])
        path = write_atomic(out_path, content, what="the .tflite model", error=ExportError)
        info.update(arena_bytes=self.arena_bytes(path), arena_source=ARENA_SOURCE, reference_max_diff_steps=steps)
        return ShippedModel(path, self.name, self.format, plan.label, tuple(example.shape), info)

    def check_outputs(self, target: Path | ShippedModel | str, samples: np.ndarray) -> int:
        """Run ``samples`` through TFLite Micro and LiteRT's reference kernels; largest difference in steps.

        Raises:
            ExportError: they differ by more than ``MAX_OUTPUT_STEPS`` output quantization steps.
        """
        self.require()
        return _check_against_reference(tfl.read_target(self, target), samples)

    def load(self, target: Path | ShippedModel | Any, *, threads: int | None = 1) -> MicroModel:
        """The file in TFLite Micro with a generous arena (>= 1 MiB; ``threads`` must be 1 or None)."""
        self.require()
        if threads not in (None, 1):
            raise ConfigError(f"tflite-micro runs on one thread, got threads={threads!r}")
        content = tfl.read_target(self, target)
        return _load_with_room(content)[0]

    @contextlib.contextmanager
    def timed_call(self, target: Path | ShippedModel | Any, example: Any, *, threads: int) -> Iterator[TimedCall]:
        """Host latency of TFLite Micro's reference kernels, labelled as such: NOT a microcontroller latency."""
        loaded = self.load(target, threads=threads)
        x = loaded.prepare(tfl.example_array(example, loaded.input_shape))
        yield TimedCall(lambda: loaded.run_native(x), label=HOST_LATENCY_RUNTIME, threads=1)


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    return np.zeros(shape, dtype=np.float32)


def _check_against_reference(content: bytes, samples: np.ndarray) -> int:
    """Largest |TFLM - LiteRT reference| over ``samples`` in output steps; ExportError above the limit."""
    import numpy as np

    micro, _ = _load_with_room(content)
    ref = tfl.TfliteInterpreterModel(content, threads=1, reference=True)
    fixed = micro.fixed_batch
    if len(samples) < fixed:
        raise ConfigError(f"the output check needs at least one batch of {fixed} samples, got {len(samples)}")
    worst = 0
    for start in range(0, len(samples) - fixed + 1, fixed):
        chunk = np.ascontiguousarray(samples[start : start + fixed], dtype=np.float32)
        got = micro.run_native(micro.prepare(chunk))
        want = ref.run_native(ref.prepare(chunk))
        if got.dtype.kind == "f" or want.dtype.kind == "f":
            raise ExportError("the tflite-micro output check expects an integer output tensor, got float")
        worst = max(worst, int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()))
    if worst > MAX_OUTPUT_STEPS:
        raise ExportError(
            f"TFLite Micro's outputs differ from LiteRT's reference kernels by up to {worst} quantization "
            f"steps (allowed {MAX_OUTPUT_STEPS}); the .tflite would run wrongly on the microcontroller"
        )
    return worst


def _load_with_room(content: bytes) -> tuple[MicroModel, int]:
    """Load with an arena that is surely large enough (10x the file, at least 1 MiB, doubled on failure)."""
    size = max(1 << 20, 10 * len(content))
    while True:
        try:
            return MicroModel(content, size), size
        except ModelError:
            if size >= _MAX_ARENA:
                raise
            size *= 2
