"""Issue 14: every bad input is a one-line error (exit 2 from the CLI), nothing is written outside the
run directory, and no half-written file survives a failed write. One section per kind of input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
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


# ------------------------------------------------------------------------------- a damaged study database
# Each case damages a copy of the 0.1.0 study the way a disk, a copy or a crafted file would; every read
# path and a worker resuming the study must name the file and what is wrong, and leave it as it was.

_T3 = "(SELECT trial_id FROM trials WHERE number = 3)"
_HW3 = f"UPDATE trial_user_attributes SET value_json = {{}} WHERE key = 'hw' AND trial_id = {_T3}"


def _sql(*statements: str):
    def damage(db: Path) -> None:
        conn = sqlite3.connect(db)
        try:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    return damage


def _write(data: bytes):
    return lambda db: db.write_bytes(data)


def _foreign(db: Path) -> None:
    db.unlink()
    _sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)", "INSERT INTO notes (text) VALUES ('mine')")(db)


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()
    (db / "keep").write_text("x")


DAMAGED_STUDIES = {
    "text-file": (_write(b"schema_version = 1\n" * 40), "not an SQLite database (it starts with b'schema_version ="),
    "directory": (_directory, "is a directory, not an SQLite study database"),
    "zero-bytes": (_write(b""), "holds no Optuna study (an empty file, 0 bytes"),
    "truncated": (lambda db: db.write_bytes(db.read_bytes()[:50000]), "truncated SQLite database (50000 of 135168 bytes)"),
    "foreign-sqlite": (_foreign, "not an Optuna study database (no 'studies' table; it holds notes)"),
    "newer-schema": (
        _sql("UPDATE alembic_version SET version_num = 'v9.0.0.a'", "UPDATE version_info SET library_version = '9.0.0'"),
        "written by a newer Optuna schema (revision 'v9.0.0.a', Optuna 9.0.0)",
    ),
    "older-schema": (
        _sql("UPDATE alembic_version SET version_num = 'v3.0.0.d'"),
        "written by an older Optuna schema (revision v3.0.0.d",
    ),
    "missing-table": (_sql("DROP TABLE trial_heartbeats"), "incomplete Optuna schema (no table trial_heartbeats)"),
    "no-version": (_sql("DELETE FROM version_info"), "no Optuna schema version (version_info holds 0 rows"),
    "attribute-not-json": (_sql(_HW3.format("'{\"macs\": 1'")), "trial 3: attribute 'hw' is not valid JSON"),
    "attribute-not-utf8": (_sql(_HW3.format("X'7b22ff227d'")), "trial 3: attribute 'hw' is not UTF-8 text"),
    "attribute-not-utf8-text": (
        _sql(_HW3.format("CAST(X'7b22ff227d' AS TEXT)")),
        "trial 3: attribute 'hw' is not UTF-8 text",
    ),
    "attribute-not-object": (_sql(_HW3.format("'[1, 2]'")), "trial 3: attribute 'hw' must be a JSON object, got list"),
    "attribute-wrong-type": (
        _sql(_HW3.format("json_set(value_json, '$.macs', 'many')")),
        "trial 3: macs must be an integer or null, got 'many'",
    ),
    "settings-wrong-type": (
        _sql("UPDATE study_user_attributes SET value_json = '\"text\"' WHERE key = 'hwtune'"),
        "study 'tiny' settings: expected a mapping, got str",
    ),
    "trial-state": (_sql("UPDATE trials SET state = 'DONE' WHERE number = 3"), "trial 3: state 'DONE' is not one of"),
    "trial-date": (
        _sql("UPDATE trials SET datetime_start = 'yesterday' WHERE number = 3"),
        "trial 3: start time 'yesterday' is not a date and time",
    ),
    "objective-value": (
        _sql(f"UPDATE trial_values SET value = 'fast' WHERE trial_id = {_T3}"),
        "trial 3: objective value 'fast' ('FINITE') is not a number",
    ),
    "distribution": (
        _sql(f"UPDATE trial_params SET distribution_json = '{{}}' WHERE trial_id = {_T3} AND param_name = 'stem_width'"),
        "trial 3: parameter 'stem_width': unreadable distribution or value",
    ),
}


def _state(run: Path) -> dict[str, bytes | list[str]]:
    """Every file of the run directory (a directory where study.db should be: its listing)."""
    return {
        p.name: (sorted(q.name for q in p.iterdir()) if p.is_dir() else p.read_bytes())
        for p in run.iterdir()
        if p.name != "artifacts"
    }


@pytest.mark.parametrize("case", sorted(DAMAGED_STUDIES))
def test_a_damaged_study_database_is_one_line_and_left_as_it_was(case, old_run, capsys):
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import open_storage

    db = old_run / "study.db"
    damage, expected = DAMAGED_STUDIES[case]
    damage(db)
    before = _state(old_run)
    url = f"sqlite:///{db}"
    with pytest.raises(StudyError) as exc:
        load_result(url, "tiny")
    assert str(exc.value).startswith(f"{db}: ") and expected in str(exc.value) and "\n" not in str(exc.value)
    for argv in (
        ["front", "--storage", url],
        ["report", "--storage", url, "-o", str(old_run / "rep")],
        ["export", "--storage", url, "--trial", "0", "-o", str(old_run / "exp")],
    ):
        assert expected in cli_error(capsys, argv), argv
    assert _state(old_run) == before  # read-only commands create and change nothing
    with pytest.raises(StudyError) as exc:
        open_storage(url)  # a worker (tune, hwtune worker) resuming the study
    assert expected in str(exc.value)
    after = _state(old_run)
    after.pop("study.db.lock", None)  # the workers' lock file next to the database
    assert after == before


def test_tune_onto_a_damaged_study_stops_before_any_trial(old_run, capsys, fashion_dir):
    from hwtune.cli import main

    db = old_run / "study.db"
    _sql("UPDATE alembic_version SET version_num = 'v9.0.0.a'")(db)
    before = db.read_bytes()
    argv = ["tune", str(old_run / "tiny-convnet.toml"), "--device", "host", "--storage", f"sqlite:///{db}"]
    argv += ["--study", "tiny", "--trials", "1", "--out", str(old_run / "out"), "--quiet"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"{db}: written by a newer Optuna schema" in err[0], err
    assert db.read_bytes() == before


def test_a_healthy_study_is_read_without_a_write(old_run):
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import open_storage

    db = old_run / "study.db"
    before = _state(old_run)
    assert len(load_result(f"sqlite:///{db}", "tiny").trials) == 4
    assert _state(old_run) == before
    open_storage(f"sqlite:///{db}", heartbeat=False)  # a worker opening it checks it, then goes on
    assert (old_run / "study.db").read_bytes() == before["study.db"]


def test_a_worker_may_start_a_study_in_an_empty_sqlite_database(tmp_path):
    """An SQLite file with no table at all (or Optuna's tables only, half created) is a new study, not damage."""
    from hwtune.tuner.storage import open_storage

    for name, make in (("blank.db", []), ("half.db", ["CREATE TABLE studies (study_id INTEGER PRIMARY KEY)"])):
        db = tmp_path / name
        _sql("VACUUM", *make)(db)
        with pytest.raises(StudyError, match="holds no Optuna study|no Optuna schema version|incomplete"):
            open_storage(f"sqlite:///{db}", create=False)
        open_storage(f"sqlite:///{db}", heartbeat=False)
        conn = sqlite3.connect(db)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.close()
        assert {"studies", "trials", "version_info", "alembic_version"} <= tables


def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back_not_refused(tmp_path):
    """A writer killed inside a transaction leaves ``study.db-journal``: reading must recover, not fail."""
    from hwtune.tuner import load_result

    run = tmp_path / "run"
    shutil.copytree(STUDY_FIXTURE, run)
    db = run / "study.db"
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('PRAGMA cache_size = 1')\n"
        "c.execute('BEGIN'); c.execute(\"UPDATE trial_user_attributes SET value_json = 'garbage'\")\n"
        "print('in transaction', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "in transaction"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    if not Path(f"{db}-journal").exists():
        pytest.skip("SQLite kept the change in memory: no hot journal to recover")
    assert len(load_result(f"sqlite:///{db}", "tiny").trials) == 4


# ------------------------------------------------------------------- read-only commands and temporary files


def test_front_on_a_missing_study_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nothing" / "study.db"
    cli_error(capsys, ["front", "--storage", f"sqlite:///{missing}"])
    assert not missing.exists() and not missing.parent.exists()


# Temporary work directories (removed on every exit path; stale ones of killed runs): tests/test_tempdirs.py.


def test_every_loader_error_is_a_hwtune_error():
    """The error classes the loaders raise are HwtuneErrors, so the CLI prints them as one line."""
    for cls in (ConfigError, DataError, CalibrationError, ExportError, StudyError):
        assert issubclass(cls, HwtuneError)
