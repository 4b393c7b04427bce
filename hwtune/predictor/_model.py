"""The latency model: a per-op roofline with calibrated efficiencies and fixed costs.

For one layer of op category ``k`` at precision ``p``::

    latency_ms = overhead_ms[k,p] + work / (peak_macs_per_ms[p] * eff_compute[k,p])
                                  + bytes_moved / (bandwidth_bytes_per_ms * eff_memory[k,p])
                                  + rows * row_ms[k,p] + im2col * im2col_ms[k,p]      (conv / linear)

where ``work`` counts MACs with the channels rounded up to the runtime's vector blocks
(``Lowering.pad_channels``), and ``rows`` / ``im2col`` are the M and M x K of the conv's GEMM
(thin convs pay per output pixel, not per MAC); and a network adds a per-run cost (session dispatch, input/output binding) and, for every
tensor that crosses a precision or layout boundary, the quantize/dequantize or layout change
(NCHW <-> NCHWc reorder, NHWC transpose) the runtime inserts there::

    network_ms = run_overhead_ms[p] + sum over crossings (io_overhead_ms[q] + bytes / (bandwidth * eff_io[q]))
                 + sum(layer_ms)

A crossing is where a tensor goes from float to int8 (or back; the network input and output
are float), or between a "blocked" op -- one a runtime runs in its own data layout: convs and,
in fp32, pools (ONNX Runtime's NCHWc on x86, int8 NHWC) -- and a plain one (linear, the graph
input and output); element-wise ops run in whatever layout their input has. Micro-benchmark
cases pay these crossings around every single op, networks only at the stem and the head, so
fitting them separately is what lets single-op measurements predict whole networks.

The compute and memory terms are *added*, not max-ed: the sum is linear in the three
coefficients, so calibration is a non-negative least-squares problem with a unique answer,
and on real kernels the two overlap only partly (a max would need non-convex fitting for a
few-percent difference in the fit). Peak throughput is the profile's per-precision peak scaled
to the threads the runtime uses (``peak_gflops * threads / cores``); 1 MAC = 2 FLOPs.

Everything is linear in ``theta`` (``overhead_ms``, ``1/eff_compute``, ``1/eff_memory``,
``run_overhead_ms``, ``io_overhead_ms``, ``1/eff_io``): :func:`design_vector` turns features into the matching
vector of "ideal" milliseconds so that ``latency = design . theta``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hwtune.precision import ELEMENT_BYTES, PRECISIONS
from hwtune.predictor._features import OP_KEYS, LayerFeatures

__all__ = [
    "SCALE_GROUPS",
    "SPEC_PRIORS",
    "TERMS",
    "Coefficients",
    "Hardware",
    "OpCoefficients",
    "crossings",
    "design_vector",
    "layer_terms",
    "layers_vector",
    "param_names",
]

TERMS = ("overhead", "compute", "memory", "rows", "im2col")
# The three global scales of a whole-network calibration, and the one each term belongs to.
SCALE_GROUPS = ("overhead", "compute", "memory")
_TERM_GROUP = {"overhead": "overhead", "compute": "compute", "memory": "memory", "rows": "compute", "im2col": "compute"}


@dataclass(frozen=True)
class OpCoefficients:
    """Calibrated constants of one op category at one precision.

    A conv is a GEMM with M = output pixels (rows), K = input channels x kernel area and
    N = output channels; besides the M x N x K multiply-accumulates (``eff_compute``) and the
    bytes (``eff_memory``) it pays per row (loop and epilogue setup) and per element of the
    M x K input matrix (im2col / input broadcast), which is what makes thin convs slow.

    Attributes:
        overhead_us: Fixed cost per op (kernel dispatch, threading, setup), microseconds.
        eff_compute: Fraction of the profile's peak MAC rate the op reaches (can exceed 1 when the
            stated peak is low or the runtime uses a fast algorithm such as Winograd).
        eff_memory: Fraction of the profile's memory bandwidth the op's bytes move at (above 1
            when the working set stays in cache).
        row_ns: Conv/linear only: nanoseconds per output pixel (GEMM row). 0 = not modelled.
        im2col_ps: Conv/linear only: picoseconds per element of the M x K input matrix.
    """

    overhead_us: float
    eff_compute: float
    eff_memory: float
    row_ns: float = 0.0
    im2col_ps: float = 0.0

    def theta(self) -> tuple[float, float, float, float, float]:
        """The linear-model parameters: (overhead ms, 1/eff_compute, 1/eff_memory, ms per row, ms per im2col element)."""
        return (self.overhead_us / 1000.0, 1.0 / self.eff_compute, 1.0 / self.eff_memory, self.row_ns * 1e-6,
                self.im2col_ps * 1e-9)

    @classmethod
    def from_theta(
        cls, overhead_ms: float, inv_compute: float, inv_memory: float, row_ms: float = 0.0, im2col_ms: float = 0.0
    ) -> OpCoefficients:
        # a zero inverse efficiency means "this term does not matter": store a large finite value
        # so the TOML stays plain numbers
        def eff(x: float) -> float:
            return round(min(1.0 / x, 1e4), 6) if x > 1e-4 else 1e4

        return cls(round(max(overhead_ms, 0.0) * 1000.0, 4), eff(inv_compute), eff(inv_memory),
                   float(f"{max(row_ms, 0.0) * 1e6:.4g}"), float(f"{max(im2col_ms, 0.0) * 1e9:.4g}"))

    def to_dict(self) -> dict[str, float]:
        d = {"overhead_us": self.overhead_us, "eff_compute": self.eff_compute, "eff_memory": self.eff_memory}
        if self.row_ns or self.im2col_ps:
            d.update(row_ns=self.row_ns, im2col_ps=self.im2col_ps)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpCoefficients:
        return cls(float(data["overhead_us"]), float(data["eff_compute"]), float(data["eff_memory"]),
                   float(data.get("row_ns", 0.0)), float(data.get("im2col_ps", 0.0)))


# Generic CPU priors ("spec" coefficients): what a reasonable inference runtime reaches on a
# modern CPU core. They are the starting point of every fit and the whole model for profiles
# calibrated from the spec sheet only. Dense 3x3 convs run near half of peak in im2col/direct
# GEMM kernels; 1x1 convs lose some to small K; depthwise convs are memory/latency bound
# (no reuse across channels); pools and element-wise ops are short vector loops.
SPEC_PRIORS: Mapping[str, OpCoefficients] = {
    "conv": OpCoefficients(10.0, 0.5, 1.0),
    "dwconv": OpCoefficients(10.0, 0.1, 0.5),
    "pwconv": OpCoefficients(10.0, 0.35, 1.0),
    "linear": OpCoefficients(10.0, 0.2, 1.0),
    "avgpool": OpCoefficients(10.0, 0.1, 0.5),
    "maxpool": OpCoefficients(10.0, 0.1, 0.5),
    "gap": OpCoefficients(5.0, 0.25, 0.5),
    "add": OpCoefficients(5.0, 0.25, 0.5),
    "mul": OpCoefficients(5.0, 0.25, 0.5),
    "cat": OpCoefficients(5.0, 1.0, 0.5),
    "relu": OpCoefficients(5.0, 0.25, 0.5),
    "act": OpCoefficients(5.0, 0.05, 0.5),
    "bn": OpCoefficients(5.0, 0.25, 0.5),
    "fused": OpCoefficients(0.5, 1.0, 4.0),
    "reshape": OpCoefficients(1.0, 1e4, 1e4),
    "other": OpCoefficients(10.0, 0.1, 0.5),
}
SPEC_RUN_OVERHEAD_US = 20.0
SPEC_IO_OVERHEAD_US = 2.0
SPEC_EFF_IO = 1.0


@dataclass(frozen=True)
class Hardware:
    """The profile numbers the model needs, in per-millisecond units."""

    peak_macs_per_ms: Mapping[str, float]
    bytes_per_ms: float

    @classmethod
    def from_profile(cls, profile: Any) -> Hardware:
        cores = max(1, int(profile.cores))
        threads = max(1, min(int(profile.threads), cores))
        peaks = dict(profile.peak_gflops)
        fp32 = float(peaks.get("fp32") or next(iter(peaks.values())))
        out: dict[str, float] = {}
        for p in PRECISIONS:
            # a precision the device has no peak for runs at the fp32 rate (e.g. fp16 emulated)
            gflops = float(peaks.get(p, fp32))
            out[p] = gflops * 1e9 / 2.0 * threads / cores / 1e3
        return cls(out, float(profile.bandwidth_gbps) * 1e9 / 1e3)


@dataclass(frozen=True)
class Coefficients:
    """All calibrated constants: per precision, per op category, plus per-run costs.

    ``ops[p][k]`` falls back to ``ops["fp32"][k]`` scaled by nothing, then to ``SPEC_PRIORS[k]``
    when a precision or op was not calibrated (``covered`` says which were).
    """

    ops: Mapping[str, Mapping[str, OpCoefficients]] = field(default_factory=dict)
    run_overhead_us: Mapping[str, float] = field(default_factory=dict)
    eff_io: Mapping[str, float] = field(default_factory=dict)
    io_overhead_us: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def spec(cls) -> Coefficients:
        return cls(
            ops={p: dict(SPEC_PRIORS) for p in PRECISIONS},
            run_overhead_us={p: SPEC_RUN_OVERHEAD_US for p in PRECISIONS},
            eff_io={p: SPEC_EFF_IO for p in PRECISIONS},
            io_overhead_us={p: SPEC_IO_OVERHEAD_US for p in PRECISIONS},
        )

    def op(self, key: str, precision: str) -> OpCoefficients:
        table = self.ops.get(precision) or self.ops.get("fp32") or {}
        return table.get(key) or SPEC_PRIORS.get(key) or SPEC_PRIORS["other"]

    def run_overhead_ms(self, precision: str) -> float:
        return float(self.run_overhead_us.get(precision, self.run_overhead_us.get("fp32", SPEC_RUN_OVERHEAD_US))) / 1e3

    def io_inv_eff(self, precision: str) -> float:
        return 1.0 / float(self.eff_io.get(precision, self.eff_io.get("fp32", SPEC_EFF_IO)))

    def io_overhead_ms(self, precision: str) -> float:
        # tables written before crossings had a fixed cost have no io_overhead_us: zero, as fitted then
        if not self.io_overhead_us:
            return 0.0
        return float(self.io_overhead_us.get(precision, self.io_overhead_us.get("fp32", SPEC_IO_OVERHEAD_US))) / 1e3

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": {p: {k: c.to_dict() for k, c in t.items()} for p, t in self.ops.items()},
            "run_overhead_us": dict(self.run_overhead_us),
            "eff_io": dict(self.eff_io),
            "io_overhead_us": dict(self.io_overhead_us),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coefficients:
        return cls(
            ops={p: {k: OpCoefficients.from_dict(c) for k, c in t.items()} for p, t in data.get("ops", {}).items()},
            run_overhead_us={p: float(v) for p, v in data.get("run_overhead_us", {}).items()},
            eff_io={p: float(v) for p, v in data.get("eff_io", {}).items()},
            io_overhead_us={p: float(v) for p, v in data.get("io_overhead_us", {}).items()},
        )

    # -- the linear view ------------------------------------------------------------------

    def theta(self, names: Sequence[str]) -> list[float]:
        """Parameter values in the order of ``names`` (see :func:`param_names`)."""
        out = []
        for name in names:
            parts = name.split(".")
            if parts[1] == "run":
                out.append(self.run_overhead_ms(parts[0]))
            elif parts[1] == "io":
                out.append(self.io_overhead_ms(parts[0]) if parts[2] == "overhead" else self.io_inv_eff(parts[0]))
            else:
                out.append(self.op(parts[1], parts[0]).theta()[TERMS.index(parts[2])])
        return out

    @classmethod
    def from_theta(cls, names: Sequence[str], theta: Sequence[float], base: Coefficients | None = None) -> Coefficients:
        """Coefficients with the named parameters set from ``theta``, the rest from ``base``."""
        base = base or cls.spec()
        ops: dict[str, dict[str, list[float]]] = {
            p: {k: list(base.op(k, p).theta()) for k in OP_KEYS} for p in PRECISIONS
        }
        run = {p: base.run_overhead_ms(p) for p in PRECISIONS}
        io = {p: base.io_inv_eff(p) for p in PRECISIONS}
        io_fixed = {p: base.io_overhead_ms(p) for p in PRECISIONS}
        for name, value in zip(names, theta):
            parts = name.split(".")
            if parts[1] == "run":
                run[parts[0]] = float(value)
            elif parts[1] == "io" and parts[2] == "overhead":
                io_fixed[parts[0]] = float(value)
            elif parts[1] == "io":
                io[parts[0]] = float(value)
            else:
                ops[parts[0]][parts[1]][TERMS.index(parts[2])] = float(value)
        return cls(
            ops={p: {k: OpCoefficients.from_theta(*v) for k, v in t.items()} for p, t in ops.items()},
            run_overhead_us={p: round(v * 1000.0, 4) for p, v in run.items()},
            eff_io={p: round(min(1.0 / v, 1e4), 6) if v > 1e-4 else 1e4 for p, v in io.items()},
            io_overhead_us={p: round(max(v, 0.0) * 1000.0, 4) for p, v in io_fixed.items()},
        )


def param_names(precisions: Iterable[str] = PRECISIONS, keys: Iterable[str] = OP_KEYS) -> list[str]:
    """Names of the linear parameters: ``fp32.conv.compute``, ``int8.run.overhead``, ``fp32.io.memory`` ..."""
    names = []
    keys = list(keys)
    for p in precisions:
        names += [f"{p}.{k}.{t}" for k in keys for t in TERMS]
        names += [f"{p}.run.overhead", f"{p}.io.overhead", f"{p}.io.memory"]
    return names


def layer_terms(f: LayerFeatures, hw: Hardware) -> tuple[float, float, float, float, float]:
    """(count, ideal compute ms, ideal memory ms, rows, im2col elements) of one layer: times theta = ms."""
    return (1.0, f.work / hw.peak_macs_per_ms[f.precision], f.bytes_moved / hw.bytes_per_ms, float(f.rows),
            float(f.im2col))


# Ops a runtime runs in its own blocked data layout, per precision (see the module docstring);
# everything not listed here or in _PLAIN runs in the layout of its input.
_BLOCKED: Mapping[str, frozenset[str]] = {
    "fp32": frozenset({"conv", "dwconv", "pwconv", "maxpool", "avgpool", "gap"}),
    "fp16": frozenset({"conv", "dwconv", "pwconv", "maxpool", "avgpool", "gap"}),
    "int8": frozenset({"conv", "dwconv", "pwconv"}),
}
_PLAIN = frozenset({"linear", "reshape", "other"})
# A conv reading fewer input channels than one layout block takes the plain input as it is
# (ONNX Runtime's NCHWc conv reads an NCHW stem input; block = 8 fp32 lanes on AVX2).
THIN_INPUT_CHANNELS = 8


def crossings(features: Sequence[LayerFeatures], input_elements: int | Sequence[int]) -> list[tuple[str, float]]:
    """(precision, bytes) of every tensor crossing a precision or layout boundary.

    One crossing per (tensor, target precision and layout), however many layers read it. A
    precision crossing is charged to the non-fp32 side at fp32 bytes (the float tensor is read
    or written); a layout crossing to the tensor's precision at its own bytes. Features without
    producer links are taken to run as a chain (the first reads the input).
    """
    inputs = (int(input_elements),) if isinstance(input_elements, (int, float)) else tuple(int(x) for x in input_elements)
    n = len(features)
    linked = any(f.producers for f in features)
    layout: list[str] = []
    seen: set[tuple[int, str, str]] = set()
    out: list[tuple[str, float]] = []

    def add(src: int, src_prec: str, src_layout: str, src_elems: int, dst_prec: str, dst_layout: str) -> None:
        if src_prec == dst_prec and src_layout == dst_layout:
            return
        key = (src, dst_prec, dst_layout)
        if key in seen:
            return
        seen.add(key)
        if src_prec != dst_prec:
            side = dst_prec if dst_prec != "fp32" else src_prec
            out.append((side, float(src_elems * ELEMENT_BYTES["fp32"])))
        else:
            out.append((dst_prec, float(src_elems * ELEMENT_BYTES[dst_prec])))

    for i, f in enumerate(features):
        prods = f.producers if linked else ((i - 1,) if i else (-1,))
        if f.key in _BLOCKED.get(f.precision, ()):
            mine = "blocked"
        elif f.key in _PLAIN:
            mine = "plain"
        else:  # element-wise: the layout of its (first) input
            p0 = prods[0] if prods else -1
            mine = layout[p0] if 0 <= p0 < i else "plain"
        layout.append(mine)
        for p in prods:
            if p >= 0:
                if p < i:
                    add(p, features[p].precision, layout[p], features[p].out_elements, f.precision, mine)
                continue
            k = -1 - p
            elems = inputs[k] if k < len(inputs) else inputs[-1]
            thin = (f.key in ("conv", "dwconv", "pwconv") and 0 < f.in_channels < THIN_INPUT_CHANNELS)
            if f.precision == "fp32" and thin:
                continue
            add(p, "fp32", "plain", elems, f.precision, mine)
    if n:
        last = features[-1]
        add(n - 1, last.precision, layout[-1], last.out_elements, "fp32", "plain")
    return out


def run_precision(features: Sequence[LayerFeatures]) -> str:
    """The precision whose per-run cost applies: the one doing most of the work."""
    work: dict[str, float] = {}
    for f in features:
        work[f.precision] = work.get(f.precision, 0.0) + f.work
    return max(work, key=lambda p: work[p]) if work else "fp32"


def layers_vector(features: Sequence[LayerFeatures], hw: Hardware, names: Sequence[str]) -> list[float]:
    """The layers' part of :func:`design_vector` (no per-run or boundary costs)."""
    index = {n: i for i, n in enumerate(names)}
    x = [0.0] * len(names)
    for f in features:
        for t, v in zip(TERMS, layer_terms(f, hw)):
            i = index.get(f"{f.precision}.{f.key}.{t}")
            if i is not None:
                x[i] += v
    return x


def design_vector(
    features: Sequence[LayerFeatures], input_elements: int | Sequence[int], hw: Hardware, names: Sequence[str]
) -> list[float]:
    """The row ``x`` with ``latency_ms = x . theta`` for a whole network (or micro-benchmark graph)."""
    index = {n: i for i, n in enumerate(names)}
    x = layers_vector(features, hw, names)

    def bump(name: str, value: float) -> None:
        i = index.get(name)
        if i is not None:
            x[i] += value

    bump(f"{run_precision(features)}.run.overhead", 1.0)
    for p, nbytes in crossings(features, input_elements):
        bump(f"{p}.io.overhead", 1.0)
        bump(f"{p}.io.memory", nbytes / hw.bytes_per_ms)
    return x


def predict_terms(
    features: Sequence[LayerFeatures], input_elements: int | Sequence[int], hw: Hardware, coeffs: Coefficients
) -> tuple[list[tuple[float, float, float]], float, float]:
    """Per-layer (overhead, compute, memory) ms, the run overhead ms and the boundary ms."""
    per_layer = []
    for f in features:
        c = coeffs.op(f.key, f.precision)
        n, comp, mem, rows, im2col = layer_terms(f, hw)
        gemm = rows * c.row_ns * 1e-6 + im2col * c.im2col_ps * 1e-9  # reported with compute
        per_layer.append((c.overhead_us / 1000.0 * n, comp / c.eff_compute + gemm, mem / c.eff_memory))
    run_ms = coeffs.run_overhead_ms(run_precision(features))
    io_ms = sum(coeffs.io_overhead_ms(p) + b / hw.bytes_per_ms * coeffs.io_inv_eff(p)
                for p, b in crossings(features, input_elements))
    return per_layer, run_ms, io_ms


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
