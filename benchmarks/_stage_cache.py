"""What the resumable benchmarks share: JSON stage results read back, written atomically, and each stage's
CPU (this process and its finished children) and wall seconds summed in ``<cache>/compute.json``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Self


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def write_json(obj: Any, path: Path) -> None:
    from hwtune._io import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


class Clock:
    """CPU and wall seconds of a stage, added to ``cache/compute.json`` (summed over resumed runs)."""

    def __init__(self, cache: Path, stage: str) -> None:
        self.path, self.stage = cache / "compute.json", stage

    @staticmethod
    def _cpu() -> float:
        t = os.times()  # this process and its finished children (hwtune measures latency in subprocesses)
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> Self:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        acc = read_json(self.path) or {}
        st = acc.setdefault(self.stage, {"wall_s": 0.0, "cpu_s": 0.0, "runs": 0})
        self.wall_s, self.cpu_s = time.perf_counter() - self.wall, self._cpu() - self.cpu  # this run's
        st["wall_s"] += self.wall_s
        st["cpu_s"] += self.cpu_s
        st["runs"] += 1
        st["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(acc, self.path)
