"""Multi-device benchmark: what one search for N devices costs compared with a search for one.

Runs the same seeded search (same recipe, data, trial count, sampler, seed) for one device and for
several at once, alternating the order over repetitions, and reports the wall-clock ratio. Accuracy
is obtained once per candidate whatever the number of devices; each further device adds its
profile (a latency prediction, or for a TFLite Micro profile an int8 ``.tflite`` export and its
measured arena) per candidate.

Writes ``benchmarks/results/multidevice.json``.

Usage::

    .venv/bin/python benchmarks/bench_multidevice.py                       # host vs host,raspberry-pi-4,stm32h743
    .venv/bin/python benchmarks/bench_multidevice.py --devices host,raspberry-pi-4,raspberry-pi-5 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def _run(devices: str, trials: int, seed: int, train_limit: int) -> dict[str, object]:
    from hwtune.tuner import tune

    with tempfile.TemporaryDirectory(prefix="bench-multidevice-") as tmp:
        t0 = time.perf_counter()
        res = tune(
            "fashion-convnet",
            device=devices,
            data={"name": "fashion-mnist", "train_limit": train_limit, "val_limit": 2000},
            n_trials=trials,
            out_dir=Path(tmp),
            study_name="md",
            sampler="random",
            seed=seed,
            budget={"epochs": 0.2, "rungs": [1.0], "latency_budget_s": 0.2},
            strategy="scratch",
            progress=False,
            reports=False,
        )
        seconds = time.perf_counter() - t0
        fronts = {d: len(res.for_device(d).front) for d in res.devices}
    return {"devices": devices, "seconds": seconds, "trials": res.counts()["complete"], "fronts": fronts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="host,raspberry-pi-4,stm32h743")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=3000)
    p.add_argument("--out", default=str(RESULTS / "multidevice.json"))
    args = p.parse_args()
    from _provenance import machine_info

    machine = machine_info(threads=1)  # host latency timed on the host profile's 1 thread; training: torch's default
    primary = args.devices.split(",")[0]
    runs = []
    for rep in range(args.reps):
        order = [primary, args.devices] if rep % 2 == 0 else [args.devices, primary]
        for devices in order:
            r = _run(devices, args.trials, seed=rep, train_limit=args.train_limit)
            runs.append({"rep": rep, **r})
            print(f"rep {rep}: {devices:<40} {r['seconds']:7.1f} s  trials {r['trials']}  fronts {r['fronts']}", flush=True)
    one = [r["seconds"] for r in runs if r["devices"] == primary]
    many = [r["seconds"] for r in runs if r["devices"] == args.devices]
    ratio = statistics.median(m / o for m, o in zip(many, one, strict=True))
    machine["loadavg_after"] = machine_info()["loadavg"]
    out = {"devices": args.devices, "trials": args.trials, "runs": runs, "ratio_median": ratio, "machine": machine}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    n = len(args.devices.split(","))
    print(f"{n} devices cost {ratio:.2f}x one device (median of {len(one)} pair(s)); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
