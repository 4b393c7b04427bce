"""``hwtune calibrate``: fit the latency predictor to measurements and write it into a profile.

    hwtune calibrate RESULTS.json --base raspberry-pi-4 --out profiles/my-pi.toml
    hwtune calibrate --networks measurements.csv --base raspberry-pi-4 --out profiles/my-pi.toml
    hwtune calibrate --spec --base jetson-nano --out profiles/jetson-nano.toml
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hwtune.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="fit the latency predictor to device measurements and write a calibrated profile",
        description=(
            "Fit the latency predictor's coefficients and write them as the [calibration] table of a profile TOML "
            "(the rest of the file is kept as it is). RESULTS is the JSON/CSV that scripts/profile_device.py wrote "
            "on the device; --networks takes whole-network latencies instead (a CSV with columns latency_ms, "
            "input_shape and family+knobs or arch; 4-10 rows is the intended size)."
        ),
    )
    p.add_argument("results", nargs="?", help="micro-benchmark results from scripts/profile_device.py (.json or .csv)")
    p.add_argument("--networks", metavar="CSV", help="whole-network measurements instead of micro-benchmarks")
    p.add_argument("--spec", action="store_true", help="write spec-derived coefficients (no measurements)")
    p.add_argument("--spec-error-pct", type=float, default=None,
                   help="with --spec: typical error of spec coefficients to record (measured elsewhere)")
    p.add_argument("--base", required=True, help="profile to start from: bundled id or path to a .toml")
    p.add_argument("--out", required=True, help="profile TOML to write (may be the --base file itself)")
    p.add_argument("--description", default=None, help="one line describing the measurements")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="micro-benchmarks: fit the per-case median (quiet device, default) or the fastest run "
                        "(steadier when other jobs share the machine)")
    p.add_argument("--json", action="store_true", help="print the written [calibration] table as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from hwtune.predictor import calibrate_microbench, calibrate_networks, calibrate_spec

    modes = sum(bool(x) for x in (args.results, args.networks, args.spec))
    if modes != 1:
        raise ConfigError(
            "hwtune calibrate needs exactly one of RESULTS (micro-benchmarks), --networks CSV or --spec, got "
            f"{modes}")
    if args.results:
        report = calibrate_microbench(args.results, args.base, args.out, description=args.description,
                                      statistic=args.statistic)
    elif args.networks:
        report = calibrate_networks(args.networks, args.base, args.out, description=args.description)
    else:
        report = calibrate_spec(args.base, args.out, error_pct=args.spec_error_pct, description=args.description)
    t = report.table
    if args.json:
        json.dump({"path": str(report.path), "calibration": dict(t)}, sys.stdout, indent=1)
        print()
        return 0
    print(f"wrote [calibration] ({t['method']}, {t['n_samples']} samples) to {report.path}")
    if "error_pct" in t:
        extra = ""
        if "within_10pct" in t:
            extra = f", {t['within_10pct'] * 100:.0f}% within +-10%, Spearman {t.get('spearman')}"
        print(f"median error {t['error_pct']}%{extra} ({t.get('validation', '')})")
    if t.get("scales"):
        print("scales over the priors: " + ", ".join(f"{k} x{v}" for k, v in t["scales"].items()))
    return 0
