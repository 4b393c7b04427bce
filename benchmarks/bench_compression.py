"""Compression benchmark: fp32 / fp16 / int8 / mixed on Fashion-MNIST, and every int8 scheme at 224.

Part ``families`` (convnet, mobilenet_v2): train a fixed budget (1 epoch), export to ONNX, convert to
every precision, and report validation accuracy (through ONNX Runtime: the accuracy of what would
ship), weight bytes, peak activation bytes, batch-1 latency (torch eager fp32 as the reference, ONNX
Runtime for all) and the speed-up ratios; where int8 is not faster than fp32, a per-op profile says
which ops lose.

Part ``schemes``: ResNet-18 and MobileNetV2 1.0 at 224x224 (random weights and calibration: latency
only), fp32 vs every int8 scheme (u8s8, s8s8, per-tensor, reduce_range; ``hwtune.device_script.
INT8_SCHEMES``) vs the scheme hwtune ships (``quantize`` with its defaults, i.e. the host's measured
choice), all timed in the same interleaved rounds, with paired per-round ratios. Targets (issue 18):
the shipped int8 within 10% of the fastest scheme, and ResNet-18 int8 >= 2x faster than fp32 with
VNNI. It also times the first scheme measurement (fresh cache; target < 30 s) and the cached lookup,
and shows the AVX2-only case as far as this CPU allows (the ISA-keyed decision and cache, and the
rule for an AVX2 profile; AVX2 kernel speeds cannot be measured on a VNNI CPU).

Usage:
    .venv/bin/python benchmarks/bench_compression.py                   # both parts (~10 min quiet host)
    .venv/bin/python benchmarks/bench_compression.py --parts schemes   # the int8 schemes only (~5 min)
    .venv/bin/python benchmarks/bench_compression.py --quick           # smoke run on tiny settings

Writes ``benchmarks/results/compression.json`` (``--quick``: ``compression.quick.json``) with
``machine`` (CPU model, ISA flags, threads, versions, load; ``benchmarks/_provenance.py``),
``rows``/``families`` (part families), ``scheme_choice`` and ``large_inputs`` (part schemes), and
``loadavg_after``. Ratios measured in one interleaved run hold on a loaded machine; absolute times do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Family settings for the Fashion-MNIST part. convnet: dense 3x3 convs (where int8 should pay),
# ~29 M MACs; mobilenet_v2 at width 0.35: depthwise-separable blocks (where int8 gains least on
# AVX2). One training epoch each takes ~2-3 min on one quiet core of this host.
FULL_KNOBS: dict[str, dict[str, Any]] = {
    "convnet": {"width": (32, 64, 128), "depth": (1, 2, 2), "kernel_size": (3, 3, 3)},
    "mobilenet_v2": {"width_mult": 0.35},
}
QUICK_KNOBS: dict[str, dict[str, Any]] = {
    "convnet": {"width": (8, 16), "depth": (1, 1)},
    "mobilenet_v2": {"width_mult": 0.25, "depth": (1,) * 7, "expand_ratio": (1, 2, 2, 2, 2, 2, 2), "last_channel": 64},
}
# 224x224 latency-only models: (label, family, knobs). resnet with its default knobs is exactly
# torchvision's ResNet-18 (hwtune.families.resnet docstring).
FULL_LARGE = [
    ("mobilenet_v2 1.0 @224", "mobilenet_v2", {"width_mult": 1.0}, 224),
    ("resnet18 @224", "resnet", {}, 224),
]
QUICK_LARGE = [
    ("mobilenet_v2 0.35 @64", "mobilenet_v2", {"width_mult": 0.35}, 64),
    ("resnet 16-128 @64", "resnet", {"width": (16, 32, 64, 128), "depth": (1, 1, 1, 1)}, 64),
]
PARTS = ("families", "schemes")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mixed_plan(family: str, knobs: dict[str, Any]):
    """First and last layers fp32, body int8 — the classic mixed-precision recipe."""
    from hwtune.families import get_family
    from hwtune.precision import PrecisionPlan

    prefixes = get_family(family).stage_prefixes(knobs)
    return PrecisionPlan("int8", ((prefixes["stem"], "fp32"), (prefixes["head"], "fp32")))


def measure(target, example, *, runtime: str, args: argparse.Namespace) -> dict[str, float]:
    from hwtune.profiler.latency import measure_latency

    m = measure_latency(target, example, runtime=runtime, threads=args.threads, time_budget_s=args.time_budget)
    return {"median_ms": m.median_ms, "ci_half_width_ms": m.ci_half_width_ms, "runs": m.runs, "p10_ms": m.p10_ms,
            "p90_ms": m.p90_ms}


def bench_family(family: str, knobs: dict[str, Any], splits, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from hwtune.data import calibration_batch
    from hwtune.families import create_model
    from hwtune.onnx_export import export_onnx
    from hwtune.profiler import compare_op_times, profile_model
    from hwtune.quant import QuantConfig, node_precisions, onnx_weight_bytes, quantize
    from hwtune.training import TrainBudget, evaluate, train

    c, h, _ = splits.input_shape
    torch.manual_seed(args.seed)
    model = create_model(family, knobs, num_classes=splits.num_classes, in_channels=c, input_size=h)
    log(f"[{family}] training {args.epochs} epoch(s) on {len(splits.train)} images")
    t0 = time.perf_counter()
    stats = train(model, splits, budget=TrainBudget(epochs=args.epochs), seed=args.seed)
    train_s = time.perf_counter() - t0
    model.eval()
    torch_acc = evaluate(model, splits.val).accuracy
    example = torch.from_numpy(calibration_batch(splits, 1, seed=args.seed + 1))
    src = export_onnx(model, example, tmp / f"{family}.fp32.onnx")
    calib = calibration_batch(splits, args.calibration_samples, seed=args.seed)
    config = QuantConfig(calibration_samples=args.calibration_samples, seed=args.seed)

    log(f"[{family}] torch eager fp32 latency")
    torch_lat = measure(model, example, runtime="torch", args=args)
    plans = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "mixed": mixed_plan(family, knobs)}
    rows: list[dict[str, Any]] = []
    prof = profile_model(model, tuple(example.shape), precision="fp32", measure=False, layers=False)
    rows.append({
        "family": family, "precision": "fp32", "precision_plan": "fp32", "runtime": "torch",
        "val_accuracy": torch_acc, "weight_bytes": prof.weight_bytes, "file_weight_bytes": None,
        "peak_activation_bytes": prof.peak_activation_bytes, "latency_ms": torch_lat["median_ms"],
        "latency": torch_lat, "speedup_vs_torch_fp32": 1.0, "speedup_vs_ort_fp32": None,
    })
    paths: dict[str, Path] = {}
    for label, plan in plans.items():
        log(f"[{family}] {label}: convert, evaluate, measure")
        res = quantize(src, tmp / f"{family}.{label}.onnx", plan, calibration=calib, config=config)
        paths[label] = res.path
        prof = profile_model(model, tuple(example.shape), precision=plan, measure=False, layers=False)
        acc = evaluate(res.path, splits.val).accuracy
        lat = measure(res.path, example.numpy(), runtime="onnxruntime", args=args)
        precs = node_precisions(res.path)
        rows.append({
            "family": family, "precision": label, "precision_plan": res.precision_label, "runtime": "onnxruntime",
            "val_accuracy": acc, "weight_bytes": prof.weight_bytes, "file_weight_bytes": onnx_weight_bytes(res.path),
            "peak_activation_bytes": prof.peak_activation_bytes, "latency_ms": lat["median_ms"], "latency": lat,
            "speedup_vs_torch_fp32": torch_lat["median_ms"] / lat["median_ms"], "speedup_vs_ort_fp32": None,
            "activation_type": res.activation_type, "reduce_range": res.reduce_range,
            "calibration_source": res.calibration_source, "calibration_samples": res.calibration_samples,
            "compute_nodes": {p: list(precs.values()).count(p) for p in sorted(set(precs.values()))},
            "notes": list(res.notes),
        })
    ort_fp32 = next(r for r in rows if r["runtime"] == "onnxruntime" and r["precision"] == "fp32")["latency_ms"]
    for r in rows:
        if r["runtime"] == "onnxruntime":
            r["speedup_vs_ort_fp32"] = ort_fp32 / r["latency_ms"]

    log(f"[{family}] per-op profile int8 vs fp32")
    cmp = compare_op_times(paths["fp32"], paths["int8"], example.numpy(), threads=args.threads, runs=args.op_runs)
    by_acc = {r["precision"]: r["val_accuracy"] for r in rows if r["runtime"] == "onnxruntime"}
    return {
        "rows": rows,
        "training": {"knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
                     "epochs": args.epochs, "samples_seen": stats.samples_seen, "final_loss": stats.final_loss,
                     "seconds": train_s, "torch_val_accuracy": torch_acc},
        "op_breakdown": {**cmp.to_dict(), "losers": [r.to_dict() for r in cmp.losers()[:8]]},
        "checks": {
            "int8_accuracy_drop_pts": 100 * (by_acc["fp32"] - by_acc["int8"]),
            "mixed_accuracy_drop_pts": 100 * (by_acc["fp32"] - by_acc["mixed"]),
            "int8_within_1pt": by_acc["fp32"] - by_acc["int8"] <= 0.01,
            "int8_faster_than_ort_fp32": next(r["speedup_vs_ort_fp32"] for r in rows
                                              if r["precision"] == "int8") > 1.0,
        },
    }


def bench_schemes(label: str, family: str, knobs: dict[str, Any], size: int, args: argparse.Namespace,
                  tmp: Path) -> dict[str, Any]:
    """fp32 vs every int8 scheme vs the one hwtune ships (random weights and calibration: latency only).

    Every variant is timed in the same interleaved rounds (``device_script.time_interleaved``), so
    load changes of the shared machine hit all of them alike; ratios are paired per round.
    """
    import dataclasses
    import statistics

    import numpy as np
    import torch

    from hwtune.device_script import INT8_SCHEMES, paired_ratios, time_interleaved
    from hwtune.families import create_model
    from hwtune.onnx_export import export_onnx
    from hwtune.profiler import compare_op_times
    from hwtune.quant import QuantConfig, quantize
    from hwtune.runtimes.onnxruntime import ort_session

    log(f"[{label}] export, int8 every scheme + shipped (random calibration), interleaved timing")
    torch.manual_seed(args.seed)
    model = create_model(family, knobs, num_classes=1000, in_channels=3, input_size=size).eval()
    x = torch.from_numpy(np.random.default_rng(args.seed).standard_normal((1, 3, size, size)).astype(np.float32))
    src = export_onnx(model, x, tmp / "large.fp32.onnx")
    base = QuantConfig(calibration_samples=args.large_calibration)
    paths: dict[str, Path] = {"fp32": src}
    quantize_s: dict[str, float] = {}
    for name, settings in INT8_SCHEMES.items():
        cfg = dataclasses.replace(base, **settings)
        t0 = time.perf_counter()
        paths[name] = quantize(src, tmp / f"large.{name}.onnx", "int8", config=cfg).path
        quantize_s[name] = time.perf_counter() - t0
    shipped = quantize(src, tmp / "large.shipped.onnx", "int8", config=base)
    paths["shipped"] = shipped.path
    sessions = {k: ort_session(p, args.threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: x.numpy()} for k, s in sessions.items()}
    times = time_interleaved(sessions, feeds, budget_s=args.scheme_budget)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = paired_ratios(times, list(times))  # per round: time / the round's median
    int8_names = [*INT8_SCHEMES, "shipped"]
    fastest = min(INT8_SCHEMES, key=lambda k: ratio[k])
    cmp = compare_op_times(src, shipped.path, x.numpy(), threads=args.threads, runs=args.op_runs)
    return {
        "model": label, "family": family, "input_size": size, "rounds": len(times["fp32"]),
        "median_ms": {k: round(v, 3) for k, v in median.items()},
        "p10_ms": {k: round(float(np.percentile(v, 10)), 3) for k, v in times.items()},
        "paired_ratio": ratio,
        "fastest_scheme": fastest,
        "shipped_scheme": shipped.int8_scheme,
        "shipped_vs_fastest": round(ratio["shipped"] / ratio[fastest], 3),
        "shipped_within_10pct_of_fastest": ratio["shipped"] <= 1.10 * ratio[fastest],
        "speedup_vs_fp32": {k: round(ratio["fp32"] / ratio[k], 3) for k in int8_names},
        "quantize_seconds": {k: round(v, 2) for k, v in quantize_s.items()},
        "by_kind": cmp.to_dict()["by_kind"], "losers": [r.to_dict() for r in cmp.losers()[:5]],
    }


def bench_scheme_choice(args: argparse.Namespace) -> dict[str, Any]:
    """What choosing the scheme costs (first measurement, then the cache), and the AVX2-only case.

    The measurement runs against a fresh cache directory, so "first" really is the first. An AVX2-only
    host is simulated by the detected host profile with its ISA cut to AVX2: the decision is keyed
    (and cached) by ISA and offers only the schemes that are accurate there, but the kernels timed
    are still this CPU's (ONNX Runtime dispatches on CPUID), so AVX2 speeds are not measured here.
    """
    import dataclasses
    import os

    from hwtune import int8_scheme
    from hwtune.device import load_profile

    host = load_profile("host")
    old = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="hwtune-bench-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            int8_scheme.clear_memo()
            t0 = time.perf_counter()
            first = int8_scheme.int8_scheme_for(host)
            first_s = time.perf_counter() - t0
            int8_scheme.clear_memo()
            t0 = time.perf_counter()
            again = int8_scheme.int8_scheme_for(host)
            cached_s = time.perf_counter() - t0
            avx2_host = dataclasses.replace(host, isa=tuple(f for f in host.isa if not f.startswith("avx512")
                                                            and f not in ("avx_vnni", "amx_int8")))
            avx2 = int8_scheme.int8_scheme_for(avx2_host)
            keys = {"host": int8_scheme.host_cache_key(host), "avx2": int8_scheme.host_cache_key(avx2_host)}
            files = sorted(p.name for p in int8_scheme.cache_dir().glob("*.json"))
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old
            int8_scheme.clear_memo()
    rule = int8_scheme.rule_of_thumb(dataclasses.replace(avx2_host, detected=False))
    return {
        "first_measurement_s": round(first_s, 2), "cached_lookup_s": round(cached_s, 4),
        "first_under_30s": first_s < 30.0, "cached": again.cached, "host": first.to_dict(),
        "avx2_simulated": {"scheme": avx2.to_dict(), "cache_keys_differ": keys["host"] != keys["avx2"],
                           "cache_files": files, "keys": keys,
                           "note": "ISA cut to AVX2 on this VNNI CPU: offer and cache key as on an AVX2 host; "
                                   "the timings are this CPU's kernels, not an AVX2 CPU's"},
        "avx2_profile_rule": rule.to_dict(),
    }


def print_tables(result: dict[str, Any]) -> None:
    head = (f"{'family':13s} {'precision':9s} {'runtime':11s} {'val_acc':>7s} {'weight_KB':>9s} {'file_KB':>8s} "
            f"{'peak_act_KB':>11s} {'latency_ms':>10s} {'x_torch':>7s} {'x_ortfp32':>9s}")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        file_kb = "" if r["file_weight_bytes"] is None else f"{r['file_weight_bytes'] / 1024:8.1f}"
        vs_ort = "" if r["speedup_vs_ort_fp32"] is None else f"{r['speedup_vs_ort_fp32']:9.2f}"
        print(f"{r['family']:13s} {r['precision']:9s} {r['runtime']:11s} {100 * r['val_accuracy']:6.2f}% "
              f"{r['weight_bytes'] / 1024:9.1f} {file_kb:>8s} {r['peak_activation_bytes'] / 1024:11.1f} "
              f"{r['latency_ms']:10.3f} {r['speedup_vs_torch_fp32']:7.2f} {vs_ort:>9s}")
    print()
    for family, info in result["families"].items():
        ch = info["checks"]
        print(f"{family}: int8 accuracy drop {ch['int8_accuracy_drop_pts']:+.2f} pts (mixed "
              f"{ch['mixed_accuracy_drop_pts']:+.2f}); within 1 pt: {ch['int8_within_1pt']}; "
              f"int8 faster than ORT fp32: {ch['int8_faster_than_ort_fp32']}")
        kinds = info["op_breakdown"]["by_kind"]
        print("  int8 vs fp32 kernel time by kind (ms fp32 -> int8):",
              ", ".join(f"{k} {v['base_ms']:.3f}->{v['other_ms']:.3f}" for k, v in kinds.items()))
        losers = info["op_breakdown"]["losers"]
        if losers:
            print("  slower in int8:", ", ".join(f"{r['name']} ({r['kind']}) {r['base_ms']:.3f}->{r['other_ms']:.3f}"
                                                 for r in losers[:5]))
    choice = result.get("scheme_choice")
    if choice:
        print()
        print(f"int8 scheme on this host: {choice['host']['name']} ({choice['host']['reason']})")
        print(f"  first measurement {choice['first_measurement_s']:.1f} s, cached lookup {choice['cached_lookup_s']:.3f} s; "
              f"AVX2-only ISA (simulated): {choice['avx2_simulated']['scheme']['name']}, AVX2 profile rule: "
              f"{choice['avx2_profile_rule']['name']}")
    if result["large_inputs"]:
        print()
        names = list(result["large_inputs"][0]["median_ms"])
        print(f"{'model':24s} " + " ".join(f"{n:>10s}" for n in names) + "   (median ms, interleaved)")
        for r in result["large_inputs"]:
            print(f"{r['model']:24s} " + " ".join(f"{r['median_ms'][n]:10.2f}" for n in names))
            print(f"{'':24s} shipped {r['shipped_scheme']['name']} = {r['shipped_vs_fastest']:.2f}x the fastest "
                  f"({r['fastest_scheme']}); int8 speed-up vs fp32: "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in r["speedup_vs_fp32"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke run")
    parser.add_argument("--families", default="convnet,mobilenet_v2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every latency (default 1)")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per latency measurement")
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--large-calibration", type=int, default=None, help="random calibration images at 224")
    parser.add_argument("--op-runs", type=int, default=None, help="profiled runs for the per-op breakdown")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma list: families (Fashion-MNIST training, ~8 min), schemes (fp32 vs every int8 "
                             "scheme vs the shipped one at 224, plus the cost of choosing it)")
    parser.add_argument("--scheme-budget", type=float, default=None, help="seconds of interleaved rounds per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    args.time_budget = args.time_budget or (0.5 if quick else 10.0)
    args.large_calibration = args.large_calibration or (8 if quick else 32)
    args.op_runs = args.op_runs or (5 if quick else 50)
    args.scheme_budget = args.scheme_budget or (2.0 if quick else 20.0)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    if quick:
        args.calibration_samples = min(args.calibration_samples, 64)
    out = args.out or ROOT / "benchmarks" / "results" / ("compression.quick.json" if quick else "compression.json")

    from hwtune.data import load_dataset
    from hwtune.device import load_profile

    started = time.perf_counter()
    splits = load_dataset("fashion-mnist", train_limit=2000 if quick else None, val_limit=500 if quick else None,
                          seed=args.seed)
    knobs_by_family = QUICK_KNOBS if quick else FULL_KNOBS
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _provenance import machine_info

    host = load_profile("host")
    result: dict[str, Any] = {
        "benchmark": "compression",
        "quick": quick,
        "parts": parts,
        "machine": machine_info(threads=args.threads, packages=("onnxruntime", "onnx")),
        "host": {"cpu_model": host.cpu_model, "isa": list(host.isa), "cores": host.cores,
                 "python": platform.python_version()},
        "settings": {"threads": args.threads, "epochs": args.epochs, "time_budget_s": args.time_budget,
                     "scheme_budget_s": args.scheme_budget, "large_calibration": args.large_calibration,
                     "calibration_samples": args.calibration_samples, "train_images": len(splits.train),
                     "val_images": len(splits.val), "batch": 1, "seed": args.seed},
        "rows": [], "families": {}, "scheme_choice": None, "large_inputs": [],
    }
    with tempfile.TemporaryDirectory(prefix="hwtune-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if "families" in parts:
            for family in families:
                info = bench_family(family, dict(knobs_by_family.get(family, {})), splits, args, tmp)
                result["rows"].extend(info.pop("rows"))
                result["families"][family] = info
        if "schemes" in parts:
            log("[int8 scheme] first measurement (fresh cache), cached lookup, AVX2-only ISA")
            result["scheme_choice"] = bench_scheme_choice(args)
            for label, family, knobs, size in (QUICK_LARGE if quick else FULL_LARGE):
                result["large_inputs"].append(bench_schemes(label, family, knobs, size, args, tmp))
    result["loadavg_after"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_tables(result)
    print(f"\nwrote {out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
