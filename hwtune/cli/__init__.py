"""The ``hwtune`` command. Each command group lives in its own module with ``add_parser``.

Any ``HwtuneError`` becomes one line on stderr and exit code 2 (a traceback only with
``--debug``); Ctrl-C exits 130 after the command has saved what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hwtune._version import __version__
from hwtune.errors import HwtuneError

__all__ = ["build_parser", "main"]

# Command modules, in the order their commands appear in --help. Each has
# add_parser(subparsers) (or add_parsers) which registers its command(s), either with
# set_defaults(func=...) or by returning the parser(s) for dispatch to the module's run().
_COMMAND_MODULES = (
    "hwtune.cli.devices",
    "hwtune.cli.profile",
    "hwtune.cli.tune",
    "hwtune.cli.calibrate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwtune",
        description="Find accuracy/latency/memory Pareto-optimal networks for a named device and export them.",
    )
    parser.add_argument("--version", action="version", version=f"hwtune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        added = register(subparsers)
        # A module may return the parser(s) it made and leave dispatch to its run().
        for sub in added if isinstance(added, (list, tuple)) else [added]:
            if isinstance(sub, argparse.ArgumentParser) and sub.get_default("func") is None:
                sub.set_defaults(func=module.run)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except HwtuneError as exc:
        if args.debug:
            raise
        print(f"hwtune: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `hwtune front --json | head`: the reader left; that is not an error of ours.
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
