"""Apply a precision plan to an exported ONNX model: fp32, fp16, int8 (static PTQ) or mixed.

One verb, :func:`quantize`, takes the ONNX file, a :class:`~hwtune.precision.PrecisionPlan` (or a
precision name) and a typed :class:`QuantConfig`, and writes the converted model:

- ``fp32``: the file is copied unchanged.
- ``fp16``: ``onnxconverter_common.float16`` converts weights and ops; inputs and outputs stay
  float32 (``keep_io_types``), so callers feed the same arrays as for fp32.
- ``int8``: ONNX Runtime's ``quantize_static`` in QDQ format with signed int8 weights; the scheme
  (u8/s8 activations, reduce_range, per-channel) is the one measured fastest on the target device
  (:func:`hwtune.int8_scheme.int8_scheme_for`: measured on this host, the profile's ``[int8]``
  table for a remote device, else a labelled rule of thumb).
- mixed (a plan with overrides): the nodes of modules whose precision differs from the converted
  one are excluded (``nodes_to_exclude`` for int8, ``node_block_list`` for fp16). ONNX node names
  carry the module path (``/stages/stages.0/conv/Conv`` -> ``stages.0.conv``), see
  :func:`hwtune.onnx_export.onnx_node_module` (one decoder for quantization and the runtimes'
  per-op attribution).

Example:
    >>> from hwtune.quant import QuantConfig, quantize
    >>> result = quantize("model.onnx", "model.int8.onnx", "int8",  # doctest: +SKIP
    ...                   calibration=calib, config=QuantConfig(calibration_samples=128))
    >>> result.activation_type, result.calibration_source  # doctest: +SKIP
    ('u8', 'data')

onnx, onnxruntime and onnxconverter-common are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._tempdirs import work_dir
from hwtune.errors import ConfigError, DataError, ModelError, QuantizationError, did_you_mean, reject_unknown_keys
from hwtune.int8_scheme import INT8_SCHEMES, int8_scheme_for
from hwtune.onnx_export import onnx_node_module
from hwtune.precision import PrecisionPlan

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

    from hwtune.device import DeviceProfile

__all__ = [
    "ACTIVATION_TYPES",
    "CALIBRATE_METHODS",
    "MIN_CALIBRATION_SAMPLES",
    "QuantConfig",
    "QuantResult",
    "choose_activation_type",
    "initializer_bytes_by_dtype",
    "node_precisions",
    "onnx_weight_bytes",
    "quantize",
]

SCHEMA_VERSION = 1
ACTIVATION_TYPES = ("auto", "u8", "s8")
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
# Min/max calibration on fewer images than this sets activation ranges from a handful of outliers
# or misses whole channels that stay at zero on those images; 8 is the smallest set we accept. The
# default (256) follows ONNX Runtime's image-classification examples (a few hundred images).
MIN_CALIBRATION_SAMPLES = 8
# Ops whose weights hwtune reports as int8/fp16/fp32 (the ones that carry the MACs).
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

_ONNX_DTYPE_NAMES = {1: "fp32", 2: "u8", 3: "s8", 5: "s16", 6: "s32", 7: "s64", 10: "fp16", 11: "fp64", 16: "bf16"}


# --------------------------------------------------------------------------------------------
# Value objects


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize. Only int8 uses most of these; fp16/fp32 ignore them.

    Attributes:
        calibration_samples: images used to calibrate activation ranges (drawn at random with
            ``seed`` when more are given). At least ``MIN_CALIBRATION_SAMPLES``.
        activation_type: ``"auto"`` ships the int8 scheme measured fastest on the target device
            (activation type, reduce_range and per-channel together; :mod:`hwtune.int8_scheme`);
            ``"u8"`` or ``"s8"`` force the activation type.
        reduce_range: 7-bit weights. ``None`` = the scheme's (auto) or off (forced type).
        per_channel: one weight scale per output channel (recommended for convs); with ``"auto"``
            False forces per-tensor, True takes the scheme's.
        calibrate_method: ``"minmax"``, ``"percentile"`` or ``"entropy"`` (ORT calibrators).
        preprocess: run ORT's ``quant_pre_process`` (shape inference + graph cleanup) first. It
            folds the ``Identity`` nodes the torch exporter emits for shared bias tensors; without
            it those convs keep a float bias, cannot become ``QLinearConv`` and run as float
            between Dequantize/Quantize nodes (measured here, 1 thread: ResNet-18 @224 int8
            75 ms without vs 28 ms with; MobileNetV2 1.0 15 ms vs 10 ms).
        calibration_batch_size: images per calibration forward pass.
        seed: picks the calibration subset and the random calibration data.
    """

    calibration_samples: int = 256
    activation_type: str = "auto"
    reduce_range: bool | None = None
    per_channel: bool = True
    calibrate_method: str = "minmax"
    preprocess: bool = True
    calibration_batch_size: int = 32
    seed: int = 0
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = []
        n = self.calibration_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < MIN_CALIBRATION_SAMPLES:
            problems.append(
                f"QuantConfig.calibration_samples must be an integer >= {MIN_CALIBRATION_SAMPLES}, got {n!r}"
            )
        if self.activation_type not in ACTIVATION_TYPES:
            problems.append(
                f"QuantConfig.activation_type must be one of {', '.join(ACTIVATION_TYPES)}, "
                f"got {self.activation_type!r}{did_you_mean(str(self.activation_type), ACTIVATION_TYPES)}"
            )
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            problems.append(f"QuantConfig.reduce_range must be true, false or None, got {self.reduce_range!r}")
        if not isinstance(self.per_channel, bool):
            problems.append(f"QuantConfig.per_channel must be true or false, got {self.per_channel!r}")
        if not isinstance(self.preprocess, bool):
            problems.append(f"QuantConfig.preprocess must be true or false, got {self.preprocess!r}")
        if self.calibrate_method not in CALIBRATE_METHODS:
            problems.append(
                f"QuantConfig.calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}, "
                f"got {self.calibrate_method!r}{did_you_mean(str(self.calibrate_method), CALIBRATE_METHODS)}"
            )
        b = self.calibration_batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            problems.append(f"QuantConfig.calibration_batch_size must be an integer >= 1, got {b!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append(f"QuantConfig.seed must be an integer, got {self.seed!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        reject_unknown_keys(data, [f.name for f in fields(cls)], "QuantConfig")
        return cls(**dict(data))


@dataclass(frozen=True)
class QuantResult:
    """What :func:`quantize` wrote.

    Attributes:
        path: the converted ONNX file.
        precision_label: the plan's label (``int8``, ``mixed(int8; fp32: stem, head)``).
        activation_type: ``"u8"``/``"s8"`` for int8 plans, ``None`` otherwise.
        weight_type: ``"s8"``, ``"fp16"`` or ``"fp32"`` (of the converted part).
        reduce_range: whether weights were limited to 7 bits.
        excluded_nodes: ONNX nodes kept out of the conversion because their module's plan
            precision differs.
        calibration_samples: images the calibrator saw (0 when not int8).
        calibration_source: ``"data"``, ``"random"`` (standard normal; fine for latency, not for
            accuracy) or ``"none"``.
        weight_bytes: bytes of all initializers in the written file.
        notes: human-readable remarks the profiler and CLI print (e.g. random calibration).
        int8_scheme: int8 only — the scheme shipped and why (``name``, ``source``: measured /
            profile / rule, ``reason``: "measured: u8s8 1.02 ms vs s8s8 6.45 ms ..."; see
            :class:`hwtune.int8_scheme.Int8Scheme`). None for fp32/fp16.
    """

    path: Path
    precision_label: str
    activation_type: str | None
    weight_type: str
    reduce_range: bool
    excluded_nodes: tuple[str, ...]
    calibration_samples: int
    calibration_source: str
    weight_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    int8_scheme: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["path"] = str(self.path)
        out["excluded_nodes"] = list(self.excluded_nodes)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantResult:
        reject_unknown_keys(data, [f.name for f in fields(cls)], "QuantResult")
        kwargs = dict(data)
        kwargs["path"] = Path(kwargs["path"])
        kwargs["excluded_nodes"] = tuple(kwargs.get("excluded_nodes", ()))
        kwargs["notes"] = tuple(kwargs.get("notes", ()))
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Activation type per ISA


def choose_activation_type(
    device: str | Path | DeviceProfile | None = None, *, measure: bool = True
) -> tuple[str, bool, str]:
    """The int8 activation type and ``reduce_range`` shipped for a device (default: this host).

    Returns ``(activation_type, reduce_range, reason)`` of :func:`hwtune.int8_scheme.int8_scheme_for`:
    measured on this host (cached), the profile's measured ``[int8]`` table, or the ISA rule of
    thumb (its reason says "rule of thumb, not measured"). ``measure=False`` never starts a
    measurement (cache, profile table or rule only).
    """
    scheme = int8_scheme_for(device, measure=measure)
    return scheme.activation_type, scheme.reduce_range, scheme.reason


# --------------------------------------------------------------------------------------------
# ONNX graph helpers (node -> module, node precisions, byte accounting)


def _load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """A model given as a proto, or read (and checked) from its file by :func:`hwtune.graph.load_onnx`."""
    import onnx

    from hwtune.graph import load_onnx

    return model if isinstance(model, onnx.ModelProto) else load_onnx(model)


def node_precisions(model: str | Path | onnx.ModelProto) -> dict[str, str]:
    """Precision each compute node (Conv, ConvTranspose, Gemm, MatMul) actually runs at.

    ``"int8"`` when both its data input and its weight come from ``DequantizeLinear`` of an 8-bit
    tensor (a QDQ group ONNX Runtime fuses into an integer kernel), ``"fp16"`` when its weight is a
    float16 tensor, else ``"fp32"``. Keys are node names.
    """
    m = _load_model(model)
    graph = m.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}

    def dq_of_8bit(name: str) -> bool:
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return False
        src = node.input[0]
        if src in inits:
            return inits[src].data_type in (2, 3)
        q = producer.get(src)
        return q is not None and q.op_type == "QuantizeLinear"

    def weight_dtype(name: str) -> int | None:
        if name in inits:
            return inits[name].data_type
        node = producer.get(name)
        # fp16 converter may leave Cast/Identity between an initializer and its consumer
        if node is not None and node.op_type in ("Cast", "Identity") and node.input:
            if node.op_type == "Cast":
                for attr in node.attribute:
                    if attr.name == "to":
                        return attr.i
            return weight_dtype(node.input[0])
        return None

    out: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        if dq_of_8bit(node.input[0]) and dq_of_8bit(node.input[1]):
            out[node.name] = "int8"
        elif weight_dtype(node.input[1]) == 10:
            out[node.name] = "fp16"
        else:
            out[node.name] = "fp32"
    return out


def initializer_bytes_by_dtype(model: str | Path | onnx.ModelProto) -> dict[str, int]:
    """Bytes of the stored initializers (weights, biases, scales, zero points) per element type."""
    import numpy as np
    from onnx import helper

    m = _load_model(model)
    out: dict[str, int] = {}
    for t in m.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        nbytes = int(math.prod(t.dims)) * itemsize
        key = _ONNX_DTYPE_NAMES.get(t.data_type, str(t.data_type))
        out[key] = out.get(key, 0) + nbytes
    return out


def onnx_weight_bytes(model: str | Path | onnx.ModelProto) -> int:
    """Total bytes of the model's initializers as stored (int8 weights count 1 byte each plus their
    fp32 scales, int8 zero points and int32 biases)."""
    return sum(initializer_bytes_by_dtype(model).values())


# --------------------------------------------------------------------------------------------
# quantize


def quantize(
    onnx_path: str | Path,
    out_path: str | Path,
    plan: PrecisionPlan | str,
    *,
    calibration: np.ndarray | None = None,
    config: QuantConfig | None = None,
    device: str | Path | DeviceProfile | None = None,
) -> QuantResult:
    """Convert ``onnx_path`` to the precision ``plan`` and write it to ``out_path``.

    Args:
        onnx_path: float32 model exported by :func:`hwtune.onnx_export.export_onnx`.
        out_path: where to write the converted model (may equal ``onnx_path`` for fp32).
        plan: a precision name (``"fp32"``, ``"fp16"``, ``"int8"``) or a
            :class:`~hwtune.precision.PrecisionPlan`; overrides name module prefixes whose
            precision differs (e.g. ``PrecisionPlan("int8", (("stem", "fp32"), ("head", "fp32")))``).
        calibration: int8 only — float32 array ``(N, C, H, W)``, normalized exactly like the model's
            training inputs, drawn from the training split. ``None`` calibrates on standard-normal
            noise: fine for latency, meaningless for accuracy (``calibration_source="random"`` and a
            note say so).
        config: :class:`QuantConfig` (defaults when ``None``).
        device: profile (or id/path) whose ISA picks the int8 activation type; default: this host.

    Returns:
        QuantResult describing the written file.

    Raises:
        ModelError: ``onnx_path`` is missing or unreadable.
        ConfigError: a plan override names no module in the graph, or the plan mixes int8 and fp16.
        DataError: the calibration array has the wrong shape/type, contains NaN/inf, or holds fewer
            than ``MIN_CALIBRATION_SAMPLES`` images.
        QuantizationError: the conversion itself failed (cause chained).

    Example:
        >>> res = quantize("m.onnx", "m.int8.onnx", "int8", calibration=x)  # doctest: +SKIP
        >>> res.weight_type, res.calibration_source  # doctest: +SKIP
        ('s8', 'data')
    """
    config = config or QuantConfig()
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"config must be a QuantConfig, got {type(config).__name__}")
    plan = PrecisionPlan.coerce(plan)
    src, dst = Path(onnx_path), Path(out_path)
    model = _load_model(src)
    if {"int8", "fp16"} <= set(plan.precisions):
        raise ConfigError(
            f"precision plan {plan.label}: mixing int8 and fp16 in one model is not supported; "
            "use fp32 for the modules that should not be int8"
        )
    _check_overrides(model, plan, src)
    target = next((p for p in ("int8", "fp16") if p in plan.precisions), "fp32")
    dst.parent.mkdir(parents=True, exist_ok=True)

    if target == "fp32":
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        return QuantResult(
            path=dst, precision_label=plan.label, activation_type=None, weight_type="fp32", reduce_range=False,
            excluded_nodes=(), calibration_samples=0, calibration_source="none", weight_bytes=onnx_weight_bytes(dst),
        )
    if target == "fp16":
        return _to_fp16(model, dst, plan)
    return _to_int8(src, model, dst, plan, calibration=calibration, config=config, device=device)


def _node_precision_map(model: onnx.ModelProto, plan: PrecisionPlan) -> dict[str, str]:
    return {n.name: plan.for_module(onnx_node_module(n.name)) for n in model.graph.node if n.name}


def _check_overrides(model: onnx.ModelProto, plan: PrecisionPlan, src: Path) -> None:
    """A plan override that changes precision but matches no node is almost surely a typo."""
    paths = {onnx_node_module(n.name) for n in model.graph.node}
    prefixes: set[str] = set()
    for p in paths:
        atoms = p.split(".") if p else []
        prefixes.update(".".join(atoms[: i + 1]) for i in range(len(atoms)))
    problems = []
    for prefix, prec in plan.overrides:
        if prec == plan.default or prefix in prefixes:
            continue
        problems.append(
            f"{src}: precision override {prefix!r} -> {prec} matches no ONNX node"
            f"{did_you_mean(prefix, sorted(prefixes))} (top-level modules: "
            f"{', '.join(sorted({p.split('.')[0] for p in prefixes})) or 'none'})"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def _to_fp16(model: onnx.ModelProto, dst: Path, plan: PrecisionPlan) -> QuantResult:
    import onnx
    from onnxconverter_common import float16

    precisions = _node_precision_map(model, plan)
    blocked = tuple(sorted(name for name, prec in precisions.items() if prec != "fp16"))
    notes = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, node_block_list=list(blocked) or None
            )
        onnx.save(converted, str(dst))
    except Exception as exc:
        raise QuantizationError(f"fp16 conversion of {plan.label} model failed: {exc}") from exc
    truncated = [w for w in caught if "truncated" in str(w.message)]
    if truncated:
        notes.append(
            f"fp16: {len(truncated)} weight tensor(s) had values outside the fp16 range or below 1e-7; "
            "they were clamped"
        )
    return QuantResult(
        path=dst, precision_label=plan.label, activation_type=None, weight_type="fp16", reduce_range=False,
        excluded_nodes=blocked, calibration_samples=0, calibration_source="none",
        weight_bytes=onnx_weight_bytes(dst), notes=tuple(notes),
    )


def _input_spec(model: onnx.ModelProto) -> tuple[str, list[int | None]]:
    """Name and shape (``None`` for symbolic dims) of the model's single image input."""
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ModelError(f"int8 calibration needs a model with one input, got {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _calibration_array(
    calibration: np.ndarray | None, dims: list[int | None], config: QuantConfig
) -> tuple[np.ndarray, str, list[str]]:
    import numpy as np

    notes: list[str] = []
    rng = np.random.default_rng(config.seed)
    if calibration is None:
        known = [d for d in dims[1:] if d is not None]
        if len(known) < len(dims) - 1:
            raise DataError(
                f"calibration data is required: the model input shape {dims} has symbolic non-batch "
                "dimensions, so random calibration data cannot be generated"
            )
        shape = (config.calibration_samples, *known)
        data = rng.standard_normal(shape, dtype=np.float32)
        notes.append(
            f"int8 calibrated on {config.calibration_samples} random (standard normal) inputs: latency is "
            "representative, accuracy is not; pass calibration data from the training split for accuracy"
        )
        return data, "random", notes

    arr = np.asarray(calibration)
    problems = []
    if arr.ndim != len(dims):
        problems.append(f"calibration data must have {len(dims)} dimensions (N, C, H, W), got shape {arr.shape}")
    else:
        expected = [d for d in dims[1:]]
        for axis, (want, got) in enumerate(zip(expected, arr.shape[1:], strict=True), start=1):
            if want is not None and want != got:
                problems.append(f"calibration data dimension {axis} must be {want} (model input {dims}), got {got}")
    if not np.issubdtype(arr.dtype, np.floating):
        problems.append(f"calibration data must be a float array (normalized images), got dtype {arr.dtype}")
    if problems:
        raise DataError("\n".join(problems))
    n = arr.shape[0]
    if n < MIN_CALIBRATION_SAMPLES:
        raise DataError(
            f"calibration set too small: got {n} sample(s), need at least {MIN_CALIBRATION_SAMPLES} "
            f"(QuantConfig.calibration_samples asks for {config.calibration_samples})"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise DataError(f"calibration data contains NaN or inf ({int((~np.isfinite(arr)).sum())} values)")
    if n > config.calibration_samples:
        arr = arr[np.sort(rng.choice(n, config.calibration_samples, replace=False))]
    elif n < config.calibration_samples:
        notes.append(f"int8 calibrated on all {n} given samples (QuantConfig.calibration_samples asks for "
                     f"{config.calibration_samples})")
    return np.ascontiguousarray(arr), "data", notes


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """Keep onnxruntime.quantization's chatter off the user's terminal without touching their
    logging configuration.

    ORT logs through the *root* logger ("Please consider pre-processing..."); with no root
    handler ``logging.warning`` would call ``basicConfig()`` and install one for the rest of the
    process, so a NullHandler stands in. The percentile/entropy calibrators also ``print()``.
    """
    root = logging.getLogger()

    def drop_ort(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    null = logging.NullHandler()
    root.addHandler(null)
    root.addFilter(drop_ort)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop_ort)
        root.removeHandler(null)


def _to_int8(
    src: Path,
    model: onnx.ModelProto,
    dst: Path,
    plan: PrecisionPlan,
    *,
    calibration: np.ndarray | None,
    config: QuantConfig,
    device: str | Path | DeviceProfile | None,
) -> QuantResult:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name, dims = _input_spec(model)
    data, source, notes = _calibration_array(calibration, dims, config)

    per_channel = config.per_channel
    if config.activation_type == "auto":
        scheme = int8_scheme_for(device)
        act, reduce_range, per_channel = scheme.activation_type, scheme.reduce_range, per_channel and scheme.per_channel
        scheme_info: dict[str, Any] = {"name": scheme.name, "source": scheme.source, "reason": scheme.reason}
        notes.append(f"int8 scheme {scheme.name} ({scheme.description}): {scheme.reason}")
    else:
        act = config.activation_type
        reduce_range = False
        scheme_info = {"name": None, "source": "config", "reason": f"QuantConfig.activation_type={act!r} (forced)"}
    if config.reduce_range is not None:
        reduce_range = config.reduce_range
    settings = {"activation_type": act, "reduce_range": reduce_range, "per_channel": per_channel}
    shipped = next((n for n, v in INT8_SCHEMES.items() if v == settings), None)
    if scheme_info["name"] is not None and shipped != scheme_info["name"]:
        scheme_info["reason"] += f"; QuantConfig overrides it to {shipped or settings}"
    scheme_info.update(settings, name=shipped)

    batch = dims[0] if dims and dims[0] is not None else config.calibration_batch_size

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # a model exported with a fixed batch size only accepts full batches
            stop = len(data) if dims[0] is None else len(data) - len(data) % batch
            self._batches = iter([{input_name: data[i : i + batch]} for i in range(0, stop, batch)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    qtypes = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    with work_dir("quant") as tmp, _quiet_ort_logging():
        source_path = src
        try:
            if config.preprocess:
                source_path = Path(tmp) / "pre.onnx"
                quant_pre_process(str(src), str(source_path))
                model = onnx.load(str(source_path))
            excluded = tuple(sorted(n for n, p in _node_precision_map(model, plan).items() if p != "int8"))
            quantize_static(
                str(source_path),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=qtypes[act],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(excluded),
                calibrate_method=methods[config.calibrate_method],
            )
        except (ConfigError, DataError, ModelError):
            raise
        except Exception as exc:  # ORT raises ValueError, RuntimeError, onnx errors, ...
            raise QuantizationError(f"int8 quantization of {src} ({plan.label}) failed: {exc}") from exc
    int8_nodes = sum(1 for p in node_precisions(dst).values() if p == "int8")
    if int8_nodes == 0:
        notes.append("no Conv/Gemm/MatMul node ended up int8; the model runs in float32")
    return QuantResult(
        path=dst, precision_label=plan.label, activation_type=act, weight_type="s8", reduce_range=reduce_range,
        excluded_nodes=excluded, calibration_samples=len(data), calibration_source=source,
        weight_bytes=onnx_weight_bytes(dst), notes=tuple(notes), int8_scheme=scheme_info,
    )
