"""The public surface: pinned names, silent and light import."""

from __future__ import annotations

import subprocess
import sys

import hwtune

EXPECTED_ALL = [
    "Candidate", "DeviceProfile", "HwtuneError", "PrecisionPlan", "ProfileReport", "QuantConfig", "SearchSpace",
    "TrainBudget", "TuneResult", "__version__", "compress", "create_model", "evaluate", "export", "finalize", "get_runtime", "list_families",
    "list_profiles", "list_runtimes", "load_dataset", "load_profile", "predict_latency", "profile_model", "quantize", "train", "tune",
]


def test_all_is_pinned():
    assert sorted(hwtune.__all__) == sorted(EXPECTED_ALL)
    assert sorted(hwtune.__all__) == sorted([*hwtune._EXPORTS, "__version__"])  # the lazy table agrees


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


def test_public_names_cannot_be_shadowed_by_submodules():
    """Import every submodule first (as a user's code might), then every public name is still the API object."""
    code = r"""
import importlib, pkgutil, types, hwtune
mods = [m.name for m in pkgutil.walk_packages(hwtune.__path__, 'hwtune.')
        if m.name != 'hwtune.__main__']
for name in mods:
    importlib.import_module(name)
bad = []
for name in hwtune.__all__:
    if name == '__version__':
        continue
    obj = getattr(hwtune, name)
    if isinstance(obj, types.ModuleType) or not (callable(obj) or isinstance(obj, type)):
        bad.append(name)
print(len(mods), bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    n, bad = out.stdout.split(" ", 1)
    assert int(n) > 30 and bad.strip() == "[]"


def test_runtime_registry_is_public():
    assert {"onnxruntime", "torch"} <= set(hwtune.list_runtimes())
    assert hwtune.get_runtime("onnxruntime").name == "onnxruntime"
