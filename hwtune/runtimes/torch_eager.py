"""PyTorch eager on the CPU: the reference runtime (fp32 only).

It runs an ``nn.Module`` as it is (``runs_modules``): measuring and evaluating need no export. At
batch 1 its per-op overhead dominates small models (MobileNetV2 0.35 @32: 4.7 ms eager vs 0.14 ms
on ONNX Runtime, measured on this host), so eager latency is a reference, not a deployment cost.

Scoring a module on a split runs it ``INFER_CHUNK`` images per forward pass, in channels-last where a
quick measurement says it is faster (once per process, architecture, input shape and thread count; the
engine's ``$HWTUNE_CHANNELS_LAST`` pins it). Measured on the 2-core EPYC (AVX-512), 1 thread, CPU-ms
per image of a CIFAR ResNet-8 (16/32/64): 0.93 at batch 512 contiguous (what scoring used to run),
0.56 at 64 contiguous, 0.30 at 64-128 channels-last; a 20/40/80 depth-2 ResNet 3.06, 1.72 and 1.24.

``export`` writes a self-contained ``torch.export`` program (``.pt2``, dynamic batch dimension) that
:meth:`TorchRuntime.load` runs without the model's Python class; non-fp32 plans raise ConfigError
(quantized deployment is what ``onnxruntime`` and the other runtimes are for).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._util import first_line
from hwtune.errors import ConfigError, ExportError, ModelError
from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel, TimedCall
from hwtune.runtimes._registry import runtime_for_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan

__all__ = ["TorchLoadedModel", "TorchRuntime"]

# torch.export specializes a dimension whose example size is 1, so the program is traced on a batch
# of at least this many copies of the example and declared dynamic from 1 up.
_EXPORT_MIN_BATCH = 2
_MAX_BATCH = 1 << 16
# Images per forward pass when scoring a module (larger batches are split: module docstring).
INFER_CHUNK = 128
# Batches smaller than this run as they come (a format change costs more than it can gain).
_MIN_FORMAT_BATCH = 16
_INFER_FORMATS: dict[tuple[Any, ...], bool] = {}


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads (None: unchanged), restoring the setting afterwards."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module, switch: bool) -> Iterator[None]:
    """Eval mode for the duration (a ``torch.export`` program has no modes: ``switch`` False leaves it)."""
    if not switch:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _first(out: Any) -> np.ndarray:
    """The logits of one forward pass (the first output of a tuple) as a float32 array."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().float().cpu().numpy()


def _as_input(model: torch.nn.Module, example: Any) -> torch.Tensor:
    """``example`` as a tensor in the dtype and on the device of the model's parameters."""
    import torch

    x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
    param = next(iter(model.parameters()), None)
    if param is not None and param.is_floating_point() and x.is_floating_point() and x.dtype != param.dtype:
        x = x.to(param.dtype)
    if param is not None and x.device != param.device:
        x = x.to(param.device)
    return x


def _forward_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    import time

    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def infer_channels_last(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether forward passes of ``model`` (eval mode) on batches like ``x`` run faster in channels-last.

    Measured once per process and (architecture: the engine's ``architecture_key``, input shape, threads)
    on a copy of the model: three interleaved forward passes of each format after a warm-up, the faster by
    the engine's ``CHANNELS_LAST_MIN_SPEEDUP`` margin wins; ``$HWTUNE_CHANNELS_LAST`` = 1/0 pins it.
    Models without 4-D weights, inputs that are not 4-D images and small batches stay contiguous; so does
    any failure to measure.
    """
    import copy

    import torch

    from hwtune.engine import architecture_key, pinned_memory_format, race_formats

    pinned = pinned_memory_format()
    if pinned is not None:
        return pinned.channels_last
    if x.ndim != 4 or x.shape[0] < _MIN_FORMAT_BATCH or not any(p.ndim == 4 for p in model.parameters()):
        return False
    key = (architecture_key(model), tuple(x.shape), torch.get_num_threads(), str(x.device))
    if key not in _INFER_FORMATS:
        try:
            with torch.no_grad():  # a copy in the training world, timed under inference mode only
                probe = copy.deepcopy(model).eval()

            def step(fmt: torch.memory_format) -> float:
                with torch.no_grad():
                    probe.to(memory_format=fmt)
                with torch.inference_mode():
                    return _forward_seconds(probe, x.contiguous(memory_format=fmt))

            _INFER_FORMATS[key] = race_formats(step, rounds=3).channels_last
        except Exception:  # noqa: BLE001 - a failed measurement must not fail the scoring
            _INFER_FORMATS[key] = False
    return _INFER_FORMATS[key]


class TorchLoadedModel(LoadedModel):
    """A module run eagerly under ``torch.inference_mode`` (eval mode during each batch, then restored)."""

    def __init__(self, model: torch.nn.Module, *, threads: int | None = None, switch_mode: bool = True) -> None:
        self.model = model
        self.threads = threads
        self.switch_mode = switch_mode

    def run(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np
        import torch

        x = _as_input(self.model, torch.from_numpy(np.ascontiguousarray(batch)))
        with _threads(self.threads), _eval_mode(self.model, self.switch_mode):
            if (
                not self.switch_mode
                or x.ndim != 4
                or x.shape[0] < _MIN_FORMAT_BATCH
                or torch.is_inference_mode_enabled()  # a caller's inference mode: the weights stay as they are
            ):
                return self._forward(x)  # a torch.export program, or a batch too small to reorder
            chunks = x.split(INFER_CHUNK)
            if not infer_channels_last(self.model, chunks[0]):
                return np.concatenate([self._forward(c) for c in chunks])
            # The format changes outside inference mode: parameters converted inside it would become
            # inference tensors, which training and export then refuse.
            with torch.no_grad():
                self.model.to(memory_format=torch.channels_last)
            try:
                return np.concatenate([self._forward(c.contiguous(memory_format=torch.channels_last)) for c in chunks])
            finally:
                with torch.no_grad():
                    self.model.to(memory_format=torch.contiguous_format)  # as it came (export expects that)

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _first(self.model(x))


class TorchRuntime(Runtime):
    """PyTorch eager (CPU, fp32): modules as they are, or ``.pt2`` programs written by :meth:`export`."""

    name = "torch"
    format = "torch"
    suffix = ".pt2"
    precisions = ("fp32",)
    extra = None
    modules = ("torch",)
    runs_modules = True

    def export(
        self,
        model: torch.nn.Module,
        example: torch.Tensor,
        plan: PrecisionPlan | str,
        out_path: Path,
        *,
        calibration: np.ndarray | None = None,
        device: DeviceProfile | None = None,
        seed: int = 0,
        quant_config: Any = None,
    ) -> ShippedModel:
        """Write ``model`` as a ``torch.export`` program (``.pt2``, batch dimension dynamic), atomically.

        Raises:
            ConfigError: The plan is not fp32.
            ExportError: ``torch.export`` cannot capture the model (data-dependent control flow ...).
        """
        import torch

        from hwtune.precision import PrecisionPlan

        plan = PrecisionPlan.coerce(plan)
        if not self.supports(plan):
            raise ConfigError(
                f"runtime 'torch' ships fp32 only, not the plan {plan.label}; use a runtime that quantizes "
                "(e.g. 'onnxruntime')"
            )
        x = _as_input(model, example)
        traced = x if x.shape[0] >= _EXPORT_MIN_BATCH else x.expand(_EXPORT_MIN_BATCH, *x.shape[1:]).contiguous()
        batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
        try:
            with _eval_mode(model, True), torch.no_grad():
                program = torch.export.export(model, (traced,), dynamic_shapes=({0: batch},))
        except Exception as exc:  # torch.export raises UserError, TorchRuntimeError, ... on uncapturable models
            first = first_line(exc)
            raise ExportError(f"torch.export of {type(model).__name__} failed: {first}") from exc
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hwtune-export-", suffix=self.suffix, dir=out.parent)
        os.close(fd)
        try:
            torch.export.save(program, tmp)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        info = {"precision_label": "fp32", "exporter": "torch.export", "torch": torch.__version__}
        return ShippedModel(out, self.name, self.format, plan.label, tuple(int(d) for d in x.shape), info)

    def load(self, target: Any, *, threads: int | None = 1) -> TorchLoadedModel:
        """A module as it is, or the program in a ``.pt2`` file / ShippedModel written by :meth:`export`."""
        if self._is_module(target):
            return TorchLoadedModel(target, threads=threads)
        return TorchLoadedModel(self._load_program(target), threads=threads, switch_mode=False)

    def _load_program(self, target: Any) -> torch.nn.Module:
        import torch

        path = self._path_of(target)
        if path.suffix.lower() != self.suffix:
            hint = ""
            with contextlib.suppress(ConfigError):
                hint = f"; use runtime {runtime_for_file(path).name!r}"
            kind = "an ONNX file" if path.suffix.lower() == ".onnx" else f"a {path.suffix or 'suffix-less'} file"
            raise ConfigError(f"runtime 'torch' cannot run {kind} ({path}){hint}")
        if not path.is_file():
            raise ModelError(f"{path}: torch program file not found")
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # a corrupt or foreign file: torch raises many types
            first = first_line(exc)
            raise ModelError(f"{path}: not a torch.export program torch can load: {first}") from exc

    @contextlib.contextmanager
    def timed_call(self, target: Any, example: Any, *, threads: int) -> Iterator[TimedCall]:
        """Eager forward of a module (or a ``.pt2`` program) under ``inference_mode`` with ``threads`` threads.

        Raises:
            ModelError: The model rejects ``example`` (the message names expected and given shape).
        """
        import torch

        from hwtune.graph import shape_message

        is_module = self._is_module(target)
        model = target if is_module else self._load_program(target)
        x = _as_input(model, example)
        with _threads(threads), _eval_mode(model, is_module), torch.inference_mode():
            try:
                model(x)
            except Exception as exc:  # any torch error on the first call means the input does not fit
                raise ModelError(shape_message(model, tuple(x.shape), exc)) from exc
            yield TimedCall(lambda: model(x))

    @staticmethod
    def _is_module(target: Any) -> bool:
        return hasattr(target, "forward") and hasattr(target, "parameters") and not isinstance(target, (str, Path))
