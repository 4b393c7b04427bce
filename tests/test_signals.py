"""SIGTERM (kill, ``timeout``, a batch scheduler) stops ``hwtune tune`` the way Ctrl-C does, with exit code 143.

The trial in flight is recorded as failed and its candidate queued again, finished trials stay, the
reports are written, and the same command resumes the study to its target. The CLI runs in a
subprocess with ``fake_pipeline.FastPipeline`` as the default pipeline (real build/ship/evaluate of
tiny convnets; training is a logged sleep, so the signal can be sent while a trial trains).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_pipeline import RECIPE

from hwtune.signals import SigtermGuard, Terminated

TESTS = Path(__file__).resolve().parent
TRAIN_SLEEP_S = 0.6

# `hwtune tune` itself (hwtune.cli.main), with the fast pipeline in place of the standard one.
_CLI = """
import sys
import fake_pipeline
import hwtune.tuner.api as api
api.CandidatePipeline = fake_pipeline.FastPipeline
from hwtune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _complete(db: Path) -> list[int]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT number FROM trials WHERE state = 'COMPLETE' ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # the schema is still being created
        return []
    finally:
        con.close()
    return [r[0] for r in rows]


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CLI, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_inside_training(proc: subprocess.Popen[str], db: Path, train_log: Path, timeout_s: float = 120.0) -> None:
    """Until the study has a complete trial and another trial is in its (sleeping) training step."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            pytest.fail(f"hwtune tune ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        # a training line written less than half a sleep ago: that trial is asleep in training now
        fresh = train_log.exists() and time.time() - train_log.stat().st_mtime < TRAIN_SLEEP_S / 2
        if fresh and _complete(db):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no complete trial within the time limit")


@pytest.mark.slow
def test_sigterm_stops_tune_like_ctrl_c_and_the_same_command_resumes(tmp_path):
    from hwtune.tuner import load_result

    recipe = tmp_path / "fast.toml"
    recipe.write_text(RECIPE)
    out, train_log = tmp_path / "run", tmp_path / "train.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               HWTUNE_FAKE_TRAIN_SLEEP=str(TRAIN_SLEEP_S), HWTUNE_FAKE_TRAIN_LOG=str(train_log), OMP_NUM_THREADS="1")
    args = ["tune", str(recipe), "--device", "host", "-n", "3", "-o", str(out), "--study", "sig", "--sampler",
            "random", "--seed", "0", "--epochs", "1", "--rungs", "1", "--data", "fashion-mnist",
            "--train-limit", "256", "--val-limit", "128", "-q"]
    proc = _start(args, env, tmp_path)
    _wait_inside_training(proc, out / "study.db", train_log)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 143, err
    assert err.count("\n") == 1 and "terminated (SIGTERM)" in err and "run the same command again" in err, err
    before = load_result(f"sqlite:///{out / 'study.db'}")
    kept = [t.number for t in before.trials if t.state == "complete"]
    assert kept
    failed = [t for t in before.trials if t.state == "fail"]
    assert len(failed) == 1 and "interrupted" in str(failed[0].failure)
    assert any(t.state == "waiting" for t in before.trials)  # its candidate is queued again
    assert json.loads((out / "front.json").read_text())["interrupted"] is True  # reports written, as for Ctrl-C

    again = _start(args, env, tmp_path)
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    after = load_result(f"sqlite:///{out / 'study.db'}")
    done = [t.number for t in after.trials if t.state == "complete"]
    assert set(kept) <= set(done) and len(done) >= 3
    assert not any(t.state in ("waiting", "running") for t in after.trials)


def test_the_guard_restores_the_previous_handler_and_nests():
    def mine(signum, frame):  # pragma: no cover - never called
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with SigtermGuard() as outer:
            assert signal.getsignal(signal.SIGTERM) is not mine
            with SigtermGuard() as inner:  # joins the outer guard
                with pytest.raises(Terminated):
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)  # the handler raises here, at the latest
                assert inner.received and outer.received
                os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM does not interrupt the clean-up
                time.sleep(0.05)
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_guard_does_nothing_outside_the_main_thread():
    seen = []

    def body():
        with SigtermGuard() as guard:
            seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(guard.received)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before, False]
