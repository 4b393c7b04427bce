"""Shared fixtures: one tiny model, fixed seeds, the bundled-profile list."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests must not touch the network and must be reproducible on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# User profiles ($XDG_CONFIG_HOME/hwtune/profiles) shadow bundled ones: tests see only the bundled set
# unless they write their own (an empty config dir per session; subprocesses inherit it).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="hwtune-test-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)

REPO_ROOT = Path(__file__).resolve().parent.parent
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class _TinyNet:  # built lazily so collecting tests does not import torch
    @staticmethod
    def build():
        import torch
        from torch import nn

        torch.manual_seed(0)

        class TinyNet(nn.Module):
            """conv(1->4,3x3)+BN+ReLU -> conv(4->8,3x3,s2)+BN+ReLU -> GAP -> linear(8->10)."""

            def __init__(self) -> None:
                super().__init__()
                self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
                self.body = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                          nn.ReLU())
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.head = nn.Linear(8, 10)

            def forward(self, x):
                x = self.pool(self.body(self.stem(x)))
                return self.head(torch.flatten(x, 1))

        return TinyNet().eval()


@pytest.fixture
def tiny_model():
    """A 4/8-channel CNN for 1x28x28 inputs, in eval mode, seeded."""
    return _TinyNet.build()


@pytest.fixture
def tiny_input():
    import torch

    return torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


# ---- F (tuner: hwtune.search / export) fixtures ------------------------------------------------
# One real (not faked) tiny search shared by test_search_e2e.py and test_export.py: a 16-candidate
# convnet space (fp32/int8), 2000 Fashion-MNIST training images, 4 trials, two rungs.

TUNER_TINY_RECIPE = """\
schema_version = 1
family = "convnet"
dataset = "fashion-mnist"

[input]
channels = 1
size = 28
classes = 10

[knobs]
stem_stride = 2
stem_width = [4, 8]
width = [[4, 8], [8, 16]]
depth = 1
kernel_size = 3

[precision]
choices = ["fp32", "int8"]

[train]
epochs = 1.0
batch_size = 64
"""
TUNER_TINY_DATA = {"name": "fashion-mnist", "train_limit": 2000, "val_limit": 500, "test_limit": 500}
TUNER_TINY_BUDGET = {"epochs": 1.0, "rungs": [0.5, 1.0], "batch_size": 64, "latency_budget_s": 0.2,
                     "calibration_samples": 64}


@pytest.fixture(scope="session")
def tuner_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tuner-recipe") / "tiny-convnet.toml"
    path.write_text(TUNER_TINY_RECIPE)
    return path


@pytest.fixture(scope="session")
def tuned_study(tmp_path_factory, tuner_recipe):
    """A finished real search (TuneResult) with at least one fp32 and one int8 trained trial."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    from hwtune.tuner import tune

    out = tmp_path_factory.mktemp("tuned-study")
    return tune(tuner_recipe, device="host", data=TUNER_TINY_DATA, n_trials=4, out_dir=out, study_name="tiny",
                sampler="random", seed=3, budget=TUNER_TINY_BUDGET, progress=False)
# ---- end of F fixtures -------------------------------------------------------------------------
