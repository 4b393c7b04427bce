"""``hwtune profile MODEL --device ID``: MACs, params, bytes, peak activations, fit and latency of one model.

MODEL is ``torchvision:<builder>`` (random weights; builder keyword arguments via ``--arg k=v``) or a path
to an ``.onnx`` file. Errors are ``HwtuneError``s, which the ``hwtune`` entry point prints as one line.
Exit code 1 when the model does not fit the device (weights over its storage or peak activations over
its RAM): the profile worked and the answer is "no", so scripts can test it (``hwtune profile ... || ...``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import re
import sys
import threading
from pathlib import Path
from typing import Any

from hwtune._util import first_line
from hwtune.errors import ConfigError, ModelError, did_you_mean
from hwtune.precision import PRECISIONS

__all__ = ["add_parser", "parse_input_shape", "resolve_model", "run"]

TORCHVISION_PREFIX = "torchvision:"
DEFAULT_INPUT = (1, 3, 224, 224)
MAX_INPUT_ELEMENTS = 1 << 28
# Steps that finish faster than this print nothing, so quick profiles stay quiet.
PROGRESS_AFTER_S = 2.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile",
        help="profile a model on a device: MACs, params, memory, fit and latency",
        description=(
            "Profile MODEL (torchvision:<builder> with random weights, or a path to an .onnx file) for a device. "
            "On 'measure' devices (host) latency is measured; on others it is predicted or estimated, and says so. "
            "Exit code 1 when the model does not fit the device (weights > storage or peak activations > RAM)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="torchvision:<builder> (e.g. torchvision:mobilenet_v2) or model.onnx")
    p.add_argument(
        "--device", default="host", metavar="ID", help="device profile id or path to a .toml (default: host)"
    )
    p.add_argument(
        "--input", default=None, metavar="SHAPE", help="input shape NxCxHxW (default 1x3x224x224; ONNX: from the file)"
    )
    p.add_argument("--precision", default="fp32", metavar="P", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument(
        "--runtime",
        default=None,
        metavar="R",
        help="a registered runtime, e.g. onnxruntime or torch (default: the device profile's runtime)",
    )
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="K=V",
        help="torchvision builder argument, value a Python literal (repeatable)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=10.0,
        metavar="S",
        help="latency measurement time budget in seconds (default 10)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip latency (structure and memory only)")
    p.add_argument(
        "--latency",
        choices=("measure", "predict"),
        default=None,
        help="predict: use the device's latency predictor even where it could measure (host); "
        "default: what the profile says",
    )
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.add_argument("--json", action="store_true", help="machine-readable output (layers included)")
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------------------------
# Argument parsing


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; anything else raises ``ConfigError``."""
    parts = re.split(r"[x×,]", text.strip().lower()) if text else []
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(
            f"--input must be positive integers joined by 'x', batch first (e.g. 1x3x224x224), got {text!r}"
        )
    if math.prod(dims) > MAX_INPUT_ELEMENTS:  # a typo must not end in an out-of-memory crash
        raise ConfigError(
            f"--input {text!r} has {math.prod(dims):,} elements; expected at most {MAX_INPUT_ELEMENTS:,} (1 GiB of fp32)"
        )
    return dims


def _parse_builder_args(items: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            problems.append(f"--arg must be key=value with a Python identifier as key, got {item!r}")
            continue
        try:
            kwargs[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key] = value.strip()  # a bare word is a string, e.g. --arg norm_layer_name=bn
    if problems:
        raise ConfigError("; ".join(problems))
    return kwargs


def resolve_model(spec: str, builder_args: dict[str, Any] | None = None) -> Any:
    """Build ``torchvision:<builder>`` (random weights, seeded) or return the ``Path`` of an ``.onnx`` file.

    Raises:
        UnknownNameError: Unknown torchvision builder (with close matches).
        ConfigError: Builder arguments rejected, ``--arg`` given for an ONNX file, or an unrecognised MODEL.
        ModelError: The ``.onnx`` file does not exist.
    """
    builder_args = builder_args or {}
    if spec.startswith(TORCHVISION_PREFIX):
        import torch
        import torchvision

        from hwtune.compression.loading import check_torchvision_builder

        name = spec[len(TORCHVISION_PREFIX) :]
        check_torchvision_builder(name)
        builder = torchvision.models.get_model_builder(name)
        torch.manual_seed(0)
        try:
            return builder(weights=None, **builder_args).eval()
        except (TypeError, ValueError, AssertionError) as exc:
            first = first_line(exc)
            raise ConfigError(f"torchvision:{name} rejected its arguments {builder_args}: {first}") from exc
    path = Path(spec)
    if path.suffix.lower() == ".onnx" or path.exists():
        if builder_args:
            raise ConfigError("--arg applies to torchvision builders only, not to an ONNX file")
        if not path.is_file():
            raise ModelError(f"{path}: ONNX file not found")
        return path
    raise ConfigError(f"MODEL must be torchvision:<builder> or a path to an .onnx file, got {spec!r}")


# ----------------------------------------------------------------------------------------------
# Progress


class _Progress:
    """Prints a step on stderr only once it has run longer than ``after_s`` (every step with ``-v``; none with ``-q``)."""

    def __init__(self, after_s: float = PROGRESS_AFTER_S, enabled: bool = True) -> None:
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._after_s = after_s
        self._enabled = enabled

    def __call__(self, step: str) -> None:
        if not self._enabled:
            return
        if self._after_s <= 0:
            self._emit(step)
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._after_s, self._emit, args=(step,))
            self._timer.daemon = True
            self._timer.start()

    @staticmethod
    def _emit(step: str) -> None:
        print(f"hwtune: {step} ...", file=sys.stderr, flush=True)

    def done(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


# ----------------------------------------------------------------------------------------------
# Output


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}"


def _int8_scheme(report: Any, profile: Any) -> dict[str, Any] | None:
    """The int8 scheme ONNX Runtime ships for this profile (measured here, the profile's [int8] table
    or the labelled rule of thumb); None when the report has no int8 or another runtime."""
    if "int8" not in report.precision or report.runtime != "onnxruntime":
        return None
    from hwtune.int8_scheme import int8_scheme_for

    scheme = int8_scheme_for(profile, measure=False)  # what the measurement used (memo), never a new probe
    return {**scheme.to_dict(), "description": scheme.description}


def _print_human(report: Any, profile: Any, show_layers: bool) -> None:
    from hwtune.cli._output import format_bytes, print_table

    fits = report.fits

    def verdict(ok: bool) -> str:
        return "fits" if ok else "DOES NOT FIT"

    shape = "x".join(str(s) for s in report.input_shape)
    rows: list[tuple[str, str]] = [
        ("model", f"{report.model}  (traced with {report.traced_with})"),
        ("device", f"{profile.id} - {profile.name}"),
        ("input", f"{shape}, precision {report.precision}"),
        ("MACs", f"{_count(report.macs)}  (FLOPs {_count(report.flops)})"),
        ("params", _count(report.params)),
        (
            "weights",
            f"{format_bytes(report.weight_bytes)}  {verdict(fits.weights)} in storage {format_bytes(fits.storage_bytes)}",
        ),
        (
            "peak activations",
            (
                f"{format_bytes(report.peak_activation_bytes)}  {verdict(fits.activations)} in RAM "
                f"{format_bytes(fits.ram_bytes)}  (liveness lower bound with conv+bn+relu fusion; unfused "
                f"{format_bytes(report.peak_activation_bytes_unfused)})"
            ),
        ),
    ]
    if report.latency_ms is None:
        rows.append(("latency", report.latency_label))
    else:
        lat = report.latency
        detail = report.latency_label
        if report.latency_source == "measured":
            detail += f"; p10 {_ms(lat.p10_ms)} ms, p90 {_ms(lat.p90_ms)} ms"
        rows.append(("latency", f"{_ms(report.latency_ms)} ms  {detail}"))
    scheme = _int8_scheme(report, profile)
    if scheme is not None:
        rows.append(("int8 scheme", f"{scheme['name']} ({scheme['description']}): {scheme['reason']}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    if show_layers and report.layers:
        source = report.layer_times_source
        header = "ms" if source == "unavailable" else f"ms ({source})"
        table = []
        for layer in report.layers:
            t = report.layer_times_ms.get(layer.name)
            op = layer.op_type if layer.fused_into is None else f"{layer.op_type} (fused)"
            table.append(
                (
                    layer.name,
                    op,
                    "x".join(str(s) for s in layer.output_shape),
                    _count(layer.macs) if layer.macs else "0",
                    _count(layer.params) if layer.params else "0",
                    format_bytes(layer.activation_bytes),
                    _ms(t),
                )
            )
        print()
        print_table(("layer", "op", "output", "MACs", "params", "activations", header), table)
        if source == "measured":
            print("\nper-op times: ONNX Runtime profiler (median per op); fused bn/relu time is in their conv's row")
    notes = [n for n in report.notes if scheme is None or not n.startswith("int8 scheme ")]  # shown above
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    """Run ``hwtune profile``; returns the exit code (errors raise ``HwtuneError``)."""
    from hwtune.device import load_profile
    from hwtune.precision import check_precision

    problems = []
    shape = None
    if args.input is not None:
        try:
            shape = parse_input_shape(args.input)
        except ConfigError as exc:
            problems.append(str(exc))
    if args.precision not in PRECISIONS:
        problems.append(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}{did_you_mean(args.precision, PRECISIONS)}"
        )
    if args.runtime is not None:
        from hwtune.runtimes import list_runtimes

        registered = list_runtimes()
        if args.runtime not in registered:
            problems.append(
                f"--runtime must be a registered runtime ({', '.join(registered)}), got {args.runtime!r}"
                f"{did_you_mean(args.runtime, registered)}"
            )
    if not (args.budget_s > 0):
        problems.append(f"--budget-s must be > 0, got {args.budget_s}")
    try:
        builder_args = _parse_builder_args(args.arg)
    except ConfigError as exc:
        problems.append(str(exc))
        builder_args = {}
    if problems:
        raise ConfigError("; ".join(problems))
    check_precision(args.precision)
    profile = load_profile(args.device)  # unknown device fails before any model is built
    if args.latency is not None and args.latency != profile.latency_source:
        if args.latency == "measure":
            raise ConfigError(
                f"--latency measure: {profile.id} is a remote device (latency = 'predict' in its profile); only "
                "this machine's profile (host) can measure"
            )
        profile = dataclasses.replace(profile, latency_source="predict")

    verbose = int(getattr(args, "verbose", 0) or 0)
    progress = _Progress(0.0 if verbose else PROGRESS_AFTER_S, enabled=not getattr(args, "quiet", False))
    try:
        progress(f"building {args.model}")
        model = resolve_model(args.model, builder_args)
        if shape is None and not isinstance(model, Path):
            shape = DEFAULT_INPUT
        from hwtune.profiler import profile_model

        report = profile_model(
            model,
            shape,
            device=profile,
            precision=args.precision,
            runtime=args.runtime,
            measure=not args.no_latency,
            layers=bool(args.layers or args.json),
            time_budget_s=args.budget_s,
            name=args.model,
            progress=progress,
        )
    finally:
        progress.done()
    if args.json:
        from hwtune.cli._output import print_json

        print_json({**report.to_dict(), "int8_scheme": _int8_scheme(report, profile)})
    else:
        _print_human(report, profile, args.layers)
    if not report.fits.overall:
        if not getattr(args, "quiet", False):
            print(f"hwtune: {args.model} does not fit {profile.id}: {_misfit(report.fits)} (exit code 1)",
                  file=sys.stderr)
        return 1
    return 0


def _misfit(fits: Any) -> str:
    """Which limits a model exceeds, in words."""
    from hwtune.cli._output import format_bytes

    parts = []
    if not fits.weights:
        parts.append(f"weights {format_bytes(fits.weight_bytes)} > storage {format_bytes(fits.storage_bytes)}")
    if not fits.activations:
        parts.append(
            f"peak activations {format_bytes(fits.peak_activation_bytes)} > RAM {format_bytes(fits.ram_bytes)}"
        )
    return "; ".join(parts)
