"""The ``cifar-resnet`` recipe (models/cifar-resnet.toml) end to end on a tiny generated RGB folder:
``hwtune tune --strategy inherit`` for the Cortex-M7 profile under its memory limits, ``finalize``,
and ``export`` of an int8 ``.tflite`` whose manifest carries what the MLPerf Tiny benchmark reads.
CIFAR-10 itself is never needed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "models" / "cifar-resnet.toml"


def test_the_recipe_holds_the_mlperf_tiny_reference_and_the_ic02_widths():
    import torch

    from hwtune.graph import count_flops
    from hwtune.space import Candidate, SearchSpace

    space = SearchSpace.from_recipe(RECIPE)
    assert space.family == "resnet" and space.input_shape == (3, 32, 32)
    assert tuple(space.train.augment) == ("crop:4", "hflip")
    members = {}
    for widths in ((16, 32, 64), (26, 52, 104)):
        cand = Candidate("resnet", {"width": widths, "depth": (1, 1, 1), "kernel_size": (3, 3, 3)}, precision="int8")
        assert cand in space
        members[widths] = space.build(cand).eval()
    # The reference's 12,501,632 MACs and IC02's 32.6 M, exactly as the reference file counts them: the
    # shortcut's bias and batch norm fold into its 1x1 convolution.
    x = torch.zeros(1, 3, 32, 32)
    assert count_flops(members[(16, 32, 64)], x).macs == 12_501_632
    assert round(count_flops(members[(26, 52, 104)], x).macs / 1e6, 1) == 32.6
    assert Candidate("resnet", {"width": (16, 32, 64), "depth": (1, 1, 1), "kernel_size": (5, 3, 3)}) not in space


@pytest.mark.slow
@pytest.mark.extras
def test_tune_finalize_export_for_the_cortex_m7(tmp_path, capsys, rgb_folder, monkeypatch):
    from hwtune.cli import main
    from hwtune.runtimes import get_runtime
    from hwtune.tuner import load_result
    from hwtune.tuner.pipeline import CandidatePipeline

    if not get_runtime("tflite-micro").available():  # the stm32h743 profile deploys with TFLite Micro
        pytest.skip("TFLite Micro not installed (pip install 'hwtune[litert]')")
    ships = []
    base_ship = CandidatePipeline.ship

    def counted_ship(self, *args, **kwargs):
        ships.append(1)
        return base_ship(self, *args, **kwargs)

    monkeypatch.setattr(CandidatePipeline, "ship", counted_ship)

    data = rgb_folder(tmp_path / "rgb", {"train": 24, "test": 6}, seed=0)
    run = tmp_path / "run"
    args = ["tune", str(RECIPE), "--device", "stm32h743", "--data", str(data), "--strategy", "inherit"]
    args += ["--parent-epochs", "0.5", "--max-ram-kb", "256", "--max-storage-kb", "1024"]
    args += ["--out", str(run), "--trials", "3", "--epochs", "0.2", "--rungs", "1", "--seed", "0", "-q", "--json"]
    assert main(args) == 0, capsys.readouterr().err
    front = json.loads(capsys.readouterr().out)
    assert front and all(m["precision"] == "int8" for m in front), front  # the Cortex-M7 runs int8 only
    # Inherited weights scored untrained ship the file their profile converted (one conversion per candidate,
    # and no fp32 scoring); only the trials that fine-tuned convert again.
    trials = load_result(run).trials
    scored = [t for t in trials if t.trained and t.duplicate_of is None]
    tuned = [t for t in scored if t.figures.continue_from is not None]
    assert len(scored) > len(tuned) and len(ships) == len(tuned), (len(ships), len(scored), len(tuned))
    assert all(t.figures.val_accuracy_fp32 is None for t in scored if t.figures.continue_from is None)
    assert main(["finalize", str(run), "--trial", "knee", "--epochs", "0.3", "--json", "-q", "--data", str(data)]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done and done[0]["val_accuracy"] is not None
    out = tmp_path / "exp"
    assert main(["export", str(run), "--trial", "knee", "-o", str(out), "--json", "--data", str(data)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (out / "model.tflite").is_file() and manifest["runtime"] == "tflite-micro"
    memory = manifest["memory"]
    assert 0 < memory["working_memory_bytes"] <= 256 * 1024
    assert memory["working_memory_source"] == "measured (tflite-micro arena)"
    assert 0 < memory["storage_bytes"] <= 1024 * 1024
    assert manifest["macs"] > 0 and manifest["test_accuracy"] is not None
    assert manifest["evaluation"]["runtime"] == "tflite-micro"  # as shipped: scored in TFLite Micro itself
    assert len(manifest["input"]["mean"]) == 3 and len(manifest["input"]["std"]) == 3
