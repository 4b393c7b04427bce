"""MLPerf Tiny image classification (IC01) on CIFAR-10 for a Cortex-M7: reference vs search vs compress.

Three ways to a model for ``stm32h743`` (int8, TFLite Micro), side by side on the same data and splits
(``hwtune``'s default split of CIFAR-10's training set: 41,667 to train on, 8,333 to select on; the 10,000
test images only for the figures as shipped):

1. ``reference``: the MLPerf Tiny ResNet-8 (``models/reference/mlperf_tiny_resnet8.py``) trained with
   ``hwtune.train`` for ``--budget`` epochs (pad-4 crop + flip, SGD, cosine), what a user who trains the
   reference does with hwtune's engine.
2. ``search``: ``hwtune tune cifar-resnet --device stm32h743 --strategy inherit`` under the board's memory
   limits (``--max-ram-kb 256 --max-storage-kb 1024``), then ``hwtune finalize`` of the front members picked
   below and ``hwtune export``; the parent, the search and the finalize together are this arm's compute.
3. ``compress``: ``hwtune.compress`` of the trained reference (its first row is the reference itself, which
   is how the reference gets its as-shipped figures), ``hwtune finalize`` of the member with <= 0.5x the
   reference's MACs, ``hwtune export``.

Every figure of a shipped model comes from the ``manifest.json`` ``hwtune export`` wrote next to the
``.tflite`` (test accuracy scored in TFLite Micro itself, the measured arena, the file size, MACs, the
profile's predicted latency). The exports are copied to ``benchmarks/results/mlperf-tiny/<name>/``.

Compute: every stage's CPU seconds (this process and its children) and wall seconds are summed in the cache
(``compute.json``); training compute is also counted in reference-epochs (epochs x MACs / 12.5 M), so the
arms can be compared on a loaded machine.

Resumable: each stage's result is cached under ``--cache``; re-running skips what is done. Prints where it is.

    python benchmarks/bench_mlperf_tiny.py --data /path/to/cifar10      # or $HWTUNE_CIFAR10
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _provenance import machine_info
from _stage_cache import Clock
from _stage_cache import read_json as _read
from _stage_cache import write_json as _write

RESULTS = ROOT / "benchmarks" / "results"
REFERENCE_FILE = ROOT / "models" / "reference" / "mlperf_tiny_resnet8.py"
REFERENCE_SPEC = f"{REFERENCE_FILE}:build"
REFERENCE_MACS = 12_501_632
REFERENCE_PARAMS = 78_186
DEVICE = "stm32h743"
LIMITS = ["--max-ram-kb", "256", "--max-storage-kb", "1024"]  # the MLPerf Tiny boards' budget for the model
QUALITY_TARGET = 0.85  # IC01 top-1, int8
AUGMENT = "crop:4,hflip"
STAGES = ("reference", "search", "front", "compress", "curve", "report")  # default; also "eval-time"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _hwtune(*args: str) -> Any:
    """Run the ``hwtune`` CLI (what a user types); returns its JSON output when it prints one."""
    cmd = [sys.executable, "-m", "hwtune", *args]
    _log("$ hwtune " + " ".join(args))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"hwtune {args[0]} failed with exit {proc.returncode}")
    out = proc.stdout.strip()
    return json.loads(out) if out.startswith(("{", "[")) else out


def _data_args(args: argparse.Namespace) -> list[str]:
    return ["--data", str(args.data)]


def _train_args(args: argparse.Namespace) -> list[str]:
    return ["--train-device", args.train_device, "--amp", args.amp]


# --------------------------------------------------------------------------------------------
# 1. The reference, trained for the budget


def stage_reference(args: argparse.Namespace) -> dict:
    path = args.cache / "reference.json"
    row = _read(path)
    if row is not None:
        return row
    import torch

    import hwtune
    from hwtune.compression.loading import load_user_model
    from hwtune.training import TrainBudget, evaluate

    _log(f"reference: ResNet-8 trained for {args.budget:g} epochs ({AUGMENT}, amp {args.amp})")
    splits = hwtune.load_dataset(args.data)
    model = load_user_model(REFERENCE_SPEC).train()
    with Clock(args.cache, "reference"):
        t0 = time.perf_counter()
        stats = hwtune.train(
            model, splits, budget=TrainBudget(epochs=args.budget), seed=args.seed, augment=AUGMENT,
            train_device=args.train_device, amp=args.amp, progress=not args.quiet,
        )
        wall = time.perf_counter() - t0
    val = evaluate(model.eval(), splits.val)
    weights = args.cache / "reference.pt"
    tmp = weights.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, weights)
    row = {"epochs": args.budget, "augment": AUGMENT, "amp": args.amp, "train_wall_s": round(wall, 1),
           "val_accuracy_fp32_torch": float(val.accuracy), "weights": str(weights),
           "mean": list(splits.mean), "std": list(splits.std), "train_stats": str(stats)}
    _write(row, path)
    _log(f"reference: val {100 * val.accuracy:.2f}% (fp32, torch) after {wall:.0f} s")
    return row


# --------------------------------------------------------------------------------------------
# 2. The search and its finalized front


def _search_run(args: argparse.Namespace) -> Path:
    return args.cache / "search"


def _tune_cli(args: argparse.Namespace, run: Path, trials: int) -> list[str]:
    """The search's ``hwtune tune`` command line, up to ``trials`` trials in the study at ``run``."""
    return ["tune", "cifar-resnet", "--device", DEVICE, "--strategy", "inherit", "--parent-epochs",
            f"{args.parent_epochs:g}", *LIMITS, "--trials", str(trials), "--epochs", f"{args.trial_epochs:g}",
            "--rungs", "1", "--out", str(run), "--study", "mlperf-tiny", "--seed", str(args.seed), "--json", "-q",
            *_data_args(args), *_train_args(args)]


def stage_search(args: argparse.Namespace) -> list[dict]:
    path = args.cache / "search.json"
    front = _read(path)
    if front is not None:
        return front
    with Clock(args.cache, "search"):
        front = _hwtune(*_tune_cli(args, _search_run(args), args.trials))
    _write(front, path)
    _log(f"search: {len(front)} front members")
    return front


def _study(run: Path, name: str) -> Any:
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{run / 'study.db'}")


def _trial_seconds(run: Path, skip: int = 1) -> dict[str, Any]:
    """Durations of the search's completed trials after the first ``skip`` (the first waits for the parent)."""
    study = _study(run, "mlperf-tiny")
    done = sorted(
        (t for t in study.trials if t.state.name == "COMPLETE" and t.datetime_complete and t.datetime_start),
        key=lambda t: t.number,
    )
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done[skip:]]
    secs.sort()
    return {"trials": len(secs), "seconds": secs, "median_s": secs[len(secs) // 2] if secs else None,
            "max_s": secs[-1] if secs else None, "note": "first trial left out: it waits for the parent"}


def _trial_phases(run: Path, first: int) -> list[dict[str, Any]]:
    """Where the time of each trained trial numbered ``first`` or later went (from its stored figures): the
    profiling (working memory), the fine-tune, the fp32 scoring, and the rest (the inherited weights and their
    BatchNorm recalibration, quantize, export the .tflite, score the shipped file on the validation split,
    store the artifacts)."""
    rows = []
    for t in _study(run, "mlperf-tiny").trials:
        hw = t.user_attrs.get("hw") or {}
        if t.number < first or t.state.name != "COMPLETE" or not hw.get("trained"):
            continue
        wall, train = float(hw.get("wall_seconds") or 0.0), float(hw.get("train_seconds") or 0.0)
        profile = float(hw.get("profile_seconds") or 0.0)
        own = [r for r in hw.get("rungs") or [] if r.get("trial") == t.number]
        if not own:  # a repeat of a candidate scored before: its figures are the twin's
            continue
        rungs = sum(float(r.get("seconds") or 0.0) for r in own)
        rows.append({"trial": t.number, "rung": hw.get("rung"), "epochs": hw.get("budget_epochs"),
                     "wall_s": round(wall, 2), "profile_s": round(profile, 2), "train_s": round(train, 2),
                     "score_fp32_s": round(rungs - train, 2), "rest_s": round(wall - profile - rungs, 2),
                     "macs": hw.get("macs"), "precision": hw.get("precision")})
    return rows


def _trials_run(run: Path, study: str) -> int | None:
    """Trials a study holds (a search stopped early holds fewer than it was asked for)."""
    return len(_study(run, study).trials) if (run / "study.db").exists() else None


def pick_front(front: list[dict], n: int) -> list[int]:
    """Front members to finalize, up to ``n``: first the most accurate (in the search) of those with at most the
    reference's MACs and parameters -- the one that can dominate it -- or, when none has both, of those with at
    most its MACs; then the rest of the front, most accurate first."""
    def acc(m: dict) -> float:
        return float(m.get("accuracy") or 0.0)

    def at_most(m: dict, key: str, limit: int) -> bool:
        return (m.get(key) or 1e18) <= limit

    small = [m for m in front if at_most(m, "macs", REFERENCE_MACS) and at_most(m, "params", REFERENCE_PARAMS)]
    small = small or [m for m in front if at_most(m, "macs", REFERENCE_MACS)]
    picks = [max(small, key=acc)["number"]] if small else []
    for m in sorted(front, key=acc, reverse=True):
        if len(picks) >= n:
            break
        if m["number"] not in picks:
            picks.append(m["number"])
    return picks[:n]


def _export(args: argparse.Namespace, run: Path, trial: int, name: str) -> dict:
    out = args.cache / "exports" / name
    manifest = _read(out / "manifest.json")
    if manifest is not None and (manifest.get("study") or {}).get("trial") != trial:  # another trial's: redo
        shutil.rmtree(out)
        manifest = None
    if manifest is None:
        manifest = _hwtune("export", str(run), "--trial", str(trial), "-o", str(out), "--json", *_data_args(args))
    return manifest


def _finalized_for(done: Path, epochs: float) -> bool:
    """Whether ``done`` caches a finalize of ``epochs`` (one of other epochs is redone; its export is dropped by
    :func:`_save_finalize` once the new finalize succeeded, so a stopped run keeps the old pair)."""
    fin = _read(done)
    if fin is not None and all(float(f.get("epochs", -1)) == epochs for f in fin):
        return True
    if fin is not None:
        _log(f"{done.name}: cached finalize of {[f.get('epochs') for f in fin]} epochs, {epochs:g} asked: redone")
    return False


def _save_finalize(fin: Any, done: Path, export_dir: Path) -> None:
    """Cache a finished finalize and drop the export made from an earlier one (finalize starts again from the
    searched weights, so the export must follow)."""
    _write(fin, done)
    shutil.rmtree(export_dir, ignore_errors=True)


def stage_front(args: argparse.Namespace, front: list[dict]) -> list[dict]:
    run = _search_run(args)
    rows = []
    for trial in pick_front(front, args.front_members):
        done = args.cache / f"finalized-front-{trial}.json"
        if not _finalized_for(done, args.finalize_epochs):
            with Clock(args.cache, f"finalize-front-{trial}"):
                fin = _hwtune("finalize", str(run), "--trial", str(trial), "--epochs", f"{args.finalize_epochs:g}",
                              "--augment", AUGMENT, "--json", "-q", *_data_args(args), *_train_args(args))
            _save_finalize(fin, done, args.cache / "exports" / f"front-{trial}")
        with Clock(args.cache, f"export-front-{trial}"):
            manifest = _export(args, run, trial, f"front-{trial}")
        rows.append(_row(f"front-{trial}", manifest, _read(done)))
    return rows


def stage_front_curve(args: argparse.Namespace, front: list[dict]) -> list[dict]:
    """The search arm's accuracy against its compute: the first picked front member finalized for each
    ``--front-curve`` budget (epochs), each on its own copy of the search run (``hwtune finalize`` as a user runs
    it, test accuracy as it records it: scored in TFLite Micro). Compute = parent + search + that finalize."""
    run = _search_run(args)
    trial = pick_front(front, 1)[0]
    compute = _read(args.cache / "compute.json") or {}
    base_cpu = compute.get("search", {}).get("cpu_s", 0.0)
    rows = []
    for epochs in [float(e) for e in args.front_curve.split(",") if e]:
        path = args.cache / f"front-curve-{trial}-{epochs:g}.json"
        row = _read(path)
        if row is None and epochs == args.finalize_epochs:  # the front stage's own finalize is this point
            fin = _read(args.cache / f"finalized-front-{trial}.json")
            cpu = compute.get(f"finalize-front-{trial}", {}).get("cpu_s")
            if fin and cpu:
                row = {"epochs": epochs, "test_accuracy_int8": fin[0]["test_accuracy"], "finalize_cpu_s": cpu}
        if row is None:
            copy = args.cache / "front-curve" / f"{trial}-{epochs:g}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(run, copy)
            _log(f"front curve: trial {trial} finalized for {epochs:g} epochs (a copy of the search run)")
            with Clock(args.cache, f"front-curve-{trial}-{epochs:g}") as clock:
                fin = _hwtune("finalize", str(copy), "--trial", str(trial), "--epochs", f"{epochs:g}",
                              "--augment", AUGMENT, "--json", "-q", *_data_args(args), *_train_args(args))
            row = {"epochs": epochs, "test_accuracy_int8": fin[0]["test_accuracy"], "finalize_cpu_s": clock.cpu_s}
            _write(row, path)
        row = {**row, "trial": trial, "search_cpu_s": base_cpu, "arm_cpu_s": base_cpu + row["finalize_cpu_s"]}
        _log(f"front curve: {row['epochs']:g} epochs: test {100 * row['test_accuracy_int8']:.2f}% int8, "
             f"arm {row['arm_cpu_s']:.0f} CPU-s")
        rows.append(row)
    return rows


def stage_eval_time(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per candidate evaluation, timed now: ``hwtune tune`` resumed on a copy of the search run with
    ``--eval-trials`` more trials (the parent is reused, so each new trial is one candidate's slice, fine-tune,
    export and scoring), with the load average during them."""
    run = args.cache / "eval-time"
    path = args.cache / "eval-time.json"
    row = _read(path)
    if row is not None:
        return row
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(_search_run(args), run)
    before = _trials_run(run, "mlperf-tiny") or 0
    done_before = _trial_seconds(run, skip=0)["trials"]
    with Clock(args.cache, "eval-time"):
        _hwtune(*_tune_cli(args, run, before + args.eval_trials))
    failed = [t.number for t in _study(run, "mlperf-tiny").trials if t.number >= before and t.state.name == "FAIL"]
    if failed:
        raise SystemExit(f"eval-time: trials {failed} failed (see {run / 'report.md'}); nothing timed is written")
    phases = _trial_phases(run, before)
    secs = sorted(r["wall_s"] for r in phases)  # candidates evaluated, not repeats or infeasible ones (~0.1 s)
    row = {"trials": len(secs), "median_s": secs[len(secs) // 2] if secs else None, "seconds": secs,
           "all_new_trials": _trial_seconds(run, skip=done_before)["seconds"], "phases": phases,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "threads": "torch default (all cores)"}
    _write(row, path)
    _log(f"eval time: {row['trials']} candidates, median {row['median_s']} s")
    return row


# --------------------------------------------------------------------------------------------
# 3. Compress the trained reference


def stage_compress(args: argparse.Namespace, ref: dict) -> list[dict]:
    import torch

    import hwtune
    from hwtune.compression import derive_space
    from hwtune.compression.loading import load_user_model
    from hwtune.tuner.storage import load_result

    run = args.cache / "compress"
    if _read(args.cache / "compress.json") is None:
        model = load_user_model(REFERENCE_SPEC, weights=ref["weights"])
        ratios = tuple(float(w) for w in args.widths.split(","))
        # int8 only: what `hwtune compress --device stm32h743` derives for a device that runs int8 only
        space = derive_space(model.eval(), torch.zeros(1, 3, 32, 32), width_ratios=ratios, precisions=("int8",))
        _log(f"compress: hwtune.compress of the trained reference, widths {ratios}, {args.compress_trials} trials")
        with Clock(args.cache, "compress"):
            hwtune.compress(
                model, str(args.data), device=DEVICE, space=space, source=str(REFERENCE_FILE.relative_to(ROOT)),
                normalize=(ref["mean"], ref["std"]), n_trials=args.compress_trials, out_dir=run,
                study_name="mlperf-tiny-compress", seed=args.seed, progress=not args.quiet,
                constraints={"max_ram_bytes": 256 * 1024, "max_storage_bytes": 1024 * 1024},
                budget={"epochs": args.trial_epochs, "rungs": [1.0]},
                train_device=args.train_device, amp=args.amp,
            )
        _write({"done": True}, args.cache / "compress.json")
    result = load_result(run / "study.db", "mlperf-tiny-compress")
    baseline = min(result.trials, key=lambda t: t.number)
    ok = [t for t in result.trials if t.state == "complete" and t.figures.macs and t.number != baseline.number
          and 2 * t.figures.macs <= REFERENCE_MACS and t.figures.val_accuracy is not None]
    rows = []
    with Clock(args.cache, "export-reference"):
        rows.append(_row("reference", _export(args, run, baseline.number, "reference"), None))
    if not ok:
        _log("compress: no trial at <= 0.5x the reference's MACs")
        return rows
    pick = max(ok, key=lambda t: t.figures.val_accuracy)
    done = args.cache / f"finalized-compressed-{pick.number}.json"
    epochs = args.compress_finalize_epochs
    if not _finalized_for(done, epochs):
        with Clock(args.cache, "finalize-compressed"):
            fin = _hwtune("finalize", str(run), "--trial", str(pick.number), "--epochs", f"{epochs:g}",
                          "--augment", AUGMENT, "--json", "-q", *_data_args(args), *_train_args(args))
        _save_finalize(fin, done, args.cache / "exports" / "compressed")
    with Clock(args.cache, "export-compressed"):
        rows.append(_row("compressed", _export(args, run, pick.number, "compressed"), _read(done)))
    return rows


# --------------------------------------------------------------------------------------------
# Accuracy against budget: the reference trained again for shorter budgets


def stage_curve(args: argparse.Namespace) -> list[dict]:
    """Test accuracy of the reference trained for each ``--curve`` budget (a run of its own each: the cosine
    schedule depends on the budget), fp32 in torch and int8 in LiteRT (the .tflite tflite-micro ships, scored
    with LiteRT's kernels for speed: labelled so)."""
    import numpy as np
    import torch

    import hwtune
    from hwtune.compression.loading import load_user_model
    from hwtune.data import calibration_batch
    from hwtune.precision import PrecisionPlan
    from hwtune.runtimes import get_runtime
    from hwtune.training import TrainBudget, evaluate

    rows = []
    splits = None
    for epochs in [float(e) for e in args.curve.split(",") if e]:
        path = args.cache / f"curve-{epochs:g}.json"
        row = _read(path)
        if row is None:
            splits = splits or hwtune.load_dataset(args.data)
            _log(f"curve: reference trained for {epochs:g} epochs")
            model = load_user_model(REFERENCE_SPEC).train()
            with Clock(args.cache, f"curve-{epochs:g}"):
                hwtune.train(model, splits, budget=TrainBudget(epochs=epochs), seed=args.seed, augment=AUGMENT,
                             train_device=args.train_device, amp=args.amp, progress=not args.quiet)
            model.eval()
            calib = calibration_batch(splits, 1000, seed=args.seed)
            out = args.cache / "curve" / f"reference-{epochs:g}.tflite"
            out.parent.mkdir(parents=True, exist_ok=True)
            shipped = get_runtime("tflite-micro").export(
                model, torch.zeros(1, 3, 32, 32), PrecisionPlan.uniform("int8"), out, calibration=np.asarray(calib))
            import dataclasses

            as_litert = dataclasses.replace(shipped, runtime="litert")
            row = {"epochs": epochs, "test_accuracy_fp32_torch": float(evaluate(model, splits.test).accuracy),
                   "test_accuracy_int8": float(evaluate(as_litert, splits.test).accuracy),
                   "int8_scored_in": "litert (the tflite-micro .tflite, LiteRT kernels)"}
            _write(row, path)
        _log(f"curve: {row['epochs']:g} epochs: test {100 * row['test_accuracy_fp32_torch']:.2f}% fp32, "
             f"{100 * row['test_accuracy_int8']:.2f}% int8")
        rows.append(row)
    return rows


def crossing(points: list[tuple[float, float]], target: float, unit: str = "epochs") -> dict[str, Any]:
    """Budget at which accuracy reaches ``target``: interpolated between measured points, else extrapolated
    from the last two on a log-budget line (labelled so), else None."""
    pts = sorted(points)
    for (b0, a0), (b1, a1) in itertools.pairwise(pts):
        if a0 < target <= a1:
            import math

            f = (target - a0) / (a1 - a0)
            return {unit: round(math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0))), 1),
                    "how": "interpolated"}
    if pts and pts[0][1] >= target:
        return {unit: pts[0][0], "how": "measured (at or below the smallest budget)"}
    if len(pts) >= 2 and pts[-1][1] > pts[-2][1]:
        import math

        (b0, a0), (b1, a1) = pts[-2], pts[-1]
        slope = (a1 - a0) / (math.log(b1) - math.log(b0))
        return {unit: round(math.exp(math.log(b1) + (target - a1) / slope), 0),
                "how": "extrapolated (log-budget line through the last two points)"}
    return {unit: None, "how": "not reached, no rising trend to extrapolate"}


# --------------------------------------------------------------------------------------------
# Report


def _row(name: str, manifest: dict, finalized: Any) -> dict:
    mem = manifest["memory"]
    lat = manifest["latency"]
    return {
        "model": name, "trial": manifest["study"]["trial"], "candidate": manifest.get("candidate"),
        "precision": manifest["precision_label"],
        "test_accuracy_int8_as_shipped": manifest["test_accuracy"], "val_accuracy_as_shipped": manifest["val_accuracy"],
        "scored_in": manifest["evaluation"]["runtime"],
        "arena_bytes": mem["working_memory_bytes"], "arena_source": mem["working_memory_source"],
        "flash_bytes": mem["storage_bytes"], "macs": manifest["macs"], "params": manifest["params"],
        "predicted_latency_ms": lat["latency_ms"], "latency_label": lat["label"] or lat["source"],
        "finalized": finalized,
    }


def _dominates(a: dict, b: dict) -> bool:
    return (a["test_accuracy_int8_as_shipped"] >= b["test_accuracy_int8_as_shipped"]
            and all(a[k] <= b[k] for k in ("arena_bytes", "flash_bytes", "macs")))


def stage_report(args: argparse.Namespace, ref: dict, rows: list[dict], curve: list[dict],
                 front_curve: list[dict] | None = None, eval_time: dict | None = None) -> dict:
    by = {r["model"]: r for r in rows}
    base = by.get("reference")
    fronts = [r for r in rows if r["model"].startswith("front-")]
    compute = _read(args.cache / "compute.json") or {}
    cpu = {k: round(v["cpu_s"]) for k, v in compute.items()}
    search_cpu = sum(v for k, v in cpu.items() if k == "search" or k.startswith("finalize-front"))
    targets: dict[str, Any] = {}
    if base:
        dom = [r["model"] for r in fronts if _dominates(r, base)]
        targets["front_dominates_reference"] = {"met": bool(dom), "members": dom}
        comp = by.get("compressed")
        if comp:
            drop = base["test_accuracy_int8_as_shipped"] - comp["test_accuracy_int8_as_shipped"]
            targets["compress_2x_within_1pt"] = {"met": comp["macs"] * 2 <= base["macs"] and drop <= 0.01,
                                                  "macs_ratio": round(base["macs"] / comp["macs"], 2),
                                                  "drop_points": round(100 * drop, 2)}
    best = max((r["test_accuracy_int8_as_shipped"] for r in fronts), default=None)
    targets["front_reaches_85"] = {"met": best is not None and best >= QUALITY_TARGET, "best_front": best}
    targets["reference_reaches_85"] = {"met": bool(base and base["test_accuracy_int8_as_shipped"] >= QUALITY_TARGET)}
    if curve:
        pts = [(c["epochs"], c["test_accuracy_int8"]) for c in curve]
        if base:
            pts.append((args.budget, base["test_accuracy_int8_as_shipped"]))
        cross = targets["reference_budget_for_85"] = crossing(pts, QUALITY_TARGET)
        # CPU-seconds per epoch of the curve's own runs: the runs were made under different loads, and load
        # inflates CPU time too, so a line through their CPU-seconds would bend; epochs x the median rate does not.
        rates = [compute[f"curve-{c['epochs']:g}"]["cpu_s"] / c["epochs"] for c in curve
                 if f"curve-{c['epochs']:g}" in compute]
        if cross.get("epochs") and rates:
            rate = statistics.median(rates)
            targets["reference_cpu_s_for_85"] = {
                "cpu_s": round(cross["epochs"] * rate),
                "how": f"{cross['how']} epochs x {rate:.1f} CPU-s per epoch (median of the curve's runs)"}
    if front_curve:
        pts = [(c["arm_cpu_s"], c["test_accuracy_int8"]) for c in front_curve]
        targets["search_arm_cpu_s_for_85"] = crossing(pts, QUALITY_TARGET, "cpu_s")
    run = _search_run(args)
    if (run / "study.db").exists():
        t = _trial_seconds(run)
        targets["candidate_eval_le_10s"] = {"met": t["median_s"] is not None and t["median_s"] <= 10, **t}
    if eval_time:
        targets["candidate_eval_le_10s_timed_alone"] = {
            "met": eval_time["median_s"] is not None and eval_time["median_s"] <= 10, **eval_time}
    out = {
        "what": "MLPerf Tiny IC01 on CIFAR-10 (JPEG q75 copy) for stm32h743: the reference ResNet-8 trained by "
                "hwtune.train vs hwtune tune --strategy inherit + finalize vs hwtune.compress + finalize; every "
                "model as exported (int8 .tflite, test accuracy scored in TFLite Micro)",
        "budget": {"reference_epochs": args.budget, "parent_epochs": args.parent_epochs, "trials": args.trials,
                   "trial_epochs": args.trial_epochs, "finalize_epochs": args.finalize_epochs,
                   "compress_trials": args.compress_trials, "compress_trials_run": _trials_run(args.cache / "compress",
                                                                                         "mlperf-tiny-compress"),
                   "compress_finalize_epochs": args.compress_finalize_epochs,
                   "widths": args.widths, "augment": AUGMENT,
                   "amp": args.amp, "train_device": args.train_device},
        "compute_cpu_s": cpu, "search_arm_cpu_s": search_cpu, "reference_arm_cpu_s": cpu.get("reference"),
        "compute": compute, "reference_training": ref, "rows": rows, "reference_curve": curve,
        "search_arm_curve": front_curve or [], "targets": targets,
        "machine": machine_info(packages=("torch", "tflite-micro", "ai-edge-litert", "optuna")),
    }
    _write(out, args.results / "mlperf-tiny.json")
    for r in rows:  # the exports, one directory per model, small enough to commit
        src, dst = args.cache / "exports" / r["model"], args.results / "mlperf-tiny" / r["model"]
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("model.tflite", "manifest.json"):
            shutil.copyfile(src / f, dst / f)
    for r in rows:
        _log(f"{r['model']:>14}: test {100 * r['test_accuracy_int8_as_shipped']:.2f}% int8  arena "
             f"{r['arena_bytes'] / 1024:.1f} KiB  flash {r['flash_bytes'] / 1024:.1f} KiB  {r['macs'] / 1e6:.2f} M MACs"
             f"  {r['predicted_latency_ms']:.1f} ms ({r['latency_label']})")
    _log("targets: " + json.dumps(targets))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=os.environ.get("HWTUNE_CIFAR10"),
                   help="CIFAR-10 directory (ImageFolder copy or cifar-10-batches-py); default $HWTUNE_CIFAR10")
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "mlperf-tiny")
    p.add_argument("--results", type=Path, default=RESULTS, help="where mlperf-tiny.json and the exports go")
    p.add_argument("--budget", type=float, default=30.0, help="epochs of the reference's training")
    p.add_argument("--parent-epochs", type=float, default=2.0)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--trial-epochs", type=float, default=0.25, help="fine-tuning of a promoted candidate")
    p.add_argument("--finalize-epochs", type=float, default=10.0)
    p.add_argument("--compress-finalize-epochs", type=float, default=None,
                   help="finalize epochs of the compressed member (default --finalize-epochs)")
    p.add_argument("--front-curve", default="", help="finalize budgets (epochs) of the search arm's curve, e.g. 6,15")
    p.add_argument("--eval-trials", type=int, default=6, help="eval-time stage: trials timed on a copy of the search")
    p.add_argument("--front-members", type=int, default=2, help="front members to finalize and export")
    p.add_argument("--compress-trials", type=int, default=12)
    p.add_argument("--curve", default="5,10", help="shorter budgets (epochs) the reference is trained for as well")
    p.add_argument("--widths", default="1,0.75,0.7,0.5", help="width ratios of the compress space")
    p.add_argument("--train-device", default="auto")
    p.add_argument("--amp", default="bf16", help="bf16 autocast: 1.45x faster training on this AVX-512 BF16 CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.data is None or not Path(args.data).is_dir():
        p.error(f"--data: CIFAR-10 directory expected (or $HWTUNE_CIFAR10), got {args.data}")
    stages = set(args.stages.split(","))
    if "report" in stages and not {"search", "front", "compress", "curve"} <= stages:
        # the report is written from the rows of these stages: without them it would overwrite the results with
        # a partial table (cached stages return at once)
        p.error("--stages report needs search,front,compress,curve as well (cached ones are read, not rerun)")
    args.compress_finalize_epochs = args.compress_finalize_epochs or args.finalize_epochs
    args.cache.mkdir(parents=True, exist_ok=True)
    ref = stage_reference(args)
    rows: list[dict] = []
    front_curve: list[dict] = []
    if "search" in stages:
        front = stage_search(args)
        if "front" in stages:
            rows += stage_front(args, front)
        if "curve" in stages and args.front_curve:
            front_curve = stage_front_curve(args, front)
    if "compress" in stages:
        rows = stage_compress(args, ref) + rows
    curve = stage_curve(args) if "curve" in stages and args.curve else []
    eval_time = stage_eval_time(args) if "eval-time" in stages else _read(args.cache / "eval-time.json")
    if "report" in stages:
        stage_report(args, ref, rows, curve, front_curve, eval_time)


if __name__ == "__main__":
    main()
