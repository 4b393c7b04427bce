"""``hwtune tune``, ``hwtune front``, ``hwtune export`` and ``hwtune demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hwtune.errors import ConfigError

__all__ = ["add_parsers", "run_demo", "run_export", "run_finalize", "run_front", "run_tune"]

DEMO_RECIPE = "fashion-convnet"
DEMO_OUT = "hwtune-demo"
# Sized so the whole demo (data load, search, reports, export) ends well inside 10 minutes on a
# 2-core machine: the search stops after DEMO_TIMEOUT_S (the trial in flight finishes first).
DEMO_TIMEOUT_S = 330.0
DEMO_TRIALS = 40
DEMO_EPOCHS = 1.0
DEMO_RUNGS = (0.25, 1.0)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return v


def _rungs(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.25,1, got {text!r}") from None


def add_parsers(subparsers: Any) -> list[argparse.ArgumentParser]:
    """Register ``tune``, ``front``, ``export`` and ``demo``."""
    p = subparsers.add_parser(
        "tune",
        help="search a recipe for the accuracy/latency Pareto front on a device",
        description="Multi-objective search (Optuna) with a successive-halving schedule; resumable: run the "
        "same command again to continue the study.",
    )
    p.add_argument("recipe", metavar="RECIPE", help="search-space recipe name (models/*.toml) or path")
    p.add_argument(
        "--device",
        required=True,
        metavar="ID[,ID...]",
        help="device profile id or path (hwtune devices); several comma-separated ids search once for all of them "
        "(the first is the primary device)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="target number of completed trials in the study (a resumed run continues up to N)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="stop starting new trials after this many seconds",
    )
    p.add_argument(
        "--storage", default=None, metavar="URL", help="Optuna storage URL (default: sqlite:///OUT/study.db)"
    )
    p.add_argument("--study", default=None, metavar="NAME", help="study name (default RECIPE-DEVICE)")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default hwtune-runs/STUDY)")
    p.add_argument("--max-latency-ms", type=_positive_float, default=None, metavar="X")
    p.add_argument(
        "--max-ram-kb",
        type=_positive_float,
        default=None,
        metavar="X",
        help="working-memory limit (peak activations), KiB",
    )
    p.add_argument(
        "--max-storage-kb", type=_positive_float, default=None, metavar="X", help="storage limit (weights), KiB"
    )
    p.add_argument(
        "--objectives",
        default="accuracy,latency",
        metavar="LIST",
        help="comma-separated: accuracy plus latency, memory, size (default accuracy,latency)",
    )
    p.add_argument("--sampler", default="nsga2", metavar="NAME", help="nsga2 (default), tpe, gp or random")
    p.add_argument("--seed", type=int, default=None, metavar="S")
    p.add_argument(
        "--epochs",
        type=_positive_float,
        default=None,
        metavar="E",
        help="full training budget per candidate in epochs (default 1)",
    )
    p.add_argument(
        "--rungs",
        type=_rungs,
        default=None,
        metavar="FRACTIONS",
        help="successive-halving rungs as fractions of --epochs (default 0.25,1; '1' trains all fully)",
    )
    p.add_argument(
        "--data", default=None, metavar="NAME_OR_DIR", help="dataset name or directory (default: the recipe's dataset)"
    )
    p.add_argument("--train-limit", type=int, default=None, metavar="N", help="use only N training samples")
    p.add_argument("--val-limit", type=int, default=None, metavar="N", help="use only N validation samples")
    p.add_argument(
        "--strategy",
        default=None,
        choices=["inherit", "scratch"],
        help="inherit: candidates are sub-networks of one parent trained once (sliceable families); "
        "scratch: every candidate trains from its own initialization (default: scratch; a resumed study keeps its own)",
    )
    p.add_argument(
        "--parent-epochs",
        type=_positive_float,
        default=None,
        metavar="E",
        help="epochs of the parent's training with --strategy inherit (default: the recipe's [parent] epochs, else 3)",
    )
    p.add_argument(
        "--runtime",
        default=None,
        metavar="NAME",
        help="runtime candidates are shipped to and scored on (default: the device profile's; hwtune list-runtimes)",
    )
    p.add_argument("--json", action="store_true", help="print the front as JSON at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_tune)

    f = subparsers.add_parser("front", help="show the Pareto front of a study (knee first in --json)")
    f.add_argument("--storage", required=True, metavar="URL")
    f.add_argument("--study", default=None, metavar="NAME", help="study name (optional if the storage has one)")
    f.add_argument("--json", action="store_true", help="JSON list of front trials, knee first")
    f.add_argument(
        "--device", default=None, metavar="ID", help="the front on this device of a multi-device study (default: the primary)"
    )
    f.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="also write front.json, pareto.png, hypervolume.png and report.md into DIR",
    )
    f.set_defaults(func=run_front)

    e = subparsers.add_parser("export", help="export a trial's model (at its precision) with manifest.json")
    e.add_argument("--storage", required=True, metavar="URL")
    e.add_argument("--study", default=None, metavar="NAME")
    e.add_argument("--trial", required=True, type=int, metavar="N")
    e.add_argument(
        "--format",
        default=None,
        metavar="FORMAT",
        help="file format: onnx, pte or tflite (default: the format of the runtime the study shipped to)",
    )
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument(
        "--search-weights",
        action="store_true",
        help="export the weights the search scored even when the trial was finalized",
    )
    e.add_argument("--json", action="store_true", help="print the manifest as JSON")
    e.set_defaults(func=run_export)

    z = subparsers.add_parser(
        "finalize",
        help="train chosen front trials to convergence, re-quantize, re-measure (recorded with the study)",
    )
    z.add_argument("--storage", required=True, metavar="URL")
    z.add_argument("--study", default=None, metavar="NAME", help="study name (optional if the storage has one)")
    which = z.add_mutually_exclusive_group()
    which.add_argument("--trials", default=None, metavar="N[,N...]", help="trial numbers (default: the knee)")
    which.add_argument("--front", action="store_true", help="every member of the front")
    z.add_argument(
        "--epochs", type=_positive_float, default=None, metavar="E", help="fine-tuning epochs per trial (default 10)"
    )
    z.add_argument("--seed", type=int, default=None, metavar="S")
    z.add_argument("--quiet", action="store_true", help="no progress lines")
    z.set_defaults(func=run_finalize)

    d = subparsers.add_parser(
        "demo",
        help="search fashion-convnet on this host with Fashion-MNIST, report, export the knee (< 10 min)",
    )
    d.add_argument("--out", default=DEMO_OUT, metavar="DIR", help=f"run directory (default ./{DEMO_OUT})")
    d.add_argument("--device", default="host", metavar="ID")
    d.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEMO_TIMEOUT_S,
        metavar="SECONDS",
        help=f"search time (default {DEMO_TIMEOUT_S:g} s)",
    )
    d.add_argument("--trials", type=int, default=DEMO_TRIALS, metavar="N")
    d.add_argument("--seed", type=int, default=0, metavar="S")
    d.set_defaults(func=run_demo)
    return [p, f, e, z, d]


def _budget(args: argparse.Namespace) -> Any:
    from hwtune.tuner import Schedule

    kw: dict[str, Any] = {}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.rungs is not None:
        kw["rungs"] = args.rungs
    return Schedule(**kw)


def run_tune(args: argparse.Namespace) -> int:
    from hwtune.tuner import tune

    constraints = {
        k: v
        for k, v in (
            ("max_latency_ms", args.max_latency_ms),
            ("max_ram_kb", args.max_ram_kb),
            ("max_storage_kb", args.max_storage_kb),
        )
        if v is not None
    }
    data: Any = None
    if args.data or args.train_limit or args.val_limit:
        data = {
            k: v
            for k, v in (("name", args.data), ("train_limit", args.train_limit), ("val_limit", args.val_limit))
            if v is not None
        }
    result = tune(
        args.recipe,
        device=args.device,
        data=data,
        objectives=args.objectives,
        constraints=constraints,
        n_trials=args.trials,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study,
        sampler=args.sampler,
        seed=args.seed,
        budget=_budget(args),
        out_dir=args.out,
        progress=not args.quiet,
        strategy=args.strategy,
        parent_epochs=args.parent_epochs,
        runtime=args.runtime,
    )
    if args.json:
        json.dump(result.front_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.quiet:
        print(result.front_table())
    _print_next_steps(result)
    return 130 if result.interrupted else 0


def _print_next_steps(result: Any) -> None:
    knee = result.knee
    if knee is not None:
        print(
            f"\nknee: trial #{knee.number}. Export: hwtune export --storage {result.storage} "
            f"--study {result.study_name} --trial {knee.number} --out DIR",
            file=sys.stderr,
        )


def run_front(args: argparse.Namespace) -> int:
    from hwtune.tuner import load_result

    result = load_result(args.storage, args.study)
    if args.device is not None:
        result = result.for_device(args.device)
    if args.report:
        from hwtune.report import write_reports

        paths = write_reports(result, args.report)
        print(f"reports: {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if args.json:
        json.dump(result.front_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    c = result.counts()
    print(
        f"study {result.study_name}: {result.recipe} on {result.device}; {c['complete']} complete trials "
        f"({c['trained']} trained, {c['infeasible']} infeasible), {c['failed']} failed; "
        f"hypervolume {result.hypervolume:.4f}"
    )
    print(result.front_table())
    return 0


def _print_export(exp: Any) -> None:
    m = exp.manifest
    lat = m["latency"]
    test = "-" if m["test_accuracy"] is None else f"{100 * m['test_accuracy']:.2f}%"
    print(f"exported trial #{m['study']['trial']} ({m['precision_label']}) to {exp.model_path}")
    print(
        f"  val accuracy {100 * m['val_accuracy']:.2f}% (recorded {100 * m['recorded_val_accuracy']:.2f}%), "
        f"test accuracy {test}"
    )
    lat_txt = "-" if lat["latency_ms"] is None else f"{lat['latency_ms']:.3f} ms"
    print(
        f"  latency {lat_txt} ({lat['source']}, {lat['runtime']}) on {m['device']['id']}; "
        f"weights {m['memory']['weight_bytes']} B, peak activations {m['memory']['peak_activation_bytes']} B"
    )
    print(f"  manifest {exp.manifest_path} (sha256 {m['sha256'][:16]}...)")


def run_export(args: argparse.Namespace) -> int:
    from hwtune.exporting import export

    exp = export(
        args.storage,
        args.trial,
        args.out,
        args.format,
        study_name=args.study,
        finalized=False if args.search_weights else None,
    )
    if args.json:
        json.dump(exp.manifest, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_export(exp)
    return 0


def _trial_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--trials must be comma-separated trial numbers, got {text!r}") from None


def run_finalize(args: argparse.Namespace) -> int:
    from hwtune.tuner.finalize import DEFAULT_FINALIZE_EPOCHS, finalize

    trials: Any = "front" if args.front else (_trial_list(args.trials) if args.trials else None)
    result = finalize(
        args.storage,
        trials,
        study_name=args.study,
        epochs=args.epochs or DEFAULT_FINALIZE_EPOCHS,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(result.front_table(finalized=True))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from hwtune.exporting import export
    from hwtune.tuner import Schedule, tune

    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    t0 = time.monotonic()
    out = Path(args.out)
    print(
        f"hwtune demo: searching {DEMO_RECIPE} for {args.device} on Fashion-MNIST for up to {args.timeout:g} s "
        f"(run directory {out}; run again to resume)",
        file=sys.stderr,
    )
    result = tune(
        DEMO_RECIPE,
        device=args.device,
        data=None,
        n_trials=args.trials,
        timeout=args.timeout,
        out_dir=out,
        study_name="demo",
        seed=args.seed,
        budget=Schedule(epochs=DEMO_EPOCHS, rungs=DEMO_RUNGS),
        progress=True,
    )
    if result.interrupted:
        return 130
    knee = result.knee
    if knee is None:
        print("no feasible trained trial yet: nothing to export", file=sys.stderr)
        return 1
    print(f"\nexporting the knee (trial #{knee.number}) and checking it with ONNX Runtime...", file=sys.stderr)
    exp = export(result, knee.number, out / "export")
    _print_export(exp)
    print(f"report: {out / 'report.md'}; plot: {out / 'pareto.png'}; total {time.monotonic() - t0:.0f} s")
    return 0
