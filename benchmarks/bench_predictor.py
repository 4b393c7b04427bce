"""Validate the latency predictor: real devices (HW-NAS-Bench), this host, and prediction cost.

Writes ``benchmarks/results/predictor.json``::

    {"devices": {"raspberry-pi-4": {spearman, kendall, within_10pct, within_20pct, flops_spearman,
                                    flops_kendall, flops_within_10pct, flops_within_20pct,
                                    n_calibration, n_eval, calibration_seed, calibration_archs,
                                    seeds: {...robustness over other seeds...}},
                 "pixel-3": {...}},
     "host": {"within_10pct", "within_20pct", "spearman", "median_error_pct", "n", ...},
     "predict_ms": {...}, "anchors": {...}}

Real devices -- protocol of ../shared/data/hw-nas-bench/README.md: 10 connected architectures
drawn with ``numpy.random.default_rng(CALIBRATION_SEED)`` are the only rows the predictor sees
(three global scales over the spec per-op priors, ``hwtune.predictor._calibrate.fit_scales``);
every other connected architecture is predicted and compared. The FLOPs-only baseline is a
straight line latency = a * FLOPs + b fitted on the same 10 rows (its ranks are those of FLOPs).

Host: random candidates of the convnet / mobilenet_v2 / resnet families (Fashion-MNIST 1x28x28
and 3x32x32 inputs, fp32 and int8 QDQ via ``hwtune.quant.quantize``), measured with ONNX Runtime on
the threads of the host profile, predicted from the host profile's micro-benchmark calibration
(``scripts/profile_device.py`` + ``hwtune calibrate``). Run on a quiet machine: the measured side
is only as good as the machine's noise.

Usage:  python benchmarks/bench_predictor.py [--quick] [--host-n 120] [--skip-host]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "hw-nas-bench" / "nb201_cifar10_latency.csv"
OUT = REPO / "benchmarks" / "results" / "predictor.json"
CALIBRATION_SEED = 0
N_CALIBRATION = 10
DEVICES = {"raspberry-pi-4": "raspi4_latency_ms", "pixel-3": "pixel3_latency_ms"}
ANCHORS = {
    "hw-nas-bench raspberry-pi-4 spearman": {"FLOPs": "0.85-0.87", "BRP-NAS (900 samples)": 0.847, "HELP (10 samples)": 0.890},
    "host within_10pct": {"nn-Meter (mobile CPU)": 0.99},
    "targets": {"spearman": 0.95, "host within_10pct": 0.95, "predict_ms": 5.0},
}


def _metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    rel = np.abs(pred / meas - 1.0)
    return {
        "spearman": round(float(spearmanr(pred, meas)[0]), 4),
        "kendall": round(float(kendalltau(pred, meas)[0]), 4),
        "within_10pct": round(float(np.mean(rel <= 0.10)), 4),
        "within_20pct": round(float(np.mean(rel <= 0.20)), 4),
        "median_error_pct": round(float(np.median(rel) * 100), 2),
    }


def calibration_indices(n: int, seed: int = CALIBRATION_SEED, k: int = N_CALIBRATION) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def hwnasbench(quick: bool, write_csv_dir: Path | None = None) -> dict:
    """Spearman/Kendall/within-x% of the predictor and of FLOPs on both devices."""
    from hwtune.device import load_profile
    from hwtune.predictor._calibrate import fit_scales
    from hwtune.predictor._model import Coefficients, Hardware, param_names
    from hwtune.predictor._nb201 import NB201Composer

    with DATA.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["cell_connected"] == "1"]
    archs = [r["arch_str"] for r in rows]
    flops = np.array([float(r["flops_M"]) for r in rows])
    t0 = time.perf_counter()
    composer = NB201Composer()
    t_compose = time.perf_counter() - t0
    names = param_names()
    out: dict = {}
    seeds = range(1, 4) if quick else range(1, 21)
    for device, column in DEVICES.items():
        y = np.array([float(r[column]) for r in rows])
        profile = load_profile(device)
        hw = Hardware.from_profile(profile)
        t0 = time.perf_counter()
        x = composer.design_matrix(archs, hw, names)
        t_design = time.perf_counter() - t0
        spec = Coefficients.spec()
        theta_spec = np.array(spec.theta(names))

        def run(seed: int) -> tuple[dict, dict, np.ndarray, object]:
            cal = calibration_indices(len(rows), seed)
            mask = np.ones(len(rows), bool)
            mask[cal] = False
            samples = [(composer.features(archs[i]), composer.input_elements) for i in cal]
            fit = fit_scales(samples, y[cal], hw, prior=spec)
            theta = np.array(fit.coefficients.theta(names))
            pred = x @ theta
            ours = _metrics(pred[mask], y[mask])
            a, b = np.polyfit(flops[cal], y[cal], 1)
            base = _metrics(a * flops[mask] + b, y[mask])
            return ours, base, cal, fit

        ours, base, cal, fit = run(CALIBRATION_SEED)
        spec_err = float(np.median(np.abs((x @ theta_spec) / y - 1.0)) * 100)
        robust = [run(s)[0] for s in seeds]
        out[device] = {
            **ours,
            "flops_spearman": base["spearman"], "flops_kendall": base["kendall"],
            "flops_within_10pct": base["within_10pct"], "flops_within_20pct": base["within_20pct"],
            "n_calibration": len(cal), "n_eval": int(len(rows) - len(cal)),
            "calibration_seed": CALIBRATION_SEED,
            "calibration_archs": [int(rows[i]["arch_idx"]) for i in cal],
            "calibration_loo_error_pct": round(fit.error_pct, 2),
            "scales": {k: round(v, 4) for k, v in (fit.scales or {}).items()},
            "spec_prior_median_error_pct": round(spec_err, 1),
            "seeds": {
                "seeds": list(seeds),
                "spearman_mean": round(statistics.mean(r["spearman"] for r in robust), 4),
                "spearman_min": round(min(r["spearman"] for r in robust), 4),
                "within_10pct_mean": round(statistics.mean(r["within_10pct"] for r in robust), 4),
            },
            "design_matrix_s": round(t_design, 3),
        }
        if write_csv_dir is not None:
            write_csv_dir.mkdir(parents=True, exist_ok=True)
            path = write_csv_dir / f"hwnasbench_{device}_calibration.csv"
            with path.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["name", "arch", "input_shape", "precision", "latency_ms"])
                for i in cal:
                    w.writerow([f"nb201-{rows[i]['arch_idx']}", archs[i], "1x3x32x32", "fp32", rows[i][column]])
        print(f"{device}: rho {ours['spearman']} (FLOPs {base['spearman']}), tau {ours['kendall']}, "
              f"within10 {ours['within_10pct']}, within20 {ours['within_20pct']}, n_eval {len(rows) - len(cal)}; "
              f"seeds {list(seeds)[0]}..{list(seeds)[-1]}: rho mean {out[device]['seeds']['spearman_mean']} "
              f"min {out[device]['seeds']['spearman_min']}", file=sys.stderr)
    out["_compose_s"] = round(t_compose, 2)
    return out


# --------------------------------------------------------------------------------------------
# Host


def _sample_candidate(rng: random.Random) -> tuple[str, dict]:
    family = rng.choice(("convnet", "mobilenet_v2", "resnet"))
    if family == "convnet":
        n = rng.choice((2, 3, 4))
        return family, {
            "width": tuple(rng.choice((8, 16, 24, 32, 48, 64)) for _ in range(n)),
            "depth": tuple(rng.choice((1, 1, 2, 3)) for _ in range(n)),
            "kernel_size": tuple(rng.choice((3, 3, 5)) for _ in range(n)),
            "stem_width": rng.choice((8, 16, 32)), "stem_stride": rng.choice((1, 1, 2)),
        }
    if family == "mobilenet_v2":
        return family, {
            "width_mult": rng.choice((0.25, 0.35, 0.5, 0.75)),
            "depth": tuple(rng.choice((1, 2)) if i else 1 for i in range(7)),
            "expand_ratio": tuple(1 if i == 0 else rng.choice((2, 4, 6)) for i in range(7)),
            "kernel_size": tuple(rng.choice((3, 3, 5)) for _ in range(7)),
            "last_channel": rng.choice((128, 256, 512)),
        }
    n = rng.choice((2, 3, 4))
    return family, {"width": tuple(rng.choice((8, 16, 24, 32, 48, 64)) * (2 ** min(i, 2)) // 2 for i in range(n)),
                    "depth": tuple(rng.choice((1, 2)) for _ in range(n))}


def _ort_median_ms(path: Path, shape: tuple[int, ...], threads: int, budget_s: float) -> float:
    sys.path.insert(0, str(REPO / "scripts"))
    import profile_device

    sess = profile_device._session(str(path), threads)
    feeds = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    # three interleaved windows, median of medians: a shared machine's bursts hit one window
    return statistics.median(profile_device.measure(sess, feeds, budget_s=budget_s / 3)["median_ms"] for _ in range(3))


def host(n: int, budget_s: float, seed: int = 0) -> dict:
    import torch

    from hwtune.device import load_profile
    from hwtune.families import create_model
    from hwtune.onnx_export import export_onnx
    from hwtune.predictor import predict
    from hwtune.quant import quantize

    profile = load_profile("host")
    if not profile.calibration:
        return {"skipped": "profiles/host.toml has no [calibration]: run scripts/profile_device.py and hwtune calibrate"}
    rng = random.Random(seed)
    records = []
    with tempfile.TemporaryDirectory(prefix="hwtune-bench-pred-") as tmp:
        i = 0
        while len(records) < n:
            i += 1
            family, knobs = _sample_candidate(rng)
            shape = rng.choice(((1, 1, 28, 28), (1, 3, 32, 32)))
            precision = rng.choice(("fp32", "int8"))
            try:
                model = create_model(family, knobs, num_classes=10, in_channels=shape[1], input_size=shape[2]).eval()
            except Exception as exc:  # an illegal random combination: draw again
                print(f"skip {family} {knobs}: {exc}", file=sys.stderr)
                continue
            fp32 = export_onnx(model, torch.zeros(shape), Path(tmp) / f"m{i}.onnx", dynamic_batch=False)
            path = fp32
            if precision == "int8":
                calib = np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32)
                path = quantize(fp32, Path(tmp) / f"m{i}_int8.onnx", "int8", calibration=calib, device=profile).path
            measured = _ort_median_ms(path, shape, profile.threads, budget_s)
            p = predict(model, shape, device=profile, precision=precision)
            records.append({"family": family, "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
                            "input_shape": list(shape), "precision": precision, "measured_ms": round(measured, 5),
                            "predicted_ms": round(p.latency_ms, 5)})
            print(f"[{len(records)}/{n}] {family} {precision} {shape}: measured {measured:.4f} ms predicted "
                  f"{p.latency_ms:.4f} ms", file=sys.stderr)
    pred = np.array([r["predicted_ms"] for r in records])
    meas = np.array([r["measured_ms"] for r in records])
    m = _metrics(pred, meas)
    by_prec = {p: _metrics(pred[[r["precision"] == p for r in records]], meas[[r["precision"] == p for r in records]])
               for p in ("fp32", "int8") if sum(r["precision"] == p for r in records) > 2}
    return {**m, "n": len(records), "by_precision": by_prec, "threads": profile.threads,
            "calibration": {k: profile.calibration.get(k) for k in ("method", "created", "n_samples", "error_pct")},
            "records": records}


def predict_cost(quick: bool) -> dict:
    """Milliseconds per prediction: cached structure, new object of a seen structure, composed nb201."""
    import hwtune
    from hwtune.predictor import predict, predict_features
    from hwtune.predictor._nb201 import NB201Composer

    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    build = lambda: hwtune.create_model("nb201", {"arch": arch}, num_classes=10, in_channels=3, input_size=32)
    model = build()
    t0 = time.perf_counter()
    predict(model, (1, 3, 32, 32), device="raspberry-pi-4")
    cold = (time.perf_counter() - t0) * 1e3
    reps = 20 if quick else 200
    t0 = time.perf_counter()
    for _ in range(reps):
        predict(model, (1, 3, 32, 32), device="raspberry-pi-4")
    warm = (time.perf_counter() - t0) * 1e3 / reps
    others = [build() for _ in range(5)]
    t0 = time.perf_counter()
    for m in others:
        predict(m, (1, 3, 32, 32), device="raspberry-pi-4")
    new_obj = (time.perf_counter() - t0) * 1e3 / len(others)
    comp = NB201Composer()
    feats = comp.features(arch)
    t0 = time.perf_counter()
    for _ in range(reps):
        predict_features(comp.features(arch), comp.input_elements, "raspberry-pi-4")
    composed = (time.perf_counter() - t0) * 1e3 / reps
    del feats
    return {
        "warm_ms": round(warm, 4), "same_structure_new_object_ms": round(new_obj, 3),
        "nb201_composed_ms": round(composed, 4), "cold_trace_ms": round(cold, 1),
        "note": "warm: same model object; new object: structure key + cache hit; composed: per-op cached features "
                "of a NAS-Bench-201 cell; cold: first trace of a new structure (torch.fx + FlopCounterMode)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 robustness seeds, 6 host candidates")
    ap.add_argument("--host-n", type=int, default=120)
    ap.add_argument("--host-budget-s", type=float, default=0.6, help="timing budget per host candidate")
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--calibration-csv-dir", type=Path, default=None,
                    help="also write the 10 calibration rows per device as --networks CSVs here")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result: dict = {"schema_version": 1, "quick": args.quick, "anchors": ANCHORS}
    dev = hwnasbench(args.quick, args.calibration_csv_dir)
    result["compose_s"] = dev.pop("_compose_s")
    result["devices"] = dev
    result["predict_ms"] = predict_cost(args.quick)
    if args.skip_host:
        result["host"] = {"skipped": "--skip-host"}
    else:
        result["host"] = host(6 if args.quick else args.host_n, args.host_budget_s * (0.5 if args.quick else 1.0))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    h = result["host"]
    print(json.dumps({"devices": {d: {k: v[k] for k in ("spearman", "kendall", "within_10pct", "within_20pct",
                                                          "flops_spearman")} for d, v in dev.items()},
                      "host": {k: h.get(k) for k in ("within_10pct", "spearman", "n", "skipped") if k in h},
                      "predict_ms": result["predict_ms"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
