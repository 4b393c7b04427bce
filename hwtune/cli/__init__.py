"""The ``hwtune`` command. Each command group lives in its own module with ``add_parser``.

Global options work anywhere on the line (``hwtune profile m.onnx --debug`` and ``hwtune --debug
profile m.onnx`` are the same), as in pip and the Hugging Face CLI:

* ``--debug``: full tracebacks instead of one-line errors;
* ``-q`` / ``--quiet``: no progress bars, progress lines or hints, only the answer;
* ``-v`` / ``--verbose``: more progress detail (repeat for more);
* ``--json`` or ``--format json``: machine-readable output on stdout (``--format table``, the
  default, is for people). A command without JSON output refuses ``--json`` (exit 2).

Exit codes:

* ``0``: success;
* ``1``: the command worked and the answer is "no" (``hwtune profile`` of a model that does not
  fit the device; ``hwtune demo`` that found nothing feasible to export);
* ``2``: bad input: an unknown name, an invalid value or file, a usage error (one line on
  stderr; the traceback with ``--debug``);
* ``3``: an unexpected internal error (a bug: run again with ``--debug`` and report the traceback);
* ``130``: interrupted (Ctrl-C) after the command saved what it had finished;
* ``143``: stopped by SIGTERM (``kill``, ``timeout``, a batch scheduler), handled like Ctrl-C: what
  was finished is saved, and running the same command again resumes a search.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from hwtune._version import __version__
from hwtune.errors import ConfigError, HwtuneError
from hwtune.signals import SigtermGuard, Terminated

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NO",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "GlobalOptions",
    "build_parser",
    "main",
    "split_global_options",
]

EXIT_OK = 0
EXIT_NO = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM

# Command modules, in the order their commands appear in --help. Each has
# add_parser(subparsers) (or add_parsers) which registers its command(s), either with
# set_defaults(func=...) or by returning the parser(s) for dispatch to the module's run().
_COMMAND_MODULES = (
    "hwtune.cli.devices",
    "hwtune.cli.recipes",
    "hwtune.cli.profile",
    "hwtune.cli.tune",
    "hwtune.cli.demo",
    "hwtune.cli.compress",
    "hwtune.cli.calibrate",
)
# Registered when present (added by the scale-out work; absent in older checkouts).
_OPTIONAL_COMMAND_MODULES = ("hwtune.cli.worker",)

OUTPUT_FORMATS = ("table", "json")
# Command-line words that are values even though they start with "-": negative numbers, shapes
# (-1x3x224x224), -inf, -nan.
_VALUE_LIKE = re.compile(r"-(?:\.?\d|(?:inf|infinity|nan)$)", re.IGNORECASE)

EPILOG = (
    "global options (--debug, -q/--quiet, -v/--verbose, --json, --format json|table) work anywhere on the line.\n"
    "exit codes: 0 ok, 1 the answer is 'no' (e.g. the model does not fit the device), 2 bad input, "
    "3 internal error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM (run the same command to resume)."
)


@dataclass(frozen=True)
class GlobalOptions:
    """The options every command accepts, wherever they are on the command line.

    Attributes:
        debug: Show tracebacks instead of one-line errors.
        quiet: No progress output or hints.
        verbose: How many ``-v`` were given.
        output_format: ``table`` (default) or ``json``.
    """

    debug: bool = False
    quiet: bool = False
    verbose: int = 0
    output_format: str = "table"

    @property
    def json(self) -> bool:
        return self.output_format == "json"


def split_global_options(argv: Sequence[str]) -> tuple[GlobalOptions, list[str]]:
    """Take the global options out of ``argv`` wherever they are; return them and the rest.

    ``--format`` is global only with the values ``json`` or ``table``: ``hwtune export --format
    onnx`` keeps its own meaning. Nothing after a ``--`` is touched.

    Raises:
        ConfigError: ``--json`` with ``--format table``, or ``--quiet`` with ``--verbose``.
    """
    debug = quiet = False
    verbose = 0
    formats: list[str] = []
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        tok = items[i]
        if tok == "--":
            rest.extend(items[i:])
            break
        if tok == "--debug":
            debug = True
        elif tok in ("-q", "--quiet"):
            quiet = True
        elif tok == "--verbose" or (tok.startswith("-v") and set(tok[1:]) == {"v"}):
            verbose += 1 if tok == "--verbose" else len(tok) - 1
        elif tok == "--json":
            formats.append("json")
        elif tok.startswith("--format=") and tok.split("=", 1)[1] in OUTPUT_FORMATS:
            formats.append(tok.split("=", 1)[1])
        elif tok == "--format" and i + 1 < len(items) and items[i + 1] in OUTPUT_FORMATS:
            formats.append(items[i + 1])
            i += 1
        else:
            rest.append(tok)
        i += 1
    if len(set(formats)) > 1:
        raise ConfigError("--json and --format table contradict each other: give one output format")
    if quiet and verbose:
        raise ConfigError("--quiet and --verbose contradict each other: give one")
    return GlobalOptions(debug, quiet, verbose, formats[0] if formats else "table"), rest


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """Declare the global options on ``parser`` for ``--help`` (their values come from ``split_global_options``)."""
    group = parser.add_argument_group("global options (anywhere on the line)")
    S = argparse.SUPPRESS
    group.add_argument("--debug", action="store_true", default=S, help="show full tracebacks on errors")
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=S,
        help="no progress bars, progress lines or hints; only the answer (and errors)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=S,
        help="more progress detail (progress lines every 5 s in logs; every profiling step)",
    )
    group.add_argument("--json", action="store_true", default=S, help="machine-readable JSON on stdout")
    group.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default=S,
        help="output format: table (default, for people) or json (same as --json)",
    )


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that lists the global options in every command's ``--help``.

    A command may declare its own option of the same name (``--json`` with a command-specific help
    text, ``export --format onnx``); its declaration replaces the generic one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("conflict_handler", "resolve")
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        _add_global_options(self)

    def _parse_optional(self, arg_string: str) -> Any:
        # argparse takes "-1x3x224x224" or "-inf" for an unknown option and then says only "expected
        # one argument"; no hwtune option looks like that, so it is the value, and its type check
        # names it ("--input must be positive integers ..., got '-1x3x224x224'").
        if _VALUE_LIKE.match(arg_string) and arg_string not in self._option_string_actions:
            return None
        return super()._parse_optional(arg_string)

    def error(self, message: str) -> NoReturn:
        """A usage error is bad input like any other: one line on stderr (the value named), exit code 2."""
        where = "" if self.prog == "hwtune" else f"{self.prog}: "  # main() prints "hwtune: error:" already
        raise ConfigError(f"{where}{message} (see '{self.prog} --help')")


def _command_modules() -> list[str]:
    import importlib.util

    names = list(_COMMAND_MODULES)
    names += [m for m in _OPTIONAL_COMMAND_MODULES if importlib.util.find_spec(m) is not None]
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``hwtune`` argument parser, every command registered (global options listed, not parsed)."""
    parser = CommandParser(
        prog="hwtune",
        description="Find accuracy/latency/memory Pareto-optimal networks for a named device and export them.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"hwtune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in _command_modules():
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


def _apply(opts: GlobalOptions, args: argparse.Namespace) -> None:
    """Put the global options on the command's namespace and configure output."""
    from hwtune import progress

    if opts.json and not hasattr(args, "json"):
        raise ConfigError(f"hwtune {args.command} has no JSON output (--json / --format json)")
    args.json = opts.json or bool(getattr(args, "json", False))
    args.quiet = opts.quiet or bool(getattr(args, "quiet", False))
    args.verbose = opts.verbose
    args.debug = opts.debug
    args.output_format = "json" if args.json else "table"
    progress.configure(quiet=args.quiet, verbosity=opts.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hwtune`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in raw
    try:
        opts, rest = split_global_options(raw)
        parser = build_parser()
        args = parser.parse_args(rest)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        _apply(opts, args)
        # SIGTERM stops a command the way Ctrl-C does (a search saves its finished trials and stays resumable)
        with SigtermGuard() as guard:
            code = int(args.func(args) or 0)
        return _terminated() if guard.received else code
    except HwtuneError as exc:
        if debug:
            raise
        print(f"hwtune: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        return _terminated()
    except KeyboardInterrupt:
        print("hwtune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `hwtune front --json | head`: the reader left; that is not an error of ours.
        _silence_stdout()
        return EXIT_OK
    except SystemExit:
        raise  # argparse usage errors (2), --help and --version (0)
    except Exception as exc:  # the CLI boundary: a bug becomes one line, not a wall of text
        if debug:
            raise
        print(
            f"hwtune: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run again with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        _reset_output()


def _terminated() -> int:
    """The one line after a SIGTERM (printed under --quiet too, like an error) and its exit code."""
    print(
        "hwtune: terminated (SIGTERM): finished work is saved; run the same command again to resume",
        file=sys.stderr,
    )
    return EXIT_TERMINATED


def _reset_output() -> None:
    from hwtune import progress

    progress.configure(quiet=False, verbosity=0)


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
