"""Per-layer latency features, and the lowering that decides what a runtime actually runs.

A network (traced by ``hwtune.graph.trace_layers``) and a micro-benchmark graph
(``scripts/profile_device.py``) both become a list of :class:`RawLayer` -- op type, shapes, MACs,
weight bytes, precision and which layers each one reads -- and go through the same
:func:`lower`: free ops (reshapes) are dropped, and ops a runtime folds into their producer are
marked ``fused`` *after* dead ops were pruned (so a ReLU whose only other reader was pruned is
fused, as the runtime does). So a conv in a network and the same conv in a micro-benchmark get
identical features. No torch here.

Fusion rules (what ONNX Runtime and TFLite do on CPU); a folded BN or activation disappears
from the features (no kernel, no cost), a fused Add stays as a ``fused`` layer (its kernel
reads the residual operand):

* BatchNorm after a conv/linear whose output nothing else reads: folded into the weights
  (the torch exporter already does this in eval mode).
* ReLU / ReLU6 after such a conv (or conv+BN, or conv+Add below): the kernel's epilogue.
* int8: ReLU / ReLU6 after any int8 op: the quantized range clips it (ONNX Runtime removes
  the Relu between QDQ pairs; TFLite fuses the activation).
* fp32 Add of two computed tensors, one from a conv (+BN) that only the Add reads, when the
  calibration says the runtime does it (``fuse_conv_add``: ONNX Runtime's NCHWc ``FusedConv``
  with a sum input on x86; ``hwtune calibrate`` reads it from the graphs the micro-benchmark
  script saw optimized).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from hwtune.precision import ELEMENT_BYTES

__all__ = [
    "CONSTANT_TARGETS",
    "FREE_OPS",
    "IDENTITY_TARGETS",
    "NO_LOWERING",
    "OP_KEYS",
    "LayerFeatures",
    "Lowering",
    "RawLayer",
    "features_from_layer",
    "features_from_spec",
    "lower",
    "op_key",
    "raws_from_graph",
    "weight_bytes",
]

# Predictor op categories, each with its own (overhead, compute efficiency, memory efficiency).
# Depthwise and pointwise convs get their own rows because runtimes run them with different
# kernels (depthwise is memory-bound, 1x1 is a plain GEMM without im2col).
OP_KEYS: tuple[str, ...] = (
    "conv", "dwconv", "pwconv", "linear", "avgpool", "maxpool", "gap", "add", "mul", "cat", "relu", "act", "bn",
    "fused", "reshape", "other",
)
# Ops that cost nothing at all (none today: a reshape moves no data, but it is still a node the
# runtime dispatches -- ONNX Runtime's Flatten before the classifier, TFLite's RESHAPE -- so it
# gets the ``reshape`` category, a fixed cost only).
FREE_OPS: tuple[str, ...] = ()
COMPUTE_OPS: tuple[str, ...] = ("conv", "dwconv", "pwconv", "linear")
FUSABLE_ACTIVATIONS: tuple[str, ...] = ("relu", "relu6")

_KEY_OF: Mapping[str, str] = {
    "conv": "conv", "dwconv": "dwconv", "pwconv": "pwconv", "linear": "linear", "matmul": "linear",
    "avgpool": "avgpool", "maxpool": "maxpool", "gap": "gap", "add": "add", "mul": "mul", "cat": "cat",
    "relu": "relu", "relu6": "relu", "hardswish": "act", "sigmoid": "act", "softmax": "act", "bn": "bn",
    "flatten": "reshape", "attention": "other", "other": "other",
}


def op_key(op_type: str, fused: bool = False) -> str | None:
    """Predictor category of a canonical op type; ``None`` for ops that cost nothing."""
    if op_type in FREE_OPS:
        return None
    if fused:
        return "fused"
    return _KEY_OF.get(op_type, "other")


class LayerFeatures(NamedTuple):
    """What one layer costs in the units of the roofline (an immutable record; a tuple because
    every prediction builds hundreds).

    Attributes:
        name: Layer name (module path or fx node name).
        op_type: Canonical op type from the profiler (``conv``, ``relu`` ...).
        key: Predictor category (one of ``OP_KEYS``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        work: Operations of the compute term: MACs for conv/linear, window taps (output elements x
            kernel area) for pools, input elements for global pooling, output elements otherwise.
        bytes_moved: Input activations + output activations + weights, at this precision.
        out_elements: Output elements (used for precision / layout boundary costs).
        producers: Indices (into the same feature tuple) of the layers this one reads; ``-1 - k``
            is graph input ``k``. Empty when unknown (then layers are taken to run as a chain).
        in_channels: Input channels of a conv (a runtime may read a thin input without a layout change).
        rows: Conv/linear: output pixels, the M of the conv's GEMM (0 for other ops).
        im2col: Conv/linear: elements of the M x K input matrix (output pixels x input channels
            per group x kernel area, channels padded like ``work``).
    """

    name: str
    op_type: str
    key: str
    precision: str
    work: int
    bytes_moved: int
    out_elements: int
    producers: tuple[int, ...] = ()
    in_channels: int = 0
    rows: int = 0
    im2col: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["producers"] = list(self.producers)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerFeatures:
        d = {k: data[k] for k in cls._fields if k in data}
        d["producers"] = tuple(int(p) for p in d.get("producers", ()))
        return cls(**d)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 0


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block if block > 1 else n


def features_from_spec(
    *,
    name: str,
    op_type: str,
    precision: str,
    input_shapes: Sequence[Sequence[int]],
    output_shape: Sequence[int],
    macs: int = 0,
    weight_bytes: int = 0,
    kernel_size: Sequence[int] | None = None,
    fused: bool = False,
    producers: Sequence[int] = (),
    pad: tuple[int, int] = (1, 1),
) -> LayerFeatures | None:
    """Features of one op from its geometry; ``None`` for free ops (reshapes).

    ``pad`` = (output, input) channel blocks: conv work is counted with the channel counts
    rounded up to them (see ``Lowering.pad_channels``).
    """
    key = op_key(op_type, fused)
    if key is None:
        return None
    return _spec(name, op_type, key, precision, input_shapes, output_shape, int(macs), int(weight_bytes),
                 kernel_size, tuple(int(p) for p in producers), pad)


def _spec(
    name: str, op_type: str, key: str, precision: str, input_shapes: Sequence[Sequence[int]],
    output_shape: Sequence[int], macs: int, weight_bytes: int, kernel_size: Sequence[int] | None,
    producers: tuple[int, ...], pad: tuple[int, int],
) -> LayerFeatures:
    """``features_from_spec`` for a known category, positional (``lower`` calls it once per layer)."""
    elem = ELEMENT_BYTES[precision]
    in_elems = sum(math.prod(s) for s in input_shapes if s)
    out_elems = math.prod(output_shape) if output_shape else 0
    rows = im2col = 0
    if key in ("conv", "dwconv", "pwconv", "linear"):
        work = int(macs)
        cout = int(output_shape[-1] if key == "linear" else output_shape[1]) if len(output_shape) > 1 else 1
        cout = max(cout, 1)
        if key != "linear" and pad != (1, 1) and len(output_shape) > 1 and input_shapes and len(input_shapes[0]) > 1:
            cin = int(input_shapes[0][1])
            work = work * _round_up(cout, pad[0]) // cout
            if key != "dwconv":  # depthwise: one input channel per output channel
                work = work * _round_up(cin, pad[1]) // max(cin, 1)
            cout = _round_up(cout, pad[0])
        rows = max(out_elems // max(int(output_shape[-1] if key == "linear" else output_shape[1]), 1), 1)
        im2col = work // cout
    elif key in ("avgpool", "maxpool"):
        area = math.prod(kernel_size) if kernel_size else max(1, in_elems // max(1, out_elems))
        work = out_elems * int(area)
    elif key == "gap":
        work = in_elems
    elif key == "reshape":
        work = 0
    else:
        work = out_elems
    if key == "fused":
        # Folded into the producer's kernel (lower() keeps only fused Adds): the output is
        # written once by the producer; the Add reads its other operand (the residual).
        bytes_moved = out_elems * elem * (2 if op_type == "add" else 1)
    elif key == "reshape":
        bytes_moved = 0  # a view of its input
    else:
        bytes_moved = (in_elems + out_elems) * elem + int(weight_bytes)
    cin = int(input_shapes[0][1]) if input_shapes and len(input_shapes[0]) > 1 else 0
    return LayerFeatures(name, op_type, key, precision, int(work), int(bytes_moved), int(out_elems),
                         producers, cin, int(rows), int(im2col))


# Tensors created from shapes alone: exporters emit them as constants, runtimes run nothing.
CONSTANT_TARGETS = frozenset({"zeros_like", "ones_like", "full_like", "zeros", "ones", "full", "empty_like"})
# Ops that are the identity at inference: the exporter drops them (an eval-mode Dropout costs
# nothing on a device, but the profiler lists it as "other").
IDENTITY_TARGETS = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
                               "Identity", "dropout", "alpha_dropout", "feature_alpha_dropout", "contiguous",
                               "clone", "detach"})


def features_from_layer(layer: Any) -> LayerFeatures | None:
    """Features of one profiler ``LayerInfo`` on its own (its ``fused_into`` taken as given).

    Whole networks go through :func:`raws_from_graph` and :func:`lower` instead, which decide
    fusion after pruning and keep the producer links.
    """
    if getattr(layer, "target", "") in CONSTANT_TARGETS | IDENTITY_TARGETS:
        return None
    return features_from_spec(
        name=layer.name,
        op_type=layer.op_type,
        precision=layer.precision,
        input_shapes=layer.input_shapes,
        output_shape=layer.output_shape,
        macs=layer.macs,
        weight_bytes=layer.weight_bytes,
        kernel_size=layer.kernel_size,
        fused=layer.fused_into is not None,
    )


# --------------------------------------------------------------------------------------------
# Lowering: which layers run, and which are fused


@dataclass(frozen=True)
class Lowering:
    """Runtime behaviour that changes which ops run as kernels of their own, and how much work they do.

    Attributes:
        fuse_conv_add: fp32 Add folded into the conv that produces one of its inputs (ONNX
            Runtime on x86, NCHWc ``FusedConv`` with a sum input). Off by default: TFLite and
            ONNX Runtime on ARM run the Add as its own kernel.
        pad_channels: ``(precision, out_block, in_block)``: conv kernels compute output (and
            input) channels in vector blocks, so a conv costs the MACs of its channel counts
            rounded up to the blocks (e.g. ONNX Runtime's int8 conv on AVX2 runs a 4-channel
            conv as fast as a 16-channel one). Fitted per device by ``hwtune calibrate``
            (cross-validated choice among a few block sizes); absent = no padding.
        eager: Every op of the PyTorch forward runs as its own kernel (PyTorch eager): no dead-op
            pruning, no folding of BN or activations (``executes = "eager"`` in a calibration
            table; the default ``deployed`` is what exporters and runtimes run).
    """

    fuse_conv_add: bool = False
    pad_channels: tuple[tuple[str, int, int], ...] = ()
    eager: bool = False

    def pads(self, precision: str) -> tuple[int, int]:
        for p, out_block, in_block in self.pad_channels:
            if p == precision:
                return out_block, in_block
        return 1, 1

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> Lowering:
        """The lowering a profile's ``[calibration]`` table states (``fuse_conv_add``, ``pad_channels``)."""
        if not table:
            return cls()
        pads = table.get("pad_channels") or {}
        pad = tuple(sorted((str(p), int(v[0]), int(v[1])) for p, v in pads.items()
                           if isinstance(v, (list, tuple)) and len(v) == 2)) if isinstance(pads, Mapping) else ()
        return cls(fuse_conv_add=bool(table.get("fuse_conv_add", False)), pad_channels=pad,
                   eager=table.get("executes") == "eager")

    @property
    def executes(self) -> str:
        """``eager`` or ``deployed``."""
        return "eager" if self.eager else "deployed"

    def table(self) -> dict[str, Any]:
        """The ``[calibration]`` keys that state this lowering."""
        out: dict[str, Any] = {"fuse_conv_add": self.fuse_conv_add}
        if self.pad_channels:
            out["pad_channels"] = {p: [o, i] for p, o, i in self.pad_channels}
        if self.eager:
            out["executes"] = "eager"
        return out


NO_LOWERING = Lowering()  # plain TFLite-like behaviour: nothing beyond BN/activation folding


class RawLayer(NamedTuple):
    """One traced or specified op before lowering (an immutable record; a tuple, because a
    network has hundreds of them and a frozen dataclass costs 4x more to build).

    ``producers`` are indices into the same list; ``-1 - k`` is graph input ``k``. ``identity``
    marks ops that pass their input through at inference (dropped like reshapes).
    """

    name: str
    op_type: str
    precision: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    macs: int = 0
    weight_bytes: int = 0
    kernel_size: tuple[int, ...] | None = None
    producers: tuple[int, ...] = ()
    constant: bool = False
    identity: bool = False


def raws_from_graph(layers: Sequence[Any], dead: frozenset[str] | set[str] = frozenset()) -> list[RawLayer]:
    """``RawLayer`` list of a profiler ``LayerGraph``'s layers, dead ones dropped.

    A layer that reads fewer layer outputs than it has tensor inputs also reads the graph input.
    Without ``producers`` (graphs from ONNX or old pickles) layers are taken to run as a chain.
    """
    live = [layer for layer in layers if layer.name not in dead]
    index = {layer.name: i for i, layer in enumerate(live)}
    have_links = any(getattr(layer, "producers", ()) for layer in live)
    out = []
    for i, layer in enumerate(live):
        if have_links:
            prods = [index[p] for p in getattr(layer, "producers", ()) if p in index]
            reads_more = len(prods) < len(layer.input_shapes) and all(
                p in index for p in getattr(layer, "producers", ()))
            if reads_more or not prods:  # the rest of its inputs is the graph input
                prods.append(-1)
        else:
            prods = [i - 1] if i else [-1]
        out.append(RawLayer(
            name=layer.name, op_type=layer.op_type, precision=layer.precision,
            input_shapes=tuple(tuple(s) for s in layer.input_shapes), output_shape=tuple(layer.output_shape),
            macs=int(layer.macs), weight_bytes=int(layer.weight_bytes),
            kernel_size=tuple(layer.kernel_size) if layer.kernel_size else None,
            producers=tuple(sorted(set(prods))), constant=getattr(layer, "target", "") in CONSTANT_TARGETS,
            identity=getattr(layer, "target", "") in IDENTITY_TARGETS,
        ))
    return out


def _anchors(
    kept: Sequence[tuple[RawLayer, tuple[int, ...]]], readers: Sequence[int], rules: Lowering
) -> list[int | None]:
    """Per kept layer, the conv/linear it is folded into (None: it runs as its own kernel)."""
    n = len(kept)
    anchor: list[int | None] = [None] * n  # the conv/linear a fused op was folded into
    has_act: set[int] = set()
    has_add: set[int] = set()

    def chain_root(j: int) -> int | None:
        """The conv/linear whose kernel ``j``'s output comes out of (j itself or what it was fused into)."""
        return j if kept[j][0].op_type in COMPUTE_OPS else anchor[j]

    if rules.eager:
        return anchor  # PyTorch eager folds nothing: every op is its own kernel
    for k, (r, prods) in enumerate(kept):
        layer_prods = [p for p in prods if p >= 0]
        single = len(prods) == 1 and len(layer_prods) == 1
        p = layer_prods[0] if single else None
        same_prec = p is not None and kept[p][0].precision == r.precision
        if r.op_type == "bn" and p is not None and same_prec and readers[p] == 1 \
                and kept[p][0].op_type in COMPUTE_OPS:
            anchor[k] = p
        elif r.op_type in FUSABLE_ACTIVATIONS and p is not None and same_prec:
            root = chain_root(p)
            if root is not None and readers[p] == 1 and root not in has_act:
                anchor[k] = root
                has_act.add(root)
            elif r.precision == "int8":
                anchor[k] = root if root is not None else p  # clipped by the quantized range
        elif r.op_type == "add" and rules.fuse_conv_add and r.precision == "fp32" and len(layer_prods) == 2 \
                and len(prods) == 2:  # both operands computed in the graph (a graph input is in plain layout)
            for q in layer_prods:
                root = chain_root(q)
                if (root is not None and readers[q] == 1 and kept[q][0].precision == "fp32"
                        and root not in has_act and root not in has_add and kept[root][0].op_type != "linear"):
                    anchor[k] = root
                    has_add.add(root)
                    break
    return anchor


def lower(raws: Sequence[RawLayer], rules: Lowering = NO_LOWERING) -> tuple[LayerFeatures, ...]:
    """The layers a runtime runs, with fused ops marked and producer links re-indexed.

    Free ops (reshapes, inference-time identities) and constants disappear (their readers read
    what they read); then each
    op is fused into its producer per the module docstring's rules, counting readers among the
    remaining layers (the graph output counts as a reader of the last layer).
    """
    alias: dict[int, tuple[int, ...]] = {}
    kept: list[tuple[RawLayer, tuple[int, ...]]] = []
    new_index: dict[int, int] = {}

    def resolve(prods: Sequence[int]) -> tuple[int, ...]:
        if len(prods) == 1:
            p = prods[0]
            if p < 0:
                return (p,)
            if p in new_index:
                return (new_index[p],)
        out: set[int] = set()
        for p in prods:
            if p < 0:
                out.add(p)
            elif p in alias:
                out.update(alias[p])
            elif p in new_index:
                out.add(new_index[p])
        return tuple(sorted(out))

    for i, r in enumerate(raws):
        prods = resolve(r.producers)
        if r.constant:
            alias[i] = ()
            continue
        if r.identity or op_key(r.op_type) is None:
            alias[i] = prods
            continue
        new_index[i] = len(kept)
        kept.append((r, prods))
    n = len(kept)
    readers = [0] * n
    for _, prods in kept:
        for p in prods:
            if p >= 0:
                readers[p] += 1
    if n:
        readers[n - 1] += 1

    anchor = _anchors(kept, readers, rules)
    # A folded BN (weights) or activation (kernel epilogue) runs no kernel and costs nothing;
    # it disappears and its readers read the kernel's output. A fused Add stays, as a ``fused``
    # layer: the kernel reads the residual operand, which costs memory traffic.
    feats: list[LayerFeatures] = []
    final: dict[int, int] = {}

    def remap(prods: Sequence[int]) -> tuple[int, ...]:
        if len(prods) == 1:
            p = prods[0]
            return (p,) if p < 0 else ((final[p],) if p in final else ())
        return tuple(sorted({final[p] if p >= 0 else p for p in prods if p < 0 or p in final}))

    pads: dict[str, tuple[int, int]] = {}
    for k, (r, prods) in enumerate(kept):
        fused = anchor[k] is not None
        if fused and r.op_type != "add":
            src = [p for p in prods if p >= 0]
            if src and src[0] in final:
                final[k] = final[src[0]]
                continue
        prec = r.precision
        if prec not in pads:
            pads[prec] = rules.pads(prec)
        key = "fused" if fused else _KEY_OF.get(r.op_type, "other")
        final[k] = len(feats)
        feats.append(_spec(r.name, r.op_type, key, prec, r.input_shapes, r.output_shape, r.macs, r.weight_bytes,
                           r.kernel_size, remap(prods), pads[prec]))
    return tuple(feats)


# --------------------------------------------------------------------------------------------
# Micro-benchmark graphs (scripts/profile_device.py)

# Micro-benchmark layer op (scripts/profile_device.py) -> canonical op type.
MICROBENCH_LAYER_OPS: Mapping[str, str] = {
    "conv": "conv", "pwconv": "pwconv", "dwconv": "dwconv", "linear": "linear", "maxpool": "maxpool",
    "avgpool": "avgpool", "gap": "gap", "add": "add", "mul": "mul", "concat": "cat", "relu": "relu",
    "clip": "relu6", "sigmoid": "sigmoid", "hardswish": "hardswish", "bn": "bn", "flatten": "flatten",
}
# Case ``op`` values of single-op cases (each is the graph of MICROBENCH_OPS[op]) and of graphs
# that list their ``layers`` (chains of one op repeated, and small blocks of a network).
MICROBENCH_OPS: Mapping[str, tuple[str, ...]] = {
    "conv": ("conv",), "pwconv": ("pwconv",), "dwconv": ("dwconv",), "linear": ("linear",),
    "maxpool": ("maxpool",), "avgpool": ("avgpool",), "gap": ("gap",), "add": ("add",), "mul": ("mul",),
    "concat": ("concat",), "relu": ("relu",), "clip": ("clip",), "sigmoid": ("sigmoid",),
    "hardswish": ("hardswish",), "bn": ("bn",), "conv_relu": ("conv", "relu"), "conv_add": ("conv", "add"),
    "qdq": (), "chain": (), "block": (),
}
GRAPH_OPS = ("chain", "block")


def weight_bytes(
    precision: str, *, weight_numel: int = 0, out_channels: int = 0, bias_numel: int = 0, other_numel: int = 0
) -> int:
    """Bytes to store a layer's parameters: the profiler's rule (``weight_storage_bytes``).

    int8 (ONNX QDQ, per channel): weights at 1 byte + an fp32 scale and an int8 zero point per
    output channel, biases as int32, other parameters (norms) left in fp32; else every parameter
    at the precision's element size. Repeated here so the predictor's structural lowering needs
    no tracer module; the parity tests compare both.
    """
    if precision == "int8":
        return weight_numel + out_channels * 5 + bias_numel * 4 + other_numel * ELEMENT_BYTES["fp32"]
    return (weight_numel + bias_numel + other_numel) * ELEMENT_BYTES[precision]


def microbench_layers(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``layers`` list of a case; single-op cases (which do not list them) get theirs built."""
    if row.get("layers"):
        return [dict(layer) for layer in row["layers"]]
    op = row["op"]
    ins = [list(s) for s in row["input_shapes"]]
    out = list(row["output_shape"])
    layers: list[dict[str, Any]] = []
    for i, lop in enumerate(MICROBENCH_OPS[op]):
        spec: dict[str, Any] = {"op": lop, "output_shape": out}
        if lop in ("conv", "pwconv", "dwconv", "linear"):
            spec.update(inputs=[-1], input_shapes=[ins[0]], out_channels=row.get("out_channels"),
                        kernel=row.get("kernel") or 1, stride=row.get("stride", 1), groups=row.get("groups") or 1)
        elif i == 0:
            spec.update(inputs=[-1 - j for j in range(len(ins))], input_shapes=ins, kernel=row.get("kernel"),
                        stride=row.get("stride"))
        else:  # the second op of conv_relu / conv_add reads the conv (and the second graph input)
            spec.update(inputs=[0] + [-1 - j for j in range(1, len(ins))], input_shapes=[out] + ins[1:])
        layers.append(spec)
    return layers


def raws_from_microbench(row: Mapping[str, Any]) -> list[RawLayer]:
    """``RawLayer`` list of one micro-benchmark case (single op, chain or block)."""
    prec = row["precision"]
    raws = []
    for i, spec in enumerate(microbench_layers(row)):
        op_type = MICROBENCH_LAYER_OPS[spec["op"]]
        ins = tuple(tuple(int(x) for x in s) for s in spec["input_shapes"])
        out = tuple(int(x) for x in spec["output_shape"])
        macs = wbytes = 0
        kernel = None
        if op_type in COMPUTE_OPS:
            cin = ins[0][1]
            cout = int(spec["out_channels"])
            k = int(spec.get("kernel") or 1)
            groups = int(spec.get("groups") or 1)
            if op_type == "linear":
                w_numel, macs = cin * cout, cin * cout
            else:
                w_numel = cout * (cin // groups) * k * k
                macs = w_numel * _numel(out[2:])
                # the canonical kind follows the geometry, as the profiler's does
                op_type = "pwconv" if k == 1 and groups == 1 else ("dwconv" if groups == cin and cin > 1 else "conv")
            wbytes = weight_bytes(prec, weight_numel=w_numel, out_channels=cout, bias_numel=cout)
            kernel = (k, k)
        elif spec.get("kernel"):
            kernel = (int(spec["kernel"]), int(spec["kernel"]))
        elif op_type == "bn":
            wbytes = 4 * ins[0][1] * ELEMENT_BYTES[prec]
        raws.append(RawLayer(name=f"{row.get('id', 'case')}/{i}:{spec['op']}", op_type=op_type, precision=prec,
                             input_shapes=ins, output_shape=out, macs=int(macs), weight_bytes=int(wbytes),
                             kernel_size=kernel, producers=tuple(int(p) for p in spec["inputs"])))
    return raws


def features_from_microbench(row: Mapping[str, Any], rules: Lowering = NO_LOWERING) -> tuple[LayerFeatures, ...]:
    """The layers one micro-benchmark case runs, lowered like a network's."""
    return lower(raws_from_microbench(row), rules)
