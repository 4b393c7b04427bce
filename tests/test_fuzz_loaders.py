"""Fuzz-style: every loader, fed random bytes and damaged copies of valid files, raises a HwtuneError.

A damaged file may still parse (a flipped byte inside a comment); what must never happen is another
exception type (a traceback in the CLI). Mutations are seeded, so a failure reproduces.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hwtune.errors import HwtuneError

REPO = Path(__file__).resolve().parent.parent
STUDY_FIXTURE = REPO / "tests" / "data" / "study-0.1.0"
NETWORKS_CSV = REPO / "benchmarks" / "results" / "hwnasbench_raspberry-pi-4_calibration.csv"
MICROBENCH_JSON = REPO / "benchmarks" / "results" / "host_microbench.json"
N_RANDOM = 6
N_FLIPS = 12


def mutations(valid: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """Random bytes, truncations at several points, single-byte flips and a spliced NUL/0xff run."""
    rng = random.Random(seed)
    yield "empty", b""
    for i in range(N_RANDOM):
        yield f"random{i}", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600)))
    for frac in (0.02, 0.1, 0.33, 0.5, 0.77, 0.99):
        yield f"truncated{frac}", valid[: int(len(valid) * frac)]
    for i in range(N_FLIPS):
        data = bytearray(valid)
        pos = rng.randrange(len(data))
        data[pos] = rng.getrandbits(8)
        yield f"flip{i}@{pos}", bytes(data)
    mid = len(valid) // 2
    yield "nul-splice", valid[:mid] + b"\0\xff\xfe" * 8 + valid[mid:]
    yield "utf16", valid.decode("utf-8", "replace").encode("utf-16")


def check_loader(load: Callable[[Path], Any], valid: bytes, path: Path, seed: int) -> int:
    """Feed every mutation of ``valid`` (written to ``path``) to ``load``; return how many were rejected."""
    rejected = 0
    for name, data in mutations(valid, seed):
        path.write_bytes(data)
        try:
            load(path)
        except HwtuneError as exc:
            rejected += 1
            assert str(exc).strip(), f"{name}: empty error message"
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{path.name} {name}: {type(exc).__name__} instead of a HwtuneError: {exc!s:.300}")
    return rejected


@pytest.mark.parametrize("valid_file", sorted((REPO / "profiles").glob("*.toml")), ids=lambda p: p.name)
def test_profile_loader(valid_file, tmp_path):
    from hwtune.device import load_profile

    rejected = check_loader(load_profile, valid_file.read_bytes(), tmp_path / "mutant.toml", seed=1)
    assert rejected >= N_RANDOM  # random bytes are never a valid profile


@pytest.mark.parametrize("valid_file", sorted((REPO / "models").glob("*.toml")), ids=lambda p: p.name)
def test_recipe_loader(valid_file, tmp_path):
    from hwtune.space import SearchSpace

    rejected = check_loader(SearchSpace.from_recipe, valid_file.read_bytes(), tmp_path / "mutant.toml", seed=2)
    assert rejected >= N_RANDOM


def test_generic_text_loaders(tmp_path):
    from hwtune._io import load_csv, load_json, load_toml
    from hwtune.errors import CalibrationError

    csv_text = NETWORKS_CSV.read_bytes()
    check_loader(lambda p: load_csv(p, kind="calibration CSV", error=CalibrationError), csv_text, tmp_path / "m.csv", 3)
    doc = json.dumps({"results": [{"id": "a", "median_ms": 1.5}], "device": {"x": [1, 2.5, None]}}).encode()
    assert check_loader(lambda p: load_json(p, kind="results", error=CalibrationError), doc, tmp_path / "m.json", 4)
    toml = (REPO / "profiles" / "host.toml").read_bytes()
    assert check_loader(lambda p: load_toml(p, kind="profile"), toml, tmp_path / "m.toml", 5) >= N_RANDOM


def test_networks_csv_loader(tmp_path):
    """The calibration ``--networks`` CSV reader (hwtune calibrate --networks)."""
    from hwtune.predictor._fit import read_networks_csv

    check_loader(read_networks_csv, NETWORKS_CSV.read_bytes(), tmp_path / "mutant.csv", seed=6)


def test_microbench_loader(tmp_path):
    """The micro-benchmark results reader (hwtune calibrate RESULTS.json), on a 12-case slice of a real file."""
    from hwtune.predictor._fit import read_microbench

    full = json.loads(MICROBENCH_JSON.read_text())
    small = json.dumps({**full, "results": full["results"][:12]}, indent=1).encode()
    check_loader(read_microbench, small, tmp_path / "mutant.json", seed=7)


def test_idx_loader(tmp_path):
    import numpy as np

    from hwtune._idx import read_idx

    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    plain = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes()
    check_loader(lambda p: read_idx(p, ndim=3, dtype="u1"), plain, tmp_path / "m-idx3-ubyte", seed=8)
    check_loader(lambda p: read_idx(p, ndim=3), gzip.compress(plain), tmp_path / "m-idx3-ubyte.gz", seed=9)


def test_study_loader(tmp_path):
    """A damaged ``study.db`` (copied from the 0.1.0 fixture) never gives a traceback and is never written,
    whether a report reads it or a worker resumes it."""
    from hwtune.tuner import load_result
    from hwtune.tuner.storage import open_storage

    run = tmp_path / "run"
    shutil.copytree(STUDY_FIXTURE, run)
    db = run / "study.db"
    valid = db.read_bytes()
    rng = random.Random(10)
    cases = [("random", bytes(rng.getrandbits(8) for _ in range(4096))), ("empty", b"")]
    cases += [("sqlite-header-only", valid[:100])]
    cases += [(f"truncated{f}", valid[: int(len(valid) * f)]) for f in (0.001, 0.1, 0.5, 0.9)]
    for i in range(6):  # damage inside the pages that hold the tables
        data = bytearray(valid)
        start = rng.randrange(100, len(valid) - 512)
        data[start : start + 512] = bytes(rng.getrandbits(8) for _ in range(512))
        cases.append((f"page{i}@{start}", bytes(data)))
    rejected = 0
    for name, data in cases:
        db.write_bytes(data)
        for what, read in (("load_result", lambda: load_result(f"sqlite:///{db}", "tiny")),
                           ("open_storage", lambda: open_storage(f"sqlite:///{db}", heartbeat=False))):
            try:
                read()
            except HwtuneError as exc:
                rejected += what == "load_result"
                assert "\n" not in str(exc) and str(db) in str(exc), f"{name} {what}: {exc}"
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"study.db {name} {what}: {type(exc).__name__} instead of a HwtuneError: {exc!s:.300}")
            assert db.read_bytes() == data, f"study.db {name}: {what} changed the file"
    assert rejected >= 8  # random bytes, empty, header only and every truncation at least
