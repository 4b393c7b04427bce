"""``hwtune worker``: join an existing study (on this or another machine) and run its trials.

Everything about the search comes from the study's stored settings; this machine only says where
things are on it (``--artifacts``, ``--data-root``; ``--data``/``--val-data`` when the study's data is a
directory outside its run directory) and how much to run (``--trials``, ``--timeout``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hwtune.cli._data import add_data_arguments
from hwtune.cli._train_device import add_train_device_arguments, train_device_arguments

__all__ = ["add_parser", "run_worker"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``worker``."""
    p = subparsers.add_parser(
        "worker",
        help="join an existing study (e.g. on PostgreSQL) and run trials with its stored settings",
        description="Join a study created by `hwtune tune` and run trials for it until the study has its target "
        "of complete trials (counted over every worker) or --timeout. Start as many as you like, on any machine "
        "that reaches the storage and the artifact store.",
    )
    p.add_argument("--storage", required=True, metavar="URL", help="the study's storage URL (or SQLite file)")
    p.add_argument("--study", default=None, metavar="NAME", help="study name (optional if the storage has one)")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="target of complete trials in the study (default: its own)",
    )
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop starting trials after this")
    p.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the study's artifact store as seen from this machine (default: the one the study records, when it is "
        "inside the SQLite study's directory or on S3)",
    )
    add_data_arguments(p, again=True)
    add_train_device_arguments(p)
    p.add_argument("--download", action="store_true", help="allow downloading the dataset when it is missing here")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads for training")
    p.add_argument("--sampler", default=None, metavar="NAME", help="sampler, if the study's was a custom instance")
    p.add_argument(
        "--pipeline",
        default=None,
        metavar="MODULE:CLASS",
        help="a CandidatePipeline subclass, if the study was tuned with one (Python API)",
    )
    p.set_defaults(func=run_worker)
    return p


def run_worker(args: argparse.Namespace) -> int:
    """Run trials for the study; exit 1 (one line) when its database stayed unreachable past the outage bound."""
    from hwtune.errors import ConfigError, StorageUnavailableError
    from hwtune.tuner.api import join_study
    from hwtune.tuner.workers import import_pipeline

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    on = train_device_arguments(args)
    data = {
        "root": args.data_root,
        "download": True if args.download else None,
        "name_or_path": args.data,
        "val_data": args.val_data,
    }
    try:
        result = join_study(
            args.storage,
            args.study,
            n_trials=args.trials,
            timeout=args.timeout,
            artifacts=args.artifacts,
            data={k: v for k, v in data.items() if v is not None},
            threads=args.threads,
            pipeline=import_pipeline(args.pipeline) if args.pipeline else None,
            sampler=args.sampler,
            progress=not getattr(args, "quiet", False),
            **on,
        )
    except StorageUnavailableError as exc:
        # Not bad input (exit 2): the server is down. Finished trials are saved; the same command resumes.
        print(f"hwtune: error: {exc}", file=sys.stderr)
        return 1
    if not getattr(args, "quiet", False):
        c = result.counts()
        print(
            f"study {result.study_name}: {c['complete']} complete trial(s), {c['failed']} failed; "
            f"front of {len(result.front)}",
            file=sys.stderr,
        )
    return 130 if result.interrupted else 0
