"""The training-device options of every command that trains (``tune``, ``worker``, ``finalize``,
``compress``, ``demo``): ``--train-device`` and ``--amp``, checked before any work."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_train_device_arguments", "train_device_arguments"]


def add_train_device_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--train-device`` and ``--amp``."""
    p.add_argument(
        "--train-device",
        default="auto",
        metavar="DEV",
        help="where training runs: auto (CUDA, else MPS, else CPU; the default), cpu, cuda, cuda:N or mps; "
        "shipped models are still exported, quantized and scored on the CPU",
    )
    p.add_argument(
        "--amp",
        default="auto",
        metavar="MODE",
        help="mixed precision of training: auto (bf16 on CUDA where supported, else fp16 on accelerators; "
        "off on the CPU), bf16, fp16 or off",
    )


def train_device_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train_device": ..., "amp": ...}`` for the API, after checking both (a device this machine
    lacks is a ``ConfigError``, exit 2, before any work)."""
    from hwtune.engine import resolve_amp, resolve_device

    device = resolve_device(args.train_device)
    resolve_amp(args.amp, device)
    return {"train_device": args.train_device, "amp": args.amp}
