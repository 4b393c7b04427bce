"""The data options every command that reads a study's data takes (``tune``, ``compress``, ``export``,
``finalize``, ``worker``), parsed one way: ``--data``, ``--data-root``, ``--val-data``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_data_arguments", "data_arguments"]


def add_data_arguments(p: argparse.ArgumentParser, *, again: bool, data: bool = True) -> None:
    """Add ``--data`` (unless ``data=False``: the command has its own), ``--data-root`` and ``--val-data``.

    ``again``: the command reads a study's data again (export, finalize, worker), so the help says
    when the options are needed.
    """
    when = " (needed when the study's was a directory outside its run directory)" if again else ""
    if data:
        p.add_argument(
            "--data",
            default=None,
            metavar="NAME_OR_DIR",
            help=f"dataset name or directory{when or ' (default: the recipe dataset)'}",
        )
    p.add_argument(
        "--data-root", default=None, metavar="DIR", help="where this machine has a named dataset's files"
    )
    p.add_argument(
        "--val-data",
        default=None,
        metavar="NAME_OR_DIR",
        help="held-out validation data your model never saw (every image of its training split), instead of "
        f"a split carved from the training data{when}",
    )


def data_arguments(args: argparse.Namespace, **extra: Any) -> Any:
    """The ``data=`` argument of the API for ``--data``/``--data-root`` (and ``extra`` load options):
    None when none is given, else a mapping of ``load_dataset`` arguments."""
    kw: dict[str, Any] = {}
    if getattr(args, "data", None):
        kw["name"] = args.data
    if getattr(args, "data_root", None):
        kw["root"] = args.data_root
    kw.update({k: v for k, v in extra.items() if v is not None})
    return kw or None
