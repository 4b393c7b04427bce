"""The form ladder: the chooser finds the form (and lowering) that generated the data, falls back
to the simplest with few noisy rows, and every prediction carries its error bars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hwtune.errors import CalibrationError
from hwtune.predictor._forms import (
    BASE_COLUMNS,
    FORMS,
    FormModel,
    choose_form,
    flops_score,
    form_column_names,
    loo_predictions,
)

REPO = Path(__file__).resolve().parents[2]
COL = {c: i for i, c in enumerate(BASE_COLUMNS)}


def _networks(n: int, seed: int) -> np.ndarray:
    """Base vectors of ``n`` network-like rows: compute, kernels per group, memory and 1."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(BASE_COLUMNS)))
    for g in ("conv", "dwconv", "pwconv", "linear"):
        x[:, COL[f"compute.{g}"]] = rng.uniform(0.05, 2.0, n) * (0.02 if g == "linear" else 1.0)
    for g in ("conv", "dwconv", "pwconv", "linear", "pool", "eltwise", "act", "bn", "other"):
        x[:, COL[f"per_kernel_ms.{g}"]] = rng.integers(1, 40, n)
    x[:, COL["memory"]] = rng.uniform(0.1, 3.0, n)
    x[:, COL["intercept_ms"]] = 1.0
    return x


TRUTH = {
    "macs": FormModel("macs", "deployed", {"compute": 3.0, "intercept_ms": 0.5}),
    # memory and per-kernel cost are about half of the latency: MACs alone cannot fit it
    "macs_memory_layers": FormModel("macs_memory_layers", "deployed",
                                    {"compute": 2.0, "memory": 1.5, "per_kernel_ms": 0.02, "intercept_ms": 0.3}),
    # depthwise compute 12x dearer than dense, pools 0.2 ms per kernel: one shared rate cannot fit it
    "per_op": FormModel("per_op", "deployed", {"compute.conv": 1.0, "compute.dwconv": 12.0, "compute.pwconv": 1.5,
                                               "compute.linear": 1.0, "per_kernel_ms.pool": 0.2,
                                               "per_kernel_ms.conv": 0.01, "memory": 0.2, "intercept_ms": 0.2}),
}


def _measure(model: FormModel, x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    y = x @ np.asarray(model.base_theta())
    return y * (1.0 + noise * np.random.default_rng(seed + 100).standard_normal(len(y)))


@pytest.mark.parametrize("form", FORMS)
def test_chooser_picks_the_form_that_generated_the_data(form):
    x = _networks(12, seed=1)
    y = _measure(TRUTH[form], x, noise=0.01, seed=1)
    choice = choose_form({"deployed": x}, y, x[:, :4].sum(1))
    assert choice.model.form == form, [(s.label, round(s.loo_error_pct, 2)) for s in choice.scores]
    assert choice.chosen.loo_error_pct < 5.0
    assert {s.form for s in choice.scores} == set(FORMS)


def test_chooser_picks_the_lowering_that_generated_the_data():
    deployed, eager = _networks(10, seed=2), _networks(10, seed=3)
    y = _measure(TRUTH["macs_memory_layers"], eager, noise=0.01, seed=2)
    choice = choose_form({"deployed": deployed, "eager": eager}, y, eager[:, :4].sum(1))
    assert choice.model.executes == "eager"
    y = _measure(TRUTH["macs_memory_layers"], deployed, noise=0.01, seed=2)
    assert choose_form({"deployed": deployed, "eager": eager}, y, eager[:, :4].sum(1)).model.executes == "deployed"


def test_three_noisy_samples_fall_back_to_the_simplest_form():
    x = _networks(3, seed=4)
    y = _measure(TRUTH["per_op"], x, noise=0.1, seed=4)
    choice = choose_form({"deployed": x}, y, x[:, :4].sum(1))
    assert choice.model.form == "macs" and choice.n_samples == 3


def test_noisy_rows_of_a_macs_device_keep_the_macs_form():
    # eight rows, 15% measurement noise: the richer forms fit the noise and predict left-out rows worse
    x = _networks(8, seed=5)
    y = _measure(TRUTH["macs"], x, noise=0.15, seed=5)
    assert choose_form({"deployed": x}, y, x[:, :4].sum(1)).model.form == "macs"


def test_leave_one_out_never_sees_the_predicted_row():
    x = _networks(6, seed=6)
    y = _measure(TRUTH["macs"], x, noise=0.05, seed=6)
    loo = loo_predictions("macs", x, y)
    y2 = y.copy()
    y2[2] *= 10  # a row's own latency must not change its own held-out prediction
    assert loo_predictions("macs", x, y2)[2] == pytest.approx(loo[2], rel=1e-9)
    assert loo_predictions("macs", x, y2)[0] != pytest.approx(loo[0], rel=1e-6)
    flops = x[:, :4].sum(1)
    assert flops_score(flops, y).loo_pred_ms[2] == pytest.approx(flops_score(flops, y2).loo_pred_ms[2], rel=1e-9)


def test_form_model_round_trip_and_columns():
    m = TRUTH["per_op"]
    assert FormModel.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert form_column_names("macs") == ("compute", "intercept_ms")
    assert len(m.base_theta()) == len(BASE_COLUMNS)
    x = _networks(1, seed=7)[0]
    assert m.predict_base(x) == pytest.approx(float(x @ np.asarray(m.base_theta())))


def test_bad_form_tables_are_reported_one_line_each():
    from hwtune.predictor._stored_calibration import form_from_table

    with pytest.raises(CalibrationError) as exc:
        form_from_table({"form": "per_opp", "executes": "lazy", "form_coefficients": {"compute": -1}}, "p.toml")
    lines = str(exc.value).splitlines()
    assert any("calibration.form must be one of roofline, macs" in ln and "'per_opp'" in ln for ln in lines)
    assert any("calibration.executes must be one of deployed, eager, got 'lazy'" in ln for ln in lines)
    with pytest.raises(CalibrationError, match=r"form_coefficients\.memory: not a column of form 'macs'"):
        form_from_table({"form": "macs", "form_coefficients": {"memory": 1.0}}, "p.toml")
    with pytest.raises(CalibrationError, match=r"form_coefficients\.compute must be a number >= 0, got -1"):
        form_from_table({"form": "macs", "form_coefficients": {"compute": -1}}, "p.toml")
    assert form_from_table({"form": "roofline"}, "p.toml") is None


# -- predictions carry their error bars ------------------------------------------------------


def _tiny():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)).eval()


def _form_profile(tmp_path: Path, form: dict, **extra) -> Path:
    from hwtune.predictor._toml import replace_table

    table = {"method": "networks", "n_samples": 10, "error_pct": 6.0, "spearman": 0.97, "within_10pct": 0.8,
             "flops_spearman": 0.88, "validation": "held-out test", "precisions": ["fp32"], "batch_sizes": [1],
             **form, **extra}
    path = tmp_path / "dev.toml"
    path.write_text(replace_table((REPO / "profiles" / "raspberry-pi-4.toml").read_text(), "calibration", table))
    return path


def test_latency_prediction_carries_form_error_and_ranks(tmp_path):
    from hwtune.predictor import LatencyPrediction, predict, predict_latency, predict_latency_detail

    path = _form_profile(tmp_path, {"form": "macs_memory_layers", "form_coefficients": {
        "compute": 5.0, "memory": 2.0, "per_kernel_ms": 0.01, "intercept_ms": 0.1}})
    model = _tiny()
    p = predict_latency_detail(model, (1, 3, 16, 16), device=path)
    assert isinstance(p, LatencyPrediction) and p.source == "predicted"
    assert (p.form, p.error_pct, p.spearman, p.flops_spearman, p.within_10pct) == ("macs_memory_layers", 6.0, 0.97, 0.88, 0.8)
    assert p.validation == "held-out test" and p.runtime and p.notes == ()
    assert float(p) == pytest.approx(predict_latency(model, (1, 3, 16, 16), device=path))
    full = predict(model, (1, 3, 16, 16), device=path)
    assert full.latency_ms == pytest.approx(float(p), rel=1e-9)
    assert full.form == "macs_memory_layers" and full.spearman == 0.97
    assert math.isclose(full.latency_ms, full.run_overhead_ms + sum(x.latency_ms for x in full.per_layer))
    assert "±6%" in p.label and "FLOPs 0.88" in p.label
    assert LatencyPrediction.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_spec_only_profile_grows_with_macs_and_says_so():
    import torch
    from scipy.stats import spearmanr

    from hwtune.predictor import model_features, predict_latency_detail

    nets, preds, macs = [], [], []
    for c, k, h in ((8, 3, 16), (16, 3, 16), (16, 1, 32), (32, 5, 8), (4, 3, 32), (64, 1, 8)):
        nets.append(torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(c, c, k, padding=k // 2), torch.nn.AdaptiveAvgPool2d(1)))
        p = predict_latency_detail(nets[-1], (1, 3, h, h), device="raspberry-pi-5")
        feats, _ = model_features(nets[-1], (1, 3, h, h))
        preds.append(float(p))
        macs.append(sum(f.work for f in feats if f.key in ("conv", "pwconv", "dwconv", "linear")))
    # the spec direction (mean of the prior's CPU/phone devices) prices kernels and memory too: it ranks these
    # networks close to MACs, not exactly like them
    assert spearmanr(preds, macs)[0] > 0.8
    assert p.source == "estimated" and p.form == "per_op" and p.error_pct is not None
    assert any("spec-only" in n for n in p.notes) and "leave-device-out" in p.validation
