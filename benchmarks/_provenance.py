"""Where a benchmark figure came from: one dict every ``benchmarks/*.py`` stores under ``"machine"``.

    from _provenance import machine_info          # benchmarks/ is on sys.path when a script runs
    result = {"machine": machine_info(threads=1, packages=("onnxruntime",)), ...}

It records the CPU model and its ISA (the flags that pick kernels, and the AVX2 / AVX-512 / VNNI /
NEON families), the CPUs this process may use and the threads the benchmark timed with, the OS,
Python, hwtune and library versions, and the load average when it was called (call it again at
the end for the load after: ``machine_info()["loadavg"]``). A figure without this block cannot be
told apart from one measured on another machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from hwtune._util import versions
from hwtune.hostcpu import detect_cpu

__all__ = ["machine_info"]

REPO = Path(__file__).resolve().parent.parent

# 1-minute load average per usable CPU above which timings are called loaded (other jobs shared the cores).
LOADED_PER_CPU = 0.5


def machine_info(*, threads: int | None = None, packages: Iterable[str] = ()) -> dict[str, Any]:
    """The machine, software and load a benchmark ran with (JSON-ready).

    Args:
        threads: Threads the benchmark timed with (runtime intra-op threads); None when it does not time.
        packages: Extra distributions whose versions matter (torch, onnxruntime, onnx, optuna and numpy
            are always recorded when installed).
    """
    cpu = detect_cpu()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    loaded = load is not None and load[0] > LOADED_PER_CPU * usable
    return {
        "cpu_model": cpu.model,
        "isa": list(cpu.isa),
        "isa_families": cpu.families,
        "cpu_source": cpu.source,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "threads": threads,
        "platform": platform.platform(),
        "versions": versions(packages),
        "source": _source(),
        "loadavg": load,
        "load_note": (f"loaded: 1-min load {load[0]} on {usable} CPU(s) (other jobs shared the machine; "
                      "compare ratios measured in one run)") if loaded else
                     (f"quiet: 1-min load {load[0]} on {usable} CPU(s)" if load is not None else "load not available"),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _source() -> str:
    """``git <commit>`` of the checkout the benchmark ran from (``+ local changes`` when dirty), or why not."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout (git not available)"
    if head.returncode != 0:
        return "not a git checkout"
    return f"git {head.stdout.strip()}" + (" + local changes" if dirty.stdout.strip() else "")
