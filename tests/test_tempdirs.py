"""Temporary work directories (hwtune._tempdirs): removed on every way out of their block, and those of a
process killed with SIGKILL (which nothing can catch) removed by the next run, never those of a live one."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hwtune.errors import ConfigError

TESTS = Path(__file__).resolve().parent

# A process that makes a work directory, says where, and waits to be killed.
_HOLD = (
    "import sys, time; from hwtune._tempdirs import work_dir\n"
    "cm = work_dir(sys.argv[2], parent=sys.argv[1]); print(cm.__enter__(), flush=True); time.sleep(120)"
)


def _hold(parent: Path, kind: str) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(parent), kind], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    held = Path(child.stdout.readline().strip())
    assert held.is_dir() and held.parent == parent
    return child, held


def _kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


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
    with pytest.raises(ConfigError, match="kind must be"), work_dir("../up", parent=tmp_path):
        pass


def test_the_dir_of_a_killed_process_goes_at_the_next_start_and_a_live_ones_stays(tmp_path):
    from hwtune._tempdirs import remove_stale, work_dir

    killed_child, killed = _hold(tmp_path, "trial")
    live_child, live = _hold(tmp_path, "quant")
    try:
        _kill(killed_child)
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
        with work_dir("parent", parent=tmp_path) as mine:
            removed = remove_stale(tmp_path)  # ... and the next start removes it
            assert mine.is_dir()  # this process keeps its own
        assert sorted(removed) == sorted([killed, legacy_old])
        assert live.is_dir()  # another live process keeps its own
        assert legacy_new.is_dir() and users.is_dir() and (tmp_path / "hwtune-trial-p1-x-link").is_symlink()
    finally:
        _kill(live_child)
    assert remove_stale(tmp_path) == [live]


def test_a_reused_pid_does_not_keep_a_dead_processs_dir(tmp_path):
    """The name records the process start time: another process that got the same pid is not the owner."""
    from hwtune._tempdirs import process_start, remove_stale

    me = process_start(os.getpid())
    if me is None:
        pytest.skip("no /proc here: the start time cannot be read")
    reused = tmp_path / f"hwtune-trial-p{os.getppid()}-{int(me) + 1}-abc"  # a live pid, another start time
    reused.mkdir()
    assert remove_stale(tmp_path) == [reused]


# A worker that is killed while one of its trials quantizes: the trial's and the quantizer's work
# directories both exist at that moment (quantize_static is made to hang there).
_TUNE_AND_HANG = """
import sys, time
sys.path.insert(0, sys.argv[1])
import onnxruntime.quantization as oq
from fake_pipeline import BUDGET, DATA, RECIPE, FastPipeline
from hwtune.tuner import tune

def hang(*args, **kwargs):
    sys.__stdout__.write("quantizing\\n")  # hwtune.quant silences sys.stdout around the quantizer
    sys.__stdout__.flush()
    time.sleep(300)

oq.quantize_static = hang
recipe = sys.argv[2] + "/int8.toml"
open(recipe, "w").write(RECIPE.replace('choices = ["fp32"]', 'choices = ["int8"]'))
tune(recipe, device="host", data=DATA, n_trials=1, out_dir=sys.argv[2] + "/killed", study_name="k",
     sampler="random", seed=0, budget=BUDGET, pipeline=FastPipeline, reports=False, progress=False)
"""


@pytest.mark.slow
def test_a_worker_killed_inside_a_trial_leaves_nothing_after_the_next_tune(tmp_path, monkeypatch, fashion_dir):
    from fake_pipeline import BUDGET, DATA, RECIPE, FastPipeline

    from hwtune.tuner import tune

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "HWTUNE_FAKE_TRAIN_SLEEP": "0"}
    child = subprocess.Popen(
        [sys.executable, "-c", _TUNE_AND_HANG, str(TESTS), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 240)
        line = child.stdout.readline().strip() if ready else "(no answer in 240 s)"
    finally:
        _kill(child)
    assert line == "quantizing", "the worker ended before it quantized"
    left = sorted(p.name.split("-p")[0] for p in tmp.iterdir() if p.name.startswith("hwtune-"))
    assert left == ["hwtune-quant", "hwtune-trial"]  # what SIGKILL leaves behind

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # this process's TMPDIR is the same directory
    recipe = tmp_path / "fast.toml"
    recipe.write_text(RECIPE)
    res = tune(recipe, device="host", data=DATA, n_trials=1, out_dir=tmp_path / "next", study_name="n",
               sampler="random", seed=0, budget=BUDGET, pipeline=FastPipeline, reports=False, progress=False)
    assert [t.state for t in res.trials] == ["complete"]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("hwtune-")] == []
