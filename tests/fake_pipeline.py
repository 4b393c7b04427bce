"""A fast CandidatePipeline for multi-worker tests: importable by worker processes (``--pipeline``).

Real model building, shipping (ONNX) and evaluation, so exports check out; the expensive or noisy
steps are fakes: profiling returns deterministic figures, training only sleeps a little (so trials of
several workers overlap) and logs ``<pid> <candidate key> <seed> <epochs>`` to ``$HWTUNE_FAKE_TRAIN_LOG`` (the trainer's seed
is the candidate's seed plus the rung, so one line per (candidate, rung) trained), and
latency "measurements" are deterministic.
"""

from __future__ import annotations

import os
import time

from support import tiny_recipe

from hwtune.tuner import CandidatePipeline

TRAIN_SLEEP_S = float(os.environ.get("HWTUNE_FAKE_TRAIN_SLEEP", "0.3"))

# 16 fp32 candidates (stem width x two stage widths x kernel size); rungs 0.5 and 1 epoch in tests.
RECIPE = tiny_recipe(kernel_size=[3, 5], precisions=["fp32"])
DATA = {"name": "fashion-mnist", "train_limit": 256, "val_limit": 128, "test_limit": 128}
BUDGET = {"epochs": 1.0, "rungs": [0.5, 1.0], "batch_size": 64, "latency_budget_s": 0.05, "calibration_samples": 32}


def _latency_ms(macs: int) -> float:
    return macs / 1e6


class FastPipeline(CandidatePipeline):
    """Fake profile, train and measure; real build, ship and evaluate."""

    def profile(self, model, plan, *, measure, time_budget_s, device=None):
        n = sum(p.numel() for p in model.parameters())
        macs = 60 * n
        lat = _latency_ms(macs)
        return {
            "macs": macs,
            "flops": 2 * macs,
            "params": n,
            "weight_bytes": 4 * n,
            "peak_activation_bytes": 1000 + n,
            "latency_ms": lat,
            "latency_source": "measured",
            "latency_label": "measured (fake)",
            "runtime": "onnxruntime",
            "fits": {},
            "latency": {"median_ms": lat, "runtime": "onnxruntime", "threads": 1, "label": "measured (fake)"},
        }

    def train(self, model, data, *, epochs, batch_size, lr, seed, threads=None):
        key = getattr(model, "_hwtune_key", None)
        log = os.environ.get("HWTUNE_FAKE_TRAIN_LOG")
        if log:
            with open(log, "a") as fh:  # one short append per call: atomic between processes
                fh.write(f"{os.getpid()} {key} {seed} {epochs:.4f}\n")
        time.sleep(TRAIN_SLEEP_S)

        class Stats:
            samples_seen = int(epochs * 256)
            final_loss = 1.0

        return Stats()

    def build(self, cand):
        model = super().build(cand)
        model._hwtune_key = cand.key
        return model

    def measure(self, shipped, *, time_budget_s, device=None):
        return {"median_ms": 0.01, "runtime": "onnxruntime", "threads": 1, "label": "measured (fake)"}
