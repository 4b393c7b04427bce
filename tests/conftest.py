"""Shared fixtures: one tiny model, fixed seeds, the bundled-profile list."""

from __future__ import annotations

import atexit
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from support import FASHION_DIR, STUDY_FIXTURE, TUNER_TINY_BUDGET, TUNER_TINY_DATA, write_recipe

# Tests must not touch the network and must be reproducible on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Training's memory format is measured (hwtune.engine.choose_memory_format): timing on a loaded machine must not
# change what a test trains, so it is pinned to contiguous here; tests of the measurement unset it.
os.environ.setdefault("HWTUNE_CHANNELS_LAST", "0")
# User profiles ($XDG_CONFIG_HOME/hwtune/profiles) shadow bundled ones: tests see only the bundled set
# unless they write their own (an empty config dir per session; subprocesses inherit it).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="hwtune-test-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)


# HWTUNE_TEST_CPU_LOG=FILE appends "cpu_s<TAB>wall_s<TAB>nodeid" per test (setup, call and teardown; CPU of this
# process and of the child processes it waited for): on a loaded machine wall time says little, CPU time is
# what a test costs. Used to pick the `slow` marks (README "Tests, CI, benchmarks").
_CPU_LOG = os.environ.get("HWTUNE_TEST_CPU_LOG")


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    cpu, wall = _cpu_s(), time.perf_counter()
    yield
    with open(_CPU_LOG, "a") as log:
        log.write(f"{_cpu_s() - cpu:.2f}\t{time.perf_counter() - wall:.2f}\t{item.nodeid}\n")


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


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """The 0.1.0 study fixture (tests/data/study-0.1.0) copied to a fresh run directory."""
    run = tmp_path / "run"
    shutil.copytree(STUDY_FIXTURE, run)
    return run


# ---- the shared tiny search (tests/test_exporting.py; settings in support.py) ------------------------

@pytest.fixture(scope="session")
def tuner_recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("tuner-recipe"), "tiny-convnet.toml")


@pytest.fixture(scope="session")
def tuned_study(tmp_path_factory, tuner_recipe):
    """A finished real search (TuneResult) with at least one fp32 and one int8 trained trial."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    from hwtune.tuner import tune

    out = tmp_path_factory.mktemp("tuned-study")
    return tune(tuner_recipe, device="host", data=TUNER_TINY_DATA, n_trials=4, out_dir=out, study_name="tiny",
                sampler="random", seed=3, budget=TUNER_TINY_BUDGET, progress=False)
