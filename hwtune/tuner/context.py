"""The state one search run shares between its trials (settings, data, pipeline, counters)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.front import Objective, TrialRecord, cost_matrix
from hwtune.records import TrialFigures
from hwtune.tuner.config import Constraints, Schedule

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from hwtune.device import DeviceProfile
    from hwtune.space import SpaceLike
    from hwtune.tuner.pipeline import CandidatePipeline

__all__ = ["SearchContext"]


@dataclass
class SearchContext:
    """Everything a trial needs, plus the run's counters (duplicates, failures, stop reason)."""

    space: SpaceLike
    device: DeviceProfile
    data: Any
    objectives: tuple[Objective, ...]
    constraints: Constraints
    schedule: Schedule
    reference: dict[str, float]
    artifact_dir: Path
    seed: int | None
    dists: dict[str, tuple[list[Any], dict[Any, Any]]]
    pipeline: CandidatePipeline
    calibration: np.ndarray | None = None
    log: Callable[[str], None] = print
    consecutive_duplicates: int = 0
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    stop_reason: str | None = None
    threads: int | None = None
    deadline: float | None = None
    devices: list[DeviceProfile] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.devices:
            self.devices = [self.device]

    @property
    def measured(self) -> bool:
        """Latency on this device is measured here (not predicted)."""
        return self.device.latency_source == "measure"

    def calibration_batch(self) -> np.ndarray:
        """int8 calibration samples from the train split (drawn once per run, seeded)."""
        if self.calibration is None:
            from hwtune.data import calibration_batch

            n = min(self.schedule.calibration_samples, len(self.data.train))
            self.calibration = calibration_batch(self.data, n, seed=int(self.seed or 0))
        return self.calibration

    def values_for(self, figures: Mapping[str, Any]) -> list[float]:
        """The objective values Optuna is told for these figures."""
        vals = []
        for o in self.objectives:
            v = figures.get(o.attr)
            if v is None:
                # An unavailable accuracy is 0; an unavailable cost is the reference (worst), so it never looks good.
                v = 0.0 if o.maximize else self.reference.get(o.attr, 1e12)
            vals.append(float(v))
        return vals

    def rung_cost(self, accuracy: float, figures: Mapping[str, Any]) -> list[float]:
        """A candidate's normalized cost point at a rung: its rung accuracy and its (rung-independent) costs."""
        fig = dict(figures)
        fig["val_accuracy"] = accuracy
        # Compare candidates on the cheap-profile latency every candidate has when its rungs run; a
        # later re-measurement of a quantized file must not move old points.
        if fig.get("latency_profile_ms") is not None:
            fig["latency_ms"] = fig["latency_profile_ms"]
        rec = TrialRecord(number=-1, state="complete", figures=TrialFigures.from_dict(fig, where="trial -1"))
        return [float(x) for x in cost_matrix([rec], self.objectives, self.reference)[0]]
