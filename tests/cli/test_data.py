"""The data options of the CLI (hwtune/cli/_data.py): ``--data``, ``--data-root``, ``--val-data``.

A study tuned on an image folder outside its run directory is exported and finalized from the CLI
by giving the data again; a held-out validation set replaces the carved split; a user model scored
higher on the carved split than on the test split is warned about; ``hwtune compress`` runs end to
end from the command line on a user's model file and weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write_patch_folder

REPO = Path(__file__).resolve().parents[2]
NESTED = REPO / "tests" / "data" / "models" / "nested_net.py"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("user-data")
    data = write_patch_folder(base / "patches", {"train": 30, "test": 8}, seed=0)
    held = write_patch_folder(base / "patches-held", {"train": 8}, seed=1)
    return data, held


@pytest.mark.slow
def test_tune_on_a_folder_outside_the_run_then_export_and_finalize_from_the_cli(
    folders, tuner_recipe, tmp_path, capsys
):
    from hwtune.cli import main

    data, held = folders
    run = tmp_path / "run"
    args = ["tune", str(tuner_recipe), "--device", "host", "--data", str(data), "--val-data", str(held)]
    args += ["--out", str(run), "--trials", "2", "--epochs", "0.5", "--rungs", "1", "--seed", "0", "-q"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()

    # The study file does not choose what is read: without the data, one line naming the option.
    assert main(["export", str(run), "--trial", "knee", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and len(err.strip().splitlines()) == 1
    # With the data but not the held-out set: the other option named.
    assert main(["export", str(run), "--trial", "knee", "--data", str(data), "-o", str(tmp_path / "x")]) == 2
    assert "--val-data" in capsys.readouterr().err

    again = ["--data", str(data), "--val-data", str(held)]
    assert main(["export", str(run), "--trial", "knee", "-o", str(tmp_path / "exp"), "--json", *again]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (tmp_path / "exp" / "model.onnx").is_file()
    assert manifest["val_accuracy"] is not None
    assert main(["finalize", str(run), "--trial", "knee", "--epochs", "0.2", "--json", "-q", *again]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done and done[0]["val_accuracy"] is not None
    report = (run / "report.md").read_text()
    assert "held-out validation set" in report


def test_val_data_replaces_the_carved_split(folders):
    from hwtune.tuner.inputs import data_spec, load_data

    data, held = folders
    load, splits = data_spec(str(data), None, str(held))
    assert splits is None and load["val_data"] == str(held)
    splits = load_data(load)
    assert len(splits.val) == 80 and len(splits.train) == 300  # every training image kept
    from hwtune.errors import DataError

    with pytest.raises(DataError, match="study-0.1.0"):
        load_data({**load, "val_data": str(REPO / "tests" / "data" / "study-0.1.0")})


def _contaminated_model(splits):
    """A model trained on the validation images themselves (as a user who trained on all of train)."""
    import torch

    from hwtune.data import DataSplits
    from hwtune.training import TrainBudget, train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    on_val = DataSplits(**{**splits.__dict__, "train": splits.val})
    train(model, on_val, budget=TrainBudget(epochs=30.0), batch_size=32, seed=0, progress=False)
    return model.eval()


def test_contaminated_validation_is_warned_about(fashion_dir):
    from hwtune.data import load_dataset
    from hwtune.tuner.compress import validation_check

    splits = load_dataset("fashion-mnist", train_limit=200, val_limit=150, test_limit=400)
    model = _contaminated_model(splits)
    check = validation_check(model, splits, held_out=False)
    assert check["val_accuracy"] - check["test_accuracy"] > 0.015
    assert "points more" in check["warning"] and "--val-data" in check["warning"]
    assert validation_check(model, splits, held_out=True)["warning"] is None


@pytest.mark.slow
def test_cli_compress_a_model_file_with_weights_end_to_end(fashion_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    from hwtune.cli import main
    from hwtune.compression import load_user_model

    model = load_user_model(f"{NESTED}:build")
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    args = ["compress", f"{NESTED}:build", "--weights", str(weights), "--data", "fashion-mnist"]
    args += ["--mean", "0.286", "--std", "0.353", "--train-limit", "600", "--val-limit", "200", "--trials", "3"]
    args += ["--epochs", "0.2", "--seed", "0", "--out", str(run), "--json"]
    assert main(args) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "validation is carved from the training data" in captured.err

    front = json.loads(captured.out)
    assert front
    assert main(["export", str(run), "--trial", "front", "-o", str(tmp_path / "exp"), "-q"]) == 0
    assert len(list((tmp_path / "exp").glob("trial-*/model.onnx"))) == len(front)
