#!/usr/bin/env python3
"""Measure a fixed suite of small ONNX models on this device; write a results file.

Run it on the device, in either of two ways:

    python -m hwtune.device_script --threads 4 --out results.json   # hwtune installed with --no-deps
    python device_script.py --threads 4 --out results.json          # this one file copied over

It needs numpy and onnxruntime, plus the ``onnx`` package to build the models (all three have
wheels for x86-64 and aarch64 Linux, macOS and Windows). It does not need torch or the rest of
hwtune: it imports nothing from hwtune, so the file also runs on its own (``pip install --no-deps
hwtune numpy onnxruntime onnx`` gives the ``python -m`` form without torch). When ``onnx`` cannot
be installed on the device, build the suite on any machine that has it and copy the folder over::

    host$   python -m hwtune.device_script --export-models suite/        # writes suite/*.onnx + suite.json
    device$ python device_script.py --models suite/ --out results.json    # numpy + onnxruntime only

Then, on the machine with hwtune::

    hwtune calibrate results.json --base raspberry-pi-4 --out profiles/my-pi.toml

(``scripts/profile_device.py`` in a source checkout runs this same module.)

What it measures, batch 1, fp32 and int8:

* **single ops** over a grid of shapes: conv, depthwise and pointwise conv, linear, pools,
  element-wise ops, conv+relu and conv+add;
* **chains**: the same shape-preserving op (conv+relu, pointwise+relu6, depthwise+relu6, add,
  relu, pools) repeated 1, 2, 4 and 8 times. A single-op graph pays the session's per-run cost
  and the layout changes / quantize-dequantize at its input and output once for one op; a
  network pays them once for dozens of ops. The chains separate the two: the slope over the
  chain length is the op, the intercept is the per-run and boundary cost;
* **blocks** of real networks: MobileNetV2 inverted residuals, ResNet basic blocks (conv+BN+ReLU,
  residual add) and small stem-to-classifier networks.

and, with ``--int8-schemes`` (on by default when int8 is measured and ``onnx`` is present; ``only``
for just this, ~10-30 s), **which int8 scheme is fastest here**: a probe network quantized every
offered way (u8/s8 activations, reduce_range, per-channel/per-tensor; ``quantize_static`` as
hwtune ships it) and timed interleaved. The results' ``int8`` table becomes the profile's ``[int8]``
table through ``hwtune calibrate`` (see :mod:`hwtune.int8_scheme`).

fp32 cases are plain graphs; int8 cases are QDQ graphs written the way
``onnxruntime.quantization.quantize_static`` writes them (QuantizeLinear/DequantizeLinear on
every activation, per-channel int8 weights, int32 bias, ReLU folded into the quantized range),
so ONNX Runtime turns them into the same QLinearConv/QLinearAdd/QGemm kernels, NHWC transposes
and Q/DQ boundaries a quantized network gets. Activations are u8 on x86 and s8 elsewhere
(override with ``--act-type``). The suite is fixed: shapes come from a seeded ``random.Random``
over a grid, identical on every machine.

Each case is timed in ``--passes`` separate passes over the whole suite (default 2, each with
half of ``--budget-s``); ``median_ms`` is the smallest of the per-pass medians, because on a
machine with other load a pass can only be slowed down, never sped up, and ``min_ms`` the
fastest single run (the steadiest statistic on a machine shared with other jobs:
``hwtune calibrate --statistic min``). Per-pass medians, p10/p90 and run counts are kept, and the op types of the graph ONNX Runtime actually ran
(``graph_ops``, when the ``onnx`` package is present) -- ``hwtune calibrate`` reads from them
which fusions the runtime does. Keep the machine otherwise idle: noise here becomes prediction
error later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "hwtune-microbench/2"
# `python -m hwtune.device_script` shows that in --help; a copied file shows its own name.
PROG = "python -m hwtune.device_script" if __package__ == "hwtune" else None
OPSET = 17
SUITE_SEED = 20240601
ACT_SCALE = 0.05

# --------------------------------------------------------------------------------------------
# The suite: a list of case specs (plain dicts, JSON-serialisable). Every case lists its
# ``layers``: op, ``inputs`` (earlier layer indices, or -1 - k for graph input k), shapes and
# geometry. The graph output is the last layer.

_CIN = (1, 3, 8, 12, 16, 24, 32, 48, 64, 96, 128)
_COUT = (8, 16, 24, 32, 48, 64, 96, 128)
_HW = (2, 4, 7, 8, 14, 16, 28, 32)
_MAX_MACS = 60_000_000  # keeps one run under ~10 ms on a slow board
CHAIN_LENGTHS = (1, 2, 4, 8)


def _out_hw(h: int, k: int, s: int, pad: int) -> int:
    return (h + 2 * pad - k) // s + 1


class _Graph:
    """Builds a case's ``layers`` list with shapes worked out (no onnx needed)."""

    def __init__(self, inputs: list[list[int]]) -> None:
        self.inputs = [list(s) for s in inputs]
        self.layers: list[dict] = []

    def shape(self, ref: int) -> list[int]:
        return list(self.inputs[-1 - ref]) if ref < 0 else list(self.layers[ref]["output_shape"])

    def _add(self, op: str, inputs: list[int], out: list[int], **kw: object) -> int:
        layer: dict[str, object] = {"op": op, "inputs": list(inputs), "input_shapes": [self.shape(i) for i in inputs], "output_shape": out}
        layer.update(kw)
        self.layers.append(layer)
        return len(self.layers) - 1

    def conv(self, x: int, cout: int, k: int, s: int = 1, groups: int = 1, act: str | None = None,
             bn: bool = False) -> int:
        n, cin, h, w = self.shape(x)
        pad = k // 2
        ho, wo = _out_hw(h, k, s, pad), _out_hw(w, k, s, pad)
        op = "dwconv" if groups == cin and cin > 1 and groups > 1 else ("pwconv" if k == 1 and groups == 1 else "conv")
        y = self._add(op, [x], [n, cout, ho, wo], out_channels=cout, kernel=k, stride=s, padding=pad, groups=groups,
                      macs=cout * ho * wo * (cin // groups) * k * k)
        if bn:
            y = self._add("bn", [y], [n, cout, ho, wo])
        if act:
            y = self._add(act, [y], [n, cout, ho, wo])
        return y

    def pool(self, op: str, x: int, k: int, s: int, pad: int) -> int:
        n, c, h, w = self.shape(x)
        return self._add(op, [x], [n, c, _out_hw(h, k, s, pad), _out_hw(w, k, s, pad)], kernel=k, stride=s, padding=pad)

    def unary(self, op: str, x: int) -> int:
        return self._add(op, [x], self.shape(x))

    def binary(self, op: str, a: int, b: int) -> int:
        out = self.shape(a)
        if op == "concat":
            out[1] += self.shape(b)[1]
        return self._add(op, [a, b], out)

    def gap(self, x: int) -> int:
        n, c = self.shape(x)[:2]
        return self._add("gap", [x], [n, c, 1, 1])

    def flatten(self, x: int) -> int:
        s = self.shape(x)
        return self._add("flatten", [x], [s[0], int(np.prod(s[1:]))])

    def linear(self, x: int, cout: int) -> int:
        n, fin = self.shape(x)
        return self._add("linear", [x], [n, cout], out_channels=cout, macs=fin * cout)


def _case(op: str, precision: str, g: _Graph, ident: str, **kw: object) -> dict:
    case = {"id": ident, "op": op, "precision": precision, "input_shapes": g.inputs,
            "output_shape": g.layers[-1]["output_shape"], "layers": g.layers}
    case.update(kw)
    return case


def _single(op: str, precision: str, inputs: list[list[int]], build, **kw: object) -> dict:
    g = _Graph(inputs)
    build(g)
    first = g.layers[0]
    parts = [op, precision, "x".join(map(str, inputs[0][1:]))]
    geo = {k: first[k] for k in ("out_channels", "kernel", "stride", "padding", "groups", "macs") if k in first}
    if "out_channels" in geo:
        parts.append(f"o{geo['out_channels']}")
    if "kernel" in geo:
        parts.append(f"k{geo['kernel']}s{geo.get('stride', 1)}")
    return _case(op, precision, g, "-".join(parts), **geo, **kw)


def _conv_single(op: str, precision: str, cin: int, cout: int, h: int, k: int, s: int, groups: int = 1) -> dict:
    def build(g: _Graph) -> None:
        y = g.conv(-1, cout, k, s, groups)
        if op == "conv_relu":
            g.unary("relu", y)
        elif op == "conv_add":
            g.binary("add", y, -2)

    inputs = [[1, cin, h, h]]
    if op == "conv_add":
        inputs.append([1, cout, _out_hw(h, k, s, k // 2), _out_hw(h, k, s, k // 2)])
    return _single(op, precision, inputs, build)


def _chain(kind: str, precision: str, c: int, h: int, n: int, k: int = 3) -> dict:
    """``n`` copies of one shape-preserving op (or op + activation) in a row."""
    inputs = [[1, c, h, h]] + ([[1, c, h, h]] if kind == "add" else [])
    g = _Graph(inputs)
    if kind == "add":  # y_k = y_{k-1} + y_{k-2}: every add reads two fresh tensors
        a, b = -1, -2
        for _ in range(n):
            a, b = g.binary("add", a, b), a
    else:
        x = -1
        for _ in range(n):
            if kind == "conv":
                x = g.conv(x, c, k, act="relu")
            elif kind == "pwconv":
                x = g.conv(x, c, 1, act="clip")
            elif kind == "dwconv":
                x = g.conv(x, c, k, groups=c, act="clip")
            elif kind in ("maxpool", "avgpool"):
                x = g.pool(kind, x, 3, 1, 1)
            else:
                x = g.unary(kind, x)
    kk = f"-k{k}" if kind in ("conv", "dwconv") else ""
    return _case("chain", precision, g, f"chain-{kind}{kk}-{precision}-{c}x{h}x{h}-n{n}", chain_op=kind, chain_length=n)


def _mbv2_block(precision: str, cin: int, cout: int, h: int, t: int, k: int, s: int, n: int) -> dict:
    g = _Graph([[1, cin, h, h]])
    # the block's input comes from a conv (the previous block's projection), as in a network: a
    # residual Add reading the graph input itself would need a layout change networks never make
    x, c = g.conv(-1, cin, 1, bn=precision == "fp32"), cin
    for b in range(n):
        stride = s if b == 0 else 1
        y = x
        if t != 1:
            y = g.conv(y, c * t, 1, act="clip", bn=precision == "fp32")
        y = g.conv(y, c * t, k, stride, groups=c * t, act="clip", bn=precision == "fp32")
        y = g.conv(y, cout, 1, bn=precision == "fp32")
        if stride == 1 and c == cout:
            y = g.binary("add", x, y)
        x, c = y, cout
    return _case("block", precision, g, f"block-mbv2-{precision}-{cin}x{h}x{h}-o{cout}-t{t}k{k}s{s}-n{n}", block="mbv2")


def _resnet_block(precision: str, cin: int, cout: int, h: int, s: int, n: int) -> dict:
    g = _Graph([[1, cin, h, h]])
    bn = precision == "fp32"
    x, c = g.conv(-1, cin, 3, act="relu", bn=bn), cin  # the previous block's output, see _mbv2_block
    for b in range(n):
        stride = s if b == 0 else 1
        y = g.conv(x, cout, 3, stride, act="relu", bn=bn)
        y = g.conv(y, cout, 3, bn=bn)
        short = x if (stride == 1 and c == cout) else g.conv(x, cout, 1, stride, bn=bn)
        x = g.unary("relu", g.binary("add", y, short))
        c = cout
    return _case("block", precision, g, f"block-resnet-{precision}-{cin}x{h}x{h}-o{cout}s{s}-n{n}", block="resnet")


def _mini_net(precision: str, cin: int, h: int, widths: tuple[int, ...], stem_stride: int, classes: int = 10) -> dict:
    """Stem conv, one conv per width (stride 2 after the first), global pool, linear: the network frame."""
    g = _Graph([[1, cin, h, h]])
    bn = precision == "fp32"
    x = g.conv(-1, widths[0], 3, stem_stride, act="relu", bn=bn)
    for i, w in enumerate(widths):
        x = g.conv(x, w, 3, 2 if i else 1, act="relu", bn=bn)
    x = g.linear(g.flatten(g.gap(x)), classes)
    ws = "-".join(map(str, widths))
    return _case("block", precision, g, f"block-net-{precision}-{cin}x{h}x{h}-w{ws}-s{stem_stride}", block="net")


def build_suite(precisions: tuple[str, ...] = ("fp32", "int8"), size: str = "full") -> list[dict]:
    """The fixed list of cases. ``size="quick"`` takes every 6th case (for smoke tests)."""
    rng = random.Random(SUITE_SEED)
    n = {  # single-op cases per op and precision; int8 gets fewer where the op has no int8 kernel
        "conv": (30, 20), "pwconv": (20, 14), "dwconv": (16, 12), "linear": (8, 6), "maxpool": (6, 4),
        "avgpool": (6, 4), "gap": (6, 4), "add": (8, 6), "relu": (6, 0), "clip": (3, 0), "sigmoid": (3, 0),
        "hardswish": (3, 0), "mul": (3, 0), "concat": (3, 0), "bn": (3, 0), "conv_relu": (8, 6),
        "conv_add": (8, 6),
    }
    cases: list[dict] = []
    for precision in precisions:
        col = 0 if precision == "fp32" else 1
        if precision not in ("fp32", "int8"):
            continue

        def count(op: str, col: int = col) -> int:
            return n[op][col]

        def shape(max_c: int = 128) -> tuple[int, int]:
            return rng.choice([c for c in _COUT if c <= max_c]), rng.choice(_HW[1:])

        made = 0
        while made < count("conv"):
            cin, cout, h = rng.choice(_CIN), rng.choice(_COUT), rng.choice(_HW[2:])
            k, s = rng.choice((3, 3, 3, 5, 7)), rng.choice((1, 1, 2))
            if k > h or cout * (h // s) ** 2 * cin * k * k > _MAX_MACS:
                continue
            cases.append(_conv_single("conv", precision, cin, cout, h, k, s))
            made += 1
        made = 0
        while made < count("pwconv"):
            cin, cout, h = rng.choice(_CIN[2:]), rng.choice(_COUT), rng.choice(_HW)
            if cout * h * h * cin > _MAX_MACS:
                continue
            cases.append(_conv_single("pwconv", precision, cin, cout, h, 1, 1))
            made += 1
        for _ in range(count("dwconv")):
            c, h = rng.choice(_COUT + (144, 192, 384)), rng.choice(_HW[2:])
            k, s = rng.choice((3, 3, 5)), rng.choice((1, 1, 2))
            cases.append(_conv_single("dwconv", precision, c, c, h, k, s, groups=c))
        for _ in range(count("linear")):
            fin, fout = rng.choice((8, 16, 32, 64, 128, 256, 512, 1024, 1280)), rng.choice((10, 16, 64, 128, 256, 1000))
            cases.append(_single("linear", precision, [[1, fin]], lambda g, fo=fout: g.linear(-1, fo)))
        for op, choices in (("maxpool", ((2, 2), (3, 2))), ("avgpool", ((2, 2), (3, 1), (3, 2)))):
            for _ in range(count(op)):
                c, h = shape()
                k, s = rng.choice(choices)
                h = max(h, 4)
                pad = 1 if k == 3 else 0
                cases.append(_single(op, precision, [[1, c, h, h]], lambda g, o=op, k=k, s=s, p=pad: g.pool(o, -1, k, s, p)))
        for _ in range(count("gap")):
            c, h = rng.choice(_COUT + (256, 512, 1280)), rng.choice(_HW[1:])
            cases.append(_single("gap", precision, [[1, c, h, h]], lambda g: g.gap(-1)))
        for op in ("add", "mul", "concat"):
            for _ in range(count(op)):
                c, h = shape()
                cases.append(_single(op, precision, [[1, c, h, h], [1, c, h, h]], lambda g, o=op: g.binary(o, -1, -2)))
        for op in ("relu", "clip", "sigmoid", "hardswish", "bn"):
            for _ in range(count(op)):
                c, h = shape()
                cases.append(_single(op, precision, [[1, c, h, h]], lambda g, o=op: g.unary(o, -1)))
        for op in ("conv_relu", "conv_add"):
            made = 0
            while made < count(op):
                c, h = rng.choice(_COUT), rng.choice(_HW[2:])
                if c * c * 9 * h * h > _MAX_MACS:
                    continue
                cases.append(_conv_single(op, precision, c, c, h, 3, 1))
                made += 1

        # chains: fixed shape grids (the slope over the length is what matters, not random shapes)
        chain_shapes = {
            "conv": ((8, 28), (16, 28), (16, 14), (32, 14), (32, 7), (64, 7), (64, 4), (128, 4)),
            "pwconv": ((16, 28), (32, 14), (64, 7), (96, 4), (160, 2)),
            "dwconv": ((16, 28), (48, 14), (96, 7), (192, 4), (384, 2)),
            "add": ((16, 28), (32, 14), (64, 7)),
            "relu": ((16, 28), (32, 14), (64, 7)),
            "maxpool": ((16, 28), (32, 14), (64, 7)),
            "avgpool": ((16, 28), (32, 14), (64, 7)),
        }
        for kind, shapes in chain_shapes.items():
            if precision == "int8" and kind == "relu":
                continue  # int8 folds ReLU into the quantized range: nothing to time
            lengths = CHAIN_LENGTHS if precision == "fp32" or kind in ("conv", "pwconv", "dwconv", "add") else (1, 4)
            for c, h in shapes:
                for length in lengths:
                    cases.append(_chain(kind, precision, c, h, length))
        for kind, shapes in (("conv", ((16, 14), (32, 7), (64, 4))), ("dwconv", ((48, 14), (96, 7), (192, 4)))):
            for c, h in shapes:
                for length in (1, 4):
                    cases.append(_chain(kind, precision, c, h, length, k=5))

        # blocks of the model families
        for cin, cout, h, t, k, s, reps in (
            (16, 16, 28, 4, 3, 1, 2), (16, 24, 28, 6, 3, 2, 1), (24, 24, 14, 6, 3, 1, 2), (24, 32, 14, 4, 5, 2, 1),
            (32, 32, 7, 6, 3, 1, 2), (32, 64, 7, 2, 3, 2, 1), (64, 64, 4, 6, 5, 1, 2), (64, 96, 4, 4, 3, 1, 1),
            (96, 96, 4, 6, 3, 1, 1), (96, 160, 4, 6, 3, 2, 1), (160, 160, 2, 6, 5, 1, 1), (8, 8, 28, 1, 3, 1, 1),
        ):
            cases.append(_mbv2_block(precision, cin, cout, h, t, k, s, reps))
        for cin, cout, h, s, reps in ((8, 8, 28, 1, 1), (16, 16, 28, 1, 2), (16, 32, 28, 2, 1), (32, 32, 14, 1, 1),
                                      (32, 64, 14, 2, 1), (64, 64, 7, 1, 2), (64, 128, 8, 2, 1), (128, 128, 4, 1, 1)):
            cases.append(_resnet_block(precision, cin, cout, h, s, reps))
        for cin, h, widths, stem_stride in ((1, 28, (8, 16), 1), (1, 28, (16, 32, 64), 2), (1, 28, (32, 64), 1),
                                            (3, 32, (16, 32), 1), (3, 32, (16, 32, 64), 2), (3, 32, (48, 96), 2),
                                            (1, 28, (8, 16, 32, 64), 1), (3, 32, (24, 48, 96, 192), 1)):
            cases.append(_mini_net(precision, cin, h, widths, stem_stride))

    # the session's fixed cost: the smallest possible graph, measured a few times over
    for i in range(3 if "fp32" in precisions else 0):
        g = _Graph([[1, 1, 1, 1 + i]])
        g.unary("relu", -1)
        cases.append(_case("relu", "fp32", g, f"overhead-{i}"))
    seen: dict[str, int] = {}
    for case in cases:  # ids must be unique: suffix repeats
        k = seen.get(case["id"], 0)
        seen[case["id"]] = k + 1
        if k:
            case["id"] += f"-{k}"
    if size == "quick":
        cases = cases[::6]
    return cases


# --------------------------------------------------------------------------------------------
# Building the ONNX graphs (needs the onnx package)


def build_model(case: dict, act_type: str = "u8"):
    """The ONNX ModelProto for one case (fp32, or int8 QDQ as quantize_static writes it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    int8 = case["precision"] == "int8"
    zp_default = 128 if act_type == "u8" else 0
    zp_relu = 0 if act_type == "u8" else -128  # a ReLU output's range starts at the zero point
    act_np = np.uint8 if act_type == "u8" else np.int8
    nodes: list = []
    inits: list = []
    counter = [0]
    layers = case["layers"]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        nm = name(prefix)
        inits.append(numpy_helper.from_array(arr, nm))
        return nm

    act_scale = const(np.array(ACT_SCALE, np.float32), "s")
    zero_points = {zp_default: const(np.array(zp_default, act_np), "zp")}

    def qdq(x: str, zp: int) -> str:
        """Quantize then dequantize an activation (what quantize_static puts on every edge)."""
        if zp not in zero_points:
            zero_points[zp] = const(np.array(zp, act_np), "zp")
        q, dq = name("q"), name("dq")
        nodes.append(helper.make_node("QuantizeLinear", [x, act_scale, zero_points[zp]], [q]))
        nodes.append(helper.make_node("DequantizeLinear", [q, act_scale, zero_points[zp]], [dq]))
        return dq

    def weight(arr: np.ndarray) -> tuple[str, np.ndarray | None]:
        """The weight input (int8 per-channel behind a DequantizeLinear for int8) and its scales."""
        if not int8:
            return const(arr.astype(np.float32), "w"), None
        cout = arr.shape[0]
        scale = (np.abs(arr).reshape(cout, -1).max(1) / 127.0 + 1e-8).astype(np.float32)
        shp = (cout,) + (1,) * (arr.ndim - 1)
        wq = np.clip(np.round(arr / scale.reshape(shp)), -127, 127).astype(np.int8)
        out = name("wdq")
        nodes.append(helper.make_node(
            "DequantizeLinear", [const(wq, "wq"), const(scale, "ws"), const(np.zeros(cout, np.int8), "wz")], [out],
            axis=0))
        return out, scale

    def bias(cout: int, w_scale: np.ndarray | None) -> str:
        if w_scale is None:
            return const(rng.standard_normal(cout).astype(np.float32) * 0.1, "b")
        # ONNX Runtime fuses DQ->Conv->Q into QLinearConv only when the int32 bias scale is
        # exactly activation_scale x weight_scale (what quantize_static writes).
        scale = (np.float32(ACT_SCALE) * w_scale).astype(np.float32)
        out = name("bdq")
        nodes.append(helper.make_node(
            "DequantizeLinear", [const(rng.integers(-100, 100, cout).astype(np.int32), "bq"), const(scale, "bs"),
                                 const(np.zeros(cout, np.int32), "bz")], [out], axis=0))
        return out

    inputs = [helper.make_tensor_value_info(f"input{i}" if i else "input", TensorProto.FLOAT, shp)
              for i, shp in enumerate(case["input_shapes"])]
    readers = [0] * len(layers)
    for j, layer in enumerate(layers):
        for i in layer["inputs"]:
            if i >= 0:
                readers[i] += 1
    # int8: quantize_static removes a ReLU/Clip whose input nothing else reads; the producer's
    # output then gets the activation's range (zero point at the range start)
    removed = [int8 and layer["op"] in ("relu", "clip") and len(layer["inputs"]) == 1 and layer["inputs"][0] >= 0
               and readers[layer["inputs"][0]] == 1 for layer in layers]
    relu_range = [False] * len(layers)
    for j, layer in enumerate(layers):
        if removed[j]:
            relu_range[layer["inputs"][0]] = True
    tensor: dict[int, str] = {}  # layer index / -1-k -> name of the (dequantized) tensor its readers use
    zp_of: dict[int, int] = {}
    for k, v in enumerate(inputs):
        tensor[-1 - k] = qdq(v.name, zp_default) if int8 else v.name
        zp_of[-1 - k] = zp_default
    for j, layer in enumerate(layers):
        op = layer["op"]
        xs = [tensor[i] for i in layer["inputs"]]
        if removed[j]:
            tensor[j], zp_of[j] = tensor[layer["inputs"][0]], zp_of[layer["inputs"][0]]
            continue
        y = name("y")
        if op in ("conv", "pwconv", "dwconv"):
            cin, cout = layer["input_shapes"][0][1], layer["out_channels"]
            k, g, p = layer["kernel"], layer.get("groups", 1), layer["padding"]
            w_name, w_scale = weight(rng.standard_normal((cout, cin // g, k, k)).astype(np.float32) * 0.1)
            nodes.append(helper.make_node("Conv", [xs[0], w_name, bias(cout, w_scale)], [y], kernel_shape=[k, k],
                                          strides=[layer["stride"]] * 2, pads=[p] * 4, group=g))
        elif op == "linear":
            fin, fout = layer["input_shapes"][0][1], layer["out_channels"]
            w_name, w_scale = weight(rng.standard_normal((fout, fin)).astype(np.float32) * 0.1)
            nodes.append(helper.make_node("Gemm", [xs[0], w_name, bias(fout, w_scale)], [y], transB=1))
        elif op in ("maxpool", "avgpool"):
            k, s, p = layer["kernel"], layer["stride"], layer["padding"]
            extra: dict[str, Any] = {"count_include_pad": 0} if op == "avgpool" else {}
            nodes.append(helper.make_node("MaxPool" if op == "maxpool" else "AveragePool", [xs[0]], [y],
                                          kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, **extra))
        elif op == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", [xs[0]], [y]))
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", [xs[0]], [y], axis=1))
        elif op in ("add", "mul"):
            nodes.append(helper.make_node(op.capitalize(), xs, [y]))
        elif op == "concat":
            nodes.append(helper.make_node("Concat", xs, [y], axis=1))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", xs, [y]))
        elif op == "clip":
            nodes.append(helper.make_node("Clip", [xs[0], const(np.array(0, np.float32), "lo"),
                                                   const(np.array(6, np.float32), "hi")], [y]))
        elif op == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", xs, [y]))
        elif op == "hardswish":
            nodes.append(helper.make_node("HardSwish", xs, [y]))
        elif op == "bn":
            if int8:
                raise ValueError(f"{case['id']}: int8 cases have no BatchNormalization (exporters fold it)")
            c = layer["input_shapes"][0][1]
            vals = [const(v.astype(np.float32), "bn") for v in (rng.random(c) + 0.5, rng.standard_normal(c),
                                                                 rng.standard_normal(c), rng.random(c) + 0.5)]
            nodes.append(helper.make_node("BatchNormalization", [xs[0], *vals], [y]))
        else:
            raise ValueError(f"unknown op {op!r}")
        if int8:
            # pass-through ops keep their input's quantization; ReLU outputs start at the range start
            zp = zp_of[layer["inputs"][0]] if op in ("maxpool", "flatten") else (zp_relu if relu_range[j] or op in ("relu", "clip") else zp_default)
            tensor[j], zp_of[j] = qdq(y, zp), zp
        else:
            tensor[j], zp_of[j] = y, zp_default
    out_name = "output"
    nodes.append(helper.make_node("Identity", [tensor[len(layers) - 1]], [out_name]))
    output = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, case["output_shape"])
    graph = helper.make_graph(nodes, case["id"], inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwtune-profile")
    model.ir_version = 8  # readable by onnxruntime >= 1.10 (older boards ship old wheels)
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------
# Measuring


def _session(model_bytes_or_path, threads: int, optimized_path: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


def _graph_ops(path: str) -> list[str] | None:
    """Op types of the graph ONNX Runtime ran (None without the onnx package)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return [n.op_type for n in onnx.load(path).graph.node]
    except Exception:  # noqa: BLE001 - a runtime that cannot serialise its optimized graph
        return None


def measure(session, feeds: dict, *, budget_s: float, min_runs: int = 10, max_runs: int = 3000) -> dict:
    """Median and spread of ``session.run`` wall time, in ms."""
    warm_end = time.perf_counter() + min(0.05, budget_s / 4)
    for _ in range(3):
        session.run(None, feeds)
    while time.perf_counter() < warm_end:
        session.run(None, feeds)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while (len(times) < min_runs or time.perf_counter() < end) and len(times) < max_runs:
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
    return {"median_ms": statistics.median(times), "min_ms": times[0], "p10_ms": q(0.1), "p90_ms": q(0.9),
            "runs": len(times)}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    for prefix in ("model name", "hardware", "processor\t"):  # x86, then ARM boards
        for line in lines:
            if line.lower().startswith(prefix) and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    return platform.processor()


def _device_info(threads: int, act_type: str) -> dict:
    import onnxruntime as ort

    return {
        "hostname": socket.gethostname(), "machine": platform.machine(), "system": platform.system(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "threads": threads, "runtime": "onnxruntime",
        "runtime_version": ort.__version__, "python": platform.python_version(), "act_type": act_type,
    }


def default_act_type() -> str:
    """u8 activations on x86 (MLAS u8s8 kernels), s8 on ARM and elsewhere (what quantize picks)."""
    return "u8" if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") else "s8"


# --------------------------------------------------------------------------------------------
# int8 scheme: which int8 variant of a network runs fastest here, measured, not assumed.
#
# The choices that decide ONNX Runtime int8 speed on a CPU are the activation type (u8 or s8),
# 7-bit weights (reduce_range) and per-channel vs per-tensor weight scales. Which combination is
# fast depends on the CPU *and* the runtime build: on an AMD EPYC with AVX-512 VNNI and ONNX Runtime
# 1.32, u8 activations ran ResNet-18 2.5x faster than s8, where an "x86 with VNNI -> s8" rule
# shipped s8. So the probe below quantizes one small convolution-heavy network every offered way
# (with onnxruntime.quantization.quantize_static, as hwtune ships int8) and times them interleaved.

#: Scheme name -> settings. ``-rr``: reduce_range (7-bit weights); ``-pt``: one weight scale per tensor.
INT8_SCHEMES: dict[str, dict] = {
    "u8s8": {"activation_type": "u8", "reduce_range": False, "per_channel": True},
    "s8s8": {"activation_type": "s8", "reduce_range": False, "per_channel": True},
    "u8s8-pt": {"activation_type": "u8", "reduce_range": False, "per_channel": False},
    "u8s8-rr": {"activation_type": "u8", "reduce_range": True, "per_channel": True},
    "u8s8-rr-pt": {"activation_type": "u8", "reduce_range": True, "per_channel": False},
}
#: Among schemes within TIE_FRACTION of the fastest, the earliest here wins: full 8-bit
#: per-channel weights are the most accurate, 7-bit per-tensor ones the least.
ACCURACY_ORDER = ("u8s8", "s8s8", "u8s8-pt", "u8s8-rr", "u8s8-rr-pt")
TIE_FRACTION = 0.10  # the u8 variants run the same kernels; their medians differ by 5-8 % on a loaded host
#: A scheme whose output error on the probe exceeds both of these is not offered (measured accuracy).
MAX_ERROR_RATIO, MAX_ERROR_FLOOR = 3.0, 0.05
PROBE_VERSION = 2
PROBE_INPUT = [1, 3, 96, 96]


def _cpu_flags() -> tuple[str, ...]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def offered_int8_schemes(isa: tuple[str, ...] | list[str] | None = None, machine: str | None = None) -> list[str]:
    """The schemes worth measuring on a CPU with these ISA flags (default: this machine's).

    On x86 without VNNI, ONNX Runtime multiplies u8 x s8 with ``vpmaddubsw``, which saturates the
    int16 sum of two products: u8 activations with full 8-bit weights lose accuracy there (relative
    logit error 0.10 vs 0.02 with reduce_range, measured on the AVX2 EPYC of v0.1), so u8 schemes
    come only with reduce_range on those CPUs. That is a correctness constraint; speed is measured.
    """
    flags = set(_cpu_flags() if isa is None else isa)
    machine = (machine or platform.machine()).lower()
    x86 = bool(flags & {"sse4_2", "avx", "avx2", "avx512f"}) or (isa is None and machine in ("x86_64", "amd64"))
    vnni = bool(flags & {"avx512_vnni", "avx512vnni", "avx_vnni"})
    if x86 and not vnni:
        return [s for s in INT8_SCHEMES if INT8_SCHEMES[s]["activation_type"] == "s8" or INT8_SCHEMES[s]["reduce_range"]]
    return list(INT8_SCHEMES)


def int8_probe_case() -> dict:
    """The probe network (fp32): a stem, ResNet basic blocks (one strided, with a 1x1 shortcut), a
    MobileNetV2 inverted residual, global pool and a classifier. About 140 M MACs at 96x96."""
    g = _Graph([list(PROBE_INPUT)])
    x = g.conv(-1, 32, 3, 2, act="relu")

    def basic(x: int, cout: int, s: int) -> int:
        y = g.conv(g.conv(x, cout, 3, s, act="relu"), cout, 3)
        short = x if s == 1 and g.shape(x)[1] == cout else g.conv(x, cout, 1, s)
        return g.unary("relu", g.binary("add", y, short))

    x = basic(x, 32, 1)
    x = basic(x, 64, 2)
    y = g.conv(g.conv(g.conv(x, 256, 1, act="clip"), 256, 3, groups=256, act="clip"), 64, 1)
    x = g.binary("add", x, y)
    x = basic(x, 128, 2)
    g.linear(g.flatten(g.gap(x)), 10)
    return _case("block", "fp32", g, f"int8-probe-v{PROBE_VERSION}", block="int8_probe")


def _quantize_probe(src: str, dst: str, scheme: str, calib: list[np.ndarray], input_name: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    settings = INT8_SCHEMES[scheme]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{input_name: x} for x in calib])

        def get_next(self):
            return next(self._it, None)

    qtype = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[settings["activation_type"]]
    quantize_static(src, dst, _Reader(), quant_format=QuantFormat.QDQ, per_channel=settings["per_channel"],
                    reduce_range=settings["reduce_range"], activation_type=qtype, weight_type=QuantType.QInt8)


def time_interleaved(sessions: dict, feeds: dict, *, budget_s: float, min_rounds: int = 9,
                     max_rounds: int = 400) -> dict[str, list[float]]:
    """Run every session once per round, rotating the order, until ``budget_s`` is spent; ms per run.

    Interleaving puts every candidate through the same load changes of a shared machine, so their
    ratio holds even when the absolute times drift.
    """
    names = list(sessions)
    for name in names:  # warm-up: first runs allocate and pack weights
        for _ in range(2):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[float]] = {n: [] for n in names}
    end = time.perf_counter() + budget_s
    r = 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() < end):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter_ns()
            sessions[name].run(None, feeds[name])
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
        r += 1
    return times


def paired_ratios(times: dict[str, list[float]], names: list[str]) -> dict[str, float]:
    """Per scheme, the median over rounds of its time / the median of ``names`` in the same round.

    Interleaved rounds are paired: a load change slows a whole round, so these ratios are steadier
    than ratios of per-scheme medians."""
    rounds = min(len(times[n]) for n in names)
    ref = [statistics.median(times[n][r] for n in names) for r in range(rounds)]
    return {n: round(statistics.median(times[n][r] / ref[r] for r in range(rounds)), 4) for n in names}


def choose_int8_scheme(latency_ms: dict[str, float], rel_error: dict[str, float] | None = None,
                       relative: dict[str, float] | None = None) -> tuple[str, str]:
    """The scheme to ship, and why: the fastest of those accurate enough, preferring the more
    accurate scheme when it is within ``TIE_FRACTION`` of the fastest. ``relative`` (paired
    ratios, :func:`paired_ratios`) decides when given; ``latency_ms`` otherwise."""
    rel_error = rel_error or {}
    speed = relative or latency_ms
    cands = [s for s in latency_ms if s in INT8_SCHEMES]
    if not cands:
        raise ValueError("no int8 scheme was measured")
    errs = [rel_error[s] for s in cands if s in rel_error]
    limit = max(MAX_ERROR_RATIO * min(errs), MAX_ERROR_FLOOR) if errs else float("inf")
    accurate = [s for s in cands if rel_error.get(s, 0.0) <= limit] or cands
    fastest = min(accurate, key=lambda s: speed[s])
    near = [s for s in accurate if speed[s] <= speed[fastest] * (1 + TIE_FRACTION)]
    chosen = min(near, key=ACCURACY_ORDER.index)
    others = sorted((s for s in latency_ms if s != chosen), key=lambda s: speed.get(s, latency_ms[s]))
    reason = f"measured: {chosen} {latency_ms[chosen]:.2f} ms vs " + ", ".join(
        f"{s} {latency_ms[s]:.2f} ms" for s in others)
    dropped = [s for s in cands if s not in accurate]
    if dropped:
        reason += f"; not accurate enough here: {', '.join(dropped)} (output error > {limit:.3f})"
    if chosen != fastest:
        reason += f"; {chosen} preferred over {fastest} (within {TIE_FRACTION:.0%}, more accurate)"
    return chosen, reason


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs through the root logger and warns; keep that off the terminal
    without touching the caller's logging set-up (a NullHandler stands in for basicConfig)."""
    import logging
    import warnings

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # "Removing initializer ..." from the quantizer's own sessions
    root = logging.getLogger()
    null = logging.NullHandler()
    drop = lambda record: "onnxruntime" not in record.pathname
    root.addHandler(null)
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(null)


def measure_int8_schemes(threads: int = 1, *, budget_s: float = 4.0, schemes: list[str] | None = None,
                         isa: tuple[str, ...] | list[str] | None = None) -> dict:
    """Quantize the probe network every offered way, time the variants interleaved; the ``[int8]`` table.

    Returns a JSON-able dict: ``scheme`` (chosen), ``reason``, ``latency_ms`` (median per scheme,
    plus ``fp32`` for reference), ``rel_error`` (relative L2 error of the logits against fp32 on
    held-out random inputs), ``runs``, ``threads``, ``runtime``, ``runtime_version``, ``cpu_model``,
    ``isa`` (flags that decide the offer), ``probe`` and ``seconds``.
    """
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    flags = tuple(_cpu_flags() if isa is None else isa)
    names = list(schemes) if schemes else offered_int8_schemes(flags if isa is not None else None)
    unknown = [s for s in names if s not in INT8_SCHEMES]
    if unknown:
        raise ValueError(f"unknown int8 scheme(s) {unknown}; known: {', '.join(INT8_SCHEMES)}")
    case = int8_probe_case()
    rng = np.random.default_rng(SUITE_SEED)
    calib = [rng.standard_normal(PROBE_INPUT).astype(np.float32) for _ in range(8)]
    check = rng.standard_normal(PROBE_INPUT).astype(np.float32)
    paths: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hwtune-int8-probe-") as tmp, _quiet_quantizer():
        src, pre = str(Path(tmp) / "fp32.onnx"), str(Path(tmp) / "pre.onnx")
        Path(src).write_bytes(build_model(case).SerializeToString())
        quant_pre_process(src, pre)
        paths["fp32"] = src
        for s in names:
            paths[s] = str(Path(tmp) / f"{s}.onnx")
            _quantize_probe(pre, paths[s], s, calib, "input")
        sessions = {k: _session(p, threads) for k, p in paths.items()}
    feeds = {k: {"input": check} for k in sessions}
    ref = sessions["fp32"].run(None, feeds["fp32"])[0]
    rel_error = {s: float(np.linalg.norm(sessions[s].run(None, feeds[s])[0] - ref) / (np.linalg.norm(ref) + 1e-12))
                 for s in names}
    times = time_interleaved(sessions, feeds, budget_s=budget_s)
    latency = {k: round(statistics.median(v), 4) for k, v in times.items()}
    relative = paired_ratios(times, names)
    chosen, reason = choose_int8_scheme({s: latency[s] for s in names}, rel_error, relative)
    reason += f" (probe network, {threads} thread(s), onnxruntime {ort.__version__}, fp32 {latency['fp32']:.2f} ms)"
    return {
        "scheme": chosen, "reason": reason, "runtime": "onnxruntime", "runtime_version": ort.__version__,
        "threads": threads, "cpu_model": _cpu_model(), "machine": platform.machine(),
        "isa": sorted(set(flags) & _ISA_FLAGS), "probe": f"int8-probe-v{PROBE_VERSION}",
        "created": time.strftime("%Y-%m-%d"), "latency_ms": latency,
        "relative": relative, "rel_error": {s: round(e, 5) for s, e in rel_error.items()}, "runs": len(times["fp32"]),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ISA flags that matter for int8 kernels (recorded with a measurement; the cache key of the host's).
_ISA_FLAGS = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512vnni", "avx_vnni",
              "avx512_bf16", "amx_int8", "neon", "asimd", "asimddp", "i8mm", "sve"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="microbench.json", help="results file (.json; .csv also writes a CSV)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (match the profile)")
    ap.add_argument("--budget-s", type=float, default=0.24, help="timing budget per case (all passes), seconds")
    ap.add_argument("--passes", type=int, default=2, help="timed passes over the suite; median_ms = best pass")
    ap.add_argument("--precisions", default="fp32,int8", help="comma list among fp32,int8")
    ap.add_argument("--act-type", choices=("u8", "s8"), default=None, help="int8 activation type (default by ISA)")
    ap.add_argument("--quick", action="store_true", help="every 6th case only (smoke test)")
    ap.add_argument("--ops", default=None, help="comma list: only these case ops (conv, chain, block ...)")
    ap.add_argument("--export-models", metavar="DIR", help="write the suite's .onnx files to DIR and exit")
    ap.add_argument("--models", metavar="DIR", help="measure pre-built models from DIR (no onnx package needed)")
    ap.add_argument("--int8-schemes", choices=("auto", "yes", "no", "only"), default="auto",
                    help="measure which int8 scheme (u8/s8 activations, reduce_range, per-channel) is fastest here "
                         "and store it as the results' 'int8' table (auto: when int8 is measured and the onnx "
                         "package is present; only: just that, about 10-30 s)")
    ap.add_argument("--int8-budget-s", type=float, default=4.0, help="seconds of interleaved int8 scheme timing")
    args = ap.parse_args(argv)
    if args.int8_schemes == "only":
        return _main_int8_only(args)

    act = args.act_type or default_act_type()
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    if args.models:
        spec = json.loads((Path(args.models) / "suite.json").read_text())
        cases, act = spec["cases"], spec["act_type"]
    else:
        cases = build_suite(precisions, "quick" if args.quick else "full")
    if args.ops:
        wanted = set(args.ops.split(","))
        cases = [c for c in cases if c["op"] in wanted]

    if args.export_models:
        out_dir = Path(args.export_models)
        out_dir.mkdir(parents=True, exist_ok=True)
        for case in cases:
            (out_dir / f"{case['id']}.onnx").write_bytes(build_model(case, act).SerializeToString())
        (out_dir / "suite.json").write_text(json.dumps({"schema": SCHEMA, "act_type": act, "cases": cases}, indent=1))
        print(f"wrote {len(cases)} models and suite.json to {out_dir} (activations {act})")
        return 0

    rng = np.random.default_rng(0)
    passes = max(1, args.passes)
    t_start = time.perf_counter()
    live = []  # (case, session, feeds, graph_ops): sessions stay open across passes
    with tempfile.TemporaryDirectory(prefix="hwtune-microbench-") as tmp:
        for case in cases:
            source = str(Path(args.models) / f"{case['id']}.onnx") if args.models else build_model(case, act).SerializeToString()
            opt = str(Path(tmp) / "opt.onnx")
            try:
                sess = _session(source, args.threads, opt)
            except Exception as exc:  # noqa: BLE001 - a runtime too old for an op: skip the case, say so
                print(f"skip {case['id']}: {exc}".splitlines()[0], file=sys.stderr)
                continue
            feeds = {inp.name: rng.standard_normal(shp).astype(np.float32)
                     for inp, shp in zip(sess.get_inputs(), case["input_shapes"])}
            live.append((case, sess, feeds, _graph_ops(opt)))
    print(f"built {len(live)} sessions in {time.perf_counter() - t_start:.0f}s", file=sys.stderr)
    per_pass: list[list[dict]] = [[] for _ in live]
    for p in range(passes):
        for i, (case, sess, feeds, _) in enumerate(live):
            per_pass[i].append(measure(sess, feeds, budget_s=args.budget_s / passes))
            if (i + 1) % 100 == 0 or i + 1 == len(live):
                print(f"pass {p + 1}/{passes} [{i + 1}/{len(live)}] {time.perf_counter() - t_start:.0f}s  {case['id']}: "
                      f"{per_pass[i][-1]['median_ms']:.4f} ms", file=sys.stderr)
    results = []
    for (case, _, _, ops), stats in zip(live, per_pass):
        best = min(stats, key=lambda s: s["median_ms"])
        row = {**case, **best, "min_ms": min(s["min_ms"] for s in stats), "runs": sum(s["runs"] for s in stats),
               "pass_ms": [s["median_ms"] for s in stats]}
        if ops is not None:
            row["graph_ops"] = ops
        results.append(row)

    payload = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "device": _device_info(args.threads, act), "suite_seed": SUITE_SEED, "passes": passes,
               "results": results}
    int8 = _int8_table_for(args, precisions)
    if int8 is not None:
        payload["int8"] = int8
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        _write_csv(out, results)
        out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    else:
        out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {len(results)} results to {out} in {time.perf_counter() - t_start:.0f}s "
          f"({args.threads} thread(s), activations {act}, {passes} pass(es))")
    return 0


def _int8_table_for(args: argparse.Namespace, precisions: tuple[str, ...]) -> dict | None:
    """The int8 scheme table when asked for (``--int8-schemes``), or None (printed why on stderr)."""
    if args.int8_schemes == "no" or (args.int8_schemes == "auto" and ("int8" not in precisions or args.models)):
        return None
    try:
        table = measure_int8_schemes(args.threads, budget_s=args.int8_budget_s)
    except ImportError as exc:  # no onnx package: the probe is built and quantized here
        if args.int8_schemes == "yes":
            raise
        print(f"int8 scheme not measured ({exc}); install the onnx package to measure it", file=sys.stderr)
        return None
    print(f"int8 scheme: {table['scheme']} ({table['reason']}) in {table['seconds']:.0f}s", file=sys.stderr)
    return table


def _main_int8_only(args: argparse.Namespace) -> int:
    table = measure_int8_schemes(args.threads, budget_s=args.int8_budget_s)
    payload = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "device": _device_info(args.threads, "u8" if INT8_SCHEMES[table["scheme"]]["activation_type"] == "u8"
                                      else "s8"),
               "suite_seed": SUITE_SEED, "passes": 0, "results": [], "int8": table}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"int8 scheme: {table['scheme']} ({table['reason']}); wrote {out} in {table['seconds']:.0f}s")
    return 0


CSV_COLUMNS = ("id", "op", "precision", "input_shapes", "output_shape", "out_channels", "kernel", "stride",
               "padding", "groups", "macs", "median_ms", "min_ms", "p10_ms", "p90_ms", "runs")


def _write_csv(path: Path, results: list[dict]) -> None:
    """One row per single-op case; shapes as 'AxBxCxD' joined by ';' (what ``hwtune calibrate`` reads back).

    Chains and blocks need their ``layers`` lists, which only the JSON (always written next to
    the CSV) carries.
    """
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in results:
            if r["op"] in ("chain", "block"):
                continue
            row = []
            for col in CSV_COLUMNS:
                v = r.get(col, "")
                if col == "input_shapes":
                    v = ";".join("x".join(map(str, s)) for s in v)
                elif col == "output_shape":
                    v = "x".join(map(str, v))
                row.append(v)
            w.writerow(row)


if __name__ == "__main__":
    sys.exit(main())
