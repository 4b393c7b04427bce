"""benchmarks/_nb201_features.py: NAS-Bench-201 features composed from once-traced pieces equal ``predict``'s."""

from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import _nb201_features

ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_nb201_composer_matches_predict():
    import hwtune
    from hwtune.predictor import predict
    from hwtune.predictor._model import Coefficients, Hardware, param_names

    comp = _nb201_features.NB201Composer()
    bare = replace(hwtune.load_profile("raspberry-pi-4"), calibration=None)  # the per-op roofline, spec priors
    hw = Hardware.from_profile(bare)
    names = param_names()
    theta = np.array(Coefficients.spec().theta(names))
    archs = [ARCH_A, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"]
    x = comp.design_matrix(archs, hw, names)
    for arch, row in zip(archs, x):
        model = hwtune.create_model("nb201", {"arch": arch}, num_classes=10, in_channels=3, input_size=32)
        assert float(row @ theta) == pytest.approx(predict(model, (1, 3, 32, 32), device=bare).latency_ms, rel=1e-9)


def test_executed_edges_from_the_input_iff_the_cell_is_connected():
    """The benchmark's dead-edge rule and the family's ``cell_connected`` (used by ``--suggest``) agree on all
    15,625 cells."""
    from hwtune.families.nb201 import NB201_OPS, cell_connected, format_arch

    disconnected = 0
    for ops in itertools.product(NB201_OPS, repeat=6):
        arch = format_arch(ops)
        connected = cell_connected(arch)
        disconnected += not connected
        assert any(src == 0 for _, src, _ in _nb201_features.executed_edges(arch)) == connected, arch
    assert 0 < disconnected < 15625
