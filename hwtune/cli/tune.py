"""``hwtune tune``, ``front``, ``report``, ``export`` and ``finalize`` (``hwtune demo``: :mod:`hwtune.cli.demo`).

``front``, ``report``, ``export`` and ``finalize`` read a finished study from its run directory
(``hwtune export runs/convnet --trial knee``) or from ``--storage URL [--study NAME]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.cli._constraints import constraint_arguments
from hwtune.cli._data import add_data_arguments, data_arguments
from hwtune.cli._run import add_source_arguments, parse_trial_spec, resolve_source
from hwtune.cli._train_device import add_train_device_arguments, train_device_arguments
from hwtune.errors import ConfigError, StudyError

if TYPE_CHECKING:
    from hwtune.tuner.rundir import RunSource

__all__ = ["add_parsers", "run_export", "run_finalize", "run_front", "run_report", "run_tune"]

# Exit codes of an interrupted search (as shells report a process ended by the signal: 128 + its number).
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:  # nan/inf parse as floats: a nan timeout never ends
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return v


def _rungs(text: str) -> tuple[float, ...]:
    try:
        rungs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.25,1, got {text!r}") from None
    if not rungs or not all(math.isfinite(r) and 0 < r <= 1 for r in rungs):
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1] like 0.25,1, got {text!r}")
    return rungs


def add_parsers(subparsers: Any) -> list[argparse.ArgumentParser]:
    """Register ``tune``, ``front``, ``report``, ``export`` and ``finalize``."""
    p = subparsers.add_parser(
        "tune",
        help="search a recipe for the accuracy/latency Pareto front on a device",
        description="Multi-objective search (Optuna) with a successive-halving schedule; resumable: run the "
        "same command again to continue the study.",
    )
    _add_search_options(p)
    _add_training_options(p)
    p.set_defaults(func=run_tune)
    return [p, *_add_study_commands(subparsers)]


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """``tune``: what to search, for which device, where the study lives, limits and objectives."""
    p.add_argument("recipe", metavar="RECIPE", help="search-space recipe name (models/*.toml) or path")
    p.add_argument(
        "--device",
        required=True,
        metavar="ID[,ID...]",
        help="device profile id or path (hwtune devices); several comma-separated ids search once for all of them "
        "(the first is the primary device)",
    )
    p.add_argument(
        "-n",
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="target number of completed trials in the study (a resumed run continues up to N; default 20)",
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
    p.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="DIR",
        help="run directory: study.db, artifacts, reports (default hwtune-runs/STUDY)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=_positive_float,
        default=None,
        metavar="X",
        help="latency limit on the device, ms: slower candidates are recorded as infeasible, never trained",
    )
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
    p.add_argument("--max-params", type=_positive_int, default=None, metavar="N", help="parameter limit")
    p.add_argument(
        "--objectives",
        default="accuracy,latency",
        metavar="LIST",
        help="comma-separated: accuracy plus latency, memory, size (default accuracy,latency)",
    )
    p.add_argument("--sampler", default="nsga2", metavar="NAME", help="nsga2 (default), tpe, gp or random")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seeds the sampler and every training run")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """``tune``: training budget, data, strategy, runtime and output options."""
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
    add_data_arguments(p, again=False)
    add_train_device_arguments(p)
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
        help="runtime candidates are shipped to and scored on: onnxruntime, torch, executorch, litert "
        "(default: the device profile's; the Python API's hwtune.list_runtimes() lists what is registered)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="K local worker processes share the study (latency measured while they share the CPU is labelled so; "
        "the front is measured again alone at the end)",
    )
    p.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's artifact store, recorded in the study: a directory every worker sees, or an S3 bucket "
        "(pip install 'hwtune[s3]'); default OUT/artifacts for SQLite; required with a server --storage",
    )
    p.add_argument("--json", action="store_true", help="print the front as JSON at the end (knee first)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or lines, no table, no hints")


def _add_study_commands(subparsers: Any) -> list[argparse.ArgumentParser]:
    """``front``, ``report``, ``export`` and ``finalize``: commands that read a finished study."""
    return [*_add_front_and_report(subparsers), *_add_export_and_finalize(subparsers)]


def _add_front_and_report(subparsers: Any) -> list[argparse.ArgumentParser]:
    f = subparsers.add_parser(
        "front",
        help="show the Pareto front of a finished study (knee first in --json)",
        description="Show a study's Pareto front: hwtune front RUN_DIR, or --storage URL [--study NAME].",
    )
    add_source_arguments(f, what="show")
    f.add_argument("--json", action="store_true", help="JSON list of front trials, knee first")
    f.add_argument(
        "--device",
        default=None,
        metavar="ID",
        help="the front on this device of a multi-device study (default: the primary)",
    )
    f.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="also write front.json, pareto.png, hypervolume.png and report.md into DIR",
    )
    f.set_defaults(func=run_front)

    r = subparsers.add_parser(
        "report",
        help="write a study's report (report.md, pareto.png, hypervolume.png, front.json)",
        description="Write the report files of a study: into its run directory, or into -o DIR.",
    )
    add_source_arguments(r, what="report on")
    r.add_argument("-o", "--out", default=None, metavar="DIR", help="where to write them (default: the run directory)")
    r.add_argument(
        "--device",
        default=None,
        metavar="ID",
        help="report on this device of a multi-device study (default: the primary)",
    )
    r.add_argument("--json", action="store_true", help="print the written paths as JSON")
    r.set_defaults(func=run_report)
    return [f, r]


def _add_export_and_finalize(subparsers: Any) -> list[argparse.ArgumentParser]:
    e = subparsers.add_parser(
        "export",
        help="export a trial's model (at its precision) with manifest.json",
        description="Export trained trials at their precision with a manifest: hwtune export RUN_DIR --trial knee. "
        "The exported file is re-evaluated and refused if it disagrees with the recorded accuracy.",
    )
    add_source_arguments(e, what="export from")
    e.add_argument(
        "--trial",
        default=None,
        metavar="knee|front|N",
        help="which trial: knee (default), front (every member, one directory each) or numbers like 7 or 3,7",
    )
    e.add_argument(
        "--format",
        default=None,
        metavar="FORMAT",
        help="model file format: onnx, pte or tflite (default: the format of the runtime the study shipped to); "
        "--format json|table is the output format, as everywhere",
    )
    e.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default RUN/export/trial-N; required with --storage); with several trials, "
        "one trial-N subdirectory each",
    )
    add_data_arguments(e, again=True)
    e.add_argument(
        "--search-weights",
        action="store_true",
        help="export the weights the search scored even when the trial was finalized",
    )
    e.add_argument("--json", action="store_true", help="print the manifest as JSON (a list for several trials)")
    e.set_defaults(func=run_export)

    z = subparsers.add_parser(
        "finalize",
        help="train chosen front trials to convergence, re-quantize, re-measure (recorded with the study)",
        description="Fine-tune the chosen trials of a study to convergence: hwtune finalize RUN_DIR --trial knee.",
    )
    add_source_arguments(z, what="finalize")
    which = z.add_mutually_exclusive_group()
    which.add_argument(
        "--trial", default=None, metavar="knee|front|N", help="knee (default), front (every member) or numbers like 3,7"
    )
    which.add_argument("--trials", default=None, metavar="N[,N...]", help="trial numbers (same as --trial N,N)")
    which.add_argument("--front", action="store_true", help="every member of the front (same as --trial front)")
    z.add_argument(
        "--epochs", type=_positive_float, default=None, metavar="E", help="fine-tuning epochs per trial (default 10)"
    )
    z.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the fine-tuning (default: the study's)")
    z.add_argument(
        "--augment",
        default=None,
        metavar="NAME",
        help="augment the fine-tuning batches: comma-separated steps crop:P, hflip, erasing:P (e.g. crop:4,hflip), "
        "or shift / shift-flip; only for data whose labels survive it; default none",
    )
    z.add_argument(
        "--train-on",
        choices=("train", "train+val"),
        default="train",
        help="train on the training split (default: validation stays held out) or on the validation images too "
        "(the test accuracy is then the held-out figure)",
    )
    add_data_arguments(z, again=True)
    add_train_device_arguments(z)
    z.add_argument("--json", action="store_true", help="print the finalized trials as JSON")
    z.add_argument("-q", "--quiet", action="store_true", help="no progress lines, no table")
    z.set_defaults(func=run_finalize)
    return [e, z]


def _budget(args: argparse.Namespace) -> Any:
    from hwtune.tuner import Schedule

    kw: dict[str, Any] = {}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.rungs is not None:
        kw["rungs"] = args.rungs
    return Schedule(**kw)


def _tune_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``tune()`` keyword arguments from the ``hwtune tune`` options."""
    constraints = constraint_arguments(args)
    data = data_arguments(args, train_limit=args.train_limit, val_limit=args.val_limit)
    return {
        "device": args.device,
        "data": data,
        "val_data": args.val_data,
        "objectives": args.objectives,
        "constraints": constraints,
        "n_trials": args.trials,
        "timeout": args.timeout,
        "storage": args.storage,
        "study_name": args.study,
        "sampler": args.sampler,
        "seed": args.seed,
        "budget": _budget(args),
        "out_dir": args.out,
        "progress": not args.quiet,
        "strategy": args.strategy,
        "parent_epochs": args.parent_epochs,
        "runtime": args.runtime,
        "artifacts": args.artifacts,
        "workers": args.workers,
        **train_device_arguments(args),
    }


def run_tune(args: argparse.Namespace) -> int:
    """``hwtune tune``: exit 0, or 130 after Ctrl-C (``main`` makes it 143 after SIGTERM); the study stays resumable."""
    from hwtune.tuner import tune

    # With --json, stdout carries the JSON only: the human summary table goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = tune(args.recipe, **_tune_arguments(args))
    if args.json:
        json.dump(result.front_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if not args.quiet:
        _print_next_steps(result)
        _print_dashboard_hint(result)
    return EXIT_INTERRUPTED if result.interrupted else 0


def _run_ref(result: Any) -> str:
    """How a user names this study on the command line: its run directory when that finds it, else --storage."""
    out = getattr(result.meta, "out_dir", None)
    if out and (Path(out) / "study.db").is_file() and result.storage.endswith(str(Path(out) / "study.db")):
        return _shell_word(_display_path(Path(out)))
    return f"--storage {_shell_word(result.storage)} --study {_shell_word(result.study_name)}"


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def _print_next_steps(result: Any) -> None:
    knee = result.knee
    if knee is not None:
        print(
            f"\nknee: trial #{knee.number}. Export it: hwtune export {_run_ref(result)} --trial knee -o DIR",
            file=sys.stderr,
        )


def _print_dashboard_hint(result: Any) -> None:
    from hwtune.tuner.storage import dashboard_command

    print(f"dashboard (pip install optuna-dashboard): {dashboard_command(result)}", file=sys.stderr)


def _load(args: argparse.Namespace) -> tuple[Any, RunSource]:
    from hwtune.tuner import load_result

    src = resolve_source(args.run, args.storage, args.study)
    result = load_result(src.storage, src.study_name)
    if getattr(args, "device", None) is not None:
        result = result.for_device(args.device)
    return result, src


def run_front(args: argparse.Namespace) -> int:
    result, _ = _load(args)
    if args.report:
        from hwtune.report import write_reports

        paths = write_reports(result, args.report)
        if not args.quiet:
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
        f"  val accuracy {100 * m['val_accuracy']:.2f}% (recorded {100 * m['recorded_val_accuracy']:.2f}%"
        f"{'' if m.get('val_held_out', True) else '; trained on, not held out'}), "
        f"test accuracy {test}"
    )
    lat_txt = "-" if lat["latency_ms"] is None else f"{lat['latency_ms']:.3f} ms"
    print(
        f"  latency {lat_txt} ({lat['source']}, {lat['runtime']}) on {m['device']['id']}; "
        f"weights {m['memory']['weight_bytes']} B, peak activations {m['memory']['peak_activation_bytes']} B"
    )
    print(f"  manifest {exp.manifest_path} (sha256 {m['sha256'][:16]}...)")


def run_report(args: argparse.Namespace) -> int:
    """``hwtune report``: write the report files of a study (default: into its run directory)."""
    from hwtune.report import write_reports

    result, src = _load(args)
    out = args.out or src.run_dir
    if out is None:
        raise ConfigError("hwtune report with --storage needs -o DIR (where to write the report)")
    paths = write_reports(result, out)
    if args.json:
        json.dump({k: str(v) for k, v in paths.items()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        for path in paths.values():
            print(path)
    return 0


def _trial_numbers(result: Any, text: str | None) -> list[int]:
    """``--trial`` resolved against a study: the knee, every front member, or the numbers given."""
    spec = parse_trial_spec(text)
    if spec.kind == "numbers":
        return list(spec.numbers)
    if spec.kind == "front":
        if not result.front:
            raise StudyError(f"study {result.study_name!r} has no front yet: nothing to export")
        return [t.number for t in result.front]
    if result.knee is None:
        raise StudyError(f"study {result.study_name!r} has no front yet: no knee to export")
    return [result.knee.number]


def run_export(args: argparse.Namespace) -> int:
    from hwtune.exporting import export

    result, src = _load(args)
    numbers = _trial_numbers(result, args.trial)
    if args.out is None and src.run_dir is None:
        raise ConfigError("hwtune export with --storage needs -o DIR (where to write the model)")
    base = Path(args.out) if args.out is not None else src.run_dir / "export"  # type: ignore[operator]
    listed = len(numbers) > 1 or parse_trial_spec(args.trial).kind == "front"  # JSON: a list when asked for several
    several = listed or args.out is None
    manifests = []
    for n in numbers:
        exp = export(
            result,
            n,
            base / f"trial-{n}" if several else base,
            args.format,
            finalized=False if args.search_weights else None,
            data=data_arguments(args),
            val_data=args.val_data,
        )
        manifests.append(exp.manifest)
        if not args.json and not args.quiet:
            _print_export(exp)
    if args.json:
        payload: Any = manifests if listed else manifests[0]
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return 0


def _finalize_choice(args: argparse.Namespace) -> Any:
    if args.front:
        return "front"
    if args.trials:
        spec = parse_trial_spec(args.trials, option="--trials")
        if spec.kind != "numbers":
            raise ConfigError(f"--trials must be comma-separated trial numbers, got {args.trials!r}")
        return list(spec.numbers)
    spec = parse_trial_spec(args.trial)
    return list(spec.numbers) if spec.kind == "numbers" else spec.kind


def run_finalize(args: argparse.Namespace) -> int:
    from hwtune.tuner.finalize import DEFAULT_FINALIZE_EPOCHS, finalize

    trials = _finalize_choice(args)
    on = train_device_arguments(args)
    src = resolve_source(args.run, args.storage, args.study)
    result = finalize(
        src.storage,
        trials,
        study_name=src.study_name,
        epochs=args.epochs or DEFAULT_FINALIZE_EPOCHS,
        seed=args.seed,
        progress=not args.quiet,
        augment=args.augment,
        data=data_arguments(args),
        val_data=args.val_data,
        train_on=args.train_on,
        **on,
    )
    if args.json:
        done = [
            {"number": t.number, "precision": t.precision, **(t.figures.finalized or {})}
            for t in result.trials
            if t.figures.finalized
        ]
        json.dump(done, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(result.front_table(finalized=True))
    return 0
