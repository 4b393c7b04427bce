"""LiteRT (formerly TensorFlow Lite): ``.tflite`` files run by ``ai-edge-litert`` with XNNPACK on CPU.

What phones ship (the ``pixel-3`` profile deploys with it). Export converts with ``litert-torch``
and quantizes the float file with ``ai-edge-quantizer`` (see :mod:`hwtune.runtimes._tflite_common`):

- ``fp32``: the converted file as is;
- ``int8``: static int8 activations, per-channel int8 weights, int8 input/output (the loaded
  model quantizes and dequantizes with the file's own scales), calibrated on ``calibration``;
- mixed: the plan's fp32 modules are left out of quantization (QUANTIZE/DEQUANTIZE at the borders).

``info["float_ops"]`` lists every op still computing in float; ``info["input"]`` / ``info["output"]``
describe the file's own tensors (:func:`io_spec`: dtype, shape, and for int8 the scale and zero
point a deployer quantizes with). The Python interpreter exposes no per-op profiler, so
:meth:`LiteRTRuntime.op_times` returns None.

Example:
    >>> from hwtune.runtimes import get_runtime
    >>> rt = get_runtime("litert")
    >>> shipped = rt.export(model, torch.randn(1, 1, 28, 28), PrecisionPlan.uniform("int8"),  # doctest: +SKIP
    ...                     "model.tflite", calibration=calib)
    >>> rt.measure_latency(shipped, None, threads=1).label  # doctest: +SKIP
    'measured on litert (1 thread): median 0.016 ms, ...'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import write_atomic
from hwtune.errors import ExportError
from hwtune.precision import PrecisionPlan
from hwtune.runtimes import _tflite_common as tfl
from hwtune.runtimes._base import Runtime, ShippedModel, TimedCall
from hwtune.runtimes._native_io import capture_fd2

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile

__all__ = ["LiteRTRuntime", "io_spec"]


def _tensor_spec(details: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    scale, zero = details.get("quantization", (0.0, 0))
    quantized = np.dtype(details["dtype"]).kind in "iu" and bool(scale)
    return {
        "dtype": np.dtype(details["dtype"]).name,
        "shape": [int(d) for d in details["shape"]],
        "scale": float(scale) if quantized else None,
        "zero_point": int(zero) if quantized else None,
    }


def io_spec(content: bytes) -> dict[str, dict[str, Any]]:
    """The ``.tflite``'s input and output tensors as read back from the file by ai-edge-litert.

    Returns:
        ``{"input": {...}, "output": {...}}``, each with ``dtype`` (``int8``, ``float32``), ``shape``
        (batch first, fixed) and, for quantized tensors, ``scale`` and ``zero_point``
        (``real = scale * (q - zero_point)``), else None.
    """
    from ai_edge_litert.interpreter import Interpreter

    with capture_fd2():  # "Created TensorFlow Lite XNNPACK delegate" on fd 2
        it = Interpreter(model_content=content)
    return {"input": _tensor_spec(it.get_input_details()[0]), "output": _tensor_spec(it.get_output_details()[0])}


class LiteRTRuntime(Runtime):
    """``.tflite`` through ai-edge-litert's interpreter (XNNPACK delegate, ``num_threads`` threads)."""

    name = "litert"
    format = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "int8")
    extra = "litert"
    modules = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")

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
        """Convert, quantize at ``plan`` and write ``out_path`` atomically (``quant_config`` is not used)."""
        self.require()
        plan = PrecisionPlan.coerce(plan)
        content, info = tfl.export_tflite(model, example, plan, calibration=calibration, seed=seed, runtime=self.name)
        info.update(io_spec(content))
        path = write_atomic(out_path, content, what="the .tflite model", error=ExportError)
        return ShippedModel(path, self.name, self.format, plan.label, tuple(example.shape), info)

    def load(self, target: Path | ShippedModel | Any, *, threads: int | None = 1) -> tfl.TfliteInterpreterModel:
        """The file in ai-edge-litert's interpreter (XNNPACK) with ``threads`` threads."""
        self.require()
        return tfl.TfliteInterpreterModel(tfl.read_target(self, target), threads=threads)

    @contextlib.contextmanager
    def timed_call(self, target: Path | ShippedModel | Any, example: Any, *, threads: int) -> Iterator[TimedCall]:
        """Set-input + invoke + get-output of one batch (``example`` or zeros of the file's shape)."""
        loaded = self.load(target, threads=threads)
        x = loaded.prepare(tfl.example_array(example, loaded.input_shape))
        yield TimedCall(lambda: loaded.run_native(x))
