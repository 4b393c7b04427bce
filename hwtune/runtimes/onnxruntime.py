"""ONNX Runtime (CPU provider): hwtune's default deployment runtime — fp32, fp16 and int8 QDQ ``.onnx`` files.

Export is :func:`hwtune.onnx_export.export_onnx` followed, for a non-fp32 plan, by
:func:`hwtune.quant.quantize` (static int8 QDQ with the device's activation type, fp16 conversion,
or mixed precision). Every ONNX Runtime session hwtune opens comes from :func:`ort_session`, so
measurement, per-op profiling and evaluation run the same graph optimizations and threading.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._tempdirs import work_dir
from hwtune._util import first_line, jsonable
from hwtune.errors import ConfigError, ModelError, RuntimeUnavailableError
from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel, TimedCall
from hwtune.runtimes._ort_profile import attribute_op_times, collect_op_times
from hwtune.runtimes._timing import OpTime

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnxruntime
    import torch

    from hwtune.device import DeviceProfile
    from hwtune.precision import PrecisionPlan

__all__ = ["OnnxLoadedModel", "OnnxRuntime", "attribute_op_times", "ort_session", "profile_ort_ops"]

# Random calibration (no data given) only serves latency: ranges from noise do not improve with more
# noise, so a small set keeps int8 profiling fast.
RANDOM_CALIBRATION_SAMPLES = 16
_ORT_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def ort_session(
    path: str | Path,
    threads: int | None = 1,
    *,
    profiling: bool = False,
    profile_prefix: str | Path | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session set up the way hwtune measures — the one session builder.

    ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core), one inter-op
    thread, sequential execution, all graph optimizations (constant folding, conv+bn+activation
    fusion, NCHWc layout on x86).

    Raises:
        ModelError: If the file is missing or not a model ONNX Runtime can load.
        RuntimeUnavailableError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise RuntimeUnavailableError(f"runtime 'onnxruntime' is not installed ({exc}): reinstall hwtune") from exc

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    so = ort.SessionOptions()
    if threads is not None:
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
        raise ModelError(f"{path}: ONNX Runtime cannot load this model: {first_line(exc)}") from exc


def _feed(session: onnxruntime.InferenceSession, example: Any, where: str = "") -> dict[str, np.ndarray]:
    """The input feed for ``example`` (cast to the model's float type); ModelError naming both shapes if it cannot fit."""
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
        got = "x".join(map(str, shape))
        raise ModelError(f"{where}ONNX model input {inp.name!r} expects shape {expected}, got {got}")
    return {inp.name: arr}


def profile_ort_ops(
    path: str | Path, example: Any, *, threads: int = 1, runs: int = 20, warmup_runs: int = 3
) -> list[OpTime]:
    """Per-node times of ``path`` from ONNX Runtime's profiler (median over ``runs``), in execution order.

    Node names are those of the optimized graph: fused nodes are named after their fused output, e.g.
    ``/features/features.0/features.0.2/Clip`` for conv+bn+relu6 (see :func:`attribute_op_times`).
    """
    path = Path(path)
    return collect_op_times(
        lambda prefix: ort_session(path, threads, profiling=True, profile_prefix=prefix),
        lambda session: _feed(session, example, f"{path}: "),
        runs=runs,
        warmup_runs=warmup_runs,
    )


class OnnxLoadedModel(LoadedModel):
    """An ONNX Runtime session that runs one NCHW float32 batch (cast to fp16 for fp16-input graphs)."""

    def __init__(self, session: Any, source: str = "") -> None:
        import numpy as np

        self.session = session
        self.source = source
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
        self.dtype = np.dtype(_ORT_NP_TYPES.get(inp.type, "float32"))
        first = inp.shape[0] if inp.shape else None
        self.fixed_batch = first if isinstance(first, int) and first > 0 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np

        arr = np.ascontiguousarray(batch, dtype=self.dtype)
        try:
            out = self.session.run([self.output_name], {self.input_name: arr})[0]
        except Exception as exc:  # ORT raises InvalidArgument etc.
            where = f"{self.source}: " if self.source else ""
            raise ModelError(f"{where}ONNX Runtime failed on a batch of shape {arr.shape}: {first_line(exc)}") from exc
        return np.asarray(out, dtype=np.float32)


class OnnxRuntime(Runtime):
    """ONNX Runtime on the CPU execution provider (``.onnx``; fp32, fp16, int8 QDQ and mixed plans).

    ``measure_latency`` also takes a torch ``nn.Module`` (exported to a temporary fp32 ONNX file
    first), and ``export`` takes an fp32 ``.onnx`` file as its source (converted to the plan
    without re-exporting).
    """

    name = "onnxruntime"
    format = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "fp16", "int8")
    extra = None
    modules = ("onnxruntime", "onnx")

    # -- export -------------------------------------------------------------------------------
    def export(
        self,
        model: torch.nn.Module | str | Path,
        example: Any,
        plan: PrecisionPlan | str,
        out_path: Path,
        *,
        calibration: np.ndarray | None = None,
        device: DeviceProfile | None = None,
        seed: int = 0,
        quant_config: Any = None,
    ) -> ShippedModel:
        """Write ``model`` at ``plan`` to ``out_path`` (``.onnx``), atomically.

        Non-fp32 plans go through :func:`hwtune.quant.quantize`; ``info`` is its
        ``QuantResult.to_dict()`` (activation type, excluded nodes, calibration source, notes). With
        no ``quant_config``, int8 uses every given calibration sample, or 16 random ones (latency only)
        when ``calibration`` is None.
        """
        from hwtune.precision import PrecisionPlan
        from hwtune.quant import MIN_CALIBRATION_SAMPLES, QuantConfig, quantize

        plan = PrecisionPlan.coerce(plan)
        self._check_plan(plan)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        # A temporary directory next to the target, so the final rename stays on one filesystem.
        with tempfile.TemporaryDirectory(prefix=".hwtune-export-", dir=out.parent) as tmp:
            src = self._fp32_source(model, example, Path(tmp))
            if plan.precisions == ("fp32",):
                written = Path(tmp) / "model.onnx"
                shutil.copyfile(src, written)
                info: dict[str, Any] = {"precision_label": "fp32"}
            else:
                config = quant_config
                if config is None:
                    n = RANDOM_CALIBRATION_SAMPLES if calibration is None else len(calibration)
                    config = QuantConfig(calibration_samples=max(MIN_CALIBRATION_SAMPLES, n), seed=seed)
                result = quantize(
                    src, Path(tmp) / "model.onnx", plan, calibration=calibration, config=config, device=device
                )
                written = Path(result.path)
                info = jsonable(result.to_dict())
                info["path"] = str(out)
            os.replace(written, out)
        return ShippedModel(
            path=out,
            runtime=self.name,
            format=self.format,
            precision_label=plan.label,
            input_shape=self._input_shape(out, example),
            info=info,
        )

    def _check_plan(self, plan: PrecisionPlan) -> None:
        if not self.supports(plan):
            raise ConfigError(f"runtime {self.name!r} ships {', '.join(self.precisions)}, not the plan {plan.label}")

    def _fp32_source(self, model: Any, example: Any, tmp: Path) -> Path:
        """The fp32 ONNX file to convert: ``model`` itself when it is a file, else its export."""
        if isinstance(model, (str, Path)):
            path = Path(model)
            if path.suffix.lower() != self.suffix:
                raise ConfigError(
                    f"{path}: runtime {self.name!r} converts .onnx files, got a {path.suffix or 'suffix-less'} file"
                )
            if not path.is_file():
                raise ModelError(f"{path}: ONNX file not found")
            return path
        import torch

        from hwtune.onnx_export import export_onnx

        x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
        return export_onnx(model, x, tmp / "model.fp32.onnx")

    def _input_shape(self, path: Path, example: Any) -> tuple[int, ...]:
        if example is not None and hasattr(example, "shape"):
            return tuple(int(d) for d in example.shape)
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        init = {t.name for t in graph.initializer}
        first = next(i for i in graph.input if i.name not in init)
        return tuple(d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim)

    # -- load / measure -----------------------------------------------------------------------
    def load(self, target: Any, *, threads: int | None = 1) -> OnnxLoadedModel:
        """An :class:`OnnxLoadedModel` for a ``.onnx`` path, a ShippedModel or an open InferenceSession."""
        if hasattr(target, "run") and hasattr(target, "get_inputs"):
            return OnnxLoadedModel(target)
        if self._is_module(target):
            raise ConfigError(
                f"runtime {self.name!r} loads .onnx files, got a {type(target).__name__} module; ship it first "
                "(get_runtime('onnxruntime').export(model, example, 'fp32', path)) or run it on runtime 'torch'"
            )
        path = self._path_of(target)
        return OnnxLoadedModel(ort_session(path, threads), str(path))

    @contextlib.contextmanager
    def timed_call(self, target: Any, example: Any, *, threads: int) -> Iterator[TimedCall]:
        """``session.run`` on one batch of a ``.onnx`` file (or a module, exported to fp32 ONNX first)."""
        if not self._is_module(target):
            yield self._timed_file(self._path_of(target), example, threads)
            return
        import torch

        from hwtune.onnx_export import export_onnx

        x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
        with work_dir("ortrun") as tmp:
            yield self._timed_file(export_onnx(target, x, Path(tmp) / "model.onnx"), example, threads)

    def _timed_file(self, path: Path, example: Any, threads: int) -> TimedCall:
        session = ort_session(path, threads)
        feed = _feed(session, example, f"{path}: ")
        try:
            session.run(None, feed)
        except Exception as exc:  # onnxruntime raises its own types for shape/type mismatches
            raise ModelError(f"{path}: ONNX Runtime rejected the input: {first_line(exc)}") from exc
        return TimedCall(lambda: session.run(None, feed))

    # -- per-op times -------------------------------------------------------------------------
    def op_times(
        self, target: Path | ShippedModel, example: Any, *, threads: int = 1, runs: int = 50, warmup_runs: int = 3
    ) -> list[OpTime]:
        """Per-node median times from ONNX Runtime's profiler, in execution order (optimized-graph names)."""
        return profile_ort_ops(self._path_of(target), example, threads=threads, runs=runs, warmup_runs=warmup_runs)

    def layer_times(self, layers: Sequence[Any], op_times: Sequence[OpTime]) -> tuple[dict[str, float], float]:
        """ORT node times per traced layer, by the module path in node names (see ``attribute_op_times``)."""
        return attribute_op_times(layers, op_times)

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _is_module(target: Any) -> bool:
        return hasattr(target, "forward") and hasattr(target, "parameters") and not isinstance(target, (str, Path))
