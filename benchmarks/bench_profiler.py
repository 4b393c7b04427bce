"""Benchmark the profiler: time to fully profile a model on the host, and run-to-run spread of the median.

Models: torchvision MobileNetV2 at 224x224 and a small Fashion-MNIST CNN at 28x28 (random weights).
Each is profiled ``--reps`` times with ``hwtune.profile_model(..., device="host")`` (trace, ONNX export,
measured latency with the CI stopping rule, per-op ONNX Runtime profile); the first, cold call is reported
separately. The spread is the coefficient of variation of the measured medians across repetitions.

Targets (issue 2): small CNN fully profiled in under 1 s; CV of the median under 3%.

Writes ``benchmarks/results/profiler.json``:
``{"models": {NAME: {"profile_seconds": s, "latency_ms": median, "cv": c, ...}}, "machine": {...}}``.

Run: ``.venv/bin/python benchmarks/bench_profiler.py`` (about 2-3 minutes); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "profiler.json"
TARGET_SMALL_SECONDS = 1.0
TARGET_CV = 0.03


def small_cnn():
    """A Fashion-MNIST-sized CNN: 3 conv-BN-ReLU blocks (16/32/64 channels), GAP, linear(64->10)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    return nn.Sequential(
        block(1, 16, 1), block(16, 32, 2), block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)
    ).eval()


def mobilenet_v2():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2(weights=None).eval()


MODELS = {
    "fashion_cnn_28": (small_cnn, (1, 1, 28, 28)),
    "mobilenet_v2_224": (mobilenet_v2, (1, 3, 224, 224)),
}


def bench(name: str, reps: int, budget_s: float) -> dict[str, object]:
    from hwtune.profiler import profile_model

    build, shape = MODELS[name]
    model = build()
    t0 = time.perf_counter()
    cold = profile_model(model, shape, device="host", time_budget_s=budget_s)
    cold_s = time.perf_counter() - t0
    seconds, medians, ci, runs, converged = [], [], [], [], []
    for _ in range(reps):
        r = profile_model(model, shape, device="host", time_budget_s=budget_s)
        assert r.latency_source == "measured" and r.latency is not None
        seconds.append(r.profile_seconds)
        medians.append(r.latency_ms)
        ci.append(r.latency.ci_pct)
        runs.append(r.latency.runs)
        converged.append(r.latency.converged)
    mean = statistics.fmean(medians)
    cv = statistics.stdev(medians) / mean if len(medians) > 1 and mean > 0 else 0.0
    return {
        "input_shape": list(shape),
        "profile_seconds": statistics.median(seconds),
        "profile_seconds_all": seconds,
        "profile_seconds_cold": cold_s,
        "latency_ms": statistics.median(medians),
        "latency_ms_all": medians,
        "cv": cv,
        "ci_pct_all": ci,
        "runs_all": runs,
        "converged_all": converged,
        "macs": cold.macs,
        "params": cold.params,
        "peak_activation_bytes": cold.peak_activation_bytes,
        "runtime": cold.runtime,
        "threads": cold.latency.threads if cold.latency is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions per model (default 5)")
    ap.add_argument("--budget-s", type=float, default=10.0, help="latency time budget per profile (default 10)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 1 s budget, small CNN only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    if args.quick:
        args.reps, args.budget_s, names = 2, 1.0, ["fashion_cnn_28"]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2

    from _provenance import machine_info

    import hwtune

    host = hwtune.load_profile("host")
    results: dict[str, object] = {
        "models": {},
        "settings": {"reps": args.reps, "time_budget_s": args.budget_s, "quick": args.quick},
        "machine": {
            **machine_info(threads=host.threads),
            "load_average_before": list(os.getloadavg()),
        },
    }
    for name in names:
        print(f"profiling {name} x{args.reps + 1} ...", file=sys.stderr, flush=True)
        results["models"][name] = bench(name, args.reps, args.budget_s)  # type: ignore[index]
    results["machine"]["load_average_after"] = list(os.getloadavg())  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'model':<18} {'profile s':>10} {'cold s':>8} {'latency ms':>11} {'CV':>7} {'CI% (median)':>13}  runs")
    for name, r in results["models"].items():  # type: ignore[union-attr]
        print(
            f"{name:<18} {r['profile_seconds']:>10.3f} {r['profile_seconds_cold']:>8.3f} {r['latency_ms']:>11.3f} "
            f"{100 * r['cv']:>6.2f}% {statistics.median(r['ci_pct_all']):>12.2f}%  {r['runs_all']}"
        )
    small = results["models"].get("fashion_cnn_28")  # type: ignore[union-attr]
    if small:
        ok = small["profile_seconds"] < TARGET_SMALL_SECONDS
        print(
            f"target: small CNN profiled in < {TARGET_SMALL_SECONDS:g} s: {'met' if ok else 'NOT met'} ({small['profile_seconds']:.3f} s)"
        )
    for name, r in results["models"].items():  # type: ignore[union-attr]
        ok = r["cv"] < TARGET_CV
        print(
            f"target: CV of the median < {100 * TARGET_CV:g}% for {name}: {'met' if ok else 'NOT met'} ({100 * r['cv']:.2f}%)"
        )
    print(
        f"load average before/after: {results['machine']['load_average_before']} / {results['machine']['load_average_after']}"
    )  # type: ignore[index]
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
