"""What a profile's ``[calibration]`` table says, read once and cached per profile.

Keys read here (written by ``hwtune calibrate``; ``hwtune.device`` only checks ``method`` and
``error_pct``, so the predictor validates the rest):

* ``method``: ``microbench``, ``networks`` or ``spec``;
* ``form`` (+ ``executes``, ``form_coefficients``): the chosen form of ``_forms`` and its
  coefficients; absent = the per-op roofline (``coefficients`` tables) of micro-benchmark fits;
* stated error bars: ``error_pct``, ``spearman``, ``within_10pct`` (held-out when measured on
  networks the calibration never saw, else leave-one-out; ``validation`` says which) and
  ``flops_spearman`` (FLOPs on the same rows);
* ``batch_sizes``: the batches the measurements were taken at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.device import calibrated_elsewhere
from hwtune.errors import CalibrationError
from hwtune.precision import PrecisionPlan
from hwtune.predictor._features import NO_LOWERING, Lowering
from hwtune.predictor._fit import coefficients_from_table
from hwtune.predictor._forms import EXECUTES, FORMS, FormModel, form_column_names
from hwtune.predictor._model import Coefficients

if TYPE_CHECKING:
    from hwtune.device import DeviceProfile

__all__ = ["UNCALIBRATED_LABEL", "ProfileCalibration", "clear_caches", "label", "load_profile_cached",
           "profile_calibration"]

UNCALIBRATED_LABEL = "estimated (roofline, uncalibrated)"
# Runtimes that export a graph (dead ops pruned, BN and activations folded): "deployed" lowering.
EAGER_RUNTIMES = frozenset({"torch", "pytorch"})


@dataclass(frozen=True)
class ProfileCalibration:
    """A profile's calibration as the predictor uses it."""

    coefficients: Coefficients
    status: str
    method: str | None
    error_pct: float | None
    precisions: tuple[str, ...]
    lowering: Lowering = NO_LOWERING
    form: FormModel | None = None
    spearman: float | None = None
    within_10pct: float | None = None
    flops_spearman: float | None = None
    validation: str = ""
    batch_sizes: tuple[int, ...] = ()
    hardware_note: str = ""
    # "calibrated on AMD EPYC with AVX2, not this CPU (...)": a profile of this machine fitted on another CPU
    cpu_note: str = ""

    @property
    def form_name(self) -> str:
        return self.form.form if self.form is not None else "roofline"


_COEFF_CACHE: dict[tuple[str, str, str], ProfileCalibration] = {}
# profile object id -> (profile, its calibration): skips repr() of the table on repeated calls;
# the profile is held so its id cannot be reused while the entry exists
_CAL_BY_OBJECT: dict[int, tuple[Any, ProfileCalibration]] = {}
_PROFILE_CACHE: dict[Any, Any] = {}


def clear_caches() -> None:
    """Forget cached calibrations (after a profile file was rewritten)."""
    _COEFF_CACHE.clear()
    _CAL_BY_OBJECT.clear()


def _num(table: Mapping[str, Any], key: str) -> float | None:
    v = table.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def form_from_table(table: Mapping[str, Any], where: str) -> FormModel | None:
    """The ``form`` a calibration table states, validated; None for roofline tables."""
    form = table.get("form")
    if form is None or form == "roofline":
        return None
    problems = []
    if form not in FORMS:
        problems.append(f"{where}: calibration.form must be one of roofline, {', '.join(FORMS)}, got {form!r}")
    executes = table.get("executes", "deployed")
    if executes not in EXECUTES:
        problems.append(f"{where}: calibration.executes must be one of {', '.join(EXECUTES)}, got {executes!r}")
    coeffs = table.get("form_coefficients")
    if not isinstance(coeffs, Mapping):
        problems.append(f"{where}: calibration.form_coefficients must be a table of column = number, got {coeffs!r}")
        coeffs = {}
    names = form_column_names(form) if form in FORMS else ()
    for k, v in coeffs.items():
        if k not in names:
            problems.append(f"{where}: calibration.form_coefficients.{k}: not a column of form {form!r} "
                            f"(columns: {', '.join(names)})")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            problems.append(f"{where}: calibration.form_coefficients.{k} must be a number >= 0, got {v!r}")
    if problems:
        raise CalibrationError("\n".join(problems))
    return FormModel(str(form), str(executes), {str(k): float(v) for k, v in coeffs.items()})


def _from_table(profile: DeviceProfile, table: Mapping[str, Any]) -> ProfileCalibration:
    where = str(profile.path or profile.id)
    coeffs = coefficients_from_table(table, where) if table.get("coefficients") else Coefficients.spec()
    method = str(table.get("method"))
    status = "spec" if method == "spec" else "calibrated"
    batches = table.get("batch_sizes") or ()
    if not isinstance(batches, (list, tuple)) or not all(isinstance(b, int) and b > 0 for b in batches):
        raise CalibrationError(f"{where}: calibration.batch_sizes must be a list of integers > 0, got {batches!r}")
    return ProfileCalibration(
        coeffs, status, method, _num(table, "error_pct"), tuple(table.get("precisions") or ()),
        Lowering.from_table(table), form_from_table(table, where), _num(table, "spearman"),
        _num(table, "within_10pct"), _num(table, "flops_spearman"), str(table.get("validation", "")),
        tuple(int(b) for b in batches), _hardware_note(profile, table.get("hardware")),
        calibrated_elsewhere(profile),
    )


def _hardware_note(profile: DeviceProfile, snap: Any) -> str:
    """Why the calibration may not fit this profile any more ('' when its hardware is unchanged)."""
    if not isinstance(snap, Mapping):
        return ""
    diffs = []
    peaks = snap.get("peak_gflops") or {}
    for prec, v in peaks.items():
        now = profile.peak_gflops.get(prec)
        if isinstance(v, (int, float)) and now is not None and abs(float(now) / float(v) - 1.0) > 0.01:
            diffs.append(f"peak {prec} {v:g} -> {float(now):g} GFLOP/s")
    bw = snap.get("bandwidth_gbps")
    if isinstance(bw, (int, float)) and abs(float(profile.bandwidth_gbps) / float(bw) - 1.0) > 0.01:
        diffs.append(f"bandwidth {bw:g} -> {float(profile.bandwidth_gbps):g} GB/s")
    cpu = snap.get("cpu_model")
    if cpu and profile.cpu_model and cpu != profile.cpu_model:
        diffs.append(f"CPU {cpu!r} -> {profile.cpu_model!r}")
    if not diffs:
        return ""
    return ("the profile's hardware changed since calibration (" + "; ".join(diffs) + "): the coefficients are "
            "relative to the old numbers; re-calibrate on this device")


def profile_calibration(profile: DeviceProfile) -> ProfileCalibration:
    """The calibration ``predict`` uses for ``profile`` (spec priors when it has none)."""
    quick = _CAL_BY_OBJECT.get(id(profile))
    if quick is not None and quick[0] is profile:
        return quick[1]
    table = profile.calibration
    # the CPU note is part of the key: the same file reads differently on another CPU
    key = (profile.id + str(profile.path), repr(table), calibrated_elsewhere(profile))
    hit = _COEFF_CACHE.get(key)
    if hit is None:
        hit = _from_table(profile, table) if table else ProfileCalibration(
            Coefficients.spec(), "uncalibrated", None, None, ())
        _COEFF_CACHE[key] = hit
    if len(_CAL_BY_OBJECT) > 64:
        _CAL_BY_OBJECT.clear()
    _CAL_BY_OBJECT[id(profile)] = (profile, hit)
    return hit


def label(cal: ProfileCalibration, precision: PrecisionPlan) -> str:
    """The ``source`` text of a prediction."""
    if cal.status == "uncalibrated":
        return UNCALIBRATED_LABEL
    err = f"median error {cal.error_pct:.1f}%" if cal.error_pct is not None else "error not measured"
    if cal.spearman is not None:
        err += f", Spearman {cal.spearman:.3f}"
    if cal.status == "spec":
        return f"estimated (spec-derived {cal.form_name} model, uncalibrated; held-out {err})"
    extra = ""
    missing = [p for p in precision.precisions if cal.precisions and p not in cal.precisions]
    if missing:
        extra = f"; {', '.join(missing)} extrapolated from {', '.join(cal.precisions)}"
    form = f"{cal.form_name}/{cal.lowering.executes}" if cal.form is not None else cal.form_name
    cpu = f"; {cal.cpu_note}" if cal.cpu_note else ""
    return f"predicted (calibrated: {cal.method}, form {form}, {err}{extra}{cpu})"


def load_profile_cached(device: str | Path | DeviceProfile) -> DeviceProfile:
    """``load_profile`` memoised on the file's path and modification time (loading costs 5-15 ms)."""
    from hwtune.device import DeviceProfile, load_profile

    if isinstance(device, DeviceProfile):
        return device
    text = str(device)
    hit = _PROFILE_CACHE.get(text)
    if hit is not None:
        profile, mtime = hit
        try:
            if profile.path is not None and Path(profile.path).stat().st_mtime_ns == mtime:
                return profile
        except OSError:
            pass
    # a detected profile (this machine: cores, clock, ISA read at load time, ~15 ms) is cached
    # too: the hardware does not change while the process runs
    profile = load_profile(device)
    if profile.path is not None:
        _PROFILE_CACHE[text] = (profile, Path(profile.path).stat().st_mtime_ns)
    return profile
