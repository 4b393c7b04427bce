"""Training throughput of the one training loop (hwtune.engine) on this machine's devices.

Images per second of ``hwtune.training.train`` (the fashion-convnet recipe's largest candidate) and of
``hwtune.supernet.train_parent`` (the fashion-resnet parent, sandwich rule: 4 networks per step), on
random 1x28x28 images (throughput does not depend on the pixels), batch 128:

* CPU, 1 and 2 threads, contiguous vs channels_last weights;
* CUDA / MPS when present, fp32 vs ``--amp auto``.

Settings run interleaved, ``--rounds`` times each; the median is reported, with the machine's load
(``_provenance.machine_info``). Usage::

    .venv/bin/python benchmarks/bench_training.py            # writes benchmarks/results/training.json
    .venv/bin/python benchmarks/bench_training.py --quick    # one short round (a smoke run)

Not measured here (left out): accuracy with and without augmentation at equal time on CIFAR-10, and
DataLoader streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round of few images (smoke run)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting (median reported)")
    p.add_argument("--images", type=int, default=2048, help="images per timed run (train); a quarter for the parent")
    p.add_argument("--out", default=str(RESULTS / "training.json"))
    return p.parse_args()


def _settings() -> list[dict[str, Any]]:
    import torch

    rows = [{"device": "cpu", "threads": t, "channels_last": cl, "amp": "off"} for t in (1, 2) for cl in (False, True)]
    accel = "cuda" if torch.cuda.is_available() else None
    mps = getattr(torch.backends, "mps", None)
    if accel is None and mps is not None and mps.is_available():
        accel = "mps"
    if accel:
        rows += [{"device": accel, "threads": None, "channels_last": False, "amp": a} for a in ("off", "auto")]
    return rows


def _run(kind: str, setting: dict[str, Any], images: int) -> dict[str, Any]:
    import torch

    from hwtune.space import SearchSpace
    from hwtune.supernet import largest_candidate, train_parent
    from hwtune.training import TrainBudget, train

    gen = torch.Generator().manual_seed(0)
    n = max(256, images)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,)))
    # The engine measures which memory format is faster; here each is pinned to time both.
    os.environ["HWTUNE_CHANNELS_LAST"] = "1" if setting["channels_last"] else "0"
    kw = {"train_device": setting["device"], "amp": setting["amp"], "threads": setting["threads"]}
    if kind == "train":
        space = SearchSpace.from_recipe("fashion-convnet")
        model = space.build(largest_candidate(space))
        st = train(model, ds, budget=TrainBudget(samples=images), batch_size=128, **kw)
        return {"images_per_s": st.samples_seen / st.seconds, "device_name": st.device, "amp": st.amp}
    space = SearchSpace.from_recipe("fashion-resnet")
    parent = space.build(largest_candidate(space))
    _, st = train_parent(space, ds, epochs=images / 4 / n, batch_size=128, parent=parent, **kw)
    return {"images_per_s": st.samples_seen / st.seconds, "device_name": st.device, "amp": st.amp}


def main() -> int:
    args = _parse()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _provenance import machine_info

    rounds, images = (1, 256) if args.quick else (args.rounds, args.images)
    settings = _settings()
    samples: dict[tuple[str, int], list[float]] = {}
    info: dict[tuple[str, int], dict[str, Any]] = {}
    for kind in ("train", "parent"):
        for i, s in enumerate(settings):  # warm-up (allocator, cuDNN autotune), not timed
            if s["device"] != "cpu":
                _run(kind, s, 256)
        for _ in range(rounds):
            for i, s in enumerate(settings):
                r = _run(kind, s, images)
                samples.setdefault((kind, i), []).append(r["images_per_s"])
                info[(kind, i)] = r
    rows = []
    for (kind, i), values in samples.items():
        s = settings[i]
        row = {
            "model": "fashion-convnet largest (train)" if kind == "train" else "fashion-resnet parent (sandwich)",
            **s,
            "device_name": info[(kind, i)]["device_name"],
            "amp": info[(kind, i)]["amp"],
            "images_per_s_median": statistics.median(values),
            "images_per_s": values,
        }
        rows.append(row)
        print(
            f"{row['model']:<34} {row['device_name']:<30} threads={s['threads']} channels_last={s['channels_last']!s:<5} "
            f"amp={row['amp']:<5} {row['images_per_s_median']:8.1f} images/s"
        )
    out = {"rows": rows, "rounds": rounds, "images": images, "machine": machine_info(threads=None)}
    if not args.quick:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
