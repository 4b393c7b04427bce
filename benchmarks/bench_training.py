"""Training throughput of the one training loop (hwtune.engine) on this machine's devices.

Images per second of ``hwtune.training.train`` (the fashion-convnet recipe's largest candidate) and of
``hwtune.supernet.train_parent`` (the fashion-resnet parent, sandwich rule: 4 networks per step), on
random 1x28x28 images (throughput does not depend on the pixels), batch 128:

* CPU, 1 and 2 threads, contiguous vs channels_last weights;
* CUDA / MPS when present, fp32 vs ``--amp auto``.

Settings run interleaved, ``--rounds`` times each; the median is reported, with the machine's load
(``_provenance.machine_info``).

``--part accuracy``: CIFAR-10 test accuracy of the MLPerf Tiny ResNet-8 (the ``cifar-resnet`` recipe's
16/32/64 member, fp32) trained through ``hwtune.training.train`` without augmentation and with the standard
one (``crop:4,hflip``) *at equal time*: a short probe measures each setting's images/s (augmentation costs
time), and each trains for the epochs that fill ``--seconds`` at that rate (one cosine cycle, seed 0, the
engine's measured memory format). Usage::

    .venv/bin/python benchmarks/bench_training.py            # throughput: writes benchmarks/results/training.json
    .venv/bin/python benchmarks/bench_training.py --quick    # one short round (a smoke run)
    nice -n 10 .venv/bin/python benchmarks/bench_training.py --part accuracy --data /work/data --seconds 300

The accuracy part adds an ``accuracy`` entry to the same JSON (the throughput rows are kept). Not measured
here (left out): DataLoader streaming throughput.
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
    p.add_argument("--part", choices=("throughput", "accuracy"), default="throughput")
    p.add_argument("--data", default="cifar10", help="accuracy: CIFAR-10 (a directory, or cifar10 via $HWTUNE_CIFAR10)")
    p.add_argument("--seconds", type=float, default=300.0, help="accuracy: training time of each setting")
    p.add_argument("--augments", default="none;crop:4,hflip", help="accuracy: settings, ';'-separated")
    return p.parse_args()


RESNET8 = {"family": "resnet", "knobs": {"width": [16, 32, 64], "depth": [1, 1, 1], "kernel_size": [3, 3, 3]}}


def _accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Test accuracy of ResNet-8 on CIFAR-10 after ``args.seconds`` of training per augmentation setting."""
    import time

    import torch

    from hwtune.data import load_dataset
    from hwtune.space import SearchSpace
    from hwtune.training import TrainBudget, evaluate, train

    t0 = time.perf_counter()
    splits = load_dataset(args.data)
    load_s = time.perf_counter() - t0
    space = SearchSpace.from_recipe("cifar-resnet")
    cand = space.candidate_from_dict({**RESNET8, "precision": "fp32"})
    rows = []
    for aug in args.augments.split(";"):
        augment = None if aug == "none" else aug
        torch.manual_seed(0)
        probe = train(space.build(cand), splits, budget=TrainBudget(samples=2048), augment=augment, seed=1)
        epochs = args.seconds * probe.samples_per_s / len(splits.train)
        torch.manual_seed(0)
        model = space.build(cand)
        st = train(model, splits, budget=TrainBudget(epochs=epochs), augment=augment, seed=0, progress=True)
        row = {
            "augment": aug,
            "probe_images_per_s": probe.samples_per_s,
            "epochs": st.epochs,
            "train_seconds": st.seconds,
            "final_loss": st.final_loss,
            "val_accuracy": evaluate(model, splits.val).accuracy,
            "test_accuracy": evaluate(model, splits.test).accuracy,
            "memory_format": st.memory_format,
            "threads": st.threads,
        }
        rows.append(row)
        print(
            f"ResNet-8 augment={aug:<12} {row['epochs']:.2f} epochs in {row['train_seconds']:.0f} s: "
            f"test {100 * row['test_accuracy']:.2f}% (val {100 * row['val_accuracy']:.2f}%), {row['memory_format']}",
            flush=True,
        )
    return {
        "model": "cifar-resnet 16/32/64 depth 1 3x3 (MLPerf Tiny ResNet-8), fp32, batch 128, SGD defaults",
        "data": splits.to_dict(),
        "data_load_seconds": load_s,
        "seconds_per_setting": args.seconds,
        "rows": rows,
    }


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

    if args.part == "accuracy":
        out_path = Path(args.out)
        out = json.loads(out_path.read_text()) if out_path.is_file() else {}
        out["accuracy"] = {**_accuracy(args), "machine": machine_info(threads=None)}
        out_path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {out_path}")
        return 0
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
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    out = {"rows": rows, "rounds": rounds, "images": images, "machine": machine_info(threads=None)}
    if "accuracy" in previous:  # the other part's figures stay
        out["accuracy"] = previous["accuracy"]
    if not args.quick:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
