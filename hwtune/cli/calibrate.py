"""``hwtune calibrate``: fit the latency predictor to measurements and write it into a profile.

    hwtune calibrate RESULTS.json --base raspberry-pi-4 --out profiles/my-pi.toml
    hwtune calibrate --networks measurements.csv --base raspberry-pi-4 --out profiles/my-pi.toml
    hwtune calibrate --spec --base jetson-nano --out profiles/jetson-nano.toml
    hwtune calibrate --host        # measure this machine (~2 min); writes the user profile 'host'
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from hwtune.errors import ConfigError

__all__ = ["add_parser", "calibration_lines", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="fit the latency predictor to device measurements and write a calibrated profile",
        description=(
            "Fit the latency predictor and write it as the [calibration] table of a profile TOML (the rest of the "
            "file is kept as it is). RESULTS is the JSON/CSV that scripts/profile_device.py wrote on the device; "
            "--networks takes whole-network latencies instead (a CSV with columns latency_ms, batch_size, "
            "input_shape and family+knobs or arch; 3-10 rows is the intended size): each reference device of "
            "hwtune's device prior is refitted and scored leave-one-out next to FLOPs, and FLOPs' form is kept unless "
            "one beats it; --suggest N prints which N networks to measure and the CSV template to fill."
        ),
    )
    p.add_argument("results", nargs="?", help="micro-benchmark results from scripts/profile_device.py (.json or .csv)")
    p.add_argument("--networks", metavar="CSV", help="whole-network measurements instead of micro-benchmarks")
    p.add_argument("--spec", action="store_true",
                   help="write the spec-only model (no measurements; error measured on other devices)")
    p.add_argument("--suggest", type=int, metavar="N", default=None,
                   help="print the N networks (of --recipe) whose measurements inform a --networks calibration most, "
                        "and the CSV template to fill (written to --out when given)")
    p.add_argument("--recipe", default="cifar-nb201",
                   help="--suggest: recipe (name or .toml) whose search space the networks come from "
                        "(default cifar-nb201: NAS-Bench-201)")
    p.add_argument("--pool", type=int, default=256, metavar="K",
                   help="--suggest: candidates drawn from the recipe to choose from (default 256)")
    p.add_argument("--host", action="store_true",
                   help="measure this machine now (the device script, bounded by --budget-s) and write the user "
                        "profile 'host' ($XDG_CONFIG_HOME/hwtune/profiles/host.toml), which --device host then uses")
    p.add_argument("--budget-s", type=float, default=120.0, metavar="S",
                   help="--host: total measurement time in seconds (default 120)")
    p.add_argument("--quick", action="store_true", help="--host: every 6th micro-benchmark only (a coarse fit)")
    p.add_argument("--base", default=None, help="profile to start from: bundled id or path to a .toml (required "
                                                "except with --host)")
    p.add_argument("--out", default=None, help="profile TOML to write (may be the --base file itself; required "
                                               "except with --host)")
    p.add_argument("--description", default=None, help="one line describing the measurements")
    p.add_argument("--statistic", choices=("median", "min"), default=None,
                   help="micro-benchmarks: fit the per-case median (quiet device, default) or the fastest run "
                        "(steadier when other jobs share the machine; the default of --host)")
    p.add_argument("--json", action="store_true", help="print the written [calibration] table as JSON")
    p.set_defaults(func=run)
    return p


def _fmt(v: Any, pct: bool = False, unit: str = "") -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "n/a"
    return f"{v * 100:.0f}%" if pct else f"{v:.3g}{unit}"


def calibration_lines(t: Mapping[str, Any]) -> list[str]:
    """Human lines for a ``[calibration]`` table: form, error bars, FLOPs on the same rows.

    ``hwtune devices show`` can print the same lines.
    """
    lines = []
    form = t.get("form", "roofline")
    if t.get("executes"):
        form += f" ({t['executes']} lowering)"
    lines.append(f"form: {form}   [{t.get('method')}, {t.get('n_samples', 0)} samples]")
    lines.append(f"{'':12s}{'median err':>11s}{'within 10%':>12s}{'Spearman':>10s}")
    lines.append(f"{'hwtune':12s}{_fmt(t.get('error_pct'), unit='%'):>11s}{_fmt(t.get('within_10pct'), True):>12s}"
                 f"{_fmt(t.get('spearman')):>10s}")
    if any(k in t for k in ("flops_error_pct", "flops_spearman", "flops_within_10pct")):
        lines.append(f"{'FLOPs alone':12s}{_fmt(t.get('flops_error_pct'), unit='%'):>11s}"
                     f"{_fmt(t.get('flops_within_10pct'), True):>12s}{_fmt(t.get('flops_spearman')):>10s}")
    if t.get("validation"):
        lines.append(f"measured: {t['validation']}")
    if t.get("choice"):
        lines.append(f"chosen: {t['choice']}")
    forms = t.get("forms")
    if isinstance(forms, Mapping) and forms:
        tried = ", ".join(f"{k} {_fmt(v.get('loo_error_pct'), unit='%')}/{_fmt(v.get('loo_spearman'))}"
                          for k, v in forms.items() if isinstance(v, Mapping))
        lines.append(f"candidates tried (leave-one-out median error / Spearman): {tried}")
    if t.get("batch_sizes"):
        lines.append(f"batch sizes measured: {', '.join(str(b) for b in t['batch_sizes'])}")
    for note in t.get("notes") or ():
        lines.append(f"note: {note}")
    return lines


def run(args: argparse.Namespace) -> int:
    from hwtune.predictor import calibrate_microbench, calibrate_networks, calibrate_spec

    modes = sum(bool(x) for x in (args.results, args.networks, args.spec, args.host, args.suggest is not None))
    if modes != 1:
        raise ConfigError(
            "hwtune calibrate needs exactly one of RESULTS (micro-benchmarks), --networks CSV, --spec or --host, got "
            f"{modes} (--suggest N is a mode of its own)")
    if args.host:
        return _run_host(args)
    if args.suggest is not None:
        return _run_suggest(args)
    missing = [flag for flag, v in (("--base", args.base), ("--out", args.out)) if v is None]
    if missing:
        raise ConfigError(f"hwtune calibrate needs {' and '.join(missing)} (except with --host)")
    int8 = _results_int8(args.results) if args.results else None
    if int8 is not None and not _has_microbench_rows(args.results):
        return _write_int8_only(args, int8)  # device_script --int8-schemes only
    if args.results:
        report = calibrate_microbench(args.results, args.base, args.out, description=args.description,
                                      statistic=args.statistic or "median")
    elif args.networks:
        report = calibrate_networks(args.networks, args.base, args.out, description=args.description)
    else:
        report = calibrate_spec(args.base, args.out, description=args.description)
    t = report.table
    if int8 is not None:
        from hwtune.int8_scheme import write_int8_table

        write_int8_table(report.path, int8)
    if args.json:
        json.dump({"path": str(report.path), "calibration": dict(t), "int8": int8}, sys.stdout, indent=1)
        print()
        return 0
    print(f"wrote [calibration] ({t['method']}, {t['n_samples']} samples) to {report.path}")
    for line in calibration_lines(t):
        print(line)
    if int8 is not None:
        print(f"wrote [int8]: scheme {int8['scheme']} ({int8.get('reason', '')})")
    return 0


def _run_suggest(args: argparse.Namespace) -> int:
    """``--suggest N``: the networks to measure, and the CSV template (printed, or written to --out)."""
    from hwtune._io import write_atomic
    from hwtune.predictor import suggest_networks
    from hwtune.predictor._suggest import suggestion_lines

    sug = suggest_networks(args.suggest, recipe=args.recipe, base_profile=args.base or "host", pool=args.pool)
    if args.json:
        json.dump({"recipe": sug.recipe, "pool": sug.pool, "networks": sug.rows()}, sys.stdout, indent=1)
        print()
    else:
        for line in suggestion_lines(sug):
            print(line)
    if args.out:
        write_atomic(args.out, sug.csv_text(), what="CSV template")
        if not args.json:
            print(f"wrote the CSV template to {args.out}: fill latency_ms (ms per batch, measured) for every row")
    elif not args.json:
        print("CSV template (fill latency_ms):")
        print(sug.csv_text(), end="")
    return 0


def _results_int8(path: str) -> dict[str, Any] | None:
    """The ``int8`` table of a device-script results JSON (validated when written), or None."""
    from hwtune._io import load_json

    if not str(path).endswith(".json"):
        return None
    data = load_json(path, kind="device-script results file")
    table = data.get("int8") if isinstance(data, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: int8 must be an object (the int8 scheme table), got {table!r}")
    return table


def _has_microbench_rows(path: str) -> bool:
    from hwtune._io import load_json

    data = load_json(path, kind="device-script results file")
    return bool(isinstance(data, dict) and data.get("results"))


def _write_int8_only(args: argparse.Namespace, int8: dict[str, Any]) -> int:
    """Results with only the int8 scheme (``--int8-schemes only``): the ``[int8]`` table into a copy
    of --base, no predictor fit."""
    from hwtune.device import load_profile
    from hwtune.int8_scheme import write_int8_table

    base = load_profile(args.base)
    if base.path is None:
        raise ConfigError(f"--base {args.base}: profile has no file to copy")
    path = write_int8_table(args.out, int8, base=base.path)
    if args.json:
        json.dump({"path": str(path), "calibration": None, "int8": int8}, sys.stdout, indent=1)
        print()
    else:
        print(f"wrote [int8] to {path}: scheme {int8['scheme']} ({int8.get('reason', '')}); [calibration] unchanged")
    return 0


def _run_host(args: argparse.Namespace) -> int:
    """``--host``: measure here, write the user host profile (``--base`` is always the bundled host)."""
    from hwtune.host_calibration import calibrate_host

    if args.base not in (None, "host"):
        raise ConfigError(f"--host calibrates this machine from the bundled 'host' profile; --base must be omitted, "
                          f"got {args.base!r}")
    done = calibrate_host(args.out, budget_s=args.budget_s, quick=args.quick, statistic=args.statistic or "min")
    if args.json:
        json.dump({"path": str(done.profile_path), "results": str(done.results_path), "seconds": done.seconds,
                   "calibration": done.table}, sys.stdout, indent=1)
        print()
        return 0
    print(f"wrote the host profile {done.profile_path} ({done.cases} micro-benchmarks in {done.seconds:.0f} s; "
          f"measurements in {done.results_path}); --device host uses it from now on")
    for line in calibration_lines(done.table):
        print(line)
    return 0
