"""hwtune._io: text/JSON/CSV loaders name the file and what was expected; writes are atomic, keep the
previous file on a full or read-only disk and give normal permissions."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from support import BINARY, mount_tmpfs

from hwtune.errors import CalibrationError, ConfigError, ExportError


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 KiB tmpfs (a full disk in miniature); skipped where mounting is not allowed."""
    where = tmp_path / "tiny"
    if not mount_tmpfs(where, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC simulation covers it")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def readonly_fs(tmp_path: Path):
    where = tmp_path / "ro"
    if not mount_tmpfs(where, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


# -- files that are not text ------------------------------------------------------------------------


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


# -- output locations that cannot be written ---------------------------------------------------------


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
