"""``calibrate_*``: fit the predictor to measurements and write the ``[calibration]`` table of a profile.

* :func:`calibrate_networks` -- a few whole-network latencies (4-10 rows is the intended size):
  chooses the model form by leave-one-out (``_forms.py``) and records the figures of every form
  and of FLOPs alone;
* :func:`calibrate_microbench` -- ``scripts/profile_device.py`` micro-benchmarks: the per-op
  roofline (``_fit.fit_microbench``), 5-fold cross-validated;
* :func:`calibrate_spec` -- no measurements: the MACs form with efficiencies measured on other
  devices, and the error measured leave-device-out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import CalibrationError, ConfigError
from hwtune.predictor._features import COMPUTE_OPS, NO_LOWERING, LayerFeatures, Lowering
from hwtune.predictor._fit import (
    choose_lowering,
    detect_lowering,
    fit_microbench,
    microbench_samples,
    read_microbench,
    read_networks_csv,
)
from hwtune.predictor._forms import BASE_COLUMNS, FORMS, base_vector, choose_form
from hwtune.predictor._model import Coefficients, Hardware
from hwtune.predictor._model_features import model_features
from hwtune.predictor._prior import FLOPS_PICK, DevicePrior, choose_with_prior, load_prior, spec_theta
from hwtune.predictor._stored_calibration import EAGER_RUNTIMES, clear_caches, profile_calibration
from hwtune.predictor._toml import replace_table

if TYPE_CHECKING:
    from hwtune.device import DeviceProfile

__all__ = ["CalibrationReport", "calibrate_microbench", "calibrate_networks", "calibrate_spec",
           "hardware_snapshot", "network_vectors"]

@dataclass(frozen=True)
class CalibrationReport:
    """What a calibrate call wrote.

    Attributes:
        path: The profile TOML written.
        table: The ``[calibration]`` table (as written).
        heldout_pred_ms: Held-out prediction per calibration row (cross-validation / leave-one-out).
        measured_ms: Measured latency per calibration row.
        names: Row names (micro-benchmark ids or network names).
        notes: Caveats about the input (e.g. a CSV without a ``batch_size`` column).
    """

    path: Path
    table: Mapping[str, Any]
    heldout_pred_ms: tuple[float, ...] = ()
    measured_ms: tuple[float, ...] = ()
    names: tuple[str, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "table": dict(self.table), "heldout_pred_ms": list(self.heldout_pred_ms),
                "measured_ms": list(self.measured_ms), "names": list(self.names), "notes": list(self.notes)}


def _round(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def _coeff_tables(coeffs: Coefficients, precisions: Sequence[str]) -> dict[str, Any]:
    keys = sorted(next(iter(coeffs.ops.values()), {}).keys()) if coeffs.ops else []
    ops = {
        p: {k: {n: _round(v) for n, v in coeffs.op(k, p).to_dict().items()} for k in keys}
        for p in precisions
    }
    return {
        "run_overhead_us": {p: _round(coeffs.run_overhead_ms(p) * 1000.0) for p in precisions},
        "io_overhead_us": {p: _round(coeffs.io_overhead_ms(p) * 1000.0) for p in precisions},
        "eff_io": {p: _round(1.0 / coeffs.io_inv_eff(p)) for p in precisions},
        "coefficients": ops,
    }


def _write_profile(base: DeviceProfile, out_path: str | Path, table: Mapping[str, Any]) -> Path:
    """Copy the base profile's TOML to ``out_path`` (if different) with ``[calibration]`` replaced.

    Written through a temporary file that must load (profile and calibration) before it replaces
    ``out_path``: a failed calibration never leaves an unloadable profile behind.
    """
    from hwtune._io import atomic_output, read_text
    from hwtune.device import load_profile

    if base.path is None:
        raise ConfigError(f"profile {base.id!r} has no file to copy; pass a bundled id or a .toml path as --base")
    out = Path(out_path)
    new_text = replace_table(read_text(base.path, kind="device profile"), "calibration", table)
    with atomic_output(out, what="calibrated profile") as tmp:
        tmp.write_text(new_text)
        profile_calibration(load_profile(tmp))
    clear_caches()
    return out


def _today() -> str:
    return time.strftime("%Y-%m-%d")


def hardware_snapshot(profile: DeviceProfile) -> dict[str, Any]:
    """The profile numbers a calibration's coefficients are relative to (``[calibration.hardware]``).

    Coefficients are efficiencies against the peak throughput and bandwidth of the profile they
    were fitted with; when those change later (an edited profile, a detected host that is now
    another machine), predictions say so instead of shifting silently.
    """
    out: dict[str, Any] = {"peak_gflops": {k: _round(float(v)) for k, v in profile.peak_gflops.items()},
                           "bandwidth_gbps": _round(float(profile.bandwidth_gbps)), "threads": int(profile.threads)}
    if profile.cpu_model:
        out["cpu_model"] = profile.cpu_model
    if profile.detected:  # this machine: the ISA flags decide whether the fit holds on another CPU
        out["isa"] = list(profile.isa)
    return out


def calibrate_microbench(
    results_path: str | Path,
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    description: str | None = None,
    statistic: str = "median",
) -> CalibrationReport:
    """Fit per-op coefficients from ``scripts/profile_device.py`` results; write them into a profile.

    Args:
        results_path: The results JSON (or CSV) from ``scripts/profile_device.py``.
        base_profile: Profile whose hardware numbers (peak, bandwidth, threads) the fit uses and
            whose TOML is copied to ``out_path``.
        out_path: Profile TOML to write (may be the base profile's own file).
        description: One line for the table (default: device and date from the results).
        statistic: Which measured statistic to fit: ``median`` (quiet device) or ``min``
            (fastest run: steadier when other jobs share the machine).

    Raises:
        CalibrationError: the results file is malformed or too small.
    """
    from hwtune.device import load_profile

    base = load_profile(base_profile)
    rows, device = read_microbench(results_path, statistic)
    hw = Hardware.from_profile(base)
    base_cal = profile_calibration(base)
    prior = base_cal.coefficients if base.calibration and base.calibration.get("method") == "spec" \
        and base_cal.form is None else None
    lowering, pad_errors = choose_lowering(rows, hw, detect_lowering(rows), prior=prior)
    samples = microbench_samples(rows, lowering)
    y = [r["latency_ms"] for r in rows]
    fit = fit_microbench(samples, y, hw, prior=prior)
    precs = sorted({r["precision"] for r in rows})
    threads = device.get("threads")
    if threads is not None and int(threads) != base.threads:
        note = f" Measured on {threads} thread(s) but the profile runs {base.threads}: re-run with --threads {base.threads}."
    else:
        note = ""
    kinds = {"chain": 0, "block": 0}
    for r in rows:
        if r["op"] in kinds:
            kinds[r["op"]] += 1
    n_single = len(rows) - sum(kinds.values())
    table: dict[str, Any] = {
        "method": "microbench",
        "form": "roofline",
        "description": description or (
            f"Fitted to {len(rows)} ONNX Runtime micro-benchmarks ({n_single} single ops, {kinds['chain']} chains of "
            f"one op repeated, {kinds['block']} network blocks; scripts/profile_device.py) measured on "
            f"{device.get('cpu_model') or device.get('hostname') or 'the device'}, {threads or '?'} thread(s), "
            f"onnxruntime {device.get('runtime_version', '?')}.{note}"),
        "created": _today(),
        "source": Path(results_path).name,
        "n_samples": fit.n_samples,
        "error_pct": _round(fit.error_pct, 3),
        "within_10pct": _round(fit.within_10pct, 3),
        "spearman": _round(fit.spearman, 4),
        "validation": fit.validation + " (micro-benchmark graphs; whole-network error is measured by "
                                       "benchmarks/bench_predictor.py)",
        "precisions": precs,
        "batch_sizes": [1],
        "statistic": statistic,
        "hardware": hardware_snapshot(base),
        **lowering.table(),
        "pad_channels_cv_error_pct": pad_errors,
    }
    if threads is not None:
        table["threads"] = int(threads)
    table.update(_coeff_tables(fit.coefficients, list(base.precisions)))
    path = _write_profile(base, out_path, table)
    return CalibrationReport(path, table, fit.heldout_pred_ms, tuple(y), tuple(str(r["id"]) for r in rows))


def network_vectors(
    features: Sequence[Mapping[str, tuple[Sequence[LayerFeatures], int]]], hw: Hardware
) -> tuple[dict[str, list[list[float]]], list[float]]:
    """Base vectors per lowering, and FLOPs (all MACs of the eager forward), of measured networks.

    ``features``: per network, ``executes`` -> (layer features, input elements); ``eager`` must
    be present (it gives the FLOPs).
    """
    vectors: dict[str, list[list[float]]] = {}
    flops = []
    for per in features:
        for ex, (feats, _) in per.items():
            vectors.setdefault(ex, []).append(base_vector(feats, hw))
        flops.append(float(sum(f.work for f in per["eager"][0] if f.key in COMPUTE_OPS)))
    return vectors, flops


def _network_features(rows: Sequence[Any], deployed: Lowering) -> list[dict[str, Any]]:
    """Each measured network (built from its family and knobs), lowered both ways."""
    from hwtune.families import create_model

    eager = Lowering(eager=True)
    out = []
    for r in rows:
        try:
            model = create_model(r.family, dict(r.knobs), num_classes=r.num_classes, in_channels=r.input_shape[1],
                                 input_size=r.input_shape[2])
        except ConfigError as exc:
            raise CalibrationError(f"network {r.name!r}: {exc}") from exc
        out.append({ex: model_features(model, r.input_shape, r.precision, lowering=low)
                    for ex, low in (("deployed", deployed), ("eager", eager))})
    return out


def _forms_table(choice: Any) -> dict[str, Any]:
    return {s.label.replace("/", "_"): s.to_dict() for s in choice.scores}


def calibrate_networks(
    csv_path: str | Path,
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    description: str | None = None,
    extra: Mapping[str, Any] | None = None,
    forms: Sequence[str] = FORMS,
    prior: DevicePrior | str | Path | bool = True,
) -> CalibrationReport:
    """Fit a latency model to a few whole-network latencies; write it into a profile.

    With a device prior (the default: the shipped ``device_prior.json``, see ``_prior.py``), each
    reference device's latency direction is refitted with a scale and an intercept and scored
    leave-one-out next to the FLOPs-proportional form; FLOPs is kept unless a direction beats it
    on both leave-one-out log error and Spearman (``_prior.choose_with_prior``). With
    ``prior=False`` the form ladder (``_forms.FORMS``) is fitted for both lowerings and the
    simplest within ``_forms.TIE`` of the best is kept. The table records the choice, its
    leave-one-out median error, share within +-10% and Spearman, the same for the other
    candidates and for FLOPs alone, and the batch sizes measured.

    Args:
        csv_path: Measurements, one network per row (see ``read_networks_csv`` for columns).
        base_profile: Profile to start from (hardware numbers, runtime, TOML to copy).
        out_path: Profile TOML to write.
        description: One line for the table.
        extra: More keys for the table (e.g. held-out ``error_pct``/``spearman`` measured on
            networks outside the CSV, with a ``validation`` line saying so).
        forms: The ladder to choose from (simplest first) when ``prior`` is False.
        prior: ``True`` (the shipped prior), a ``DevicePrior``, a path to a prior JSON, or
            ``False`` (no prior: the form ladder alone).

    Raises:
        CalibrationError: the CSV is malformed, has too few rows, or a network cannot be built.
    """
    from hwtune.device import load_profile

    base = load_profile(base_profile)
    rows, notes = read_networks_csv(csv_path, with_notes=True)
    hw = Hardware.from_profile(base)
    base_cal = profile_calibration(base)
    deployed = base_cal.lowering if base_cal.method == "microbench" else NO_LOWERING
    vectors, flops = network_vectors(_network_features(rows, deployed), hw)
    y = [r.latency_ms for r in rows]
    if prior is not False:
        dp = prior if isinstance(prior, DevicePrior) else load_prior(None if prior is True else prior)
        pc = choose_with_prior(vectors, y, hw, dp)
        model, ch, fl = pc.model, pc.chosen, pc.flops
        crit = sorted(pc.candidates, key=lambda n: pc.candidates[n].loo_error_pct)
        forms_table = {n: pc.candidates[n].to_dict() for n in [FLOPS_PICK, *[c for c in crit if c != FLOPS_PICK][:5]]}
        how = (f"{'FLOPs-proportional form' if pc.pick == FLOPS_PICK else 'direction of ' + pc.pick} chosen by "
               f"leave-one-out against {len(dp.devices)} reference devices and FLOPs")
        chosen_extra: dict[str, Any] = {"prior_pick": pc.pick, "choice": pc.reason}
    else:
        prefer = "eager" if str(base.runtime) in EAGER_RUNTIMES else "deployed"  # every profile names its runtime
        choice = choose_form(vectors, y, flops, prefer=prefer, forms=forms)
        model, ch, fl = choice.model, choice.chosen, choice.flops
        forms_table = _forms_table(choice)
        how = f"form {ch.label} chosen by leave-one-out from {', '.join(forms)} (deployed and eager lowering)"
        chosen_extra = {}
    table: dict[str, Any] = {
        "method": "networks",
        "form": model.form,
        "executes": model.executes,
        "description": description or (
            f"{how[0].upper() + how[1:]} over {len(rows)} whole-network measurements ({Path(csv_path).name})."),
        "created": _today(),
        "source": Path(csv_path).name,
        "n_samples": len(rows),
        "error_pct": _round(ch.loo_error_pct, 3),
        "within_10pct": _round(ch.loo_within_10pct, 3),
        "spearman": _round(ch.loo_spearman, 4),
        "flops_error_pct": _round(fl.loo_error_pct, 3),
        "flops_within_10pct": _round(fl.loo_within_10pct, 3),
        "flops_spearman": _round(fl.loo_spearman, 4),
        "validation": f"leave-one-out over the {len(rows)} calibration networks (FLOPs: a * FLOPs + b, same rows)",
        "loo_error_pct": _round(ch.loo_error_pct, 3),
        "loo_within_10pct": _round(ch.loo_within_10pct, 3),
        "loo_spearman": _round(ch.loo_spearman, 4),
        "precisions": sorted({r.precision for r in rows}),
        "batch_sizes": sorted({r.input_shape[0] for r in rows}),
        "form_coefficients": {k: _round(v, 6) for k, v in model.coefficients.items()},
        "forms": forms_table,
        **chosen_extra,
        "hardware": hardware_snapshot(base),
    }
    if len(table["precisions"]) > 1:
        notes = [*notes, ("rows at several precisions: one compute coefficient, their relative cost from the "
                          "profile's peak throughput per precision (calibrate one precision per profile for more)")]
    table.update({k: v for k, v in deployed.table().items() if k != "executes"})
    if model.executes == "eager":
        table["executes"] = "eager"
    if notes:
        table["notes"] = list(notes)
    table.update(dict(extra or {}))
    path = _write_profile(base, out_path, table)
    return CalibrationReport(path, table, ch.loo_pred_ms, tuple(y), tuple(r.name for r in rows), tuple(notes))


def calibrate_spec(
    base_profile: str | Path | DeviceProfile,
    out_path: str | Path,
    *,
    description: str | None = None,
    spec_form: Mapping[str, Any] | None = None,
    error_pct: float | None = None,
) -> CalibrationReport:
    """Write the spec-only model (no measurements on this device) into a profile.

    The model is the mean latency direction of the CPU and phone devices of the shipped prior
    (``_prior.spec_direction``: compute, per-kernel, memory and per-run costs in MAC-equivalents),
    priced at the profile's datasheet peak with a compute efficiency measured on devices that
    have a profile; its error bars were measured leave-device-out by
    ``benchmarks/bench_predictor.py`` (the ``spec`` section of ``device_prior.json``).
    Predictions are labelled ``estimated``.

    Args:
        base_profile: Profile to copy (its peak throughput and bandwidth price the direction).
        out_path: Profile TOML to write.
        description: One line for the table.
        spec_form: ``{"direction": {column: MAC-equivalents}, "compute_efficiency", "executes",
            "error_pct", "spearman", "flops_spearman", "validation"}`` (default: the shipped prior's);
            ``{"coefficients": {"compute", "intercept_ms"}, ...}`` writes the plain MACs form.
        error_pct: Override of the stated error (must come from a held-out evaluation).
    """
    from hwtune.device import load_profile

    base = load_profile(base_profile)
    spec = dict(spec_form or load_prior().spec)
    if "direction" in spec:
        theta = spec_theta(spec["direction"], float(spec["compute_efficiency"]), Hardware.from_profile(base))
        form, executes = "per_op", str(spec.get("executes", "eager"))
        coeffs = {k: _round(v, 6) for k, v in zip(BASE_COLUMNS, theta)}
        what = ("Spec-only: the mean latency direction (compute, per-kernel, memory, per-run cost) of the CPU and "
                "phone devices of hwtune's device prior, priced at this profile's datasheet peak and bandwidth. "
                "No measurements on this device.")
    elif "coefficients" in spec:
        form, executes = "macs", "deployed"
        coeffs = {k: _round(float(v), 6) for k, v in dict(spec["coefficients"]).items()}
        what = ("Spec-only: latency = compute x MACs / (datasheet peak) + intercept, coefficients measured on other "
                "devices; ranks networks like MACs. No measurements on this device.")
    else:
        raise CalibrationError("spec form needs 'direction' (+ 'compute_efficiency') or 'coefficients'")
    table: dict[str, Any] = {
        "method": "spec",
        "form": form,
        "executes": executes,
        "description": description or what,
        "created": _today(),
        "n_samples": 0,
        "form_coefficients": coeffs,
    }
    err = error_pct if error_pct is not None else spec.get("error_pct")
    for key, value in (("error_pct", err), ("spearman", spec.get("spearman")),
                       ("flops_spearman", spec.get("flops_spearman"))):
        if value is not None:
            table[key] = _round(float(value), 4)
    table["validation"] = str(spec.get("validation", ""))
    return CalibrationReport(_write_profile(base, out_path, table), table)
