"""The device prior and the calibration rule that keeps FLOPs unless a reference direction beats it
(hwtune/predictor/_prior.py), through the function ``hwtune calibrate --networks`` calls.

``tests/data/hwnasbench_slice.csv``: 80 connected NAS-Bench-201 architectures drawn with
``numpy.random.default_rng(2024)`` from ../shared/data/hw-nas-bench (HW-NAS-Bench's Raspberry Pi 4,
HELP's Xeon Gold 6240, RTX 2080 Ti batch 1 and Samsung A50), ``benchmarks/bench_predictor.py
--write-test-slice`` writes it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

REPO = Path(__file__).resolve().parents[2]
SLICE = REPO / "tests" / "data" / "hwnasbench_slice.csv"
SETTINGS = ("raspberry-pi-4", "gold_6240", "2080ti_1")
PHYSICAL = {"raspberry-pi-4": "raspberry-pi-4", "gold_6240": "gold_6240", "2080ti_1": "2080ti",
            "samsung_a50": "samsung_a50"}


def _slice() -> list[dict]:
    with SLICE.open() as fh:
        return list(csv.DictReader(fh))


def _models(rows: list[dict]) -> list:
    import hwtune

    return [hwtune.create_model("nb201", {"arch": r["arch_str"]}, num_classes=10, in_channels=3, input_size=32)
            for r in rows]


def _calibrate(tmp_path: Path, rows: list[dict], device: str, idx, prior) -> Path:
    from hwtune.predictor import calibrate_networks

    csv_path = tmp_path / f"{device}.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "arch", "batch_size", "input_shape", "latency_ms"])
        for i in idx:
            w.writerow([f"nb201-{rows[i]['arch_idx']}", rows[i]["arch_str"], 1, "3x32x32", rows[i][device]])
    out = tmp_path / f"{device}.toml"
    calibrate_networks(csv_path, "raspberry-pi-4" if device == "raspberry-pi-4" else "host", out, prior=prior)
    return out


@pytest.fixture(scope="module")
def slice_models():
    rows = _slice()
    return rows, _models(rows)


@pytest.mark.parametrize("device", SETTINGS)
def test_calibration_ranks_held_out_rows_at_least_like_flops(tmp_path, slice_models, device):
    """10 rows calibrate (prior without the device), the other 70 are predicted by predict_latency on the
    written profile: Spearman at least FLOPs' on the same rows."""
    import hwtune
    from hwtune.predictor import load_prior

    rows, models = slice_models
    cal = np.random.default_rng(0).choice(len(rows), 10, replace=False)
    prof = _calibrate(tmp_path, rows, device, cal, load_prior().excluding([PHYSICAL[device]]))
    held = [i for i in range(len(rows)) if i not in set(cal)]
    pred = [float(hwtune.predict_latency(models[i], (1, 3, 32, 32), device=prof)) for i in held]
    y = [float(rows[i][device]) for i in held]
    flops = [float(rows[i]["flops_M"]) for i in held]
    assert spearmanr(pred, y)[0] >= spearmanr(flops, y)[0] - 1e-12


def test_the_flops_fallback_ranks_exactly_like_flops(tmp_path, slice_models):
    """A prior whose only direction is worse than FLOPs leaves the FLOPs-proportional form: predict_latency
    then orders (and ties) every network as FLOPs does."""
    import hwtune
    from hwtune.predictor import load_prior
    from hwtune.predictor._prior import DevicePrior, ReferenceDevice

    rows, models = slice_models
    shipped = load_prior()
    # the kernel count alone: on a CPU it ranks far worse than FLOPs
    columns = shipped.devices[0].coefficients
    kernels_only = ReferenceDevice("kernels", "kernels", "gpu", "eager",
                                   {k: (1.0 if k.startswith("per_kernel_ms.") else 0.0) for k in columns})
    prof = _calibrate(tmp_path, rows, "gold_6240", range(10), DevicePrior((kernels_only,)))
    table = hwtune.load_profile(prof).calibration
    assert (table["form"], table["executes"], table["prior_pick"]) == ("macs", "eager", "flops")
    assert "FLOPs-proportional form kept" in table["choice"]
    pred = [float(hwtune.predict_latency(m, (1, 3, 32, 32), device=prof)) for m in models]
    assert np.array_equal(rankdata(pred), rankdata([float(r["flops_M"]) for r in rows]))


def test_a_direction_is_kept_only_when_it_beats_flops_leave_one_out():
    from hwtune.device import load_profile
    from hwtune.predictor import model_features
    from hwtune.predictor._features import Lowering
    from hwtune.predictor._forms import base_vector, loo_log_error
    from hwtune.predictor._model import Hardware
    from hwtune.predictor._prior import choose_with_prior, flops_column, load_prior

    rows = _slice()[:12]
    models = _models(rows)
    hw = Hardware.from_profile(load_profile("host"))
    lowerings = (("deployed", Lowering()), ("eager", Lowering(eager=True)))
    vectors = {ex: np.array([base_vector(model_features(m, (1, 3, 32, 32), "fp32", lowering=low)[0], hw)
                             for m in models]) for ex, low in lowerings}
    prior = load_prior().excluding(["2080ti"])
    y = np.array([float(r["2080ti_1"]) for r in rows])
    choice = choose_with_prior(vectors, y, hw, prior)
    crit = {n: loo_log_error(sc.loo_pred_ms, y) for n, sc in choice.candidates.items()}
    rho = {n: sc.loo_spearman for n, sc in choice.candidates.items()}
    beats = [n for n in crit if n != "flops" and crit[n] < crit["flops"] and rho[n] >= rho["flops"]]
    assert choice.pick == (min(beats, key=crit.get) if beats else "flops")
    assert len(choice.candidates) == len(prior.devices) + 1
    # a GPU at batch 1: kernel launches, not MACs, decide, and ten rows show it
    assert choice.pick != "flops" and choice.model.form == "per_op"
    # the written model is the picked direction refitted: its predictions are a*z + b of that column
    picked = next(d for d in prior.devices if d.name == choice.pick)
    z = vectors[choice.model.executes] @ np.asarray(picked.base_theta(hw))
    pred = vectors[choice.model.executes] @ np.asarray(choice.model.base_theta())
    assert spearmanr(pred, z)[0] == pytest.approx(1.0)
    assert flops_column(vectors["eager"]).shape == (12,)


def test_prior_file_is_data_with_every_setting():
    from hwtune.predictor import load_prior
    from hwtune.predictor._prior import PRIOR_FILE

    raw = json.loads(PRIOR_FILE.read_text())
    assert raw["schema_version"] == 1 and "bench_predictor.py" in raw["source"]
    prior = load_prior()
    names = {d.name for d in prior.devices}
    assert {"raspberry-pi-4", "pixel-3", "gold_6240", "silver_4210r", "eyeriss", "fpga"} <= names and len(names) == 25
    assert {d.name for d in prior.excluding(["titanx"]).devices} == names - {"titanx_1", "titanx_32", "titanx_256"}
    assert set(prior.spec) >= {"direction", "compute_efficiency", "executes", "spearman", "flops_spearman"}


def test_a_malformed_prior_is_one_line(tmp_path):
    from hwtune.errors import CalibrationError
    from hwtune.predictor import load_prior

    bad = tmp_path / "prior.json"
    bad.write_text(json.dumps({"schema_version": 1, "devices": [{"name": "x", "coefficients": {"nope": 1.0}}]}))
    with pytest.raises(CalibrationError, match=r"prior\.json: unknown coefficient column\(s\) nope"):
        load_prior(bad)
    with pytest.raises(CalibrationError, match=r"missing\.json: cannot read the device prior"):
        load_prior(tmp_path / "missing.json")


DATA = REPO.parent / "shared" / "data" / "hw-nas-bench" / "nb201_cifar10_latency.csv"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/hw-nas-bench")
@pytest.mark.parametrize("device, column", [("raspberry-pi-4", "raspi4_latency_ms"), ("pixel-3", "pixel3_latency_ms")])
def test_shipped_profile_ranks_held_out_networks_as_it_states(device, column):
    """The bundled Pi 4 / Pixel 3 profiles, recomputed here: predict_latency on the 1,000 held-out archs of
    benchmarks/bench_predictor.py (default_rng(12345), without the profile's calibration rows) ranks them with
    the Spearman the profile states, and above FLOPs on the same rows."""
    import hwtune

    with DATA.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["cell_connected"] == "1"]
    with (REPO / "benchmarks" / "results" / f"hwnasbench_{device}_calibration.csv").open() as fh:
        cal_archs = {r["arch"] for r in csv.DictReader(fh)}
    cal = {i for i, r in enumerate(rows) if r["arch_str"] in cal_archs}
    assert len(cal) == 10
    evaluation = np.sort(np.random.default_rng(12345).choice(len(rows), size=1000, replace=False))
    held = [i for i in evaluation if i not in cal]
    pred = []
    for i in held:
        model = hwtune.create_model("nb201", {"arch": rows[i]["arch_str"]}, num_classes=10, in_channels=3,
                                    input_size=32)
        pred.append(float(hwtune.predict_latency(model, (1, 3, 32, 32), device=device)))
    y = [float(rows[i][column]) for i in held]
    rho = spearmanr(pred, y)[0]
    flops_rho = spearmanr([float(rows[i]["flops_M"]) for i in held], y)[0]
    stated = hwtune.load_profile(device).calibration
    assert rho == pytest.approx(stated["spearman"], abs=5e-4)
    assert flops_rho == pytest.approx(stated["flops_spearman"], abs=5e-4)
    assert rho > flops_rho
