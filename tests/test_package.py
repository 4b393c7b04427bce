"""The public surface: pinned names, silent and light import."""

from __future__ import annotations

import subprocess
import sys

import hwtune

EXPECTED_ALL = [
    "Candidate", "DeviceProfile", "HwtuneError", "PrecisionPlan", "ProfileReport", "QuantConfig", "SearchSpace",
    "TrainBudget", "TuneResult", "__version__", "create_model", "evaluate", "export", "list_families",
    "list_profiles", "load_dataset", "load_profile", "predict_latency", "profile_model", "quantize", "train", "tune",
]


def test_all_is_pinned():
    assert sorted(hwtune.__all__) == sorted(EXPECTED_ALL)


def test_every_public_name_resolves():
    for name in hwtune.__all__:
        assert getattr(hwtune, name) is not None, name


def test_import_is_silent_and_does_not_load_heavy_modules():
    code = (
        "import sys, hwtune; hwtune.load_profile('raspberry-pi-4'); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'optuna', 'matplotlib') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""
