"""``hwtune devices`` and ``hwtune devices show ID`` (and ``hwtune list-families``)."""

from __future__ import annotations

import argparse
from typing import Any

from hwtune.cli._output import format_bytes, print_json, print_table
from hwtune.cli.calibrate import calibration_lines
from hwtune.device import (
    DeviceProfile,
    calibrated_elsewhere,
    list_profiles,
    load_profile,
    profile_origin,
    user_profile_dir,
)

__all__ = ["add_parser", "predictor_lines"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "devices",
        help="list device profiles (bundled, and user profiles that shadow them), or show one",
        description=(
            "List the device profiles: the bundled ones and those in the user profile directory "
            "($XDG_CONFIG_HOME/hwtune/profiles, default ~/.config/hwtune/profiles), where a <id>.toml shadows the "
            "bundled profile of that id. The 'from' column says which file each id uses."
        ),
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    inner = p.add_subparsers(dest="devices_command", metavar="show")
    show = inner.add_parser("show", help="show one profile (bundled id or path to a .toml)")
    show.add_argument("device", metavar="ID", help="profile id (hwtune devices) or path to a profile .toml")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)

    fam = subparsers.add_parser("list-families", help="list the registered model families and their knobs")
    fam.add_argument("--json", action="store_true", help="machine-readable output (knobs and their legal values)")
    fam.set_defaults(func=run_families)


def _summary(p: DeviceProfile) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "latency_source": p.latency_source,
        "runtime": p.runtime,
        "cores": p.cores,
        "clock_ghz": p.clock_ghz,
        "ram_bytes": p.ram_bytes,
        "storage_bytes": p.storage_bytes,
        "precisions": list(p.precisions),
        "calibrated": p.calibration is not None,
        "origin": profile_origin(p),
        "path": str(p.path) if p.path is not None else None,
        "calibration_note": calibrated_elsewhere(p) or None,
    }


def _latency_label(p: DeviceProfile) -> str:
    if p.latency_source == "measure":
        return f"measured ({p.runtime})"
    if p.calibration is None:
        return "estimated (roofline, uncalibrated)"
    err = p.calibration.get("error_pct")
    elsewhere = calibrated_elsewhere(p)
    where = f"; {elsewhere}" if elsewhere else ""
    return f"predicted ({p.calibration.get('method')}, ±{err:.0f}%{where})" if err is not None else \
        f"predicted{f' ({elsewhere})' if elsewhere else ''}"


def predictor_lines(p: DeviceProfile) -> list[str]:
    """What a predicted latency on ``p`` is worth: the held-out error of its calibration, FLOPs' next to it.

    A profile without a calibration says so: its predictions are the uncalibrated roofline, with no
    measured error.
    """
    if not p.calibration:
        return [
            (
                "latency predictor: none calibrated -- predicted latency is the uncalibrated roofline from the spec "
                "sheet (peak throughput, bandwidth), with no held-out error; hwtune calibrate fits one"
            )
        ]
    use = (
        "used only where latency is predicted: this device is measured"
        if p.latency_source == "measure"
        else "every latency predicted for this device carries it"
    )
    lines = [f"latency predictor, held-out error ({use}):", *(f"  {line}" for line in calibration_lines(p.calibration))]
    elsewhere = calibrated_elsewhere(p)
    if elsewhere:
        lines.append(f"  {elsewhere}: its predictions describe that CPU; hwtune calibrate --host fits this one")
    return lines


def run(args: argparse.Namespace) -> int:
    if getattr(args, "devices_command", None) == "show":
        profile = load_profile(args.device)
        if args.json:
            print_json(profile.to_dict())
            return 0
        d = profile.to_dict()
        rows = [
            ("id", d["id"]), ("name", d["name"]), ("kind", d["kind"]), ("cpu", d["cpu_model"] or "-"),
            ("cores / threads", f"{d['cores']} / {d['threads']}"), ("clock", f"{d['clock_ghz']} GHz"),
            ("isa", ", ".join(d["isa"]) or "-"),
            ("peak", ", ".join(f"{k} {v:g} GFLOP/s" for k, v in d["peak_gflops"].items())),
            ("bandwidth", f"{d['bandwidth_gbps']} GB/s"), ("ram", format_bytes(d["ram_bytes"])),
            ("storage", format_bytes(d["storage_bytes"])), ("precisions", ", ".join(d["precisions"])),
            ("runtime", d["runtime"]), ("latency", _latency_label(profile)),
            ("from", f"{profile_origin(profile)}: {profile.path or '-'}"),
        ]
        if profile.calibration:
            rows.append(("calibration", str(profile.calibration.get("description", profile.calibration.get("method")))))
        for key, source in profile.sources.items():
            rows.append((f"source: {key}", source))
        print_table(("field", "value"), rows)
        print()
        for line in predictor_lines(profile):
            print(line)
        return 0
    profiles = [load_profile(name) for name in list_profiles()]
    if args.json:
        print_json([_summary(p) for p in profiles])
        return 0
    print_table(
        ("id", "kind", "cores", "clock", "ram", "storage", "precisions", "runtime", "latency", "from"),
        [
            (p.id, p.kind, p.cores, f"{p.clock_ghz:g} GHz", format_bytes(p.ram_bytes), format_bytes(p.storage_bytes),
             ",".join(p.precisions), p.runtime, _latency_label(p), _origin(p))
            for p in profiles
        ],
    )
    print(f"\nuser profiles: {user_profile_dir()} (a <id>.toml there shadows the bundled profile of that id)")
    return 0


def _origin(p: DeviceProfile) -> str:
    """``bundled`` or ``user: PATH`` (the file a user profile was read from)."""
    origin = profile_origin(p)
    return f"{origin}: {p.path}" if origin == "user" else origin


def run_families(args: argparse.Namespace) -> int:
    from hwtune.families import get_family, list_families

    rows = []
    for name in list_families():
        family = get_family(name)
        knobs = getattr(family, "knobs", {})
        rows.append({"family": name, "knobs": {k: list(v) if isinstance(v, (tuple, list)) else str(v)
                                                for k, v in dict(knobs).items()}})
    if args.json:
        print_json(rows)
    else:
        print_table(("family", "knobs"), [(r["family"], ", ".join(r["knobs"])) for r in rows])
    return 0
