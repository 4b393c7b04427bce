"""Issue 14: every bad input is a one-line error (exit 2 from the CLI), nothing is written outside the
run directory, and no half-written file survives a failed write. One section per kind of input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwtune.errors import CalibrationError, ConfigError, DataError, ExportError, HwtuneError, StudyError

REPO = Path(__file__).resolve().parent.parent
STUDY_FIXTURE = REPO / "tests" / "data" / "study-0.1.0"
BINARY = bytes(range(256)) * 4  # not UTF-8 from its 0x80 on


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit code 2 and exactly one line on stderr; return that line."""
    from hwtune.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """The 0.1.0 study fixture copied to a fresh run directory."""
    run = tmp_path / "run"
    shutil.copytree(STUDY_FIXTURE, run)
    return run


def _mount_tmpfs(path: Path, options: str) -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 KiB tmpfs (a full disk in miniature); skipped where mounting is not allowed."""
    where = tmp_path / "tiny"
    if not _mount_tmpfs(where, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC simulation covers it")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def readonly_fs(tmp_path: Path):
    where = tmp_path / "ro"
    if not _mount_tmpfs(where, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


# ------------------------------------------------------------------------------ files that are not text


def test_binary_profile_is_one_line_naming_the_file(tmp_path, capsys):
    from hwtune.device import load_profile

    bad = tmp_path / "board.toml"
    bad.write_bytes(BINARY)
    with pytest.raises(ConfigError, match=r"board\.toml: not a text file .*expected a profile in TOML"):
        load_profile(bad)
    assert "board.toml" in cli_error(capsys, ["devices", "show", str(bad)])
    assert "is a directory" in cli_error(capsys, ["devices", "show", str(tmp_path) + "/"])


def test_binary_recipe_is_one_line_naming_the_file(tmp_path, capsys):
    from hwtune.space import SearchSpace

    bad = tmp_path / "space.toml"
    bad.write_bytes(b'family = "convnet"\n\0\0\0')  # valid UTF-8, but NUL bytes: not text
    with pytest.raises(ConfigError, match=r"space\.toml: not a text file \(NUL byte at offset 19\)"):
        SearchSpace.from_recipe(bad)
    bad.write_bytes(BINARY)
    line = cli_error(capsys, ["tune", str(bad), "--device", "host", "--out", str(tmp_path / "run")])
    assert "space.toml" in line and "expected a recipe" in line
    assert not (tmp_path / "run").exists()


def test_calibration_loaders_raise_the_callers_error(tmp_path):
    from hwtune._io import load_csv, load_json

    for name, load in (("m.csv", load_csv), ("m.json", load_json)):
        path = tmp_path / name
        path.write_bytes(b"\xff\xfe" + BINARY)
        with pytest.raises(CalibrationError, match=rf"{name}: not a text file .*expected a calibration file"):
            load(path, kind="calibration file", error=CalibrationError)
    path = tmp_path / "m.csv"
    path.write_text("latency_ms,input_shape\n1.5,1x3x8x8\n2.5,1x3x8x8,extra\n")
    with pytest.raises(CalibrationError, match="row 3 has more cells than the header's 2 columns"):
        load_csv(path, error=CalibrationError)
    path.write_bytes(b"\xef\xbb\xbflatency_ms\n1.5\n")  # a spreadsheet's BOM is fine
    assert load_csv(path)[1] == ["latency_ms"]


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": -Infinity}', '{"x": 1e999}', "[" * 100_000])
def test_json_numbers_beyond_json_are_refused(tmp_path, text):
    from hwtune._io import load_json

    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"r\.json: not valid JSON"):
        load_json(path)


def test_oversize_and_unreadable_inputs(tmp_path):
    from hwtune._io import read_text

    path = tmp_path / "big.toml"
    path.write_bytes(b"a" * 2048)
    with pytest.raises(ConfigError, match=r"big\.toml: larger than"):
        from hwtune._io import read_bytes

        read_bytes(path, max_bytes=1024)
    with pytest.raises(ConfigError, match="recipe file not found"):
        read_text(tmp_path / "missing.toml", kind="recipe")


# -------------------------------------------------------------------- output locations that cannot be written


def test_unwritable_directories_are_one_line_errors(tmp_path):
    from hwtune._io import check_writable_dir

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="it exists and is not a directory"):
        check_writable_dir(a_file, what="reports")
    with pytest.raises(ExportError, match="a parent of it is a file"):
        check_writable_dir(a_file / "sub", what="the export", error=ExportError)
    ok = check_writable_dir(tmp_path / "new" / "dir")
    assert ok.is_dir() and list(ok.iterdir()) == []  # the probe file is gone


def test_read_only_file_system(readonly_fs):
    from hwtune._io import check_writable_dir, write_atomic

    with pytest.raises(ConfigError, match=r"cannot write reports into .*ro \(Read-only file system\)"):
        check_writable_dir(readonly_fs, what="reports")
    with pytest.raises(ConfigError, match="Read-only file system"):
        write_atomic(readonly_fs / "front.json", "{}")


def test_full_disk_keeps_the_previous_file(tiny_fs):
    from hwtune._io import write_atomic

    target = tiny_fs / "manifest.json"
    write_atomic(target, '{"old": true}')
    with pytest.raises(ConfigError, match=r"cannot write .*manifest\.json \(No space left on device\)"):
        write_atomic(target, b"x" * (1 << 20))
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["manifest.json"]  # no temporary file left


def test_failed_write_leaves_previous_state_simulated(tmp_path):
    """Same as the tmpfs test where mounting is impossible: a write raising ENOSPC."""
    from hwtune._io import atomic_output

    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ConfigError, match=r"model\.onnx \(No space left on device\)"), atomic_output(target) as tmp:
        tmp.write_bytes(b"half a mod")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "new.onnx") as tmp:
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    from hwtune._io import write_atomic

    new = write_atomic(tmp_path / "a.json", "{}")
    mask = os.umask(0o022)
    os.umask(mask)
    assert new.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(new, 0o600)
    write_atomic(new, "[]")
    assert new.stat().st_mode & 0o777 == 0o600 and new.read_text() == "[]"


def test_front_report_into_unwritable_place(old_run, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    url = f"sqlite:///{old_run / 'study.db'}"
    line = cli_error(capsys, ["front", "--storage", url, "--study", "tiny", "--report", str(a_file / "rep")])
    assert str(a_file / "rep") in line and "a parent of it is a file" in line
    line = cli_error(capsys, ["front", "--storage", url, "--study", "tiny", "--report", str(a_file)])
    assert "exists and is not a directory" in line


def test_reports_are_written_atomically(old_run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from hwtune.report import write_reports
    from hwtune.tuner import load_result

    result = load_result(f"sqlite:///{old_run / 'study.db'}", "tiny")
    out = tmp_path / "rep"
    write_reports(result, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"front.json", "pareto.png", "hypervolume.png", "report.md"}

    def full_disk(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(ConfigError, match=r"pareto\.png \(No space left on device\)"):
        write_reports(result, out)
    assert (out / "pareto.png").read_bytes() == before["pareto.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary file left


def test_export_checks_its_output_before_any_work(old_run, tmp_path, capsys, monkeypatch):
    from hwtune import exporting

    def must_not_run(*a, **k):
        raise AssertionError("data was loaded before the output directory was checked")

    monkeypatch.setattr(exporting, "load_stored_data", must_not_run)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = cli_error(capsys, ["export", str(old_run), "--trial", "0", "-o", str(a_file / "out")])
    assert str(a_file / "out") in line and "a parent of it is a file" in line


def test_export_writes_model_then_manifest_or_nothing(old_run, tmp_path, monkeypatch, fashion_dir):
    from hwtune.exporting import export
    from hwtune.tuner import load_result, sha256_file

    result = load_result(f"sqlite:///{old_run / 'study.db'}", "tiny")
    trial = next(t for t in result.trials if t.precision == "fp32" and t.trained)
    out = tmp_path / "out"
    exp = export(result, trial.number, out)
    assert exp.manifest["sha256"] == sha256_file(exp.model_path)
    assert exp.manifest["file_bytes"] == exp.model_path.stat().st_size
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"model.onnx", "manifest.json"}

    real_copy = shutil.copyfile

    def disk_full_in_out(src, dst, *a, **k):
        if Path(dst).parent == out:
            Path(dst).write_bytes(Path(src).read_bytes()[:100])  # half a model, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", disk_full_in_out)
    with pytest.raises(ExportError, match=r"cannot write the model to .*model\.onnx \(No space left on device\)"):
        export(result, trial.number, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export, whole


def test_finalize_checks_where_it_writes_before_training(tmp_path, capsys, monkeypatch):
    import hwtune.tuner.finalize as fin

    where = tmp_path / "ro-run"
    if not _mount_tmpfs(where, "size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        shutil.copytree(STUDY_FIXTURE, where, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        monkeypatch.setattr(fin, "load_stored_data", lambda *a, **k: pytest.fail("finalize loaded data first"))
        line = cli_error(capsys, ["finalize", str(where), "--epochs", "0.1"])
        assert f"cannot write the results of study 'tiny' into {where} (Read-only file system)" in line
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# --------------------------------------------------------------------------------- numbers that are not numbers


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "-inf"),
        ("--timeout", "0"),
        ("--max-latency-ms", "NaN"),
        ("--epochs", "-1"),
        ("--rungs", "0.5,nan"),
        ("--rungs", "0.5,2"),
    ],
)
def test_cli_numbers_are_finite_and_in_range(capsys, tmp_path, option, value):
    line = cli_error(
        capsys, ["tune", "fashion-convnet", "--device", "host", option, value, "--out", str(tmp_path / "r")]
    )
    assert option in line and repr(value) in line
    assert not (tmp_path / "r").exists()


def test_usage_error_names_a_value_that_starts_with_a_dash(capsys):
    line = cli_error(capsys, ["profile", "torchvision:resnet18", "--input", "-1x3x224x224"])
    assert "'-1x3x224x224'" in line


def test_api_numbers_are_checked_before_the_study_is_opened(tmp_path):
    from hwtune.exporting import export
    from hwtune.tuner.finalize import finalize

    url = f"sqlite:///{tmp_path / 'none' / 'study.db'}"
    for kw in ({"seed": -1}, {"seed": 2**32}, {"lr": float("nan")}, {"epochs": float("inf")}, {"threads": 0}):
        with pytest.raises(ConfigError):
            finalize(url, **kw)
    with pytest.raises(ConfigError, match="tolerance"):
        export(url, 0, tmp_path / "out", tolerance=float("nan"))
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- data that does not fit


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


# -------------------------------------------------------------------------------------- paths from names


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


@pytest.mark.parametrize("bad_id", ["../x", "a/b", ".hidden", "with space"])
def test_profile_ids_are_safe_names(tmp_path, bad_id):
    from hwtune.device import DeviceProfile, load_profile

    text = (REPO / "profiles" / "stm32h743.toml").read_text().replace('id = "stm32h743"', f"id = {json.dumps(bad_id)}")
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"board\.toml: id must be a name of"):
        load_profile(path)
    stored = {**load_profile("stm32h743").to_dict(), "id": bad_id}
    with pytest.raises(ConfigError, match="id must be a name of"):
        DeviceProfile.from_dict(stored, source="study x")


def test_recipe_names_are_safe(tmp_path):
    from hwtune.space import SearchSpace

    text = (REPO / "models" / "fashion-convnet.toml").read_text()
    path = tmp_path / "r.toml"
    path.write_text('name = "../../evil"\n' + text)
    with pytest.raises(ConfigError, match=r"name must be a name of .*got '../../evil'"):
        SearchSpace.from_recipe(path)
    odd = tmp_path / "my recipe (v2).toml"
    odd.write_text(text)
    assert SearchSpace.from_recipe(odd).name == "my-recipe-v2-"


# ------------------------------------------------------------------- what a study file may make the tool do


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


# ------------------------------------------------------------------- read-only commands and temporary files


def test_front_on_a_missing_study_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nothing" / "study.db"
    cli_error(capsys, ["front", "--storage", f"sqlite:///{missing}"])
    assert not missing.exists() and not missing.parent.exists()


def test_work_dirs_are_removed_on_every_exit_path(tmp_path):
    from hwtune._tempdirs import work_dir

    made = []
    with work_dir("trial", parent=tmp_path) as d:
        made.append(d)
        (d / "f").write_bytes(b"x")
        assert d.name.startswith(f"hwtune-trial-p{os.getpid()}-")
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc), work_dir("quant", parent=tmp_path) as d:
            made.append(d)
            raise exc
    assert not any(d.exists() for d in made) and list(tmp_path.iterdir()) == []
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with (
        pytest.raises(ConfigError, match="cannot create a temporary directory .*set TMPDIR"),
        work_dir("x", parent=a_file),
    ):
        pass


def test_stale_work_dirs_of_killed_processes_are_removed(tmp_path):
    from hwtune._tempdirs import remove_stale, work_dir

    code = (
        "import sys, time; from hwtune._tempdirs import work_dir\n"
        "cm = work_dir('trial', parent=sys.argv[1]); print(cm.__enter__(), flush=True); time.sleep(120)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    killed = Path(child.stdout.readline().strip())
    assert killed.is_dir()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert killed.is_dir()  # kill -9 cannot be caught: the directory stays ...
    old = int(time.time()) - 3 * 86400
    legacy_old, legacy_new, users = (
        tmp_path / "hwtune-trial-abcd1234",
        tmp_path / "hwtune-quant-abcd1234",
        tmp_path / "hwtune-results1",
    )
    for d in (legacy_old, legacy_new, users):
        d.mkdir()
    os.utime(legacy_old, (old, old))
    os.utime(users, (old, old))
    (tmp_path / "hwtune-trial-p1-x-link").symlink_to(users)
    with work_dir("quant", parent=tmp_path) as mine:
        removed = remove_stale(tmp_path)  # ... and the next start removes it
        assert mine.is_dir()  # a live process keeps its own
    assert sorted(removed) == sorted([killed, legacy_old])
    assert legacy_new.is_dir() and users.is_dir() and (tmp_path / "hwtune-trial-p1-x-link").is_symlink()


def test_every_loader_error_is_a_hwtune_error():
    """The error classes the loaders raise are HwtuneErrors, so the CLI prints them as one line."""
    for cls in (ConfigError, DataError, CalibrationError, ExportError, StudyError):
        assert issubclass(cls, HwtuneError)
