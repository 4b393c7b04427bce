"""hwtune.records.VersionedRecord: the stored layout of the run summaries that share it.

A study or run directory written by an earlier release holds these dicts; the keys (and their order:
the version first, then the fields) are pinned here so a change to a class shows up as a failing test
rather than as studies that no longer open.
"""

from __future__ import annotations

import json

import pytest

from hwtune.records import VersionedRecord
from hwtune.runtimes import EvalResult
from hwtune.supernet.distill import FinetuneStats
from hwtune.supernet.elastic import ParentStats
from hwtune.training import TrainStats

# What 0.2.0 wrote (``{"schema_version": 1, **asdict(self)}``), one stored dict per class.
STORED = {
    TrainStats: {
        "schema_version": 1, "samples_seen": 256, "steps": 4, "epochs": 1.0, "first_loss": 2.3, "final_loss": 1.9,
        "seconds": 0.5, "samples_per_s": 512.0, "peak_lr": 0.05, "optimizer": "sgd", "batch_size": 64,
        "threads": 1, "seed": 0, "device": "cpu", "amp": "fp32", "augment": "none", "memory_format": "contiguous",
    },
    FinetuneStats: {
        "schema_version": 1, "epochs": 0.5, "steps": 4, "samples_seen": 128, "seconds": 0.2, "first_loss": 2.0,
        "final_loss": 1.5, "peak_lr": 0.01, "kd_weight": 0.5, "temperature": 1.0, "batch_size": 32, "threads": 1,
        "seed": 0, "stopped_early": False, "augment": "none", "device": "cpu", "amp": "fp32",
        "memory_format": "contiguous",
    },
    ParentStats: {
        "schema_version": 1, "largest": {"family": "convnet", "knobs": {"width": [8, 16]}},
        "smallest": {"family": "convnet", "knobs": {"width": [4, 8]}}, "epochs": 1.0, "steps": 4,
        "samples_seen": 256, "seconds": 1.0, "seconds_per_epoch": 1.0, "first_loss": 2.3, "final_loss": 2.0,
        "final_sub_loss": 2.1, "peak_lr": 0.05, "n_random": 1, "kd_weight": 1.0, "temperature": 1.0,
        "batch_size": 64, "threads": 1, "seed": 0, "stopped_early": False, "device": "cpu", "amp": "fp32",
        "memory_format": "contiguous",
    },
    EvalResult: {"schema_version": 1, "accuracy": 0.75, "loss": 0.6, "n": 128, "seconds": 0.1, "runtime": "torch"},
}


@pytest.mark.parametrize("cls", list(STORED), ids=lambda c: c.__name__)
def test_stored_dicts_load_and_are_written_back_key_for_key(cls):
    stored = STORED[cls]
    record = cls.from_dict(json.loads(json.dumps(stored)))  # as read back from a study's JSON
    assert isinstance(record, cls) and isinstance(record, VersionedRecord)
    written = record.to_dict()
    assert list(written) == list(stored)  # same keys, same order
    assert json.dumps(written) == json.dumps(stored)
    assert cls.from_dict(written) == record


def test_eval_results_skip_keys_a_newer_writer_added():
    assert EvalResult.from_dict({**STORED[EvalResult], "top5": 0.9}) == EvalResult.from_dict(STORED[EvalResult])
