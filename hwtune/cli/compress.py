"""``hwtune compress MODEL``: compress your own trained model for a device (see :mod:`hwtune.tuner.compress`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from hwtune.cli._constraints import constraint_arguments
from hwtune.cli._data import add_data_arguments
from hwtune.cli._train_device import add_train_device_arguments, train_device_arguments
from hwtune.cli.profile import parse_input_shape
from hwtune.cli.tune import _positive_float, _positive_int
from hwtune.errors import ConfigError

__all__ = ["add_parser", "run_compress"]


def _floats(text: str) -> list[float]:
    import math

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compress",
        help="compress your own trained model for a device (pruned widths/depths, per-stage precision)",
        description="Derive a search space from your model (Torch-Pruning), then search pruned, quantized "
        "versions of it that inherit its weights and are fine-tuned distilled from it. The result is an "
        "ordinary study: front, finalize and export work on it.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="path/to/file.py:factory, package.module:factory, torchvision:<builder> (with --weights), "
        "or a torch.export archive (.pt2)",
    )
    p.add_argument("--weights", default=None, metavar="FILE", help=".pt/.pth state dict or .safetensors")
    p.add_argument(
        "--data", default="fashion-mnist", metavar="NAME_OR_DIR", help="dataset name or directory your model was trained on"
    )
    add_data_arguments(p, again=False, data=False)
    add_train_device_arguments(p)
    p.add_argument("--device", default="host", metavar="ID[,ID...]", help="device profile id(s) (default host)")
    p.add_argument("--input", default=None, metavar="NxCxHxW", help="example input shape")
    p.add_argument("--num-classes", type=int, default=None, metavar="N", help="factory/builder num_classes= argument")
    p.add_argument(
        "--mean", type=_floats, default=None, metavar="M[,M...]", help="per-channel mean of your preprocessing"
    )
    p.add_argument(
        "--std", type=_floats, default=None, metavar="S[,S...]", help="per-channel std of your preprocessing"
    )
    p.add_argument("--show-space", action="store_true", help="print the derived space as an editable recipe and exit")
    p.add_argument("--space", default=None, metavar="FILE", help="an edited recipe from --show-space")
    p.add_argument("--trials", "-n", type=int, default=None, metavar="N", help="completed trials in the study")
    p.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS", help="wall-clock budget")
    p.add_argument("--out", "-o", default=None, metavar="DIR", help="run directory (default hwtune-runs/STUDY)")
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL (default OUT/study.db)")
    p.add_argument("--study", default=None, metavar="NAME", help="study name")
    p.add_argument("--objectives", default="accuracy,latency", metavar="LIST", help="accuracy plus latency/memory/size")
    p.add_argument("--max-latency-ms", type=_positive_float, default=None, metavar="X", help="latency limit")
    p.add_argument("--max-ram-kb", type=_positive_float, default=None, metavar="X", help="working-memory limit, KiB")
    p.add_argument("--max-storage-kb", type=_positive_float, default=None, metavar="X", help="storage limit, KiB")
    p.add_argument("--max-params", type=_positive_int, default=None, metavar="N", help="parameter limit")
    p.add_argument("--epochs", type=_positive_float, default=None, metavar="E", help="fine-tuning epochs at the last rung")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed of sampler and fine-tuning")
    p.add_argument("--train-limit", type=int, default=None, metavar="N", help="use only N training samples")
    p.add_argument("--val-limit", type=int, default=None, metavar="N", help="use only N validation samples")
    p.add_argument("--json", action="store_true", help="print the front as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run_compress)
    return p


def run_compress(args: argparse.Namespace) -> int:
    import torch

    from hwtune.compression import derive_space, load_user_model

    train_device_arguments(args)  # a device this machine lacks fails before the model is loaded
    kwargs = {"num_classes": args.num_classes} if args.num_classes else None
    model = load_user_model(args.model, weights=args.weights, kwargs=kwargs)
    if (args.mean is None) != (args.std is None):
        raise ConfigError("--mean and --std go together (your preprocessing's per-channel statistics)")
    data: dict[str, Any] = {"name": args.data}
    if args.data_root:
        data["root"] = args.data_root
    if args.train_limit:
        data["train_limit"] = args.train_limit
    if args.val_limit:
        data["val_limit"] = args.val_limit
    example = None
    if args.input:
        shape = parse_input_shape(args.input)
        if len(shape) != 4:
            raise ConfigError(f"--input must be a 4-d shape NxCxHxW (e.g. 1x1x28x28), got {args.input!r}")
        example = torch.zeros(*shape)
    if args.show_space:
        from hwtune.tuner.inputs import data_spec, load_data

        if example is None:
            load, _ = data_spec(data, None, args.val_data)
            example = torch.zeros(1, *load_data(load).input_shape)  # type: ignore[arg-type]
        sys.stdout.write(derive_space(model.eval(), example).to_toml())
        return 0
    constraints = constraint_arguments(args)
    # With --json, stdout carries the JSON only: the human summary table goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = _run(model, data, example, constraints, args)
    if args.json:
        json.dump(result.front_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 130 if result.interrupted else 0


def _run(model: Any, data: Any, example: Any, constraints: dict[str, float], args: argparse.Namespace) -> Any:
    from hwtune.tuner.compress import compress

    budget = {"epochs": args.epochs} if args.epochs else None
    return compress(
        model,
        data,
        val_data=args.val_data,
        device=args.device,
        example_input=example,
        normalize=None if args.mean is None else (args.mean, args.std),
        space=args.space,
        source=args.model,
        objectives=args.objectives,
        constraints=constraints,
        n_trials=args.trials,
        timeout=args.timeout,
        out_dir=args.out,
        storage=args.storage,
        study_name=args.study,
        seed=args.seed,
        budget=budget,
        progress=not args.quiet,
        **train_device_arguments(args),
    )
