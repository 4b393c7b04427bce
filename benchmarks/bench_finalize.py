"""Finalized-front benchmark: the best small model of a search, trained on, as shipped, on the test split.

Issue 9's target: >= 92.5% Fashion-MNIST test accuracy, int8 as shipped, at <= 50 K parameters, within
30 minutes of total compute on 2 cores (search + finalize). This script takes a finished study (for
instance the ``inherit`` run of ``bench_search.py``), picks its most accurate trained trial under the
parameter cap (or the trials given), finalizes it with ``hwtune.finalize`` and writes what the shipped
file scored, with the compute that went into it: the search's wall time, the parent's one-off training
(``inherit``) and the finalize time.

Usage::

    .venv/bin/python benchmarks/bench_finalize.py RUN_DIR --epochs 15
    .venv/bin/python benchmarks/bench_finalize.py RUN_DIR --epochs 15 --augment shift-flip --trial 54
    .venv/bin/python benchmarks/bench_finalize.py RUN_DIR RUN_DIR2 --no-run     # collect finalized studies
    # the demo's knee under several finalize settings (EPOCHS/AUGMENT[/SEED]), each on its own copy of the
    # study, two at a time on one torch thread each (issue 19 item 6):
    .venv/bin/python benchmarks/bench_finalize.py hwtune-demo --trial knee --max-params 100000 \
        --grid 30/none 30/hflip 30/hflip/1 --threads 1 --jobs 2 --out benchmarks/results/demo-finalize.json

    # the demo itself, end to end (its wall time and what it shipped), rows added to the same file:
    .venv/bin/python benchmarks/bench_finalize.py --demo /tmp/demo-run --append --max-params 100000 \
        --out benchmarks/results/demo-finalize.json
    # README command 1 as a user runs it: a fresh clone of this checkout's HEAD, `bash scripts/setup.sh`, then
    # `.venv/bin/hwtune demo`, each timed (wall and CPU seconds):
    .venv/bin/python benchmarks/bench_finalize.py --demo-clone --append --max-params 100000 \
        --out benchmarks/results/demo-finalize.json
    # the same with another search of the demo (`hwtune demo --seed 1`):
    .venv/bin/python benchmarks/bench_finalize.py --demo-clone --demo-seed 1 --max-params 100000 --out /tmp/s1.json

Writes ``benchmarks/results/finalize.json`` (one row per finalized trial of every study given).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
TARGET_TEST_ACCURACY = 0.925
TARGET_MAX_PARAMS = 50_000
TARGET_COMPUTE_S = 1800.0


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="run directories of finished studies (each holding study.db)")
    p.add_argument(
        "--demo", default=None, metavar="DIR", help="run `hwtune demo --out DIR` first, timed, and add its rows"
    )
    p.add_argument(
        "--demo-clone",
        action="store_true",
        help="README command 1 on a fresh clone of HEAD (setup.sh, then hwtune demo), each timed, and add its rows",
    )
    p.add_argument("--keep", default=None, metavar="DIR", help="--demo-clone: copy the demo's run directory here")
    p.add_argument("--demo-seed", type=int, default=None, metavar="S", help="--demo-clone: run `hwtune demo --seed S`")
    p.add_argument("--append", action="store_true", help="keep the rows already in --out")
    p.add_argument(
        "--trial", default=None, help="finalize this trial number or 'knee' (default: best under --max-params)"
    )
    p.add_argument("--max-params", type=int, default=TARGET_MAX_PARAMS)
    p.add_argument("--epochs", type=float, default=15.0)
    p.add_argument("--augment", default=None, help="finalize augmentation (shift, shift-flip)")
    p.add_argument(
        "--grid",
        nargs="+",
        default=None,
        metavar="EPOCHS/AUG[/SEED]",
        help="finalize the trial once per setting (e.g. 30/none 30/hflip,erasing:0.25 30/hflip/1), each on a copy "
        "of the study",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of each finalize (default: torch's)")
    p.add_argument("--jobs", type=int, default=1, help="grid settings finalized at once, each in its own process")
    p.add_argument("--no-run", action="store_true", help="only collect trials finalized before")
    p.add_argument("--out", default=str(RESULTS / "finalize.json"))
    return p.parse_args()


def _search_seconds(result: Any) -> float | None:
    stamps = [(t.started, t.finished) for t in result.trials if t.started and t.finished]
    if not stamps:
        return None
    first = min(datetime.fromisoformat(s) for s, _ in stamps)
    last = max(datetime.fromisoformat(f) for _, f in stamps)
    return (last - first).total_seconds()


def _best_small(result: Any, max_params: int) -> Any:
    small = [
        t
        for t in result.trials
        if t.complete and t.trained and t.duplicate_of is None and t.figures.params and t.figures.params <= max_params
    ]
    if not small:
        raise SystemExit(f"study {result.study_name}: no trained trial with <= {max_params} parameters")
    return max(small, key=lambda t: (t.accuracy or 0.0, -t.number))


def _run_demo(out: Path, max_params: int) -> list[dict[str, Any]]:
    """``hwtune demo --out OUT`` as a user runs it (a fresh run directory), timed; its finalized rows."""
    import subprocess
    import time

    from hwtune.tuner import load_result

    shutil.rmtree(out, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "hwtune", "demo", "--out", str(out)], check=True)
    wall = time.monotonic() - start
    rows = _rows(load_result(out), out, max_params)
    for row in rows:
        row["demo_wall_seconds"] = wall
        row["setting"] = {
            "demo": True,
            "epochs": row["finalized"].get("epochs"),
            "augment": row["finalized"].get("augment"),
        }
    return rows


def _run_demo_clone(max_params: int, keep: Path | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """README command 1 on a fresh clone of this checkout's HEAD: ``bash scripts/setup.sh`` then
    ``.venv/bin/hwtune demo`` (with ``--seed seed`` when given: another search of the same demo), each timed (wall,
    and CPU seconds of the command and its children); the demo's run directory is copied to ``keep`` when given
    (the clone itself is removed)."""
    import resource
    import subprocess
    import time

    from hwtune.tuner import load_result

    def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        subprocess.run(cmd, cwd=cwd, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return time.monotonic() - start, cpu

    where = Path(tempfile.mkdtemp(prefix="bench-demo-clone-")) / "hwtune"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(where)], check=True)
        subprocess.run(["git", "checkout", "-q", "--detach", head], cwd=where, check=True)
        setup_s, setup_cpu = timed(["bash", "scripts/setup.sh"], where)
        seeded = [] if seed is None else ["--seed", str(seed)]
        demo_s, demo_cpu = timed([str(where / ".venv" / "bin" / "hwtune"), "demo", *seeded], where)
        run = where / "hwtune-demo"
        if keep is not None:  # the run directory outlives the clone (its study can be finalized again)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(run, keep)
            run = keep
        rows = _rows(load_result(run), run, max_params)
    finally:
        shutil.rmtree(where.parent, ignore_errors=True)
    for row in rows:
        row.update(
            fresh_clone=f"git {head[:7]}",
            setup_seconds=setup_s,
            setup_cpu_seconds=setup_cpu,
            demo_wall_seconds=demo_s,
            demo_cpu_seconds=demo_cpu,
            readme_command_1_seconds=setup_s + demo_s,
        )
        row["setting"] = {
            "demo": "README command 1, fresh clone" + ("" if seed is None else f", hwtune demo --seed {seed}"),
            "epochs": row["finalized"].get("epochs"),
            "augment": row["finalized"].get("augment"),
        }
    return rows


def _chosen(result: Any, trial: str | None, max_params: int) -> int:
    if trial is None:
        return _best_small(result, max_params).number
    if trial == "knee":
        if result.knee is None:
            raise SystemExit(f"study {result.study_name}: no knee")
        return result.knee.number
    return int(trial)


def _rows(result: Any, run: Path, max_params: int = TARGET_MAX_PARAMS) -> list[dict[str, Any]]:
    search_s = _search_seconds(result)
    parent_s = (result.meta.parent or {}).get("seconds")
    rows = []
    for t in result.trials:
        fin = t.figures.finalized
        if not fin:
            continue
        params = int(t.figures.params or 0)
        test = fin.get("test_accuracy")
        compute = (search_s or 0.0) + float(fin.get("seconds") or 0.0)
        rows.append(
            {
                "run": str(run),
                "study": result.study_name,
                "strategy": result.meta.strategy,
                "trial": t.number,
                "precision": t.precision,
                "params": params,
                "macs": t.figures.macs,
                "search_val_accuracy": t.accuracy,
                "finalized": fin,
                "test_accuracy_as_shipped": test,
                "latency_ms": fin.get("latency_ms"),
                "search_seconds": search_s,
                "finalize_seconds": fin.get("seconds"),
                "parent_seconds_one_off": parent_s,
                "compute_seconds_search_plus_finalize": compute,
                "target": {
                    "test_accuracy": TARGET_TEST_ACCURACY,
                    "max_params": max_params,
                    "int8": True,
                    "compute_s": TARGET_COMPUTE_S,
                },
                "met": {
                    "test_accuracy": test is not None and test >= TARGET_TEST_ACCURACY,
                    "params": params <= max_params,
                    "int8": t.precision == "int8",
                    "compute_without_parent": compute <= TARGET_COMPUTE_S,
                    "compute_with_parent": compute + float(parent_s or 0.0) <= TARGET_COMPUTE_S,
                },
            }
        )
    return rows


def _setting(item: str) -> tuple[float, str | None, int | None]:
    """``EPOCHS/AUGMENT[/SEED]`` of ``--grid`` (``none`` for no augmentation)."""
    parts = item.split("/")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        return float(parts[0]), None if parts[1] == "none" else parts[1], int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise SystemExit(f"--grid {item!r}: expected EPOCHS/AUGMENT[/SEED], e.g. 30/hflip or 30/hflip/1") from None


def _finalize_copy(
    run: str, trial: str | None, max_params: int, setting: tuple[float, str | None, int | None], threads: int | None
) -> list[dict[str, Any]]:
    """One grid setting finalized on its own copy of the study (finalize writes into it): its rows."""
    import hwtune
    from hwtune.tuner import load_result

    epochs, augment, seed = setting
    where = Path(tempfile.mkdtemp(prefix="bench-finalize-")) / Path(run).name
    try:
        shutil.copytree(run, where, ignore=shutil.ignore_patterns("export", "finalized"))
        chosen = _chosen(load_result(where), trial, max_params)
        print(f"{run}: finalizing trial {chosen} for {epochs:g} epochs, augment {augment}, seed {seed}", flush=True)
        result = hwtune.finalize(where, chosen, epochs=epochs, augment=augment, seed=seed, threads=threads)
        rows = [r for r in _rows(result, Path(run), max_params) if r["trial"] == chosen]  # not earlier ones
    finally:
        shutil.rmtree(where.parent, ignore_errors=True)
    for row in rows:
        row["setting"] = {
            "epochs": epochs,
            "augment": augment or "none",
            "seed": seed if seed is not None else "the study's",
            "threads": threads if threads is not None else "torch default",
            "knee": result.knee.number if result.knee is not None else None,
        }
    return rows


def _run_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every ``--grid`` setting of every run, ``--jobs`` at a time (each in its own process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    work = [(run, _setting(item)) for run in args.runs for item in args.grid]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_finalize_copy, run, args.trial, args.max_params, s, args.threads) for run, s in work]
        rows = [row for f in futures for row in f.result()]
    for row in rows:
        row["setting"]["concurrent_settings"] = min(max(1, args.jobs), len(work))
    return rows


def _run_in_place(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Finalize (unless ``--no-run``) each run's chosen trial in its own study; the finalized rows."""
    import hwtune
    from hwtune.tuner import load_result

    rows: list[dict[str, Any]] = []
    for run in map(Path, args.runs):
        result = load_result(run)
        if not args.no_run:
            chosen = _chosen(result, args.trial, args.max_params)
            print(f"{result.study_name}: finalizing trial {chosen} for {args.epochs:g} epochs, augment {args.augment}")
            result = hwtune.finalize(run, chosen, epochs=args.epochs, augment=args.augment, threads=args.threads)
        for row in _rows(result, run, args.max_params):
            row["setting"] = {
                "epochs": args.epochs,
                "augment": args.augment or "none",
                "knee": result.knee.number if result.knee is not None else None,
            }
            rows.append(row)
    return rows


def main() -> int:
    args = _parse()
    from _provenance import machine_info

    machine = machine_info(threads=args.threads or 1)  # latency is timed on the host profile's 1 thread

    rows: list[dict[str, Any]] = []
    if args.demo:
        rows.extend(_run_demo(Path(args.demo), args.max_params))
    if args.demo_clone:
        rows.extend(_run_demo_clone(args.max_params, Path(args.keep) if args.keep else None, args.demo_seed))
    if args.grid and not args.no_run:
        rows.extend(_run_grid(args))
    else:
        rows.extend(_run_in_place(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.is_file():
        before = json.loads(out.read_text())
        rows = [{**r, "machine": r.get("machine", before.get("machine"))} for r in before["rows"]] + rows
    machine["loadavg_after"] = machine_info()["loadavg"]
    if args.no_run:  # collected from finished studies: this machine only read them
        machine = {
            "note": "rows collected with --no-run: the machine that finalized them is not recorded here",
            "collected_on": machine,
        }
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2, default=str) + "\n")
    print(
        f"\n{'study':<14} {'trial':>5} {'prec':>6} {'params':>7} {'aug':>10} {'test (shipped)':>15} {'compute s':>10}"
    )
    for r in rows:
        test = r["test_accuracy_as_shipped"]
        print(
            f"{r['study']:<14} {r['trial']:>5} {r['precision']:>6} {r['params']:>7} "
            f"{r['finalized'].get('augment', 'none'):>10} {'-' if test is None else f'{100 * test:.2f}%':>15} "
            f"{r['compute_seconds_search_plus_finalize']:>10.0f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
