#!/usr/bin/env python3
"""Measure a fixed suite of single-op ONNX models on this device; write a results file.

This script is self-contained: it needs numpy and onnxruntime, plus the ``onnx`` package to
build the models (all three have wheels for x86-64 and aarch64 Linux, macOS and Windows). It
does not need hwtune. When ``onnx`` cannot be installed on the device, build the suite on any
machine that has it and copy the folder over::

    host$   python scripts/profile_device.py --export-models suite/      # writes suite/*.onnx + suite.json
    device$ python profile_device.py --models suite/ --out results.json   # numpy + onnxruntime only

Then, on the machine with hwtune::

    hwtune calibrate results.json --base raspberry-pi-4 --out profiles/my-pi.toml

What it measures: each case is one operator (conv, depthwise conv, pointwise conv, linear, pools,
element-wise ops, conv+relu / conv+add fusions) at one shape and precision, batch 1. fp32 cases
are plain graphs; int8 cases are QDQ graphs (QuantizeLinear/DequantizeLinear around the op,
per-channel int8 weights) exactly like ``onnxruntime.quantization.quantize_static`` writes them, so
ONNX Runtime turns them into the same QLinearConv/QGemm/... kernels a quantized network uses.
Activations are u8 on x86 and s8 elsewhere (override with ``--act-type``). The suite is fixed:
the shapes come from a seeded ``random.Random`` over a grid, identical on every machine.

Each case reports the median of repeated ``session.run`` calls (after warm-up) on ``--threads``
intra-op threads, plus p10/p90 and the run count. Keep the machine otherwise idle: the numbers
feed a fitted predictor, and noise here becomes prediction error later.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SCHEMA = "hwtune-microbench/1"
OPSET = 17
SUITE_SEED = 20240601

# --------------------------------------------------------------------------------------------
# The suite: a list of case specs (plain dicts, JSON-serialisable)

_CIN = (1, 3, 8, 12, 16, 24, 32, 48, 64, 96, 128)
_COUT = (8, 16, 24, 32, 48, 64, 96, 128)
_HW = (2, 4, 7, 8, 14, 16, 28, 32)
_MAX_MACS = 60_000_000  # keeps one run under ~10 ms on a slow board


def _out_hw(h: int, k: int, s: int, pad: int) -> int:
    return (h + 2 * pad - k) // s + 1


def _case(op: str, precision: str, inputs: list[list[int]], out: list[int], **kw: object) -> dict:
    case = {"op": op, "precision": precision, "input_shapes": inputs, "output_shape": out}
    case.update(kw)
    parts = [op, precision, "x".join(map(str, inputs[0][1:]))]
    if "out_channels" in kw:
        parts.append(f"o{kw['out_channels']}")
    if "kernel" in kw:
        parts.append(f"k{kw['kernel']}s{kw.get('stride', 1)}")
    case["id"] = "-".join(parts)
    return case


def _conv_case(op: str, precision: str, cin: int, cout: int, h: int, k: int, s: int, groups: int = 1) -> dict:
    pad = k // 2
    ho = _out_hw(h, k, s, pad)
    macs = cout * ho * ho * (cin // groups) * k * k
    return _case(op, precision, [[1, cin, h, h]], [1, cout, ho, ho], out_channels=cout, kernel=k, stride=s,
                 padding=pad, groups=groups, macs=macs)


def build_suite(precisions: tuple[str, ...] = ("fp32", "int8"), size: str = "full") -> list[dict]:
    """The fixed list of cases. ``size="quick"`` takes every 6th case (for smoke tests)."""
    rng = random.Random(SUITE_SEED)
    n = {  # cases per op and precision; int8 gets fewer where the op has no int8 kernel
        "conv": (56, 36), "pwconv": (36, 24), "dwconv": (28, 18), "linear": (12, 8), "maxpool": (8, 6),
        "avgpool": (10, 6), "gap": (8, 6), "add": (10, 8), "relu": (8, 0), "clip": (4, 0), "sigmoid": (4, 0),
        "hardswish": (4, 0), "mul": (4, 0), "concat": (4, 0), "bn": (4, 0), "conv_relu": (10, 8),
        "conv_add": (8, 0), "qdq": (0, 8),
    }
    cases: list[dict] = []
    for precision in precisions:
        col = 0 if precision == "fp32" else 1
        if precision not in ("fp32", "int8"):
            continue

        def count(op: str) -> int:
            return n[op][col]

        def shape(max_c: int = 128) -> tuple[int, int]:
            return rng.choice([c for c in _COUT if c <= max_c]), rng.choice(_HW[1:])

        made = 0
        while made < count("conv"):
            cin, cout, h = rng.choice(_CIN), rng.choice(_COUT), rng.choice(_HW[2:])
            k, s = rng.choice((3, 3, 3, 5, 7)), rng.choice((1, 1, 2))
            if k > h or cout * (h // s) ** 2 * cin * k * k > _MAX_MACS:
                continue
            cases.append(_conv_case("conv", precision, cin, cout, h, k, s))
            made += 1
        made = 0
        while made < count("pwconv"):
            cin, cout, h = rng.choice(_CIN[2:]), rng.choice(_COUT), rng.choice(_HW)
            if cout * h * h * cin > _MAX_MACS:
                continue
            cases.append(_conv_case("pwconv", precision, cin, cout, h, 1, 1))
            made += 1
        for _ in range(count("dwconv")):
            c, h = rng.choice(_COUT + (144, 192, 384)), rng.choice(_HW[2:])
            k, s = rng.choice((3, 3, 5)), rng.choice((1, 1, 2))
            cases.append(_conv_case("dwconv", precision, c, c, h, k, s, groups=c))
        for _ in range(count("linear")):
            fin, fout = rng.choice((8, 16, 32, 64, 128, 256, 512, 1024, 1280)), rng.choice((10, 16, 64, 128, 256, 1000))
            cases.append(_case("linear", precision, [[1, fin]], [1, fout], out_channels=fout, macs=fin * fout))
        for _ in range(count("maxpool")):
            c, h = shape()
            k, s = rng.choice(((2, 2), (3, 2)))
            h = max(h, 4)
            pad = 1 if k == 3 else 0
            ho = _out_hw(h, k, s, pad)
            cases.append(_case("maxpool", precision, [[1, c, h, h]], [1, c, ho, ho], kernel=k, stride=s, padding=pad))
        for _ in range(count("avgpool")):
            c, h = shape()
            k, s = rng.choice(((2, 2), (3, 1), (3, 2)))
            h = max(h, 4)
            pad = 1 if k == 3 else 0
            ho = _out_hw(h, k, s, pad)
            cases.append(_case("avgpool", precision, [[1, c, h, h]], [1, c, ho, ho], kernel=k, stride=s, padding=pad))
        for _ in range(count("gap")):
            c, h = rng.choice(_COUT + (256, 512, 1280)), rng.choice(_HW[1:])
            cases.append(_case("gap", precision, [[1, c, h, h]], [1, c, 1, 1]))
        for op in ("add", "mul", "concat"):
            for _ in range(count(op)):
                c, h = shape()
                out = [1, 2 * c if op == "concat" else c, h, h]
                cases.append(_case(op, precision, [[1, c, h, h], [1, c, h, h]], out))
        for op in ("relu", "clip", "sigmoid", "hardswish", "bn", "qdq"):
            for _ in range(count(op)):
                c, h = shape()
                cases.append(_case(op, precision, [[1, c, h, h]], [1, c, h, h]))
        for op in ("conv_relu", "conv_add"):
            made = 0
            while made < count(op):
                c, h = rng.choice(_COUT), rng.choice(_HW[2:])
                if c * c * 9 * h * h > _MAX_MACS:
                    continue
                case = _conv_case("conv", precision, c, c, h, 3, 1)
                case["op"] = op
                case["id"] = op + case["id"][4:]
                if op == "conv_add":
                    case["input_shapes"] = [[1, c, h, h], [1, c, h, h]]
                cases.append(case)
                made += 1
    # the session's fixed cost: the smallest possible graph, measured a few times over
    for i in range(3 if "fp32" in precisions else 0):
        cases.append(_case("relu", "fp32", [[1, 1, 1, 1 + i]], [1, 1, 1, 1 + i]) | {"id": f"overhead-{i}"})
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
    """The ONNX ModelProto for one case."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    int8 = case["precision"] == "int8"
    act_zp = 128 if act_type == "u8" else 0
    nodes: list = []
    inits: list = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        nm = name(prefix)
        inits.append(numpy_helper.from_array(arr, nm))
        return nm

    act_scale = const(np.array(0.05, np.float32), "s")
    act_zero = const(np.array(act_zp, np.uint8 if act_type == "u8" else np.int8), "zp")

    def qdq(x: str) -> str:
        """Quantize then dequantize an activation (what quantize_static puts on every edge)."""
        q, dq = name("q"), name("dq")
        nodes.append(helper.make_node("QuantizeLinear", [x, act_scale, act_zero], [q]))
        nodes.append(helper.make_node("DequantizeLinear", [q, act_scale, act_zero], [dq]))
        return dq

    def weight(arr: np.ndarray) -> tuple[str, np.ndarray | None]:
        """The weight input (int8 per-channel behind a DequantizeLinear for int8) and its scales."""
        if not int8:
            return const(arr.astype(np.float32), "w"), None
        cout = arr.shape[0]
        scale = (np.abs(arr).reshape(cout, -1).max(1) / 127.0 + 1e-8).astype(np.float32)
        shape = (cout,) + (1,) * (arr.ndim - 1)
        wq = np.clip(np.round(arr / scale.reshape(shape)), -127, 127).astype(np.int8)
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
        scale = (np.float32(0.05) * w_scale).astype(np.float32)
        out = name("bdq")
        nodes.append(helper.make_node(
            "DequantizeLinear", [const(rng.integers(-100, 100, cout).astype(np.int32), "bq"), const(scale, "bs"),
                                 const(np.zeros(cout, np.int32), "bz")], [out], axis=0))
        return out

    op = case["op"]
    inputs = [helper.make_tensor_value_info(f"input{i}" if i else "input", TensorProto.FLOAT, shp)
              for i, shp in enumerate(case["input_shapes"])]
    xs = [v.name for v in inputs]
    if int8:
        xs = [qdq(x) for x in xs]
    y = name("y")
    if op in ("conv", "pwconv", "dwconv", "conv_relu", "conv_add"):
        cin, cout, k, g = case["input_shapes"][0][1], case["out_channels"], case["kernel"], case.get("groups", 1)
        w = rng.standard_normal((cout, cin // g, k, k)).astype(np.float32) * 0.1
        p = case["padding"]
        conv_out = name("c") if op in ("conv_relu", "conv_add") else y
        w_name, w_scale = weight(w)
        nodes.append(helper.make_node("Conv", [xs[0], w_name, bias(cout, w_scale)], [conv_out], kernel_shape=[k, k],
                                      strides=[case["stride"]] * 2, pads=[p] * 4, group=g))
        if op == "conv_relu" and not int8:
            nodes.append(helper.make_node("Relu", [conv_out], [y]))
        elif op == "conv_relu":
            # quantize_static drops a Relu that follows a quantized conv (the u8/s8 range clips it);
            # the case then measures QLinearConv with a clipped output range.
            y = conv_out
        elif op == "conv_add":
            nodes.append(helper.make_node("Add", [conv_out, xs[1]], [y]))
    elif op == "linear":
        fin, fout = case["input_shapes"][0][1], case["out_channels"]
        w = rng.standard_normal((fout, fin)).astype(np.float32) * 0.1
        w_name, w_scale = weight(w)
        nodes.append(helper.make_node("Gemm", [xs[0], w_name, bias(fout, w_scale)], [y], transB=1))
    elif op == "maxpool":
        k, s, p = case["kernel"], case["stride"], case["padding"]
        nodes.append(helper.make_node("MaxPool", [xs[0]], [y], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4))
    elif op == "avgpool":
        k, s, p = case["kernel"], case["stride"], case["padding"]
        nodes.append(helper.make_node("AveragePool", [xs[0]], [y], kernel_shape=[k, k], strides=[s, s],
                                      pads=[p] * 4, count_include_pad=0))
    elif op == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", [xs[0]], [y]))
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
        c = case["input_shapes"][0][1]
        vals = [const(v.astype(np.float32), "bn") for v in (rng.random(c) + 0.5, rng.standard_normal(c),
                                                             rng.standard_normal(c), rng.random(c) + 0.5)]
        nodes.append(helper.make_node("BatchNormalization", [xs[0], *vals], [y]))
    elif op == "qdq":
        y = xs[0]  # the Q/DQ pair itself: input quantize + output dequantize costs
    else:
        raise ValueError(f"unknown op {op!r}")
    if int8 and op != "qdq":
        y = qdq(y)
    out_name = "output"
    nodes.append(helper.make_node("Identity", [y], [out_name]))
    output = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, case["output_shape"])
    graph = helper.make_graph(nodes, case["id"], inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwtune-profile")
    model.ir_version = 8  # readable by onnxruntime >= 1.10 (older boards ship old wheels)
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------
# Measuring


def _session(model_bytes_or_path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


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
    return {"median_ms": statistics.median(times), "p10_ms": q(0.1), "p90_ms": q(0.9), "runs": len(times)}


def _device_info(threads: int, act_type: str) -> dict:
    import onnxruntime as ort

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "model\t")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(), "machine": platform.machine(), "system": platform.system(),
        "cpu_model": cpu, "cpu_count": os.cpu_count(), "threads": threads, "runtime": "onnxruntime",
        "runtime_version": ort.__version__, "python": platform.python_version(), "act_type": act_type,
    }


def default_act_type() -> str:
    """u8 activations on x86 (MLAS u8s8 kernels), s8 on ARM and elsewhere (what quantize picks)."""
    return "u8" if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") else "s8"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="microbench.json", help="results file (.json; .csv also writes a CSV)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (match the profile)")
    ap.add_argument("--budget-s", type=float, default=0.25, help="timing budget per case, seconds")
    ap.add_argument("--precisions", default="fp32,int8", help="comma list among fp32,int8")
    ap.add_argument("--act-type", choices=("u8", "s8"), default=None, help="int8 activation type (default by ISA)")
    ap.add_argument("--quick", action="store_true", help="every 6th case only (smoke test)")
    ap.add_argument("--ops", default=None, help="comma list: only these ops")
    ap.add_argument("--export-models", metavar="DIR", help="write the suite's .onnx files to DIR and exit")
    ap.add_argument("--models", metavar="DIR", help="measure pre-built models from DIR (no onnx package needed)")
    args = ap.parse_args(argv)

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
    results = []
    t_start = time.perf_counter()
    for i, case in enumerate(cases):
        source = str(Path(args.models) / f"{case['id']}.onnx") if args.models else build_model(case, act).SerializeToString()
        try:
            sess = _session(source, args.threads)
        except Exception as exc:  # a runtime too old for an op: skip the case, say so
            print(f"skip {case['id']}: {exc}".splitlines()[0], file=sys.stderr)
            continue
        feeds = {inp.name: rng.standard_normal(shp).astype(np.float32)
                 for inp, shp in zip(sess.get_inputs(), case["input_shapes"])}
        stats = measure(sess, feeds, budget_s=args.budget_s)
        results.append({**case, **stats})
        if (i + 1) % 25 == 0 or i + 1 == len(cases):
            print(f"[{i + 1}/{len(cases)}] {time.perf_counter() - t_start:.0f}s  {case['id']}: {stats['median_ms']:.4f} ms",
                  file=sys.stderr)

    payload = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "device": _device_info(args.threads, act), "suite_seed": SUITE_SEED, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        _write_csv(out, results)
        out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    else:
        out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {len(results)} results to {out} in {time.perf_counter() - t_start:.0f}s "
          f"({args.threads} thread(s), activations {act})")
    return 0


CSV_COLUMNS = ("id", "op", "precision", "input_shapes", "output_shape", "out_channels", "kernel", "stride",
               "padding", "groups", "macs", "median_ms", "p10_ms", "p90_ms", "runs")


def _write_csv(path: Path, results: list[dict]) -> None:
    """One row per case; shapes as 'AxBxCxD' joined by ';' (what ``hwtune calibrate`` reads back)."""
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in results:
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
