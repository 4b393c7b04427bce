"""hwtune.tuner.inputs: data that does not fit the recipe, safe study names and run directories, and what a
stored study may make the tool read (never a download, never a path outside its run directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO_ROOT as REPO

from hwtune.errors import ConfigError, DataError, StudyError


def _image_folder(root: Path, classes: int, size: int, mode: str) -> Path:
    from PIL import Image

    for c in range(classes):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(3):
            Image.new(mode, (size, size), color=(40 * c + i) if mode == "L" else (40 * c, i, 9)).save(d / f"{i}.png")
    return root


def test_data_that_does_not_fit_the_recipe_names_both(tmp_path):
    from hwtune.data import load_dataset
    from hwtune.space import SearchSpace
    from hwtune.tuner.inputs import check_data_fits

    space = SearchSpace.from_recipe("fashion-convnet")
    rgb = load_dataset(_image_folder(tmp_path / "rgb", classes=3, size=32, mode="RGB"))
    with pytest.raises(DataError) as info:
        check_data_fits(space, rgb)
    msg = str(info.value)
    assert (
        "\n" not in msg
        and "'rgb' (3x32x32, 3 classes)" in msg
        and "recipe 'fashion-convnet' (1x28x28, 10 classes)" in msg
    )
    assert "channels 3 != 1" in msg and "size 32x32 != 28x28" in msg and "classes 3 != 10" in msg
    grey = load_dataset(_image_folder(tmp_path / "grey", classes=10, size=28, mode="L"))
    check_data_fits(space, grey)  # fits: no error


@pytest.mark.parametrize("bad", ["../x", "a/b", "/abs/path", ".hidden", "", "x" * 101, "a b"])
def test_study_names_and_run_directories(tmp_path, bad):
    from hwtune.tuner.inputs import check_study_name, run_dir

    with pytest.raises(ConfigError, match="study name must be"):
        check_study_name(bad)
    with pytest.raises(ConfigError):
        run_dir(bad, parent=tmp_path / "runs")
    assert run_dir("fashion-convnet-host", parent=tmp_path / "runs") == (tmp_path / "runs" / "fashion-convnet-host")
    assert run_dir(bad or "x", tmp_path / "mine") == tmp_path / "mine"  # a directory the user names is used as given


def test_default_study_names_are_safe():
    from hwtune._util import is_safe_name
    from hwtune.tuner.inputs import default_study_name

    assert default_study_name("fashion-convnet", "raspberry-pi-4+pixel-3") == "fashion-convnet-raspberry-pi-4+pixel-3"
    for recipe, dev in (("../../my recipe (v2).toml", "host"), ("x", "../../etc"), ("é", "é")):
        assert is_safe_name(default_study_name(recipe, dev))


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    import hwtune.data as hd

    monkeypatch.delenv(hd.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(hd, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_download(*a, **k):
        raise AssertionError("a stored data setting started a download")

    monkeypatch.setattr(hd, "_download", no_download)


def _idx_dir(directory: Path, n: int = 60) -> Path:
    import gzip

    import numpy as np

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            (directory / f"{part}-{kind}-ubyte.gz").write_bytes(gzip.compress(head + arr.tobytes()))
    return directory


def test_stored_data_settings_never_download(tmp_path, no_system_data):
    from hwtune.tuner.inputs import load_stored_data

    with pytest.raises(DataError, match="mnist not found"):
        load_stored_data({"name_or_path": "mnist", "download": True}, study="s", run_dir=tmp_path)


def test_stored_data_paths_only_inside_the_run_directory(tmp_path, no_system_data):
    from hwtune.tuner.inputs import load_stored_data

    run = tmp_path / "run"
    inside = _idx_dir(run / "data")
    outside = _idx_dir(tmp_path / "elsewhere")
    splits = load_stored_data({"name_or_path": str(inside), "train_limit": 20}, study="s", run_dir=run)
    assert len(splits.train) == 20
    for spec in (
        {"name_or_path": str(outside)},
        {"name_or_path": "fashion-mnist", "root": str(outside), "download": True},
        {"name_or_path": str(run / ".." / "elsewhere")},
    ):
        with pytest.raises(StudyError, match="outside its run directory"):
            load_stored_data(spec, study="s", run_dir=run)
        with pytest.raises(StudyError, match="outside its run directory"):
            load_stored_data(spec, study="s", run_dir=None)
    # given again by the user, the directory is read, with the study's split settings
    again = load_stored_data(
        {"name_or_path": str(outside), "train_limit": 20}, study="s", run_dir=run, data=str(outside)
    )
    assert len(again.train) == 20
    for bad in ({"name_or_path": "mnist", "shell": "rm -rf"}, ["mnist"], {"name_or_path": 3}):
        with pytest.raises(StudyError):
            load_stored_data(bad, study="s", run_dir=run)


def test_stored_recipe_text_is_used_not_the_stored_path(tmp_path):
    from hwtune.tuner.inputs import space_from_info

    text = (REPO / "models" / "fashion-convnet.toml").read_text()
    elsewhere = tmp_path / "changed.toml"
    elsewhere.write_text("this file changed since the study and is not TOML")
    space = space_from_info({"name": "fashion-convnet", "path": str(elsewhere), "text": text})
    assert space.family == "convnet" and space.name == "changed"
    with pytest.raises(StudyError, match="not a bundled recipe"):
        space_from_info({"name": str(elsewhere), "path": str(elsewhere), "text": None})
    with pytest.raises(StudyError, match="not valid TOML"):
        space_from_info({"name": "x", "text": "\0garbage ["})
