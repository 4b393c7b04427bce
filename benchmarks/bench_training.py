"""Training throughput of the one training loop (hwtune.engine) on this machine's devices.

Images per second, batch 128, of:

* ``hwtune.training.train`` on the fashion-convnet recipe's largest candidate (random 1x28x28 images:
  throughput does not depend on the pixels);
* ``hwtune.supernet.train_parent`` (sandwich rule: the parent, the smallest and 2 random sub-networks per
  step) on the fashion-resnet parent (1x28x28) and on the ResNet-8 parent, the ``cifar-resnet`` recipe's
  largest candidate (26/52/104, depth 2, 5x5 in stage 3; random 3x32x32 images); each timed run stops after
  ``--parent-seconds`` (at least one step), so loaded 2-thread runs stay short;

each on the CPU with 1 and 2 threads, contiguous vs channels_last (pinned with ``HWTUNE_CHANNELS_LAST``),
and on CUDA / MPS when present, fp32 vs ``--amp auto``. Then

* in-memory vs DataLoader: ``train`` of the MLPerf Tiny ResNet-8 (the ``cifar-resnet`` 16/32/64 member) on
  the real image folder ``--data`` (e.g. the CIFAR-10 JPEG ImageFolder copy), loaded the two ways a user
  gets: ``load_dataset(path)`` (decoded uint8 tensors in memory when they fit the 1 GiB default) and
  ``load_dataset(path, max_memory_bytes=0)`` (what data that do not fit take: streamed, each batch decoded by
  DataLoader workers, ``$HWTUNE_DATA_WORKERS`` or one core short of the machine's); 1 and 2 threads, the
  memory format the engine measures; the line the library printed about its choice is recorded. CPU only
  (pinned memory only matters on CUDA). Skipped, and said so, when ``--data`` does not load.

Settings of one kind run interleaved, ``--rounds`` times each (accelerators get an untimed warm-up first);
the median is reported, with the machine's load (``_provenance.machine_info``).

``--part accuracy``: CIFAR-10 test accuracy of the MLPerf Tiny ResNet-8 (the ``cifar-resnet`` recipe's
16/32/64 member, fp32) trained through ``hwtune.training.train`` without augmentation and with the standard
one (``crop:4,hflip``) *at equal time*: CPU time, so that other jobs on a shared machine do not shorten one
setting's budget. The settings run at once, one process each; a probe of each measures its CPU-seconds per
image (augmentation costs time), and each trains for the epochs that fill ``--seconds`` CPU-seconds at that
rate (one cosine cycle, seed 0, ``--threads``, the engine's measured memory format); the run's own CPU time
is recorded beside the budget. Usage::

    .venv/bin/python benchmarks/bench_training.py --data /work/data  # throughput: benchmarks/results/training.json
    .venv/bin/python benchmarks/bench_training.py --quick            # one short round (a smoke run, not written)
    .venv/bin/python benchmarks/bench_training.py --part accuracy --data /work/data --seconds 900

Each part keeps the other's entry in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

# kind -> (row label, recipe, input shape, share of --images per timed run)
KINDS: dict[str, tuple[str, str, tuple[int, int, int], int]] = {
    "train": ("fashion-convnet largest (train)", "fashion-convnet", (1, 28, 28), 1),
    "parent": ("fashion-resnet parent (sandwich)", "fashion-resnet", (1, 28, 28), 4),
    "resnet8-parent": ("cifar-resnet parent (sandwich, ResNet-8 space)", "cifar-resnet", (3, 32, 32), 4),
}
DATA_MODEL = "ResNet-8 16/32/64 (train, image folder)"
LOADERS = {"in-memory": None, "dataloader": 0}  # load_dataset's max_memory_bytes (None: its default)
PROBE_SAMPLES = 8192  # images of the accuracy part's cost probe
RESNET8 = {"family": "resnet", "knobs": {"width": [16, 32, 64], "depth": [1, 1, 1], "kernel_size": [3, 3, 3]}}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round of few images (smoke run; nothing written)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting (median reported)")
    p.add_argument(
        "--images",
        type=int,
        default=2048,
        help="images per timed run (train, data rows); a quarter for the parents",
    )
    p.add_argument("--parent-seconds", type=float, default=30.0, help="a timed parent run stops after this")
    p.add_argument("--out", default=str(RESULTS / "training.json"))
    p.add_argument("--part", choices=("throughput", "accuracy"), default="throughput")
    p.add_argument(
        "--data",
        default="cifar10",
        help="an image folder (data rows) / CIFAR-10 (accuracy): a directory, or cifar10 via $HWTUNE_CIFAR10",
    )
    p.add_argument("--seconds", type=float, default=900.0, help="accuracy: CPU-seconds of training per setting")
    p.add_argument("--threads", type=int, default=1, help="accuracy: torch threads (1: steadiest on a shared machine)")
    p.add_argument("--augments", default="none;crop:4,hflip", help="accuracy: settings, ';'-separated")
    return p.parse_args()


def _resnet8(space: Any) -> Any:
    return space.build(space.candidate_from_dict({**RESNET8, "precision": "fp32"}))


# --------------------------------------------------------------------------------------------
# Accuracy at equal time
# --------------------------------------------------------------------------------------------


def _accuracy_setting(data: str, aug: str, cpu_seconds: float, threads: int) -> dict[str, Any]:
    """One augmentation setting, in its own process: ResNet-8 trained for ``cpu_seconds`` of CPU time, scored.

    A probe of ``PROBE_SAMPLES`` images measures the setting's CPU-seconds per image (process time: other
    jobs on the machine do not change it, where they change wall time twofold), and the run trains for the
    epochs that this rate fills ``cpu_seconds`` with; the run's own CPU time is recorded beside it.
    """
    import torch

    from hwtune.data import load_dataset
    from hwtune.space import SearchSpace
    from hwtune.training import TrainBudget, evaluate, train

    augment = None if aug == "none" else aug
    t0 = time.perf_counter()
    splits = load_dataset(data)
    load_s = time.perf_counter() - t0
    space = SearchSpace.from_recipe("cifar-resnet")
    torch.manual_seed(0)
    c0 = time.process_time()
    probe = train(
        _resnet8(space), splits, budget=TrainBudget(samples=PROBE_SAMPLES), augment=augment, seed=1, threads=threads
    )
    cpu_per_image = (time.process_time() - c0) / probe.samples_seen
    epochs = cpu_seconds / cpu_per_image / len(splits.train)
    print(f"probe augment={aug}: {1e3 * cpu_per_image:.2f} CPU-ms per image -> {epochs:.2f} epochs", flush=True)
    torch.manual_seed(0)
    model = _resnet8(space)
    c0 = time.process_time()
    st = train(model, splits, budget=TrainBudget(epochs=epochs), augment=augment, seed=0, threads=threads)
    train_cpu = time.process_time() - c0
    row = {
        "augment": aug,
        "probe_cpu_ms_per_image": 1e3 * cpu_per_image,
        "probe_images_per_s": probe.samples_per_s,
        "epochs": st.epochs,
        "train_cpu_seconds": train_cpu,
        "train_seconds": st.seconds,
        "images_per_s": st.samples_per_s,
        "final_loss": st.final_loss,
        "val_accuracy": evaluate(model, splits.val).accuracy,
        "test_accuracy": evaluate(model, splits.test).accuracy,
        "memory_format": st.memory_format,
        "threads": st.threads,
        "data_load_seconds": load_s,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "data": splits.to_dict(),
    }
    print(
        f"ResNet-8 augment={aug:<12} {row['epochs']:.2f} epochs, {train_cpu:.0f} CPU-s ({row['train_seconds']:.0f} s "
        f"wall): test {100 * row['test_accuracy']:.2f}% (val {100 * row['val_accuracy']:.2f}%), {row['memory_format']}",
        flush=True,
    )
    return row


def _accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Test accuracy of ResNet-8 on CIFAR-10 after ``args.seconds`` CPU-seconds of training per augmentation setting.

    The settings run at once, one process each (``--threads`` torch threads each), so they share the
    machine's load; their budgets are CPU time, which that load does not stretch.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    augments = args.augments.split(";")
    with ProcessPoolExecutor(max_workers=len(augments), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_accuracy_setting, args.data, aug, args.seconds, args.threads) for aug in augments]
        rows = [f.result() for f in futures]
    data = rows[0].pop("data")
    for row in rows[1:]:
        row.pop("data")
    return {
        "model": "cifar-resnet 16/32/64 depth 1 3x3 (MLPerf Tiny ResNet-8), fp32, batch 128, SGD defaults",
        "data": data,
        "cpu_seconds_per_setting": args.seconds,
        "budget": "CPU time (process time of the setting's own process), settings run at once, one process each",
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------


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


def _run(kind: str, setting: dict[str, Any], images: int, parent_seconds: float) -> dict[str, Any]:
    import torch

    from hwtune.space import SearchSpace
    from hwtune.supernet import largest_candidate, train_parent
    from hwtune.training import TrainBudget, train

    _, recipe, shape, share = KINDS[kind]
    images = max(256, images // share)
    gen = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(images, *shape, generator=gen), torch.randint(0, 10, (images,)))
    # The engine measures which memory format is faster; here each is pinned to time both.
    os.environ["HWTUNE_CHANNELS_LAST"] = "1" if setting["channels_last"] else "0"
    kw = {"train_device": setting["device"], "amp": setting["amp"], "threads": setting["threads"]}
    space = SearchSpace.from_recipe(recipe)
    torch.manual_seed(0)
    model = space.build(largest_candidate(space))
    if kind == "train":
        st = train(model, ds, budget=TrainBudget(samples=images), batch_size=128, **kw)
        return {"images_per_s": st.samples_seen / st.seconds, "device_name": st.device, "amp": st.amp}
    _, pst = train_parent(space, ds, epochs=1.0, batch_size=128, parent=model, time_limit_s=parent_seconds, **kw)
    return {"images_per_s": pst.samples_seen / pst.seconds, "device_name": pst.device, "amp": pst.amp}


def _load_both(data: str) -> dict[str, tuple[Any, str, float]]:
    """``data`` loaded in memory (the default) and forced to stream: (splits, what the library printed, seconds)."""
    from hwtune.data import load_dataset

    out = {}
    for loader, max_bytes in LOADERS.items():
        printed = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(printed):  # the library's one line about its choice
            splits = load_dataset(data, **({} if max_bytes is None else {"max_memory_bytes": max_bytes}))
        seconds = time.perf_counter() - t0
        sys.stderr.write(printed.getvalue())
        out[loader] = (splits, printed.getvalue().strip(), seconds)
    return out


def _run_data(splits: Any, threads: int, images: int) -> dict[str, Any]:
    import torch

    from hwtune.space import SearchSpace
    from hwtune.training import TrainBudget, train

    torch.manual_seed(0)
    model = _resnet8(SearchSpace.from_recipe("cifar-resnet"))
    st = train(model, splits, budget=TrainBudget(samples=images), batch_size=128, threads=threads)
    return {
        "images_per_s": st.samples_seen / st.seconds,
        "device_name": st.device,
        "amp": st.amp,
        "memory_format": st.memory_format,
    }


def _data_rows(args: argparse.Namespace, rounds: int, images: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """In-memory vs DataLoader rows on the image folder ``args.data`` (empty, with the reason, when it does not load)."""
    from hwtune.datasplits import loader_workers
    from hwtune.errors import HwtuneError

    try:
        loaded = _load_both(args.data)
    except HwtuneError as exc:
        print(f"data rows skipped: {exc}", flush=True)
        return [], {"skipped": str(exc)}
    os.environ.pop("HWTUNE_CHANNELS_LAST", None)  # the format a user gets: the engine's measured choice
    settings = [(t, loader) for t in (1, 2) for loader in LOADERS]
    for t, loader in settings:  # warm-up, not timed: memory-format measurement, page cache, worker start
        if t == 1:
            _run_data(loaded[loader][0], t, 256)
    samples: dict[tuple[int, str], list[float]] = {}
    info: dict[tuple[int, str], dict[str, Any]] = {}
    for _ in range(rounds):
        for t, loader in settings:
            r = _run_data(loaded[loader][0], t, images)
            samples.setdefault((t, loader), []).append(r["images_per_s"])
            info[(t, loader)] = r
    rows = []
    for (t, loader), values in samples.items():
        splits, printed, load_s = loaded[loader]
        r = info[(t, loader)]
        rows.append(
            {
                "model": DATA_MODEL,
                "device": "cpu",
                "threads": t,
                "channels_last": r["memory_format"].startswith("channels_last"),
                "memory_format": r["memory_format"],
                "amp": r["amp"],
                "device_name": r["device_name"],
                "loader": loader,
                "data_workers": loader_workers(splits.train) or 0,
                "library_printed": printed,
                "load_seconds": load_s,
                "images_per_s_median": statistics.median(values),
                "images_per_s": values,
            }
        )
    meta = {"data": loaded["in-memory"][0].to_dict(), "images": images}
    return rows, meta


def _throughput(args: argparse.Namespace) -> dict[str, Any]:
    rounds, images = (1, 256) if args.quick else (args.rounds, args.images)
    settings = _settings()
    samples: dict[tuple[str, int], list[float]] = {}
    info: dict[tuple[str, int], dict[str, Any]] = {}
    for kind in KINDS:
        for s in settings:  # warm-up (allocator, cuDNN autotune), not timed
            if s["device"] != "cpu":
                _run(kind, s, 256, args.parent_seconds)
        for _ in range(rounds):
            for i, s in enumerate(settings):
                r = _run(kind, s, images, args.parent_seconds)
                samples.setdefault((kind, i), []).append(r["images_per_s"])
                info[(kind, i)] = r
                print(f"  {kind:<15} {s} {r['images_per_s']:.1f} images/s", flush=True)
    rows = []
    for (kind, i), values in samples.items():
        rows.append(
            {
                "model": KINDS[kind][0],
                **settings[i],
                "device_name": info[(kind, i)]["device_name"],
                "amp": info[(kind, i)]["amp"],
                "images_per_s_median": statistics.median(values),
                "images_per_s": values,
            }
        )
    data_rows, data_meta = _data_rows(args, rounds, images)
    rows += data_rows
    for row in rows:
        extra = f" loader={row['loader']}" if "loader" in row else ""
        print(
            f"{row['model']:<48} {row['device_name']:<10} threads={row['threads']} "
            f"channels_last={row['channels_last']!s:<5} amp={row['amp']:<5}{extra} "
            f"{row['images_per_s_median']:8.1f} images/s"
        )
    return {
        "rows": rows,
        "rounds": rounds,
        "images": images,
        "parent_seconds": args.parent_seconds,
        "data_rows": data_meta,
    }


def main() -> int:
    args = _parse()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _provenance import machine_info
    from _stage_cache import read_json, write_json

    out_path = Path(args.out)
    if args.part == "accuracy":
        out = read_json(out_path) or {}
        out["accuracy"] = {**_accuracy(args), "machine": machine_info(threads=args.threads)}
    else:
        machine_before = machine_info(threads=None)
        previous = read_json(out_path) or {}
        out = {**_throughput(args), "machine": machine_before, "loadavg_after": machine_info(threads=None)["loadavg"]}
        if "accuracy" in previous:  # the other part's figures stay
            out["accuracy"] = previous["accuracy"]
        if args.quick:
            return 0
    write_json(out, out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
