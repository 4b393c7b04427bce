"""Study results as plain values: trial records, the Pareto front, hypervolume, the knee.

Nothing here imports Optuna (``hwtune.tuner.storage.record_of`` converts Optuna's trials into :class:`TrialRecord`),
so reports, export and tests work on results loaded from JSON as well as from a live study.

Conventions
-----------
* Objectives have a direction; internally every objective is turned into a *normalized cost* to
  minimize: ``accuracy -> 1 - accuracy`` (error), ``latency_ms -> latency_ms / ref_latency_ms``,
  bytes likewise divided by their reference. The reference point is therefore ``(1, 1, ...)`` in
  cost space and the hypervolume is a fraction of the reference box (0 = nothing, 1 = a perfect
  model taking no time and no memory).
* The **reference point** is fixed per study when the study is created and stored with it, so the
  hypervolume of a study is comparable over time, across resumes and across methods given the same
  reference (``benchmarks/bench_search.py`` passes one reference to every method):
  ``accuracy = 0`` and, for latency and memory, the user's hard limit when one is given, otherwise
  twice the figure of the space's largest candidate (every knob at its largest value, fp32). A
  point worse than the reference in any objective adds nothing (``moocore`` ignores it).
* The **knee** is the front member closest (Euclidean) to the ideal point after scaling each
  objective's cost to the front's own range [best, worst]: the member where no objective is given
  up badly for another. On a convex two-objective front this is where the trade-off curve turns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwtune._util import jsonable as _jsonable
from hwtune.errors import ConfigError, did_you_mean
from hwtune.records import StudyMeta, TrialFigures

__all__ = [
    "OBJECTIVES",
    "SCHEMA_VERSION",
    "Objective",
    "TrialRecord",
    "TuneResult",
    "cost_matrix",
    "crowding_distance",
    "finalized_table",
    "front_json",
    "front_table",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "pareto_front",
    "promotion_order",
    "resolve_objectives",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Objective:
    """One search objective.

    Attributes:
        name: the user-facing name (``"accuracy"``, ``"latency"``, ``"memory"``, ``"size"``).
        attr: the trial figure it reads (``"val_accuracy"``, ``"latency_ms"``, ...).
        direction: ``"maximize"`` or ``"minimize"``.
        unit: unit of ``attr`` for labels.
    """

    name: str
    attr: str
    direction: str
    unit: str

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


OBJECTIVES: Mapping[str, Objective] = {
    # Accuracy of what ships (the quantized ONNX file for int8/fp16 candidates), on the validation split.
    "accuracy": Objective("accuracy", "val_accuracy", "maximize", "fraction"),
    "latency": Objective("latency", "latency_ms", "minimize", "ms"),
    # Working memory: peak bytes of simultaneously live activations at batch 1 (what must fit RAM/SRAM).
    "memory": Objective("memory", "peak_activation_bytes", "minimize", "bytes"),
    # Storage: weight bytes at the candidate's precision (what must fit flash).
    "size": Objective("size", "weight_bytes", "minimize", "bytes"),
}


def resolve_objectives(names: str | Sequence[str]) -> tuple[Objective, ...]:
    """Parse ``"accuracy,latency"`` or a sequence of names into objectives (all problems at once)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    problems: list[str] = []
    out: list[Objective] = []
    for name in names:
        obj = OBJECTIVES.get(name)
        if obj is None:
            problems.append(
                f"objectives: unknown objective {name!r}, expected one of {', '.join(OBJECTIVES)}"
                + did_you_mean(name, OBJECTIVES)
            )
        elif obj in out:
            problems.append(f"objectives: {name!r} given twice")
        else:
            out.append(obj)
    if not problems and "accuracy" not in [o.name for o in out]:
        problems.append(
            "objectives: must include 'accuracy' (a search without it would pick the smallest untrained net)"
        )
    if not problems and len(out) < 2:
        problems.append(f"objectives: need at least two (accuracy and one cost), got {', '.join(o.name for o in out)}")
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(out)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as plain values.

    Attributes:
        number: the Optuna trial number.
        state: ``"complete"``, ``"fail"``, ``"running"``, ``"waiting"`` or ``"pruned"``.
        figures: every measured figure (the trial's user attributes): ``candidate``, ``precision``,
            ``macs``, ``params``, ``weight_bytes``, ``peak_activation_bytes``, ``latency_ms``,
            ``latency_source``, ``latency`` (CI, runtime...), ``val_accuracy``, ``accuracy_by_precision``,
            ``rungs``, ``budget_epochs``, ``trained``, ``wall_seconds``, ``failure``...
        constraints: constraint name -> value; the trial is feasible when every value is <= 0.
        values: the objective values Optuna was told (``None`` unless complete).
        started / finished: ISO timestamps (``None`` when unknown).
    """

    number: int
    state: str
    figures: TrialFigures = field(default_factory=TrialFigures)
    constraints: Mapping[str, float] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    started: str | None = None
    finished: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.figures, TrialFigures):
            object.__setattr__(
                self, "figures", TrialFigures.from_dict(self.figures, where=f"trial {self.number}")
            )

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def feasible(self) -> bool:
        return self.complete and all(v <= 0.0 for v in self.constraints.values())

    @property
    def trained(self) -> bool:
        return bool(self.figures.trained)

    @property
    def duplicate_of(self) -> int | None:
        return self.figures.duplicate_of

    @property
    def candidate(self) -> dict[str, Any] | None:
        c = self.figures.candidate
        return None if c is None else dict(c)

    @property
    def candidate_key(self) -> str | None:
        return self.figures.candidate_key

    @property
    def precision(self) -> str | None:
        return self.figures.precision

    @property
    def accuracy(self) -> float | None:
        v = self.figures.val_accuracy
        return None if v is None else float(v)

    @property
    def latency_ms(self) -> float | None:
        v = self.figures.latency_ms
        return None if v is None else float(v)

    @property
    def latency_source(self) -> str | None:
        return self.figures.latency_source

    @property
    def failure(self) -> str | None:
        return self.figures.failure

    def value(self, objective: Objective) -> float | None:
        v = getattr(self.figures, objective.attr)
        return None if v is None else float(v)

    def for_device(self, device_id: str) -> TrialRecord:
        """This trial with ``device_id``'s latency, memory and constraints (multi-device studies)."""
        per = (self.figures.per_device or {}).get(device_id)
        if per is None:
            return self
        return replace(self, figures=self.figures.for_device(device_id), constraints=dict(per.constraints or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "feasible": self.feasible,
            "constraints": dict(self.constraints),
            "values": None if self.values is None else list(self.values),
            "started": self.started,
            "finished": self.finished,
            "figures": self.figures.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        values = data.get("values")
        return cls(
            number=int(data["number"]),
            state=str(data["state"]),
            figures=TrialFigures.from_dict(data.get("figures"), where=f"trial {data.get('number')}"),
            constraints={str(k): float(v) for k, v in (data.get("constraints") or {}).items()},
            values=None if values is None else tuple(float(v) for v in values),
            started=data.get("started"),
            finished=data.get("finished"),
        )




# ---------------------------------------------------------------------------------------------
# Pure front logic
# ---------------------------------------------------------------------------------------------


def _eligible(records: Iterable[TrialRecord], objectives: Sequence[Objective]) -> list[TrialRecord]:
    """Feasible, trained, complete, not a duplicate, with every objective figure present."""
    out = []
    for r in records:
        if not (r.feasible and r.trained) or r.duplicate_of is not None:
            continue
        values = [r.value(o) for o in objectives]
        if any(v is None or not math.isfinite(v) for v in values):
            continue
        out.append(r)
    return out


def _figure(record: TrialRecord, objective: Objective) -> float:
    value = record.value(objective)
    if value is None:
        raise ConfigError(f"trial #{record.number} has no {objective.attr}: cost_matrix takes eligible trials only")
    return value


def cost_matrix(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], reference: Mapping[str, float]
) -> np.ndarray:
    """Normalized costs (n, k) to minimize; the reference point maps to ``(1, ..., 1)``.

    ``reference`` maps each objective's ``attr`` to its reference value (``val_accuracy`` -> 0.0,
    ``latency_ms`` -> ms, bytes -> bytes).
    """
    cols = []
    for o in objectives:
        vals = np.asarray([_figure(r, o) for r in records], dtype=np.float64)
        ref = float(reference[o.attr])
        if o.maximize:
            # accuracy in [0, 1]: cost = (1 - acc) / (1 - ref), i.e. error when ref = 0.
            cols.append((1.0 - vals) / (1.0 - ref))
        else:
            cols.append(vals / ref)
    if not cols:
        return np.zeros((len(records), 0))
    return np.stack(cols, axis=1) if len(records) else np.zeros((0, len(objectives)))


def _nondominated_mask(costs: np.ndarray) -> np.ndarray:
    if len(costs) == 0:
        return np.zeros(0, dtype=bool)
    import moocore

    return np.asarray(moocore.is_nondominated(costs, keep_weakly=True), dtype=bool)


def pareto_front(
    records: Iterable[TrialRecord], objectives: Sequence[Objective], reference: Mapping[str, float] | None = None
) -> list[TrialRecord]:
    """Feasible, trained, non-dominated trials, sorted by the first cost objective (e.g. latency) ascending.

    Duplicate trials (a resumed or repeated suggestion of an already-evaluated candidate) are left
    out; among trials with identical objective values the lowest trial number is kept.
    """
    pool = _eligible(records, objectives)
    if not pool:
        return []
    ref = reference or {o.attr: (0.0 if o.maximize else 1.0) for o in objectives}
    costs = cost_matrix(pool, objectives, ref)
    mask = _nondominated_mask(costs)
    front = [r for r, keep in zip(pool, mask, strict=True) if keep]
    # keep_weakly keeps exact ties; drop all but the first trial of each tie.
    seen: set[tuple[float, ...]] = set()
    unique = []
    for r in sorted(front, key=lambda t: t.number):
        key = tuple(round(float(r.value(o)), 12) for o in objectives)  # type: ignore[arg-type]
        if key not in seen:
            seen.add(key)
            unique.append(r)
    sort_obj = next((o for o in objectives if not o.maximize), objectives[0])
    return sorted(unique, key=lambda t: (float(t.value(sort_obj)) * (-1 if sort_obj.maximize else 1), t.number))  # type: ignore[arg-type]


def hypervolume(
    records: Iterable[TrialRecord], objectives: Sequence[Objective], reference: Mapping[str, float]
) -> float:
    """Hypervolume of the feasible trained trials (fraction of the reference box, via ``moocore``)."""
    pool = _eligible(records, objectives)
    if not pool:
        return 0.0
    costs = cost_matrix(pool, objectives, reference)
    return _hv(costs)


def _hv(costs: np.ndarray) -> float:
    if len(costs) == 0:
        return 0.0
    import moocore

    # Points worse than the reference in any objective contribute nothing; moocore skips them.
    inside = np.all(costs < 1.0, axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(costs[inside], ref=np.ones(costs.shape[1])))


def hypervolume_history(
    records: Iterable[TrialRecord],
    objectives: Sequence[Objective],
    reference: Mapping[str, float],
    *,
    start: str | None = None,
) -> list[tuple[float, float, int]]:
    """Hypervolume after each finished trial: ``[(seconds since start, hv, trials finished), ...]``.

    ``start`` is an ISO timestamp (default: the earliest trial start). Trials without a finish time
    are skipped.
    """
    from datetime import datetime

    recs = [r for r in records if r.finished is not None and r.state in ("complete", "fail", "pruned")]
    if not recs:
        return []
    t0 = datetime.fromisoformat(start) if start else min(datetime.fromisoformat(r.started or r.finished) for r in recs)  # type: ignore[arg-type]
    recs.sort(key=lambda r: r.finished)  # type: ignore[arg-type, return-value]
    out: list[tuple[float, float, int]] = []
    eligible_ids = {id(r) for r in _eligible(recs, objectives)}
    pts: list[np.ndarray] = []
    for n, r in enumerate(recs, start=1):
        if id(r) in eligible_ids:
            pts.append(cost_matrix([r], objectives, reference)[0])
        hv = _hv(np.stack(pts)) if pts else 0.0
        out.append(((datetime.fromisoformat(r.finished) - t0).total_seconds(), hv, n))  # type: ignore[arg-type]
    return out


def knee_point(front: Sequence[TrialRecord], objectives: Sequence[Objective]) -> TrialRecord | None:
    """The front member closest to the ideal point after scaling each cost to the front's range."""
    if not front:
        return None
    ref = {o.attr: (0.0 if o.maximize else 1.0) for o in objectives}
    costs = cost_matrix(list(front), objectives, ref)
    lo, hi = costs.min(axis=0), costs.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    dist = np.linalg.norm((costs - lo) / span, axis=1)
    best = min(range(len(front)), key=lambda i: (round(float(dist[i]), 12), front[i].number))
    return front[best]


def crowding_distance(costs: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within ``costs`` (boundary points get ``inf``)."""
    costs = np.asarray(costs, dtype=float)
    n, k = costs.shape if costs.ndim == 2 else (len(costs), 0)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(costs[:, j], kind="stable")
        lo, hi = costs[order[0], j], costs[order[-1], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if hi - lo <= 0:
            continue
        dist[order[1:-1]] += (costs[order[2:], j] - costs[order[:-2], j]) / (hi - lo)
    return dist


def promotion_order(costs: Sequence[Sequence[float]]) -> list[int]:
    """Indices of ``costs`` (to minimize) best first: non-dominated rank, then crowding distance.

    This is NSGA-II's survival order, used by the successive-halving schedule (as in MO-ASHA,
    Schmucker et al. 2021) to pick the top ``1/eta`` of a rung: the rung's Pareto front first,
    spread along it (extremes first) so the promoted candidates cover the whole trade-off.
    """
    arr = np.asarray(costs, dtype=float)
    if len(arr) == 0:
        return []
    import moocore

    ranks = np.asarray(moocore.pareto_rank(arr), dtype=int)
    crowd = np.zeros(len(arr))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        crowd[idx] = crowding_distance(arr[idx])
    return sorted(range(len(arr)), key=lambda i: (int(ranks[i]), -float(crowd[i]), i))


# ---------------------------------------------------------------------------------------------
# TuneResult
# ---------------------------------------------------------------------------------------------


def _short_stages(stages: Mapping[str, Any]) -> str:
    """A compression candidate as ``stage1 0.5w int8, stage2 0.75w d1 int8, head 1w fp32``."""
    parts = []
    for name, ch in stages.items():
        if not isinstance(ch, Mapping):
            return str(dict(stages))
        depth = ch.get("depth")
        depth_text = f" d{depth}" if isinstance(depth, int) and depth > 0 else ""
        width = ch.get("width")
        width_text = f" {width:g}w" if isinstance(width, (int, float)) else ""
        parts.append(f"{name}{width_text}{depth_text} {ch.get('precision', '?')}")
    return ", ".join(parts)


def _short_candidate(cand: Mapping[str, Any] | None) -> str:
    if not cand:
        return "-"
    if cand.get("kind") == "compress" and isinstance(cand.get("stages"), Mapping):
        return _short_stages(cand["stages"])
    knobs = cand.get("knobs")
    items: Iterable[tuple[Any, Any]]
    if isinstance(knobs, Mapping):
        items = knobs.items()
    elif isinstance(knobs, (list, tuple)):
        items = [(k, v) for k, v in knobs]
    else:
        return str(cand)

    def fmt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "/".join(str(x) for x in v)
        return str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in items)


def _fmt_bytes(n: Any) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "KiB", "MiB"):
        if v < 1024 or unit == "MiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} MiB"  # pragma: no cover


def _front_row(r: TrialRecord) -> dict[str, Any]:
    f = r.figures
    return {
        "number": r.number,
        "candidate": r.candidate,
        "precision": r.precision,
        "accuracy": r.accuracy,
        "latency_ms": r.latency_ms,
        "latency_source": r.latency_source,
        "latency": f.latency,
        "peak_activation_bytes": f.peak_activation_bytes,
        "weight_bytes": f.weight_bytes,
        "macs": f.macs,
        "params": f.params,
        "budget_epochs": f.budget_epochs,
        "rung": f.rung,
        "accuracy_by_precision": f.accuracy_by_precision,
        "finalized": f.finalized,
    }


def front_json(front: Sequence[TrialRecord], knee: TrialRecord | None) -> list[dict[str, Any]]:
    """The front as JSON-ready rows, knee first, then by the first cost objective."""
    ordered = ([knee] if knee is not None else []) + [r for r in front if knee is None or r.number != knee.number]
    rows = []
    for r in ordered:
        row = _front_row(r)
        row["knee"] = knee is not None and r.number == knee.number
        rows.append(_jsonable(row))
    return rows


def front_table(front: Sequence[TrialRecord], knee: TrialRecord | None = None, *, markdown: bool = False) -> str:
    """The front as an aligned text table (or a Markdown table), knee marked with ``*``."""
    headers = [
        "",
        "trial",
        "precision",
        "val acc",
        "latency ms",
        "source",
        "peak act",
        "weights",
        "MMACs",
        "epochs",
        "candidate",
    ]
    rows = []
    for r in front:
        f = r.figures
        src = (r.latency_source or "-").split(" ")[0]
        rows.append(
            [
                "*" if knee is not None and r.number == knee.number else "",
                str(r.number),
                r.precision or "-",
                "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%",
                "-" if r.latency_ms is None else f"{r.latency_ms:.3f}",
                src,
                _fmt_bytes(f.peak_activation_bytes),
                _fmt_bytes(f.weight_bytes),
                "-" if f.macs is None else f"{f.macs / 1e6:.2f}",
                "-" if f.budget_epochs is None else f"{float(f.budget_epochs):.2g}",
                _short_candidate(r.candidate),
            ]
        )
    if not rows:
        return "(empty front: no feasible trained trial yet)"
    return _table(headers, rows, markdown=markdown)


def finalized_table(front: Sequence[TrialRecord], search: Sequence[TrialRecord], *, markdown: bool = False) -> str:
    """Finalized trials: search vs final validation accuracy, final test accuracy, latency, size."""
    by_number = {t.number: t for t in search}
    headers = ["trial", "precision", "search val", "final val", "final test", "latency ms", "params", "epochs"]
    rows = []
    for r in front:
        f = r.figures.finalized or {}
        before = by_number.get(r.number, r).accuracy
        test = f.get("test_accuracy")
        rows.append(
            [
                str(r.number),
                r.precision or "-",
                "-" if before is None else f"{100 * before:.2f}%",
                f"{100 * float(f['val_accuracy']):.2f}%" + ("" if f.get("val_held_out", True) else " (trained on)"),
                "-" if test is None else f"{100 * float(test):.2f}%",
                "-" if r.latency_ms is None else f"{r.latency_ms:.3f}",
                "-" if r.figures.params is None else f"{r.figures.params:,}",
                f"{float(f.get('epochs') or 0):g}",
            ]
        )
    if not rows:
        return "(no finalized trial: hwtune finalize)"
    return _table(headers, rows, markdown=markdown)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    if markdown:
        head = "| " + " | ".join(h or "knee" for h in headers) + " |"
        sep = "|" + "|".join("---" for _ in headers) + "|"
        body = ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join([head, sep, *body])
    cells = [list(headers), *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class TuneResult:
    """What a search produced: every trial, the front, its hypervolume and knee.

    Attributes:
        study_name: the Optuna study name.
        storage: the storage URL (``sqlite:///...`` by default).
        out_dir: the run directory (reports, artifacts), if any.
        device: device profile id.
        recipe: the search-space recipe (name or path).
        objectives: objective names, in Optuna's order.
        reference_point: objective figure -> reference value for the hypervolume.
        constraints: the user's hard limits (``max_latency_ms``, ``max_ram_bytes``, ``max_storage_bytes``, ``max_params``).
        trials: every trial of the study.
        interrupted: the run stopped on Ctrl-C (the front is what finished before).
        meta: everything else stored with the study (budget, data spec, sampler, versions...).
    """

    study_name: str
    storage: str
    out_dir: Path | None
    device: str
    recipe: str
    objectives: tuple[str, ...]
    reference_point: Mapping[str, float]
    constraints: Mapping[str, float] = field(default_factory=dict)
    trials: tuple[TrialRecord, ...] = ()
    interrupted: bool = False
    meta: StudyMeta = field(default_factory=StudyMeta)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.meta, StudyMeta):
            object.__setattr__(self, "meta", StudyMeta.from_dict(self.meta, where=f"study {self.study_name}"))

    @property
    def devices(self) -> list[str]:
        """Device ids of the study, primary first (one unless it was a multi-device search)."""
        ids = self.meta.device_ids
        return ids if ids and ids[0] != "?" else [self.device]

    def for_device(self, device_id: str) -> TuneResult:
        """The study seen from one of its devices: that device's latency, memory, constraints and front."""
        if device_id not in self.devices:
            from hwtune.errors import UnknownNameError

            raise UnknownNameError(
                f"study {self.study_name!r} has no device {device_id!r}{did_you_mean(device_id, self.devices)} "
                f"(devices: {', '.join(self.devices)})"
            )
        if device_id == self.device:
            return self
        ref = dict(self.reference_point)
        per_ref = (self.meta.reference_points or {}).get(device_id)
        if per_ref:
            ref = {str(k): float(v) for k, v in per_ref.items()}
        return replace(self, device=device_id, reference_point=ref)

    @property
    def objective_specs(self) -> tuple[Objective, ...]:
        return resolve_objectives(self.objectives)

    @property
    def device_trials(self) -> tuple[TrialRecord, ...]:
        """The trials with this result's device's figures and constraints (multi-device studies)."""
        return tuple(t.for_device(self.device) for t in self.trials)

    @property
    def front(self) -> list[TrialRecord]:
        """Feasible, trained, non-dominated trials, fastest first."""
        return pareto_front(self.device_trials, self.objective_specs, self.reference_point)

    @property
    def knee(self) -> TrialRecord | None:
        return knee_point(self.front, self.objective_specs)

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.device_trials, self.objective_specs, self.reference_point)

    def hypervolume_history(self) -> list[tuple[float, float, int]]:
        return hypervolume_history(self.device_trials, self.objective_specs, self.reference_point)

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        from hwtune.errors import StudyError

        numbers = [t.number for t in self.trials]
        span = f"{min(numbers)}..{max(numbers)}" if numbers else "none"
        raise StudyError(f"study {self.study_name!r} has no trial {number} (trials: {span})")

    def counts(self) -> dict[str, int]:
        """Trials by outcome: complete, trained, infeasible, failed, duplicates, running."""
        c = {
            "total": len(self.trials),
            "complete": 0,
            "trained": 0,
            "infeasible": 0,
            "failed": 0,
            "duplicates": 0,
            "running": 0,
        }
        for t in self.device_trials:
            if t.state == "complete":
                c["complete"] += 1
                if t.duplicate_of is not None:
                    c["duplicates"] += 1
                elif not t.feasible:
                    c["infeasible"] += 1
                elif t.trained:
                    c["trained"] += 1
            elif t.state == "fail":
                c["failed"] += 1
            elif t.state in ("running", "waiting"):
                c["running"] += 1
        return c

    @property
    def finalized_front(self) -> list[TrialRecord]:
        """Finalized trials (``hwtune finalize``) with their final figures, non-dominated among them."""
        final = []
        for t in self.device_trials:
            f = t.figures.finalized
            if not f or f.get("val_accuracy") is None:
                continue
            changes: dict[str, Any] = {"val_accuracy": float(f["val_accuracy"])}
            if f.get("latency_ms") is not None:
                changes["latency_ms"] = float(f["latency_ms"])
            final.append(replace(t, figures=t.figures.updated(**changes)))
        return pareto_front(final, self.objective_specs, self.reference_point)

    def front_table(self, *, markdown: bool = False, finalized: bool = False) -> str:
        """The front as a text table, fastest first, knee marked ``*`` (``finalized``: the finalized front)."""
        if finalized:
            return finalized_table(self.finalized_front, self.trials, markdown=markdown)
        return front_table(self.front, self.knee, markdown=markdown)

    def front_json(self) -> list[dict[str, Any]]:
        """The front as JSON rows, knee first."""
        return front_json(self.front, self.knee)

    def to_dict(self) -> dict[str, Any]:
        front = self.front
        knee = knee_point(front, self.objective_specs)
        return _jsonable(
            {
                "schema_version": self.schema_version,
                "study_name": self.study_name,
                "storage": self.storage,
                "out_dir": None if self.out_dir is None else str(self.out_dir),
                "device": self.device,
                "recipe": self.recipe,
                "objectives": list(self.objectives),
                "reference_point": dict(self.reference_point),
                "constraints": dict(self.constraints),
                "interrupted": self.interrupted,
                "hypervolume": self.hypervolume,
                "counts": self.counts(),
                "knee": None if knee is None else knee.number,
                "front": front_json(front, knee),
                "trials": [t.to_dict() for t in self.trials],
                "meta": self.meta.to_dict(),
            }
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuneResult:
        out_dir = data.get("out_dir")
        return cls(
            study_name=str(data["study_name"]),
            storage=str(data["storage"]),
            out_dir=None if out_dir is None else Path(out_dir),
            device=str(data["device"]),
            recipe=str(data["recipe"]),
            objectives=tuple(data["objectives"]),
            reference_point={str(k): float(v) for k, v in data["reference_point"].items()},
            constraints={str(k): float(v) for k, v in (data.get("constraints") or {}).items()},
            trials=tuple(TrialRecord.from_dict(t) for t in data.get("trials", ())),
            interrupted=bool(data.get("interrupted", False)),
            meta=StudyMeta.from_dict(data.get("meta"), where=f"study {data.get('study_name')}"),
        )

    def with_trials(self, trials: Iterable[TrialRecord], **changes: Any) -> TuneResult:
        return replace(self, trials=tuple(trials), **changes)
