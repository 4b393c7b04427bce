"""Compression benchmark: fp32 / fp16 / int8 / mixed on Fashion-MNIST, measured on this host.

For each family (convnet, mobilenet_v2): train a fixed budget (1 epoch), export to ONNX, convert to
every precision, and report validation accuracy (through ONNX Runtime: the accuracy of what would
ship), weight bytes, peak activation bytes (hwtune's profiler accounting, and the stored initializer
bytes of the file), batch-1 latency (torch eager fp32 as the reference, ONNX Runtime for all) and the
speed-up ratios. Where int8 is not faster than fp32 on ONNX Runtime, a per-op profile says which ops
lose. A second part measures int8 vs fp32 at 224x224 (random weights, random calibration: latency
only) to show how much int8 pays for dense 3x3 convolutions versus depthwise-separable blocks.

Usage:
    .venv/bin/python benchmarks/bench_compression.py            # full run (~10 min on a quiet host)
    .venv/bin/python benchmarks/bench_compression.py --quick    # smoke run on tiny settings (~1-2 min)

Writes ``benchmarks/results/compression.json`` (``--quick``: ``compression.quick.json``) with
``{"rows": [{"family", "precision", "val_accuracy", "weight_bytes", "peak_activation_bytes",
"latency_ms", "runtime", "speedup_vs_torch_fp32", ...}], "op_breakdown": ..., "large_inputs": ...}``.
Run it on a quiet machine: run-to-run drift on a shared host is 5-30 %, so ratios under ~1.3x are
within noise (see ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import json
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
    ("mobilenet_v2 0.35 @224", "mobilenet_v2", {"width_mult": 0.35}, 224),
    ("mobilenet_v2 1.0 @224", "mobilenet_v2", {"width_mult": 1.0}, 224),
    ("resnet18 @224", "resnet", {}, 224),
]
QUICK_LARGE = [
    ("mobilenet_v2 0.35 @64", "mobilenet_v2", {"width_mult": 0.35}, 64),
    ("resnet 16-128 @64", "resnet", {"width": (16, 32, 64, 128), "depth": (1, 1, 1, 1)}, 64),
]


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


def bench_large(label: str, family: str, knobs: dict[str, Any], size: int, args: argparse.Namespace,
                tmp: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from hwtune.families import create_model
    from hwtune.onnx_export import export_onnx
    from hwtune.profiler import compare_op_times
    from hwtune.quant import QuantConfig, quantize

    log(f"[{label}] export, int8 (random calibration), measure")
    torch.manual_seed(args.seed)
    model = create_model(family, knobs, num_classes=1000, in_channels=3, input_size=size).eval()
    x = torch.from_numpy(np.random.default_rng(args.seed).standard_normal((1, 3, size, size)).astype(np.float32))
    src = export_onnx(model, x, tmp / "large.fp32.onnx")
    res = quantize(src, tmp / "large.int8.onnx", "int8", config=QuantConfig(calibration_samples=args.large_calibration))
    torch_lat = measure(model, x, runtime="torch", args=args)
    fp32 = measure(src, x.numpy(), runtime="onnxruntime", args=args)
    int8 = measure(res.path, x.numpy(), runtime="onnxruntime", args=args)
    cmp = compare_op_times(src, res.path, x.numpy(), threads=args.threads, runs=args.op_runs)
    return {
        "model": label, "family": family, "input_size": size,
        "torch_fp32_ms": torch_lat["median_ms"], "ort_fp32_ms": fp32["median_ms"], "ort_int8_ms": int8["median_ms"],
        "int8_speedup_vs_ort_fp32": fp32["median_ms"] / int8["median_ms"],
        "ort_fp32_speedup_vs_torch": torch_lat["median_ms"] / fp32["median_ms"],
        "latency": {"torch_fp32": torch_lat, "ort_fp32": fp32, "ort_int8": int8},
        "calibration_source": res.calibration_source, "activation_type": res.activation_type,
        "by_kind": cmp.to_dict()["by_kind"], "losers": [r.to_dict() for r in cmp.losers()[:5]],
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
    if result["large_inputs"]:
        print()
        print(f"{'model':26s} {'torch_fp32':>10s} {'ort_fp32':>9s} {'ort_int8':>9s} {'int8_x':>7s}  conv/dwconv/pwconv int8 speed-up")
        for r in result["large_inputs"]:
            kinds = r["by_kind"]
            per = " / ".join(f"{k} {kinds[k]['speedup']:.2f}x" for k in ("conv", "dwconv", "pwconv")
                             if k in kinds and kinds[k]["speedup"] is not None)
            print(f"{r['model']:26s} {r['torch_fp32_ms']:10.2f} {r['ort_fp32_ms']:9.2f} {r['ort_int8_ms']:9.2f} "
                  f"{r['int8_speedup_vs_ort_fp32']:7.2f}  {per}")


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
    parser.add_argument("--no-large", action="store_true", help="skip the 224x224 part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    args.time_budget = args.time_budget or (0.5 if quick else 10.0)
    args.large_calibration = args.large_calibration or (8 if quick else 32)
    args.op_runs = args.op_runs or (5 if quick else 50)
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
    host = load_profile("host")
    result: dict[str, Any] = {
        "benchmark": "compression",
        "quick": quick,
        "host": {"cpu_model": host.cpu_model, "isa": list(host.isa), "cores": host.cores,
                 "python": platform.python_version()},
        "settings": {"threads": args.threads, "epochs": args.epochs, "time_budget_s": args.time_budget,
                     "calibration_samples": args.calibration_samples, "train_images": len(splits.train),
                     "val_images": len(splits.val), "batch": 1, "seed": args.seed},
        "rows": [], "families": {}, "large_inputs": [],
    }
    with tempfile.TemporaryDirectory(prefix="hwtune-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for family in families:
            info = bench_family(family, dict(knobs_by_family.get(family, {})), splits, args, tmp)
            result["rows"].extend(info.pop("rows"))
            result["families"][family] = info
        if not args.no_large:
            for label, family, knobs, size in (QUICK_LARGE if quick else FULL_LARGE):
                result["large_inputs"].append(bench_large(label, family, knobs, size, args, tmp))
    result["seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_tables(result)
    print(f"\nwrote {out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
