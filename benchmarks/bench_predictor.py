"""Validate the latency predictor: real devices (HW-NAS-Bench), this host, and prediction cost.

Writes ``benchmarks/results/predictor.json``::

    {"devices": {"raspberry-pi-4": {spearman, kendall, within_10pct, within_20pct, flops_spearman,
                                    flops_kendall, flops_within_10pct, flops_within_20pct,
                                    n_calibration, n_eval, calibration_seed, calibration_archs,
                                    seeds: {spearman_mean, spearman_min, ... over seeds 0-19}},
                 "pixel-3": {...}},
     "host": {"within_10pct", "within_20pct", "spearman", "median_error_pct", "n", "statistic",
              "noise_floor": {...}, "by_precision", "by_family", "records", ...},
     "predict_ms": {...}, "anchors": {...}}

Real devices -- protocol of ../shared/data/hw-nas-bench/README.md: 10 connected architectures
drawn with ``numpy.random.default_rng(seed)`` are the only rows the predictor sees (three global
scales over the spec per-op priors, ``hwtune.predictor._calibrate.fit_scales``); every other
connected architecture is predicted and compared. Seed 0 is the headline; seeds 0-19 show how
much the choice of the ten calibration networks matters. The FLOPs-only baseline is a straight
line latency = a * FLOPs + b fitted on the same 10 rows (its ranks are those of FLOPs).

Host: random candidates of the convnet / mobilenet_v2 / resnet families (widths, depths, kernel
sizes, expansion ratios; Fashion-MNIST 1x28x28 and CIFAR 3x32x32 inputs; fp32 and int8 QDQ via
``hwtune.quant.quantize`` with random calibration data), each measured with
``hwtune.profiler.latency.measure_latency`` on the host profile's threads, in ``--host-passes``
passes over all candidates (so the repeats of one model are minutes apart), and predicted from
the host profile's micro-benchmark calibration (``scripts/profile_device.py`` +
``hwtune calibrate``). A candidate's measured latency is the best of its passes, in the
statistic the calibration was fitted to (``median`` of runs, or ``min`` -- the fastest run --
when the calibration was made on a shared machine); both are recorded. The noise floor is how
often two passes of the same model agree within +-10%: when the machine's own noise puts more
than 5% of repeats outside +-10%, a 95%-within-10% target cannot be verified there, and the
result says so next to the figure.

Usage:  python benchmarks/bench_predictor.py [--part all|hwnas|host] [--quick] [--host-n 120]
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
ROBUSTNESS_SEEDS = range(20)
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
    seeds = list(range(3)) if quick else list(ROBUSTNESS_SEEDS)
    for device, column in DEVICES.items():
        y = np.array([float(r[column]) for r in rows])
        profile = load_profile(device)
        hw = Hardware.from_profile(profile)
        t0 = time.perf_counter()
        x = composer.design_matrix(archs, hw, names)
        t_design = time.perf_counter() - t0
        spec = Coefficients.spec()
        theta_spec = np.array(spec.theta(names))

        def run(seed: int, y: np.ndarray = y, hw: Hardware = hw, spec: Coefficients = spec,
                x: np.ndarray = x) -> tuple[dict, dict, np.ndarray, object]:
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
        robust = [(s, *run(s)[:2]) for s in seeds]
        rhos = [r["spearman"] for _, r, _ in robust]
        worst = min(robust, key=lambda t: t[1]["spearman"])
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
                "seeds": seeds,
                "spearman_mean": round(statistics.mean(rhos), 4),
                "spearman_min": round(min(rhos), 4),
                "spearman_max": round(max(rhos), 4),
                "spearman_below_0.95": sum(r < 0.95 for r in rhos),
                "worst_seed": worst[0],
                "kendall_mean": round(statistics.mean(r["kendall"] for _, r, _ in robust), 4),
                "within_10pct_mean": round(statistics.mean(r["within_10pct"] for _, r, _ in robust), 4),
                "flops_spearman_mean": round(statistics.mean(b["spearman"] for _, _, b in robust), 4),
                "per_seed_spearman": {str(s): r["spearman"] for s, r, _ in robust},
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
              f"seeds {seeds[0]}..{seeds[-1]}: rho mean {out[device]['seeds']['spearman_mean']} "
              f"min {out[device]['seeds']['spearman_min']} (seed {worst[0]})", file=sys.stderr)
    out["_compose_s"] = round(t_compose, 2)
    return out


# --------------------------------------------------------------------------------------------
# Host

FAMILIES = ("convnet", "mobilenet_v2", "resnet")
INPUTS = ((1, 1, 28, 28), (1, 3, 32, 32))


def sample_candidate(rng: random.Random) -> tuple[str, dict]:
    """A random legal candidate of one of the three families, over wide knob ranges."""
    family = rng.choice(FAMILIES)
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


def host_candidates(n: int, seed: int = 0) -> list[dict]:
    """``n`` candidates: family/knobs/input/precision, precisions alternating so both get n/2."""
    from hwtune.families import create_model

    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < n:
        family, knobs = sample_candidate(rng)
        shape = rng.choice(INPUTS)
        try:  # an illegal random combination: draw again
            create_model(family, knobs, num_classes=10, in_channels=shape[1], input_size=shape[2])
        except Exception as exc:  # noqa: BLE001
            print(f"skip {family} {knobs}: {exc}", file=sys.stderr)
            continue
        out.append({"family": family, "knobs": knobs, "input_shape": shape, "precision": ("fp32", "int8")[len(out) % 2]})
    return out


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.mean(np.abs(b / a - 1.0) <= 0.10)), 4)


def host(n: int, budget_s: float, passes: int, seed: int = 0) -> dict:
    """Predicted vs measured on random candidates, plus the machine's own noise floor."""
    import torch

    from hwtune.device import load_profile
    from hwtune.families import create_model
    from hwtune.onnx_export import export_onnx
    from hwtune.predictor import predict
    from hwtune.profiler.latency import measure_latency
    from hwtune.quant import QuantConfig, quantize

    profile = load_profile("host")
    if not profile.calibration:
        return {"skipped": "profiles/host.toml has no [calibration]: run scripts/profile_device.py and hwtune calibrate"}
    statistic = str(profile.calibration.get("statistic", "median"))
    cands = host_candidates(n, seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwtune-bench-pred-") as tmp:
        for i, c in enumerate(cands):
            shape = c["input_shape"]
            model = create_model(c["family"], c["knobs"], num_classes=10, in_channels=shape[1], input_size=shape[2]).eval()
            path = export_onnx(model, torch.zeros(shape), Path(tmp) / f"m{i}.onnx", dynamic_batch=False)
            if c["precision"] == "int8":
                calib = np.random.default_rng(i).standard_normal((16, *shape[1:])).astype(np.float32)
                path = quantize(path, Path(tmp) / f"m{i}_int8.onnx", "int8", calibration=calib,
                                config=QuantConfig(calibration_samples=16), device=profile).path
            t0 = time.perf_counter()
            c["predicted_ms"] = predict(model, shape, device=profile, precision=c["precision"]).latency_ms
            c["predict_cold_ms"] = (time.perf_counter() - t0) * 1e3
            c["path"], c["passes"] = path, []
        t_built = time.perf_counter() - t_start
        # passes over all candidates: the repeats of one model are minutes apart, so the pass-to-pass
        # agreement is the machine's noise floor at the time scale that matters
        pass_start = []
        for p in range(passes):
            pass_start.append(time.perf_counter())
            for i, c in enumerate(cands):
                x = np.random.default_rng(0).standard_normal(c["input_shape"]).astype(np.float32)
                m = measure_latency(c["path"], x, runtime="onnxruntime", threads=profile.threads,
                                    time_budget_s=budget_s, min_time_s=budget_s / 2)
                c["passes"].append({"median_ms": m.median_ms, "min_ms": m.min_ms, "runs": m.runs})
            print(f"host pass {p + 1}/{passes} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    records = []
    for c in cands:
        rec = {"family": c["family"], "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in c["knobs"].items()},
               "input_shape": list(c["input_shape"]), "precision": c["precision"],
               "predicted_ms": round(c["predicted_ms"], 5),
               "measured_median_ms": round(min(q["median_ms"] for q in c["passes"]), 5),
               "measured_min_ms": round(min(q["min_ms"] for q in c["passes"]), 5),
               "pass_median_ms": [round(q["median_ms"], 5) for q in c["passes"]],
               "pass_min_ms": [round(q["min_ms"], 5) for q in c["passes"]]}
        rec["measured_ms"] = rec[f"measured_{statistic}_ms"]
        records.append(rec)
        print(f"{c['family']:12s} {c['precision']} {tuple(c['input_shape'])}: measured {rec['measured_ms']:.4f} ms "
              f"({statistic}) predicted {rec['predicted_ms']:.4f} ms", file=sys.stderr)
    pred = np.array([r["predicted_ms"] for r in records])
    meas = np.array([r["measured_ms"] for r in records])
    out: dict = {**_metrics(pred, meas), "n": len(records), "statistic": statistic, "passes": passes,
                 "budget_s_per_pass": budget_s, "threads": profile.threads}
    other = "median" if statistic == "min" else "min"
    out[f"vs_{other}"] = _metrics(pred, np.array([r[f"measured_{other}_ms"] for r in records]))
    for key, values in (("by_precision", ("fp32", "int8")), ("by_family", FAMILIES)):
        field = "precision" if key == "by_precision" else "family"
        out[key] = {v: {**_metrics(pred[m], meas[m]), "n": int(m.sum())}
                    for v in values for m in [np.array([r[field] == v for r in records])] if m.sum() > 2}
    if passes >= 2:
        floor = {}
        for stat in ("median", "min"):
            a = np.array([r[f"pass_{stat}_ms"][0] for r in records])
            b = np.array([r[f"pass_{stat}_ms"][1] for r in records])
            floor[f"{stat}_repeats_within_10pct"] = _agreement(a, b)
        share_out = 1.0 - floor[f"{statistic}_repeats_within_10pct"]
        spacing = (pass_start[1] - pass_start[0]) if len(pass_start) > 1 else 0.0
        floor["outside_10pct"] = round(share_out, 4)
        floor["repeat_spacing_s"] = round(spacing, 1)
        floor["target_verifiable"] = bool(share_out <= 0.05 and len(records) >= 100)
        floor["note"] = (
            f"two measurements of the same model, {spacing:.0f} s apart, agree within +-10% for "
            f"{100 * (1 - share_out):.0f}% of the {len(records)} candidates ({statistic} statistic): "
            + ("measurement noise alone exceeds the 5% the target allows, so within_10pct here is bounded by the "
               "machine, not only by the predictor; re-run on an idle machine." if share_out > 0.05 else
               "the machine is quiet enough to check a 95%-within-10% target" + (
                   "." if len(records) >= 100 else ", but the target needs >= 100 candidates.")))
        out["noise_floor"] = floor
    cold = [c["predict_cold_ms"] for c in cands]
    out["predict_cold_ms"] = {"median": round(statistics.median(cold), 1), "max": round(max(cold), 1)}
    out["calibration"] = {k: profile.calibration.get(k) for k in
                          ("method", "created", "n_samples", "error_pct", "statistic", "fuse_conv_add", "pad_channels")}
    out["seconds"] = {"build_and_predict": round(t_built, 1), "total": round(time.perf_counter() - t_start, 1)}
    out["records"] = records
    return out


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
    others = [build() for _ in range(10 if quick else 50)]
    times = []
    for m in others:
        t0 = time.perf_counter()
        predict(m, (1, 3, 32, 32), device="raspberry-pi-4")
        times.append((time.perf_counter() - t0) * 1e3)
    comp = NB201Composer()
    t0 = time.perf_counter()
    for _ in range(reps):
        predict_features(comp.features(arch), comp.input_elements, "raspberry-pi-4")
    composed = (time.perf_counter() - t0) * 1e3 / reps
    return {
        "warm_ms": round(warm, 4),
        "same_structure_new_object_ms": round(statistics.median(times), 3),
        "same_structure_new_object_p90_ms": round(float(np.percentile(times, 90)), 3),
        "nb201_composed_ms": round(composed, 4), "cold_trace_ms": round(cold, 1),
        "note": "warm: same model object; new object: structure key (module tree walk, no tracing) + cache hit; "
                "composed: per-op cached features of a NAS-Bench-201 cell; cold: first trace of a new structure "
                "(torch.fx + FlopCounterMode); host.predict_cold_ms has it for the host candidates",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "hwnas", "host"), default="all",
                    help="run only the HW-NAS-Bench part (+ prediction cost) or only the host part")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 robustness seeds, 6 host candidates")
    ap.add_argument("--host-n", type=int, default=120)
    ap.add_argument("--host-budget-s", type=float, default=0.5, help="measure_latency budget per candidate and pass")
    ap.add_argument("--host-passes", type=int, default=2, help="measurements of every candidate (>= 2 for the noise floor)")
    ap.add_argument("--host-seed", type=int, default=0)
    ap.add_argument("--skip-host", action="store_true", help="same as --part hwnas")
    ap.add_argument("--calibration-csv-dir", type=Path, default=None,
                    help="also write the 10 calibration rows per device as --networks CSVs here")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    part = "hwnas" if args.skip_host else args.part
    t0 = time.perf_counter()
    result: dict = {"schema_version": 2, "quick": args.quick, "part": part, "anchors": ANCHORS}
    if args.out.exists() and part != "all":  # keep the other part's figures from an earlier run
        try:
            old = json.loads(args.out.read_text())
            kept = [k for k in (("host",) if part == "hwnas" else ("devices", "compose_s", "predict_ms")) if k in old]
            result.update({k: old[k] for k in kept})
            result["kept_from_earlier_run"] = kept
        except (OSError, json.JSONDecodeError):
            pass
    if part in ("all", "hwnas"):
        dev = hwnasbench(args.quick, args.calibration_csv_dir)
        result["compose_s"] = dev.pop("_compose_s")
        result["devices"] = dev
        result["predict_ms"] = predict_cost(args.quick)
    if part in ("all", "host"):
        result["host"] = host(6 if args.quick else args.host_n, args.host_budget_s * (0.5 if args.quick else 1.0),
                              args.host_passes, args.host_seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    h = result.get("host", {})
    dev = result.get("devices", {})
    print(json.dumps({
        "devices": {d: {**{k: v[k] for k in ("spearman", "kendall", "within_10pct", "within_20pct", "flops_spearman")},
                        "seeds_spearman_mean": v["seeds"]["spearman_mean"], "seeds_spearman_min": v["seeds"]["spearman_min"]}
                    for d, v in dev.items()},
        "host": {k: h.get(k) for k in ("within_10pct", "within_20pct", "spearman", "median_error_pct", "n",
                                       "statistic", "noise_floor", "skipped") if k in h},
        "predict_ms": {k: v for k, v in result.get("predict_ms", {}).items() if k != "note"},
        "seconds": result["seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
