"""Calibrate this machine: run the device script here and write a user ``host`` profile.

``hwtune calibrate --host`` calls :func:`calibrate_host`. It measures the micro-benchmark suite of
:mod:`hwtune.device_script` on this CPU (time-bounded: the per-case budget is the total budget
spread over the suite), fits the predictor with the same code as ``hwtune calibrate RESULTS``, and
writes ``<user profile dir>/host.toml`` (atomically, from the bundled ``host.toml``), which shadows the
bundled profile from then on: ``--device host`` predictions describe this CPU, and the calibration
records the CPU and ISA it was fitted on. The raw measurements are kept next to it
(``host_microbench.json``), which the profile's ``calibration.source`` names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hwtune._io import atomic_output
from hwtune.device import load_profile, profile_files, user_profile_dir
from hwtune.errors import CalibrationError, ConfigError

__all__ = ["HostCalibration", "calibrate_host"]

# Sessions are built before timing starts (15 ms each on a quiet 2-core EPYC, 50 ms at load 10); timing
# then gets what is left, less a share for the device script's fixed costs (its int8 scheme probe,
# loading onnxruntime). Each case also pays warm-up runs and a minimum run count in each of its two
# passes: measured 1.3x (quiet) to 1.6x (load 10) its timing budget. A full run with --budget-s 120
# took 206 s at load 10 on 2 cores (521 cases).
_BUILD_S_PER_CASE = 0.03
_TIMED_SHARE = 0.85
_CASE_OVERHEAD = 1.3
# Each case runs at least the device script's minimum number of runs, so small budgets overshoot a little.
_MIN_CASE_BUDGET_S = 0.01
MIN_BUDGET_S = 2.0


@dataclass(frozen=True)
class HostCalibration:
    """What ``calibrate_host`` measured and wrote."""

    profile_path: Path
    results_path: Path
    cases: int
    seconds: float
    table: dict


def calibrate_host(
    out: str | Path | None = None,
    *,
    budget_s: float = 120.0,
    quick: bool = False,
    statistic: str = "min",
    say: Callable[[str], None] | None = None,
) -> HostCalibration:
    """Measure this machine with the device script and write a calibrated ``host`` profile.

    Args:
        out: Profile TOML to write (default ``<user profile dir>/host.toml``, which shadows the bundled one).
        budget_s: Total time for the measurement, seconds (the per-case budget is derived from it).
        quick: Every 6th case of the suite only (a smoke test; a coarser fit).
        statistic: ``min`` (fastest run: steady on a machine other jobs share, the default) or ``median``.
        say: Progress lines (default: stderr).

    Raises:
        ConfigError: a budget below ``MIN_BUDGET_S`` or an unwritable destination.
        CalibrationError: the measurements are too few to fit.
    """
    from hwtune.device_script import build_suite
    from hwtune.device_script import main as run_device_script
    from hwtune.predictor import calibrate_microbench

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not budget_s >= MIN_BUDGET_S:
        raise ConfigError(f"--budget-s must be >= {MIN_BUDGET_S:g} seconds for --host, got {budget_s!r}")
    base = load_profile(profile_files(user=False)["host"])
    target = Path(out) if out is not None else user_profile_dir() / "host.toml"
    precisions = tuple(p for p in ("fp32", "int8") if base.supports(p))  # what the device script measures
    cases = len(build_suite(precisions, "quick" if quick else "full"))
    per_case = max(_MIN_CASE_BUDGET_S,
                   (_TIMED_SHARE * budget_s - cases * _BUILD_S_PER_CASE) / (cases * _CASE_OVERHEAD))
    say(f"measuring this machine: {cases} micro-benchmarks, {base.threads} thread(s), about {budget_s:.0f} s "
        f"({per_case * 1e3:.0f} ms per case; keep the machine otherwise idle)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * (os.cpu_count() or 1):
        say(f"note: load average {load:.1f} on {os.cpu_count()} CPU(s): other jobs share this machine, so this takes "
            "longer than the budget and the timings are noisier (the fit uses each case's fastest run)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwtune-host-cal-") as tmp:
        raw = Path(tmp) / "host_microbench.json"
        # the host's int8 scheme is measured at first use and cached per CPU and runtime (hwtune.int8_scheme),
        # not stored in the profile: the device script's own scheme probe is skipped here
        argv = ["--out", str(raw), "--threads", str(base.threads), "--budget-s", f"{per_case:.4f}",
                "--precisions", ",".join(precisions), "--int8-schemes", "no"]
        with contextlib.redirect_stdout(sys.stderr):  # its progress and summary lines are progress here
            rc = run_device_script([*argv, "--quick"] if quick else argv)
        if rc != 0 or not raw.is_file():
            raise CalibrationError(f"the device script failed on this machine (exit {rc}); nothing written")
        seconds = time.perf_counter() - start
        results = target.parent / "host_microbench.json"
        with atomic_output(results, what="host micro-benchmark results") as dst:
            shutil.copyfile(raw, dst)
    say(f"measured {cases} cases in {seconds:.0f} s; fitting the predictor")
    report = calibrate_microbench(results, base, target, statistic=statistic)
    return HostCalibration(Path(report.path), results, cases, seconds, dict(report.table))
