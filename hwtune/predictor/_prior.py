"""A latency prior learned across devices, and the calibration rule that is never below FLOPs by its own test.

Ten measured networks cannot fit a rich latency model, but they can *recognise* one: how a device
trades compute against per-kernel cost and memory traffic is shared by devices of its kind (HELP,
Lee et al., NeurIPS 2021, meta-learns it across devices). ``device_prior.json`` (next to this
module, shipped in the wheel) holds one reference direction per measured device setting: the
``per_op`` coefficients (``_forms.BASE_COLUMNS``) fitted on *all* of that device's NAS-Bench-201
latencies, in hardware-free units (ms per fp32 MAC, ms per byte, ms per kernel, ms). It is
written by ``benchmarks/bench_predictor.py --write-prior`` from ../shared/data/hw-nas-bench, never
typed in.

Calibrating a new device (:func:`choose_with_prior`) refits each reference direction with only a
scale and an intercept (two parameters per candidate, so ten rows suffice) and scores every
candidate leave-one-out on the calibration rows. The FLOPs-proportional form (``macs`` on the
eager lowering: ``a * MACs / peak + b``, which ranks networks exactly like FLOPs at one precision)
is the default; a reference direction replaces it only when it beats FLOPs leave-one-out on
*both* the mean absolute log error and the Spearman rank correlation of the left-out rows.
A device's own rows never inform its prior when it is evaluated (``DevicePrior.excluding``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwtune.errors import CalibrationError
from hwtune.predictor._forms import BASE_COLUMNS, FormModel, FormScore, _fit_model, loo_log_error
from hwtune.predictor._model import Hardware
from hwtune.predictor._numerics import error_stats, nnls

__all__ = ["PRIOR_FILE", "SPEC_KINDS", "DevicePrior", "PriorChoice", "ReferenceDevice", "choose_with_prior",
           "flops_column", "load_prior", "reference_direction", "spec_direction", "spec_theta"]

PRIOR_FILE = Path(__file__).with_name("device_prior.json")
PRIOR_SCHEMA = 1
FLOPS_PICK = "flops"
_COMPUTE = [i for i, c in enumerate(BASE_COLUMNS) if c.startswith("compute.")]
_MEMORY = BASE_COLUMNS.index("memory")


def _to_raw(theta: Sequence[float], hw: Hardware) -> list[float]:
    """Base-unit coefficients (compute per ideal ms at ``hw``'s peak) -> hardware-free units."""
    raw = [float(v) for v in theta]
    for i in _COMPUTE:
        raw[i] /= hw.peak_macs_per_ms["fp32"]
    raw[_MEMORY] /= hw.bytes_per_ms
    return raw


def _to_base(raw: Sequence[float], hw: Hardware) -> list[float]:
    theta = [float(v) for v in raw]
    for i in _COMPUTE:
        theta[i] *= hw.peak_macs_per_ms["fp32"]
    theta[_MEMORY] *= hw.bytes_per_ms
    return theta


@dataclass(frozen=True)
class ReferenceDevice:
    """One measured device setting's latency direction (hardware-free ``BASE_COLUMNS`` coefficients).

    Attributes:
        name: The setting (``gold_6240``, ``titan_rtx_32``, ``raspberry-pi-4``).
        device: The physical device (settings of one GPU at several batch sizes share it).
        kind: ``cpu``, ``phone``, ``gpu``, ``fpga`` or ``asic``.
        executes: The lowering the fit chose (``deployed`` or ``eager``).
        coefficients: Column -> coefficient in ms per fp32 MAC / byte / kernel / run.
        spearman: Its own fit's Spearman on all its rows (an upper bound, not a held-out figure).
        flops_spearman: FLOPs on the same rows.
        n: Rows it was fitted on.
    """

    name: str
    device: str
    kind: str
    executes: str
    coefficients: Mapping[str, float]
    spearman: float | None = None
    flops_spearman: float | None = None
    n: int = 0

    def base_theta(self, hw: Hardware) -> list[float]:
        return _to_base([float(self.coefficients.get(c, 0.0)) for c in BASE_COLUMNS], hw)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "kind": self.kind, "executes": self.executes,
                "coefficients": {k: float(f"{v:.6g}") for k, v in self.coefficients.items()},
                "spearman": self.spearman, "flops_spearman": self.flops_spearman, "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceDevice:
        return cls(str(data["name"]), str(data.get("device", data["name"])), str(data.get("kind", "?")),
                   str(data.get("executes", "deployed")),
                   {str(k): float(v) for k, v in dict(data["coefficients"]).items()},
                   data.get("spearman"), data.get("flops_spearman"), int(data.get("n", 0)))


@dataclass(frozen=True)
class DevicePrior:
    """Reference directions of measured devices (see the module docstring)."""

    devices: tuple[ReferenceDevice, ...]
    source: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)

    def excluding(self, devices: Iterable[str]) -> DevicePrior:
        """The prior without every setting of the named physical devices (leave-device-out)."""
        drop = set(devices)
        return DevicePrior(tuple(d for d in self.devices if d.device not in drop and d.name not in drop),
                           self.source + (f" (without {', '.join(sorted(drop))})" if drop else ""), self.spec)

    def of_kind(self, kinds: Iterable[str]) -> DevicePrior:
        keep = set(kinds)
        return DevicePrior(tuple(d for d in self.devices if d.kind in keep), self.source, self.spec)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": PRIOR_SCHEMA, "source": self.source, "columns": list(BASE_COLUMNS),
                "devices": [d.to_dict() for d in self.devices], "spec": dict(self.spec)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "device prior") -> DevicePrior:
        if data.get("schema_version") != PRIOR_SCHEMA:
            raise CalibrationError(
                f"{where}: schema_version must be {PRIOR_SCHEMA}, got {data.get('schema_version')!r}")
        try:
            devices = tuple(ReferenceDevice.from_dict(d) for d in data["devices"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}: malformed device entry ({exc})") from exc
        unknown = sorted({k for d in devices for k in d.coefficients} - set(BASE_COLUMNS))
        if unknown:
            raise CalibrationError(f"{where}: unknown coefficient column(s) {', '.join(unknown)}")
        spec = data.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise CalibrationError(f"{where}: 'spec' must be an object, got {spec!r}")
        return cls(devices, str(data.get("source", "")), dict(spec))


def load_prior(path: str | Path | None = None) -> DevicePrior:
    """The shipped prior (``device_prior.json``) or one from ``path``."""
    p = Path(path) if path is not None else PRIOR_FILE
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise CalibrationError(f"{p}: cannot read the device prior ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{p}: not JSON ({exc.msg}, line {exc.lineno})") from exc
    return DevicePrior.from_dict(data, str(p))


def reference_direction(
    vectors: Mapping[str, Any], y: Sequence[float], hw: Hardware, *, name: str, device: str, kind: str,
    flops: Sequence[float] | None = None,
) -> ReferenceDevice:
    """Fit one device's direction on all its rows: ``per_op`` for each lowering, the lower log error kept.

    ``vectors``: lowering -> base vectors (``_forms.base_vector`` at ``hw``) of the measured networks.
    """
    import numpy as np

    yy = np.asarray(y, float)
    best: tuple[float, str, list[float]] | None = None
    for ex, base in vectors.items():
        model = _fit_model("per_op", ex, np.asarray(base, float), yy, 0.01)
        theta = model.base_theta()
        err = loo_log_error(np.asarray(base, float) @ np.asarray(theta), yy)
        if best is None or err < best[0]:
            best = (err, ex, theta)
    assert best is not None
    _, ex, theta = best
    pred = np.asarray(vectors[ex], float) @ np.asarray(theta)
    rho = error_stats(pred, yy)[2]
    frho = error_stats(flops, yy)[2] if flops is not None else float("nan")
    raw = _to_raw(theta, hw)
    return ReferenceDevice(name, device, kind, ex, dict(zip(BASE_COLUMNS, raw)),
                           round(rho, 4) if math.isfinite(rho) else None,
                           round(frho, 4) if math.isfinite(frho) else None, len(yy))


def flops_column(base: Any) -> Any:
    """The FLOPs-proportional column: ideal compute ms of the eager lowering (all MACs / peak)."""
    import numpy as np

    return np.asarray(base, float)[:, _COMPUTE].sum(1)


def _fit_line(z: Any, y: Any) -> tuple[float, float]:
    """``y ~ a z + b`` (a, b >= 0) minimising squared relative error."""
    import numpy as np

    a = np.stack([z, np.ones(len(y))], 1) / y[:, None]
    s, b = nnls(a, np.ones(len(y)))
    return float(s), float(b)


def _loo_line(z: Any, y: Any) -> list[float]:
    import numpy as np

    out = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        s, b = _fit_line(z[keep], y[keep])
        out.append(s * float(z[i]) + b)
    return out


@dataclass(frozen=True)
class PriorChoice:
    """What ``choose_with_prior`` chose.

    Attributes:
        model: The fitted form written to the profile (``macs``/eager for FLOPs, else ``per_op``).
        pick: ``flops`` or the reference setting's name.
        chosen: Leave-one-out figures of the pick; ``flops``: the same for FLOPs.
        candidates: Name -> leave-one-out figures of every candidate (FLOPs included).
        reason: One line saying why.
    """

    model: FormModel
    pick: str
    chosen: FormScore
    flops: FormScore
    candidates: Mapping[str, FormScore] = field(repr=False)
    reason: str = ""


def _rho(score: FormScore) -> float:
    return score.loo_spearman if math.isfinite(score.loo_spearman) else -math.inf


def choose_with_prior(
    vectors: Mapping[str, Any], y: Sequence[float], hw: Hardware, prior: DevicePrior,
) -> PriorChoice:
    """Refit every reference direction (scale + intercept) and FLOPs; keep a direction only where it
    beats FLOPs leave-one-out on both log error and Spearman, the lowest log error among those.

    Args:
        vectors: ``deployed`` and ``eager`` -> base vectors of the calibration networks at ``hw``.
        y: Their measured latencies, ms.
        hw: The profile's hardware numbers (the base vectors' units).
        prior: Reference directions (already without the device being calibrated).
    """
    import numpy as np

    yy = np.asarray(y, float)
    cols: dict[str, tuple[str, Any]] = {FLOPS_PICK: ("eager", flops_column(vectors["eager"]))}
    thetas: dict[str, tuple[str, list[float]]] = {}
    for ref in prior.devices:
        if ref.executes not in vectors:
            continue
        theta = ref.base_theta(hw)
        thetas[ref.name] = (ref.executes, theta)
        cols[ref.name] = (ref.executes, np.asarray(vectors[ref.executes], float) @ np.asarray(theta))
    scores: dict[str, FormScore] = {}
    crit: dict[str, float] = {}
    for name, (ex, z) in cols.items():
        pred = _loo_line(z, yy)
        err, within, rho = error_stats(pred, yy)
        scores[name] = FormScore("macs" if name == FLOPS_PICK else f"prior:{name}", ex, err, within, rho,
                                 tuple(float(p) for p in pred))
        crit[name] = loo_log_error(pred, yy)
    fl = scores[FLOPS_PICK]
    better = [n for n in cols if n != FLOPS_PICK and crit[n] < crit[FLOPS_PICK] and _rho(scores[n]) >= _rho(fl)]
    pick = min(better, key=lambda n: crit[n]) if better else FLOPS_PICK
    ex, z = cols[pick]
    s, b = _fit_line(z, yy)
    if pick == FLOPS_PICK:
        model = FormModel("macs", "eager", {"compute": s, "intercept_ms": b})
        reason = (f"no reference device beat FLOPs leave-one-out on both log error and Spearman over {len(yy)} rows "
                  f"({len(cols) - 1} tried): FLOPs-proportional form kept")
    else:
        theta = [s * v for v in thetas[pick][1]]
        theta[-1] += b  # the intercept column
        model = FormModel("per_op", ex, dict(zip(BASE_COLUMNS, theta)))
        reason = (f"direction of {pick} (refitted scale and intercept) beat FLOPs leave-one-out over {len(yy)} rows: "
                  f"log error {crit[pick]:.3f} vs {crit[FLOPS_PICK]:.3f}, Spearman {scores[pick].loo_spearman:.3f} vs "
                  f"{fl.loo_spearman:.3f} ({len(better)} of {len(cols) - 1} reference devices did)")
    return PriorChoice(model, pick, scores[pick], fl, scores, reason)


SPEC_KINDS = ("cpu", "phone")


def spec_direction(prior: DevicePrior, kinds: Iterable[str] = SPEC_KINDS) -> dict[str, float]:
    """Mean direction of the prior's devices of ``kinds``, each normalised to a mean compute cost of 1
    (ms per fp32 MAC): dimensionless (MAC-equivalents per kernel, per byte, per run). The spec-only
    shape for a device of that kind."""
    import numpy as np

    rows = []
    for ref in prior.of_kind(kinds).devices:
        c = ref.coefficients
        comp = [c.get(BASE_COLUMNS[i], 0.0) for i in _COMPUTE if c.get(BASE_COLUMNS[i], 0.0) > 0]
        if comp:
            unit = float(np.mean(comp))
            rows.append([float(c.get(k, 0.0)) / unit for k in BASE_COLUMNS])
    if not rows:
        raise CalibrationError(f"device prior has no devices of kind {', '.join(kinds)}")
    return dict(zip(BASE_COLUMNS, (float(v) for v in np.mean(np.asarray(rows), 0))))


def spec_theta(direction: Mapping[str, float], compute_efficiency: float, hw: Hardware) -> list[float]:
    """Base-unit ``per_op`` coefficients of a spec direction on ``hw``: compute costs
    ``compute_efficiency`` x the ideal time at the datasheet peak, and every other column its
    MAC-equivalents at that speed."""
    ms_per_mac = compute_efficiency / hw.peak_macs_per_ms["fp32"]
    return _to_base([float(direction.get(c, 0.0)) * ms_per_mac for c in BASE_COLUMNS], hw)
