"""ExecuTorch: ``.pte`` programs lowered to the XNNPACK delegate, run by ``executorch.runtime``.

The PyTorch-native path to ARM phones and boards. Export: ``torch.export`` -> (int8: PT2E with
``XNNPACKQuantizer``, per-channel symmetric int8 weights and int8 activations, calibrated on
``calibration``) -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``.

- Mixed precision: the quantizer's filter keeps the nodes of the plan's fp32 modules (by their
  ``nn_module_stack`` path) out of quantization; XNNPACK runs them in fp32.
- ``info["float_ops"]`` lists the compute ops of the quantized graph whose inputs are not
  dequantized int8 tensors (they run in float); ``info["non_delegated_ops"]`` lists ops XNNPACK did
  not take (they run in ExecuTorch's portable kernels); ``info["input"]`` / ``info["output"]`` are the
  program's tensors read back from the ``.pte`` (float32 even for int8: XNNPACK quantizes inside).
- Threads: ExecuTorch's CPU thread pool is process-wide; :meth:`ExecuTorchRuntime.load` resets it to
  ``threads`` before loading the method, so the last load decides for every loaded program.
- Per-op times come from the ETDump the runtime writes when loaded with ``enable_etdump``, read by
  ``executorch.devtools.Inspector`` (XNNPACK reports one event per operator it runs).

Example:
    >>> rt = get_runtime("executorch")  # doctest: +SKIP
    >>> shipped = rt.export(model, torch.randn(1, 1, 28, 28), PrecisionPlan.uniform("int8"),  # doctest: +SKIP
    ...                     "model.pte", calibration=calib)
    >>> rt.load(shipped).run(batch).shape  # doctest: +SKIP
    (1, 10)
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import write_atomic
from hwtune._tempdirs import work_dir
from hwtune.errors import ConfigError, ExportError, ModelError, QuantizationError
from hwtune.precision import PrecisionPlan
from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel, TimedCall
from hwtune.runtimes._native_io import capture_fd2
from hwtune.runtimes._plan_check import check_overrides
from hwtune.runtimes._timing import OpTime, check_timing_args

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.device import DeviceProfile

__all__ = ["ExecuTorchRuntime", "float_compute_ops"]

# aten ops that do arithmetic on activations (BatchNorm is folded into the conv before lowering).
_WEIGHTED_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose2d", "linear"})
_COMPUTE_OPS = _WEIGHTED_OPS | {"addmm", "mm", "bmm", "matmul", "add", "sub", "mul", "div", "mean", "sum", "cat"}
_COMPUTE_OPS |= {"adaptive_avg_pool2d", "avg_pool2d", "max_pool2d", "hardswish", "hardsigmoid", "sigmoid", "tanh"}
_COMPUTE_OPS |= {"softmax", "_softmax", "gelu", "silu"}
_DEQUANTIZE = re.compile(r"quantized_decomposed\.dequantize_per_|dequantize_affine")
# Ops XNNPACK profiles that are not computation of the model (aggregates and layout copies).
_NOT_OPS = frozenset({"Method::execute", "DELEGATE_CALL", "Method::init", "Program::load_method"})
RANDOM_CALIBRATION_SAMPLES = 16
# ExecuTorch's tensor metadata gives c10::ScalarType codes (c10/core/ScalarType.h).
_SCALAR_TYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
    15: "bfloat16",
}


def _op_name(node: Any) -> str:
    """``conv2d`` for ``aten.conv2d.default``."""
    parts = str(node.target).split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "aten" else parts[0]


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].")


def _is_dequantize(node: Any) -> bool:
    return getattr(node, "op", None) == "call_function" and bool(_DEQUANTIZE.search(str(node.target)))


def float_compute_ops(graph_module: Any) -> list[str]:
    """Compute ops of a (PT2E-converted) graph that run in float: ``["add (stages.1.1)", ...]``.

    An op runs int8 when every activation input and its weight are dequantized int8 tensors (the Q/DQ
    pattern the XNNPACK partitioner lowers to an integer kernel); a float bias does not count.
    """
    out = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or _op_name(node) not in _COMPUTE_OPS:
            continue
        needed = [a for a in node.all_input_nodes if a.op != "get_attr"]
        weight = node.args[1] if _op_name(node) in _WEIGHTED_OPS and len(node.args) > 1 else None
        if weight is not None and weight not in needed:
            needed.append(weight)  # a float weight is a get_attr: the op is float even with int8 inputs
        if not needed or not all(_is_dequantize(a) for a in needed):
            out.append(f"{_op_name(node)} ({_module_path(node)})")
    return out


@functools.cache
def _ptq_quantizer_class() -> type:
    """XNNPACKQuantizer without its conv+BN patterns.

    ``prepare_pt2e`` folds BatchNorm into the conv before annotating, so for post-training
    quantization those patterns never match; tracing them costs ~2 s each of a ~7 s export.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    patterns = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]
    return type("PtqXnnpackQuantizer", (XNNPACKQuantizer,), {"SUPPORTED_PATTERNS": patterns})


def _quantizer(plan: PrecisionPlan) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    quantizer = _ptq_quantizer_class()().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if plan.is_mixed:
        quantizer.set_filter_function(lambda node: plan.for_module(_module_path(node)) == "int8")
    return quantizer


def _quantize(exported: Any, example: torch.Tensor, plan: PrecisionPlan, calibration: np.ndarray) -> Any:
    """PT2E int8 of an exported program at ``plan``; returns the converted graph module."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = exported.module()
    if plan.is_mixed:
        check_overrides((_module_path(n) for n in gm.graph.nodes), plan, what="module of the exported graph")
    batch = int(example.shape[0])
    try:
        prepared = prepare_pt2e(gm, _quantizer(plan))
        calib = torch.from_numpy(calibration.astype("float32", copy=False))
        with torch.no_grad():
            for start in range(0, len(calib) - batch + 1, batch):
                prepared(calib[start : start + batch])
        return convert_pt2e(prepared)
    except Exception as e:
        raise QuantizationError(f"PT2E int8 quantization for XNNPACK failed: {type(e).__name__}: {e}") from e


def _lower(exported: Any) -> tuple[bytes, list[str]]:
    """XNNPACK-lowered ``.pte`` bytes and the ops left outside the delegate."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    left = [
        str(n.target)
        for n in edge.exported_program().graph_module.graph.nodes
        if n.op == "call_function"
        and "executorch_call_delegate" not in str(n.target)
        and "getitem" not in str(n.target)
    ]
    return bytes(edge.to_executorch().buffer), left


def _io_spec(content: bytes) -> dict[str, dict[str, Any]]:
    """The program's ``forward`` input and output tensors (dtype, fixed shape), read back from the ``.pte``.

    Quantized programs keep float32 I/O: the XNNPACK delegate quantizes and dequantizes inside, so
    ``scale`` and ``zero_point`` are None (same keys as :func:`hwtune.runtimes.litert.io_spec`).
    """
    from executorch.runtime import Runtime as EtRuntime

    def spec(meta: Any) -> dict[str, Any]:
        code = int(meta.dtype())
        return {
            "dtype": _SCALAR_TYPES.get(code, f"ScalarType {code}"),
            "shape": [int(d) for d in meta.sizes()],
            "scale": None,
            "zero_point": None,
        }

    with capture_fd2():
        method = EtRuntime.get().load_program(content).metadata("forward")
    return {"input": spec(method.input_tensor_meta(0)), "output": spec(method.output_tensor_meta(0))}


class ExecuTorchModel(LoadedModel):
    """A ``.pte`` program's ``forward`` method loaded into the ExecuTorch runtime."""

    fixed_batch: int  # the file's batch dimension: always set (LoadedModel allows None)

    def __init__(self, path: Path, *, threads: int | None, etdump: bool = False) -> None:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime as EtRuntime

        try:
            with capture_fd2():  # cpuinfo and threadpool chatter on fd 2
                if threads is not None:
                    portable_lib._unsafe_reset_threadpool(int(threads))
                self.program = EtRuntime.get().load_program(path, enable_etdump=etdump)
                self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{path}: ExecuTorch cannot load the program: {e}") from e
        meta = self.method.metadata.input_tensor_meta(0)
        self.input_shape = tuple(int(d) for d in meta.sizes())
        self.fixed_batch = self.input_shape[0]

    def execute(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.execute([x])[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        import numpy as np
        import torch

        if tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise ModelError(
                f"the .pte expects input (N, {', '.join(map(str, self.input_shape[1:]))}), got {tuple(batch.shape)}"
            )
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        outs = []
        for start in range(0, len(x), self.fixed_batch):
            chunk = x[start : start + self.fixed_batch]
            real = len(chunk)
            if real < self.fixed_batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.fixed_batch - real, *chunk.shape[1:]))])
            outs.append(self.execute(chunk)[:real].detach().numpy().copy())
        return np.concatenate(outs)


class ExecuTorchRuntime(Runtime):
    """``.pte`` with the XNNPACK delegate (fp32, int8 and per-stage mixes of them)."""

    name = "executorch"
    format = "pte"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    extra = "executorch"
    modules = ("executorch", "torchao")

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
        """Lower ``model`` at ``plan`` to XNNPACK and write the ``.pte`` atomically (``quant_config`` unused).

        Raises:
            ConfigError: a precision other than fp32/int8, or an override that matches no module.
            ModelError: ``torch.export`` cannot capture the model.
            QuantizationError / ExportError: quantization or lowering failed.
        """
        import torch

        self.require()
        plan = PrecisionPlan.coerce(plan)
        if not self.supports(plan):
            bad = next(p for p in plan.precisions if p not in self.precisions)
            raise ConfigError(f"runtime 'executorch' ships fp32, int8 and per-stage mixes of them, got {bad!r}")
        if plan.is_mixed:
            check_overrides((name for name, _ in model.named_modules()), plan, what="module of the model")
        notes: list[str] = []
        calibration_samples = 0
        was_training = model.training
        model.eval()
        try:
            try:
                exported = torch.export.export(model, (example,))
            except Exception as e:
                raise ModelError(f"torch.export failed for {type(model).__name__}: {type(e).__name__}: {e}") from e
            if "int8" in plan.precisions:
                if calibration is None:
                    import numpy as np

                    rng = np.random.default_rng(seed)
                    calibration = rng.standard_normal((RANDOM_CALIBRATION_SAMPLES, *example.shape[1:]))
                    notes.append(f"int8 calibrated on {len(calibration)} random samples (no calibration data given)")
                calibration_samples = len(calibration)
                converted = _quantize(exported, example, plan, calibration)
                float_ops = float_compute_ops(converted)
                exported = torch.export.export(converted, (example,))
            else:
                float_ops = float_compute_ops(exported.graph_module)
            try:
                with capture_fd2():
                    content, left = _lower(exported)
            except Exception as e:
                raise ExportError(f"lowering to ExecuTorch/XNNPACK failed: {type(e).__name__}: {e}") from e
        finally:
            model.train(was_training)
        info: dict[str, Any] = {"delegate": "XnnpackBackend", "float_ops": float_ops, "non_delegated_ops": left}
        info.update(_io_spec(content))
        if "int8" in plan.precisions:
            info["quantization"] = {
                "tool": "PT2E XNNPACKQuantizer",
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor",
                "calibration_samples": calibration_samples,
            }
        if notes:
            info["notes"] = notes
        path = write_atomic(out_path, content, what="the .pte program", error=ExportError)
        return ShippedModel(path, self.name, self.format, plan.label, tuple(example.shape), info)

    def load(self, target: Path | ShippedModel | Any, *, threads: int | None = 1) -> ExecuTorchModel:
        """The program's ``forward`` with the (process-wide) CPU thread pool reset to ``threads``."""
        self.require()
        return ExecuTorchModel(self._file(target), threads=threads)

    def _file(self, target: Any) -> Path:
        if not isinstance(target, (str, Path, ShippedModel)):
            raise ConfigError(
                f"runtime 'executorch' runs .pte files; export the module first (got {type(target).__name__})"
            )
        path = self._path_of(target)
        if not path.is_file():
            raise ModelError(f"{path}: no such .pte file")
        return path

    @contextlib.contextmanager
    def timed_call(self, target: Path | ShippedModel | Any, example: Any, *, threads: int) -> Iterator[TimedCall]:
        """``method.execute`` on one batch (``example`` or zeros of the program's input shape)."""
        loaded = self.load(target, threads=threads)
        x = _example_tensor(example, loaded.input_shape)
        yield TimedCall(lambda: loaded.execute(x))

    def op_times(
        self, target: Path | ShippedModel, example: Any, *, threads: int = 1, runs: int = 50, warmup_runs: int = 3
    ) -> Sequence[OpTime] | None:
        """Median time per XNNPACK operator over ``runs`` runs, from the ETDump (warm-up runs dropped)."""
        import statistics

        check_timing_args(threads=threads, time_budget_s=1.0)
        self.require()
        loaded = ExecuTorchModel(self._file(target), threads=threads, etdump=True)
        x = _example_tensor(example, loaded.input_shape)
        for _ in range(warmup_runs + runs):
            loaded.execute(x)
        frame = _etdump_frame(loaded.program)
        times: list[OpTime] = []
        for _, row in frame.iterrows():
            name = str(row["event_name"])
            if row["event_block_name"] != "Execute" or name in _NOT_OPS:
                continue
            raw = [float(t) for t in row["raw"]][warmup_runs:]
            if raw:
                op_type = re.sub(r"\s*#\d+$", "", name)
                times.append(OpTime(node=name, op_type=op_type, median_ms=statistics.median(raw), runs=len(raw)))
        return times


def _etdump_frame(program: Any) -> Any:
    from executorch.devtools import Inspector

    with work_dir("etdump") as tmp:
        etdump = Path(tmp) / "run.etdp"
        program.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
        with capture_fd2():
            return Inspector(etdump_path=str(etdump)).to_dataframe()


def _example_tensor(example: Any, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    if example is None:
        return torch.zeros(shape)
    x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
    if tuple(x.shape) != tuple(shape):
        raise ModelError(f"the .pte expects input {tuple(shape)}, got {tuple(x.shape)}")
    return x.detach().to(torch.float32).contiguous()
