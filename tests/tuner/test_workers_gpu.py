"""Local workers on a machine with several GPUs: worker i trains on GPU i mod G (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import pytest
import torch

from hwtune import engine
from hwtune.tuner.workers import gpu_assignment


@pytest.fixture
def gpus(monkeypatch):
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return set_count


def test_worker_i_gets_gpu_i_mod_g(gpus, monkeypatch):
    gpus(2)
    assert gpu_assignment(3, "auto") == ["0", "1", "0"]
    assert gpu_assignment(2, "cuda") == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the machine's visible GPUs, not 0..G-1
    assert gpu_assignment(3, None) == ["3", "5", "3"]


def test_no_assignment_for_cpu_an_explicit_gpu_or_one_gpu(gpus):
    gpus(4)
    assert gpu_assignment(2, "cpu") == [None, None]
    assert gpu_assignment(2, "cuda:1") == [None, None]  # the user chose the GPU for every worker
    gpus(1)
    assert gpu_assignment(3, "auto") == [None, None, None]
    gpus(0)
    assert gpu_assignment(2, "auto") == [None, None]


def test_device_name_says_which_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert engine.device_name(torch.device("cuda", 0)) == "cuda:0 (Fake GPU, CUDA_VISIBLE_DEVICES=1)"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert engine.device_name(torch.device("cuda")) == "cuda:0 (Fake GPU)"


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_real_gpus_are_assigned_round_robin():
    n = torch.cuda.device_count()
    assert gpu_assignment(n + 1, "auto")[n] == gpu_assignment(n + 1, "auto")[0]
