"""Benchmark the deployment runtimes on this host: latency, accuracy, file size, agreement with torch.

Runtimes: ONNX Runtime, ExecuTorch (XNNPACK), LiteRT (XNNPACK) and torch eager, each at fp32 and int8
(torch eager has no int8 path here), batch 1, ``--threads`` threads (default 1). Models:

- ``convnet_16_32_64``: the fashion-convnet recipe's largest-width candidate (stem 16 stride 2, stages
  16/32/64, depth 1, 3x3) at 1x1x28x28, trained 1 epoch on Fashion-MNIST inside the bench; accuracy on a
  fixed 2,000-image subset of the Fashion-MNIST test split, int8 calibrated on 256 training images.
- ``mobilenet_v2_0.5``: hwtune's mobilenet_v2 family, width 0.5, at 1x3x96x96 with RANDOM weights
  (BatchNorm statistics set from random inputs so activations have a realistic range); no accuracy
  (there is no 96x96 RGB dataset here), agreement with torch instead; int8 calibrated on 64 random inputs.

Per cell: latency = median of 5 interleaved rounds' medians (each round measures every cell of the model
with the CI stopping rule, so load drifting on a shared host hits all cells alike; the best round is kept
too), file size, max |logit difference| vs torch on 64 inputs, argmax agreement with torch, ops left in
float, export seconds.
MCU (``tflite-micro``): the measured tensor arena (RecordingMicroAllocator total, and the smallest arena
that loads and runs) vs hwtune's liveness estimate ``profile_model(...).peak_activation_bytes`` for the
``stm32h743`` profile at int8, and the largest op's live inputs+outputs (a hard lower bound).

Writes ``benchmarks/results/runtimes.json``. Run: ``.venv/bin/python benchmarks/bench_runtimes.py``
(about 10 minutes on an idle 2-core host; ``--quick`` for a smoke run). Needs the ``executorch`` and
``litert`` extras; a runtime whose extra is missing is recorded as unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.json"
RUNTIMES = ("onnxruntime", "executorch", "litert", "torch")
EXTRA_VERSIONS = ("executorch", "torchao", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tflite-micro")


def convnet(quick: bool) -> tuple[Any, Any, str]:
    """The recipe's 16/32/64 candidate, trained 1 epoch (``--quick``: 2,000 images)."""
    import hwtune
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe("fashion-convnet")
    choices = space.param_choices()
    params = {k: (v[-1] if k.endswith(".width") else v[0]) for k, v in choices.items() if k != "precision"}
    candidate = space.candidate({**params, "precision": "fp32"})
    data = hwtune.load_dataset("fashion-mnist", train_limit=2000 if quick else None)
    model = space.build(candidate)
    stats = hwtune.train(model, data, budget=hwtune.TrainBudget(epochs=1.0), seed=0)
    model.eval()
    return model, data, f"trained 1 epoch ({stats.samples_seen} images, {stats.seconds:.0f} s) on Fashion-MNIST"


def mobilenet() -> Any:
    import torch

    import hwtune

    torch.manual_seed(0)
    model = hwtune.create_model("mobilenet_v2", {"width_mult": 0.5}, in_channels=3, input_size=96)
    model.train()
    with torch.no_grad():  # BatchNorm running statistics from random inputs (momentum 0.1, 30 batches)
        for _ in range(30):
            model(torch.randn(8, 3, 96, 96))
    return model.eval()


def _logits(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def cell(
    runtime: str, precision: str, model: Any, example: Any, calib: Any, check_x: Any, test: Any, out: Path, args: Any
) -> tuple[dict[str, Any], Any]:
    """Export (unless torch eager), score and compare one runtime at one precision; returns (row, target)."""
    import numpy as np

    from hwtune.device import load_profile
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes import get_runtime

    rt = get_runtime(runtime)
    row: dict[str, Any] = {"runtime": runtime, "precision": precision}
    if not rt.available():
        return {**row, "status": f"unavailable: pip install 'hwtune[{rt.extra}]'"}, None
    if runtime == "torch" and precision != "fp32":
        return {**row, "status": "n/a (no int8 path in torch eager)"}, None
    start = time.perf_counter()
    if runtime == "torch":
        target: Any = model
    else:
        target = rt.export(
            model,
            example,
            PrecisionPlan.uniform(precision),
            out / f"{runtime}-{precision}{rt.suffix}",
            calibration=calib,
            device=load_profile("host"),
        )
        row.update(
            size_bytes=target.size_bytes,
            float_ops=target.info.get("float_ops"),
            export_seconds=round(time.perf_counter() - start, 2),
        )
    loaded = rt.load(target, threads=args.threads)
    got, want = np.asarray(loaded.run(check_x)), _logits(model, check_x)
    row.update(
        max_abs_diff=float(np.abs(got - want).max()),
        max_abs_logit=float(np.abs(want).max()),
        argmax_agreement=float((got.argmax(1) == want.argmax(1)).mean()),
    )
    if test is not None:
        row["accuracy"] = rt.evaluate(target, test, limit=args.test_images, threads=args.threads).accuracy
    row["status"] = "ok"
    return row, target


def latency_rounds(cells: list[tuple[dict[str, Any], Any]], example: Any, args: Any) -> None:
    """Measure every cell in ``args.rounds`` interleaved rounds (the host's load drifts: a cell measured
    only at a busy moment would look slow); a row gets the median and the best of its round medians."""
    import statistics

    from hwtune.runtimes import get_runtime

    medians: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    for _ in range(args.rounds):
        for i, (row, target) in enumerate(cells):
            try:
                lat = get_runtime(row["runtime"]).measure_latency(
                    target,
                    example,
                    threads=args.threads,
                    time_budget_s=args.budget / args.rounds,
                    min_runs=max(args.min_runs // args.rounds, 10),
                    target_ci_pct=1.0,
                )
            except Exception as e:  # noqa: BLE001 - recorded, the other cells go on
                row["latency_error"] = _first(e)
                continue
            medians[i].append(lat.median_ms)
            row["latency"] = lat.to_dict()  # the last round's full record (runs, CI, percentiles)
    for i, (row, _) in enumerate(cells):
        if not medians[i]:
            continue
        row["latency_round_medians_ms"] = medians[i]
        row["latency_us"] = round(1000 * statistics.median(medians[i]), 1)
        row["latency_best_round_us"] = round(1000 * min(medians[i]), 1)


def mcu(model: Any, example: Any, calib: Any, test: Any, out: Path, args: Any) -> dict[str, Any]:
    """tflite-micro: measured arena vs the liveness estimate, host reference-kernel latency, accuracy."""
    import hwtune
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes import get_runtime
    from hwtune.runtimes._tflite_common import largest_op_io_bytes

    rt = get_runtime("tflite-micro")
    if not rt.available():
        return {"status": "unavailable: pip install 'hwtune[litert]'"}
    shipped = rt.export(model, example, PrecisionPlan.uniform("int8"), out / "micro-int8.tflite", calibration=calib)
    report = hwtune.profile_model(
        model, tuple(example.shape), device="stm32h743", precision="int8", measure=False, layers=False
    )
    arena = shipped.info["arena_bytes"]
    row: dict[str, Any] = {
        "arena_bytes": arena,
        "arena_source": shipped.info["arena_source"],
        "arena_search_bytes": rt.arena_bytes(shipped, method="search"),
        "liveness_estimate_bytes": report.peak_activation_bytes,
        "arena_over_liveness": round(arena / report.peak_activation_bytes, 3),
        "largest_op_io_bytes": largest_op_io_bytes(shipped.path.read_bytes()),
        "tflite_bytes": shipped.size_bytes,
        "reference_max_diff_steps": shipped.info["reference_max_diff_steps"],
        "float_ops": shipped.info["float_ops"],
    }
    lat = rt.measure_latency(shipped, example, time_budget_s=min(args.budget, 5.0), min_runs=20)
    row["host_reference_latency"] = lat.to_dict()  # NOT an MCU latency: reference kernels on this x86 host
    if test is not None:
        row["accuracy"] = rt.evaluate(shipped, test, limit=args.test_images).accuracy
    return row


def run_model(
    name: str, model: Any, shape: tuple[int, ...], calib: Any, check_x: Any, test: Any, weights: str, args: Any
) -> dict[str, Any]:
    import torch

    example = torch.from_numpy(check_x[:1].copy()).reshape(shape)
    rows, cells = [], []
    with tempfile.TemporaryDirectory(prefix=f"bench-rt-{name}-") as tmp:
        for runtime in RUNTIMES:
            for precision in ("fp32", "int8"):
                print(f"  {name}: {runtime} {precision} ...", file=sys.stderr, flush=True)
                try:
                    row, target = cell(runtime, precision, model, example, calib, check_x, test, Path(tmp), args)
                except Exception as e:  # noqa: BLE001 - one failing cell is a finding, not the end of the benchmark
                    row, target = {"runtime": runtime, "precision": precision, "status": f"failed: {_first(e)}"}, None
                rows.append(row)
                if target is not None:
                    cells.append((row, target))
        print(f"  {name}: latency, {args.rounds} interleaved rounds ...", file=sys.stderr, flush=True)
        latency_rounds(cells, example, args)
        print(f"  {name}: tflite-micro ...", file=sys.stderr, flush=True)
        try:
            micro = mcu(model, example, calib, test, Path(tmp), args)
        except Exception as e:  # noqa: BLE001 - recorded in the results like a failing cell
            micro = {"status": f"failed: {_first(e)}"}
    return {"input_shape": list(shape), "weights": weights, "rows": rows, "mcu": micro}


def _first(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| model | precision | runtime | latency µs (best round) | accuracy | size kB | max |Δ| vs torch | float ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for r in res["rows"]:
            if r.get("status") != "ok":
                lines.append(f"| {name} | {r['precision']} | {r['runtime']} | {r['status']} |  |  |  |  |")
                continue
            acc = f"{100 * r['accuracy']:.2f}%" if "accuracy" in r else "-"
            size = f"{r['size_bytes'] / 1000:.1f}" if "size_bytes" in r else "-"
            fops = len(r["float_ops"]) if r.get("float_ops") is not None else "-"
            lines.append(
                f"| {name} | {r['precision']} | {r['runtime']} | {r.get('latency_us')} ({r.get('latency_best_round_us')}) | "
                f"{acc} | {size} | "
                f"{r['max_abs_diff']:.4f} | {fops} |"
            )
    lines += [
        "",
        "| model | arena (measured) | arena (search) | liveness estimate | ratio | largest op I/O |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        m = res["mcu"]
        if "arena_bytes" in m:
            lines.append(
                f"| {name} | {m['arena_bytes']} | {m['arena_search_bytes']} | "
                f"{m['liveness_estimate_bytes']} | {m['arena_over_liveness']} | {m['largest_op_io_bytes']} |"
            )
        else:
            lines.append(f"| {name} | {m.get('status')} |  |  |  |  |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from _provenance import machine_info

    from hwtune._util import jsonable, versions
    from hwtune.data import calibration_batch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=10.0, help="latency time budget per cell, seconds")
    ap.add_argument("--min-runs", type=int, default=300, help="timed runs per cell over all rounds (at least)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds per model")
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny training, short budgets")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.budget, args.min_runs, args.test_images, args.rounds = 1.0, 20, 200, 2
    load_before = os.getloadavg()
    machine = machine_info(threads=args.threads, packages=EXTRA_VERSIONS)
    start = time.perf_counter()
    results: dict[str, Any] = {}

    print("convnet: training ...", file=sys.stderr, flush=True)
    model, data, weights = convnet(args.quick)
    calib = calibration_batch(data, 256, seed=0)
    check = np.stack([data.test[i][0].numpy() for i in range(64)]).astype(np.float32)
    results["convnet_16_32_64"] = run_model(
        "convnet_16_32_64", model, (1, 1, 28, 28), calib, check, data.test, weights, args
    )

    rng = np.random.default_rng(0)
    mb = mobilenet()
    results["mobilenet_v2_0.5"] = run_model(
        "mobilenet_v2_0.5",
        mb,
        (1, 3, 96, 96),
        rng.standard_normal((64, 3, 96, 96)).astype(np.float32),
        rng.standard_normal((64, 3, 96, 96)).astype(np.float32),
        None,
        "random (BatchNorm statistics from 30 random batches); no accuracy, agreement with torch only",
        args,
    )

    doc = {
        "benchmark": "bench_runtimes",
        "settings": {
            "threads": args.threads,
            "budget_s": args.budget,
            "min_runs": args.min_runs,
            "rounds": args.rounds,
            "test_images": args.test_images,
            "quick": args.quick,
        },
        "machine": {
            **machine,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "note": "shared host: other jobs ran at the same time; differences under ~1.3x are noise",
        },
        "versions": versions(extra=EXTRA_VERSIONS),
        "seconds": round(time.perf_counter() - start, 1),
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(doc), indent=2) + "\n")
    os.replace(tmp, args.out)
    print(table(results))
    print(f"\nwrote {args.out} in {doc['seconds']} s (load average before {load_before[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
