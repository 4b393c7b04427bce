"""The ``.tflite`` path shared by the ``litert`` and ``tflite-micro`` runtimes.

Export: ``litert-torch`` converts the module to a float ``.tflite``; int8 (and per-stage mixed)
is then applied by ``ai-edge-quantizer``'s static recipe (int8 activations, per-channel symmetric
int8 weights, int32 bias) calibrated on a representative set. Re-quantizing the float file gives
fully int8 graphs where litert-torch's own PT2E path left residual adds in float (measured on
mobilenet_v2: 9 of 10 adds), and the model's input/output become int8 too, which is what a
microcontroller wants. Ops still computing in float are listed from the flatbuffer itself.

Mixed precision: ``litert-torch`` names every tensor after the module that made it
(``.../hwtune.families._blocks.ConvBNAct_stem/torch.nn.modules.conv.Conv2d_conv``), so each op is
mapped back to a module path and its precision comes from the plan; ops whose precision differs
from the plan's default get a recipe entry matching exactly their scope.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import ConfigError, ExportError, ModelError, QuantizationError
from hwtune.runtimes._base import LoadedModel, Runtime, ShippedModel
from hwtune.runtimes._native_io import capture_fd2
from hwtune.runtimes._plan_check import check_overrides

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from hwtune.precision import PrecisionPlan

__all__ = [
    "TfliteInterpreterModel",
    "TfliteOp",
    "convert_fp32",
    "dequantize_output",
    "example_array",
    "export_tflite",
    "external_buffer_count",
    "float_op_names",
    "inline_buffers",
    "largest_op_io_bytes",
    "quantize_input",
    "quantize_int8",
    "random_calibration",
    "read_ops",
    "read_target",
    "run_chunked",
    "tflite_info",
]

# Ops that move or re-type data but compute nothing: never reported as "left in float".
_IO_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
# Random calibration (no data given) uses this many samples: ranges from noise do not improve with more.
RANDOM_CALIBRATION_SAMPLES = 16


@dataclass(frozen=True)
class TfliteOp:
    """One operator of a ``.tflite`` subgraph 0, with the module it came from."""

    index: int
    op: str
    module: str
    scope: str
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def computes_in_float(self) -> bool:
        """Whether this op does arithmetic on float tensors (quantize/dequantize excluded)."""
        if self.op in _IO_OPS:
            return False
        return any(t in _FLOAT_TYPES for t in (*self.input_types, *self.output_types))

    def describe(self) -> str:
        return f"{self.op} ({self.module or self.scope.rstrip(';')})"


# ------------------------------------------------------------------------------------------------
# Reading a .tflite flatbuffer


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _text(name: bytes | str | None) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)


def module_resolver(model: torch.nn.Module | None) -> Callable[[str], str]:
    """A function mapping one litert-torch tensor name to the deepest module path it names ("" if none).

    A name is ``Root/<qualname>_<attr>/<qualname>_<attr>...``: the attribute ends each segment, and the
    longest child attribute of the current module that ends the segment is the one taken.
    """
    children: dict[str, list[str]] = {"": []}
    if model is not None:
        for name, _ in model.named_modules():
            if not name:
                continue
            parent, _, attr = name.rpartition(".")
            children.setdefault(parent, []).append(attr)
    for attrs in children.values():
        attrs.sort(key=len, reverse=True)

    def resolve(tensor_name: str) -> str:
        best = ""
        for part in tensor_name.split(";"):
            segments = part.split("/")[1:]
            path = ""
            for seg in segments:
                child = next((a for a in children.get(path, ()) if seg.endswith("_" + a)), None)
                if child is None:
                    break
                path = f"{path}.{child}" if path else child
            if path and (not best or path.count(".") >= best.count(".")):
                best = path  # ties: the last name of a fused op is its conv/linear ("ReLU;;BN;;Conv")
        return best

    return resolve


def read_ops(content: bytes, model: torch.nn.Module | None = None) -> list[TfliteOp]:
    """Operators of subgraph 0 with their types, ai-edge-quantizer scope and owning module path."""
    schema = _schema()
    try:
        m = schema.ModelT.InitFromPackedBuf(content, 0)
    except Exception as e:  # a truncated or foreign file
        raise ModelError(f"not a readable .tflite flatbuffer: {type(e).__name__}: {e}") from e
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    resolve = module_resolver(model)
    graph = m.subgraphs[0]
    tensors = graph.tensors
    ops = []
    for i, op in enumerate(graph.operators):
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        ins = [t for t in (op.inputs if op.inputs is not None else []) if t >= 0]
        outs = [t for t in (op.outputs if op.outputs is not None else []) if t >= 0]
        out_names = [_text(tensors[t].name) for t in outs]
        # The scope string ai-edge-quantizer matches recipes against: output names joined by ";".
        scope = ";".join(n for n in out_names if n) + (";" if any(out_names) else "")
        # An op writing a graph output is named after the signature; then its weights name the module.
        consts = [t for t in ins if _is_constant(m, tensors[t])]
        others = [t for t in ins if t not in consts]
        module = ""
        for name in (*out_names, *(_text(tensors[t].name) for t in (*consts, *others))):
            module = resolve(name)
            if module:
                break
        ops.append(
            TfliteOp(
                index=i,
                op=op_names.get(builtin, f"BUILTIN_{builtin}"),
                module=module,
                scope=scope,
                input_types=tuple(type_names.get(int(tensors[t].type), "?") for t in ins),
                output_types=tuple(type_names.get(int(tensors[t].type), "?") for t in outs),
            )
        )
    return ops


def _is_constant(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer] if model.buffers and 0 < tensor.buffer < len(model.buffers) else None
    return buf is not None and (buf.data is not None and len(buf.data) > 0 or int(buf.offset or 0) > 1)


def external_buffer_count(content: bytes) -> int:
    """Buffers stored after the flatbuffer (``offset > 1``), as converters do for large weights."""
    m = _schema().ModelT.InitFromPackedBuf(content, 0)
    return sum(1 for b in (m.buffers or []) if int(getattr(b, "offset", 0) or 0) > 1)


_TYPE_BYTES = {
    "FLOAT32": 4,
    "FLOAT16": 2,
    "INT32": 4,
    "UINT8": 1,
    "INT64": 8,
    "INT16": 2,
    "INT8": 1,
    "FLOAT64": 8,
    "BOOL": 1,
    "UINT32": 4,
    "UINT16": 2,
    "BFLOAT16": 2,
}


def largest_op_io_bytes(content: bytes) -> int:
    """max over ops of the bytes of its non-constant inputs and outputs: they are live at once.

    A hard lower bound for any arena that runs the model (TFLite Micro's adds its own structs).
    """
    import math

    m = _schema().ModelT.InitFromPackedBuf(content, 0)
    type_names = _enum_names(_schema().TensorType)
    graph = m.subgraphs[0]

    def size(t: int) -> int:
        tensor = graph.tensors[t]
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        return math.prod(shape) * _TYPE_BYTES.get(type_names.get(int(tensor.type), ""), 4)

    best = 0
    for op in graph.operators:
        ids = {
            t
            for t in (*(op.inputs if op.inputs is not None else []), *(op.outputs if op.outputs is not None else []))
            if t >= 0 and not _is_constant(m, graph.tensors[t])
        }
        best = max(best, sum(size(t) for t in ids))
    return best


def inline_buffers(content: bytes) -> bytes:
    """The same model with every buffer stored inside the flatbuffer (``offset`` buffers copied in).

    ai-edge-quantizer appends weight buffers after the flatbuffer (``offset``/``size``), even for a
    1 MB model; TFLite Micro ignores that layout and reads zeros, so MCU files must carry them inline.
    """
    import flatbuffers
    import numpy as np

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(content, 0)
    moved = 0
    for buf in m.buffers or []:
        offset, size = int(buf.offset or 0), int(buf.size or 0)
        if offset > 1:
            buf.data = np.frombuffer(content, dtype=np.uint8, count=size, offset=offset).copy()
            buf.offset, buf.size = 0, 0
            moved += 1
    if not moved:
        return content
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def float_op_names(ops: Sequence[TfliteOp]) -> list[str]:
    """``["ADD (stages.1.0)", ...]`` for every op that computes in float."""
    return [op.describe() for op in ops if op.computes_in_float]


# ------------------------------------------------------------------------------------------------
# Conversion and quantization


@contextlib.contextmanager
def _quiet_litert() -> Iterator[None]:
    """litert-torch prints a progress tree to stdout unless told not to (through its env variable)."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def convert_fp32(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The float32 ``.tflite`` of ``model`` (eval mode) for inputs shaped like ``example``."""
    import litert_torch

    was_training = model.training
    model.eval()
    err = None
    try:
        with _quiet_litert(), capture_fd2() as err:
            content = bytes(litert_torch.convert(model, (example,)).model_content())
    except Exception as e:
        detail = err.last_line() if err is not None else ""
        raise ExportError(
            f"litert-torch could not convert {type(model).__name__} for input {tuple(example.shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{' | ' + detail if detail else ''}"
        ) from e
    finally:
        model.train(was_training)
    return content


def random_calibration(shape: Sequence[int], seed: int) -> np.ndarray:
    """Standard-normal samples shaped ``(N, *shape[1:])`` for when no calibration data is given."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.standard_normal((RANDOM_CALIBRATION_SAMPLES, *shape[1:])).astype(np.float32)


def _signature(content: bytes) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=content).get_signature_list()
    if len(sigs) != 1:
        raise ExportError(f"expected one signature in the converted .tflite, got {sorted(sigs)}")
    key, spec = next(iter(sigs.items()))
    if len(spec["inputs"]) != 1:
        raise ExportError(f"expected one model input, got {spec['inputs']}")
    return key, spec["inputs"][0]


def _mixed_regexes(ops: Sequence[TfliteOp], plan: PrecisionPlan) -> list[tuple[str, str]]:
    """(anchored scope regex, precision) for every op whose precision differs from the default."""
    check_overrides((op.module for op in ops if op.module), plan, what="op of the converted .tflite")
    out = []
    for op in ops:
        prec = plan.for_module(op.module) if op.module else plan.default
        if prec != plan.default and op.scope:
            out.append(("^" + re.escape(op.scope) + "$", prec))
    return out


def _calibrate_min_max(fp32: bytes, recipe: Any, data: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Activation ranges as the global min/max over the calibration set.

    ``Quantizer.calibrate`` keeps a moving average (factor 0.95) of each sample's min/max, which with one
    image per step shrinks the ranges: on the 16/32/64 convnet the logits' range came out ±0.45 where
    test logits reach ±1.6, clipping outputs by up to 1.09. Global min/max is what ONNX Runtime's
    MinMax calibrator does.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(fp32, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, manager)
    return calib.get_model_qsvs()


def quantize_int8(
    fp32: bytes,
    plan: PrecisionPlan,
    calibration: np.ndarray,
    *,
    model: torch.nn.Module | None,
    batch: int,
) -> bytes:
    """Static int8 (per-channel weights) of the float ``.tflite`` at ``plan`` (int8, or mixed with fp32).

    Raises:
        ConfigError: an override that matches no op, or fewer calibration samples than one batch.
        QuantizationError: calibration or quantization failed.
    """
    import numpy as np
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    ops = read_ops(fp32, model)
    special = _mixed_regexes(ops, plan) if plan.is_mixed else []
    qt = quantizer.Quantizer(bytearray(fp32))
    all_ops = qtyping.TFLOperationName.ALL_SUPPORTED
    if plan.default == "int8":
        qt.add_static_config(".*", all_ops, activation_num_bits=8, weight_num_bits=8)
    for regex, prec in special:  # later entries win in the recipe
        if prec == "int8":
            qt.add_static_config(regex, all_ops, activation_num_bits=8, weight_num_bits=8)
        else:
            qt.update_quantization_recipe(regex, all_ops, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    key, input_name = _signature(fp32)
    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    n = (len(calib) // batch) * batch
    if n == 0:
        raise ConfigError(f"calibration has {len(calib)} samples, fewer than the export batch {batch}")
    samples = [{input_name: calib[i : i + batch]} for i in range(0, n, batch)]
    err = None
    try:
        with capture_fd2() as err:
            ranges = _calibrate_min_max(fp32, qt.get_quantization_recipe(), {key: samples})
            quantized = qt.quantize(ranges, enable_progress_report=False).quantized_model
    except Exception as e:
        detail = err.last_line() if err is not None else ""
        raise QuantizationError(
            f"ai-edge-quantizer static int8 failed: {type(e).__name__}: {e}{' | ' + detail if detail else ''}"
        ) from e
    return bytes(quantized)


def tflite_info(content: bytes, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Facts about a ``.tflite``: op counts, ops computing in float, I/O dtypes, external buffers."""
    ops = read_ops(content, model)
    return {
        "ops": dict(Counter(op.op for op in ops)),
        "float_ops": float_op_names(ops),
        "external_buffers": external_buffer_count(content),
    }


def export_tflite(
    model: torch.nn.Module,
    example: torch.Tensor,
    plan: PrecisionPlan,
    *,
    calibration: np.ndarray | None,
    seed: int,
    runtime: str,
) -> tuple[bytes, dict[str, Any]]:
    """The ``.tflite`` bytes of ``model`` at ``plan`` and its ``info`` (``litert`` and ``tflite-micro``)."""
    notes: list[str] = []
    bad = [p for p in plan.precisions if p not in ("fp32", "int8")]
    if bad:
        raise ConfigError(f"runtime {runtime!r} ships fp32, int8 and per-stage mixes of them, got {bad[0]!r}")
    if plan.is_mixed:
        check_overrides((name for name, _ in model.named_modules()), plan, what="module of the model")
    content = convert_fp32(model, example)
    quant: dict[str, Any] = {}
    if "int8" in plan.precisions:
        if calibration is None:
            calibration = random_calibration(tuple(example.shape), seed)
            notes.append(f"int8 calibrated on {len(calibration)} random samples (no calibration data given)")
        content = quantize_int8(content, plan, calibration, model=model, batch=int(example.shape[0]))
        quant = {
            "tool": "ai-edge-quantizer static, global min/max calibration",
            "weights": "int8 per-channel symmetric",
            "activations": "int8 per-tensor asymmetric",
            "calibration_samples": len(calibration),
        }
    info = tflite_info(content, model)
    if quant:
        info["quantization"] = quant
    if notes:
        info["notes"] = notes
    return content, info


# ------------------------------------------------------------------------------------------------
# Running


def example_array(example: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``example`` (tensor, array or None) as a float32 array of the file's input ``shape``."""
    import numpy as np

    if example is None:
        return np.zeros(shape, dtype=np.float32)
    arr = example.detach().cpu().numpy() if hasattr(example, "detach") else np.asarray(example)
    if tuple(arr.shape) != tuple(shape):
        raise ModelError(f"the file expects input {tuple(shape)}, got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_target(runtime: Runtime, target: Any) -> bytes:
    """The bytes of a ``.tflite`` target (path or ShippedModel); a torch module is a ConfigError."""
    if not isinstance(target, (str, Path, ShippedModel)):
        raise ConfigError(
            f"runtime {runtime.name!r} runs .tflite files; export the module first (got {type(target).__name__})"
        )
    path = Path(target.path) if isinstance(target, ShippedModel) else Path(target)
    if not path.is_file():
        raise ModelError(f"{path}: no such .tflite file")
    return path.read_bytes()


def quantize_input(batch: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """Float NCHW batch -> the input tensor's dtype (int8 through its scale and zero point)."""
    import numpy as np

    dtype = details["dtype"]
    if dtype == np.float32:
        return np.ascontiguousarray(batch, dtype=np.float32)
    scale, zero = _qparams(details)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(batch, dtype=np.float32) / scale) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(out: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """An output tensor -> float32 logits."""
    import numpy as np

    if out.dtype == np.float32:
        return out.copy()
    scale, zero = _qparams(details)
    return ((out.astype(np.float32) - zero) * scale).astype(np.float32)


def _qparams(details: dict[str, Any]) -> tuple[float, int]:
    qp = details.get("quantization_parameters") or {}
    scales, zeros = qp.get("scales"), qp.get("zero_points")
    if scales is not None and len(scales):
        if zeros is None or not len(zeros):
            raise ModelError(f"quantized tensor {details.get('name', '')!r} has scales but no zero points")
        return float(scales[0]), int(zeros[0])
    scale, zero = details.get("quantization", (0.0, 0))
    if not scale:
        raise ModelError(f"quantized tensor {details.get('name', '')!r} has no scale")
    return float(scale), int(zero)


def run_chunked(run_one: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, fixed: int) -> np.ndarray:
    """Run ``batch`` through a model exported for batch ``fixed``, padding the last chunk."""
    import numpy as np

    batch = np.asarray(batch, dtype=np.float32)
    outs = []
    for start in range(0, len(batch), fixed):
        chunk = batch[start : start + fixed]
        real = len(chunk)
        if real < fixed:
            pad = np.zeros((fixed - real, *chunk.shape[1:]), dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        outs.append(run_one(chunk)[:real])
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


class TfliteInterpreterModel(LoadedModel):
    """A ``.tflite`` loaded into ai-edge-litert's interpreter (XNNPACK, or the reference kernels)."""

    fixed_batch: int  # the file's batch dimension: always set (LoadedModel allows None)

    def __init__(self, content: bytes, *, threads: int | None = 1, reference: bool = False) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
        try:
            with capture_fd2():  # "Created TensorFlow Lite XNNPACK delegate" on fd 2
                self._it = Interpreter(
                    model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
                )
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"ai-edge-litert cannot load the .tflite: {e}") from e
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.fixed_batch = self.input_shape[0]
        self.input_dtype = self._in["dtype"]

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """The input tensor for a float batch of exactly ``fixed_batch`` samples."""
        return quantize_input(batch, self._in)

    def run_native(self, x: np.ndarray) -> np.ndarray:
        """One invoke on a prepared input; returns the raw output tensor (int8 or float32)."""
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        return self._it.get_tensor(self._out["index"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise ModelError(
                f"the .tflite expects input (N, {', '.join(map(str, self.input_shape[1:]))}), got {tuple(batch.shape)}"
            )
        return run_chunked(
            lambda c: dequantize_output(self.run_native(self.prepare(c)), self._out), batch, self.fixed_batch
        )
