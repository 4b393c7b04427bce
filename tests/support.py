"""Paths and the tiny shared study settings, importable by tests (``from support import ...``).

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml); conftest.py holds the fixtures and
imports its constants from here, so a test never imports conftest.py (under ``--import-mode=importlib``
that would run it a second time).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
STUDY_FIXTURE = DATA_DIR / "study-0.1.0"  # a study written by hwtune 0.1.0 (see its README)
MODELS_DIR = DATA_DIR / "models"  # user-model files, loaded the way `hwtune compress FILE:build` does
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


def mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs at ``path`` (root only); False where that is not allowed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, check=False)
    return done.returncode == 0


_TINY_RECIPE = """\
schema_version = 1
family = "convnet"
dataset = "fashion-mnist"

[input]
channels = 1
size = 28
classes = 10

[knobs]
stem_stride = 2
stem_width = [4, 8]
width = [[4, 8], [8, 16]]
depth = 1
kernel_size = {kernel_size}

[precision]
choices = {precisions}

[train]
epochs = {epochs!r}
batch_size = {batch_size}
"""


def tiny_recipe(
    *,
    kernel_size: int | list[int] = 3,
    precisions: Sequence[str] = ("fp32", "int8"),
    epochs: float = 1.0,
    batch_size: int = 64,
    augment: Sequence[str] = (),
) -> str:
    """The tests' tiny convnet recipe as TOML text: Fashion-MNIST, stem 4 or 8 channels at stride 2, two
    stages of widths 4/8 and 8/16, depth 1 (8 shapes per kernel size, times the precisions).

    The keywords set what the tests vary; ``augment`` adds a ``[train] augment`` list.
    """
    text = _TINY_RECIPE.format(
        kernel_size=json.dumps(kernel_size), precisions=json.dumps(list(precisions)), epochs=float(epochs),
        batch_size=batch_size,
    )
    return text + (f"augment = {json.dumps(list(augment))}\n" if augment else "")


def nested_model():
    """``build()`` of tests/data/models/nested_net.py (blocks inside blocks), seeded 0, in train mode."""
    import torch

    sys.path.insert(0, str(MODELS_DIR))
    try:
        from nested_net import build
    finally:
        sys.path.remove(str(MODELS_DIR))
    torch.manual_seed(0)
    return build()


def write_recipe(directory: Path, name: str = "tiny.toml", text: str | None = None) -> Path:
    """Write ``text`` (default: :func:`tiny_recipe`) to ``directory / name``; returns the path."""
    path = directory / name
    path.write_text(tiny_recipe() if text is None else text)
    return path


# One real (not faked) tiny search: ``tiny_recipe()`` (16 candidates, fp32/int8), 2000 Fashion-MNIST
# training images, 4 trials, two rungs (the ``tuned_study`` fixture; tests/test_exporting.py).
TUNER_TINY_DATA = {"name": "fashion-mnist", "train_limit": 2000, "val_limit": 500, "test_limit": 500}
TUNER_TINY_BUDGET = {"epochs": 1.0, "rungs": [0.5, 1.0], "batch_size": 64, "latency_budget_s": 0.2,
                     "calibration_samples": 64}


# ---- multi-process studies (tests/tuner/test_workers.py, test_postgres.py, test_faults.py) ----------


def trained_twice(train_log: Path) -> list[tuple[str, str]]:
    """(candidate key, trainer seed = candidate seed + rung) pairs trained more than once."""
    lines = [ln.split() for ln in train_log.read_text().splitlines() if ln.strip()]
    counts = collections.Counter((ln[1], ln[2]) for ln in lines)
    return [k for k, n in counts.items() if n > 1]


_OPEN_SNIPPET = """
import sys, time
from hwtune.tuner.storage import create_or_load_study, open_storage
t0 = float(sys.argv[2])
time.sleep(max(0.0, t0 - time.time()))
st = open_storage(sys.argv[1])
create_or_load_study(st, "race", ["maximize", "minimize"])
print("ok")
"""


def start_together(url: str, n: int, snippet: str = _OPEN_SNIPPET) -> list[subprocess.CompletedProcess[str]]:
    """Run ``snippet`` in ``n`` processes released at the same instant (after their imports)."""
    t0 = time.time() + 6.0
    procs = [
        subprocess.Popen([sys.executable, "-c", snippet, url, str(t0)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(n)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


def write_patch_folder(root: Path, per_class: dict[str, int], seed: int, *, size: int = 28, channels: int = 1) -> Path:
    """A tiny generated ImageFolder of 10 classes (``root/<split>/c<k>/<i>.png``): class c is a bright patch at grid
    cell c (4 cells a row, ``size // 4`` pixels each) over noise; in RGB the patch is in colour channel c % 3."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    cell = size // 4
    shape = (size, size) if channels == 1 else (size, size, 3)
    for split, n in per_class.items():
        for c in range(10):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, size=shape, dtype=np.uint8)
                r, q = divmod(c, 4)
                patch = (slice(r * cell + 2, r * cell + 2 + cell), slice(q * cell, q * cell + cell))
                img[patch if channels == 1 else (*patch, c % 3)] = 230
                Image.fromarray(img, mode="L" if channels == 1 else "RGB").save(d / f"{i}.png")
    return root
