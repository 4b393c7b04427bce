"""How well training's memory-format race picks the faster format, against epochs timed in each.

For ``--members`` fashion-convnet members under ``--max-params`` (sampled with ``--seed``; three quarters of
50 K parameters or more, like the members the demo ships), on this CPU:

* the race as training runs it (``hwtune.engine.measure_memory_format``: a copy of the model, random images,
  ``TRAIN_FORMAT_ROUNDS`` interleaved timed steps of each format after a warm-up), ``--races`` times;
* the truth: ``hwtune.supernet.finetune`` of a fresh model for ``--epochs`` of the Fashion-MNIST training and
  validation images (60,000, what the demo's finalize trains on) with ``shift-flip``, in each format
  (pinned with ``HWTUNE_CHANNELS_LAST``), twice each, interleaved; the faster run of each format, per epoch.

Reported per margin (channels-last when a race reads at least that ratio): the races that picked the slower
format and the mean extra training time that costs against always picking the faster one. The engine's own
margin is ``TRAIN_CHANNELS_LAST_MIN_SPEEDUP``. Usage::

    .venv/bin/python benchmarks/bench_memory_format.py            # benchmarks/results/memory-format.json
    .venv/bin/python benchmarks/bench_memory_format.py --quick    # 2 members, not written
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MARGINS = (1.0, 1.05, 1.1, 1.15)


def summarize(rows: list[dict[str, Any]], margins: tuple[float, ...] = MARGINS) -> list[dict[str, Any]]:
    """Per margin: races that picked the slower format and the mean extra time of the picks (%).

    >>> rows = [{"epoch_s": {"contiguous": 10.0, "channels_last": 8.0}, "races": [1.20, 1.12]},
    ...         {"epoch_s": {"contiguous": 10.0, "channels_last": 11.0}, "races": [0.90, 0.92]}]
    >>> [(s["margin"], s["wrong"], s["mean_extra_pct"]) for s in summarize(rows, (1.05, 1.15))]
    [(1.05, 0, 0.0), (1.15, 1, 6.25)]
    """
    out = []
    for margin in margins:
        wrong, extra, n = 0, 0.0, 0
        for r in rows:
            c, cl = r["epoch_s"]["contiguous"], r["epoch_s"]["channels_last"]
            for ratio in r["races"]:
                pick = cl if ratio >= margin else c
                wrong += pick != min(c, cl)
                extra += pick / min(c, cl) - 1.0
                n += 1
        out.append({"margin": margin, "races": n, "wrong": wrong, "mean_extra_pct": round(100 * extra / max(n, 1), 2)})
    return out


def _sample(space: Any, rng: random.Random, n: int, max_params: int) -> list[tuple[Any, int]]:
    """``n`` distinct members under ``max_params``: three quarters of 50 K parameters or more."""
    picked: list[tuple[Any, int]] = []
    seen: set[str] = set()
    large_wanted = n - n // 4
    while len(picked) < n:
        cand = space.sample(rng)
        params = sum(p.numel() for p in space.build(cand).parameters())
        large = params >= 50_000
        n_large = sum(p >= 50_000 for _, p in picked)
        if (
            params > max_params
            or cand.key in seen
            or (large and n_large >= large_wanted)
            or (not large and len(picked) - n_large >= n - large_wanted)
        ):
            continue
        seen.add(cand.key)
        picked.append((cand, params))
    return picked


def _epoch_seconds(space: Any, cand: Any, data: Any, epochs: float, channels_last: bool) -> float:
    from hwtune.supernet import finetune

    os.environ["HWTUNE_CHANNELS_LAST"] = "1" if channels_last else "0"
    try:
        model = space.build(cand)
        start = time.perf_counter()
        finetune(model, data, epochs=epochs, augment="shift-flip", batch_size=space.train.batch_size)
        return (time.perf_counter() - start) / epochs
    finally:
        os.environ.pop("HWTUNE_CHANNELS_LAST", None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from hwtune.data import load_dataset
    from hwtune.engine import (
        TRAIN_CHANNELS_LAST_MIN_SPEEDUP,
        TRAIN_FORMAT_ROUNDS,
        Precision,
        measure_memory_format,
    )
    from hwtune.space import SearchSpace

    space = SearchSpace.from_recipe("fashion-convnet")
    data = load_dataset(space.dataset).val_in_train()
    cpu = torch.device("cpu")
    rows = []
    for i, (cand, params) in enumerate(_sample(space, random.Random(args.seed), args.members, args.max_params)):
        model = space.build(cand)
        races = []
        for _ in range(args.races):
            fmt = measure_memory_format(model, space.input_shape, cpu, Precision(cpu), space.train.batch_size)
            races.append(None if fmt.speedup is None else round(fmt.speedup, 2))
        times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        for _ in range(2):
            for cl in (False, True):
                times["channels_last" if cl else "contiguous"].append(
                    _epoch_seconds(space, cand, data, args.epochs, cl)
                )
        epoch_s = {k: round(min(v), 3) for k, v in times.items()}
        rows.append(
            {
                "candidate": cand.to_dict(),
                "params": params,
                "races": races,
                "epoch_s": epoch_s,
                "speedup": round(epoch_s["contiguous"] / epoch_s["channels_last"], 3),
            }
        )
        print(
            f"[{i + 1}/{args.members}] {params:,} parameters: channels-last {rows[-1]['speedup']:.2f}x per epoch, "
            f"races {', '.join(f'{r:.2f}x' for r in races if r is not None)}",
            file=sys.stderr,
            flush=True,
        )
    timed = [r for r in rows if all(x is not None for x in r["races"])]
    return {
        "what": "training's memory-format race (hwtune.engine.measure_memory_format) against fine-tuning timed in "
        "each format (fashion-convnet members, Fashion-MNIST train+val, shift-flip)",
        "settings": {
            "members": args.members,
            "races": args.races,
            "epochs_timed": args.epochs,
            "seed": args.seed,
            "max_params": args.max_params,
            "rounds": TRAIN_FORMAT_ROUNDS,
            "engine_margin": TRAIN_CHANNELS_LAST_MIN_SPEEDUP,
        },
        "rows": rows,
        "by_margin": summarize(timed),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--races", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=0.06, help="share of an epoch timed in each format")
    ap.add_argument("--max-params", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 members, 0.02 epochs; prints, writes nothing")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory-format.json")
    args = ap.parse_args()
    if args.quick:
        args.members, args.epochs = 2, 0.02
    from _provenance import machine_info
    from _stage_cache import write_json

    machine = machine_info()
    out = {**run(args), "machine": machine, "loadavg_after": machine_info()["loadavg"]}
    for s in out["by_margin"]:
        print(
            f"margin {s['margin']:.2f}: {s['wrong']} of {s['races']} races picked the slower format, "
            f"{s['mean_extra_pct']:.2f}% extra training time on average"
        )
    if not args.quick:
        write_json(out, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
