"""Search benchmark: weight inheritance vs hwtune's scratch schedule vs plain NSGA-II vs random, equal wall clock.

Every method gets the same wall-clock budget ``T`` per run, the same recipe, device, data, full
training budget per candidate, thread count and hypervolume reference point; only the search
differs:

* ``inherit``     strategy ``inherit``: one parent trained with the sandwich rule (its training time
                  counts against the budget), candidates extracted from it, BN-recalibrated and scored
                  without training (rung 0), promoted ones fine-tuned 0.25 then 1 epoch (distilled);
* ``hwtune``      strategy ``scratch``: NSGA-II + multi-objective successive halving (rungs 0.25, 1 of the
                  full budget), every candidate trained from its own initialization;
* ``nsga2-full``  NSGA-II, every feasible candidate trained to the full budget (plain Optuna usage);
* ``random``      random sampling, full budget.

Each run records the hypervolume after every finished trial, so the hypervolume at several budgets
(``T/3``, ``2T/3``, ``T`` by default) comes from one run. Runs execute as separate processes, up to
``--workers`` at a time, each pinned to ``--threads`` torch/ONNX Runtime threads (default 1 thread,
2 workers on a 2-core machine: every run shares the machine with exactly one other run, whatever
its method).

Writes ``benchmarks/results/search.json`` (``reference_point``, ``runs`` with one entry per
method x seed x budget: ``method, seed, budget_s, hypervolume, trials, best_accuracy_under_budget``,
plus per-run HV histories and a per-method summary) and ``benchmarks/results/search.png``.

Usage (the full benchmark takes about ``3 methods x 3 seeds x T / workers``; T=300 -> ~25 min)::

    .venv/bin/python benchmarks/bench_search.py                  # T=300 s, seeds 0,1,2
    .venv/bin/python benchmarks/bench_search.py --budget-s 600 --seeds 0,1,2
    .venv/bin/python benchmarks/bench_search.py --budget-s 20 --seeds 0 --train-limit 2000   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
METHODS = {
    "inherit": {"sampler": "nsga2", "rungs": (0.25, 1.0), "strategy": "inherit"},
    "hwtune": {"sampler": "nsga2", "rungs": (0.25, 1.0), "strategy": "scratch"},
    "nsga2-full": {"sampler": "nsga2", "rungs": (1.0,), "strategy": "scratch"},
    "random": {"sampler": "random", "rungs": (1.0,), "strategy": "scratch"},
}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget T per run (default 300)")
    p.add_argument(
        "--checkpoints",
        default="0.333333,0.666667,1",
        help="fractions of T at which HV is reported (default T/3, 2T/3, T)",
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--workers", type=int, default=2, help="runs executing side by side (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads per run (default 1)")
    p.add_argument("--recipe", default="fashion-convnet")
    p.add_argument("--device", default="host")
    p.add_argument("--epochs", type=float, default=1.0, help="full training budget per candidate (epochs)")
    p.add_argument(
        "--parent-epochs", type=float, default=None, help="parent training of 'inherit' (default: the recipe's)"
    )
    p.add_argument(
        "--method-budget",
        default="",
        help="per-method wall-clock budgets overriding --budget-s, e.g. inherit=600 (s)",
    )
    p.add_argument(
        "--shared-parent",
        action="store_true",
        help="train each seed's parent once before the runs (both cores) and let the 'inherit' runs take it from "
        "the parent cache: their budget is then search time only, and the parent's one-off cost is reported apart",
    )
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument(
        "--latency-budget-ms",
        type=float,
        default=None,
        help="latency limit for best_accuracy_under_budget (default: 1/4 of the reference latency)",
    )
    p.add_argument("--out", default=str(RESULTS / "search.json"))
    p.add_argument("--runs-dir", default=str(RESULTS / "search-runs"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pretrain", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


# ------------------------------------------------------------------------------------------------
# one run (a subprocess)
# ------------------------------------------------------------------------------------------------


def _worker(spec: dict[str, Any]) -> None:
    threads = int(spec["threads"])
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from hwtune.tuner import Schedule, tune

    m = METHODS[spec["method"]]
    out = Path(spec["out_dir"])
    if (out / "study.db").exists():
        (out / "study.db").unlink()  # a benchmark run always starts from scratch
    # Every run trains its own parent (the parent cache is per run, so its training counts in the budget),
    # unless --shared-parent trained it before the runs.
    os.environ["XDG_CACHE_HOME"] = spec.get("parent_cache") or str(out / "cache")
    started = time.time()
    result = tune(
        spec["recipe"],
        device=spec["device"],
        data=spec["data"],
        n_trials=None,
        timeout=spec["budget_s"],
        out_dir=out,
        study_name=f"{spec['method']}-s{spec['seed']}",
        sampler=m["sampler"],
        seed=spec["seed"],
        budget=Schedule(epochs=spec["epochs"], rungs=m["rungs"]),
        reference_point=spec["reference_point"],
        progress=False,
        reports=False,
        threads=threads,
        strategy=m["strategy"],
        parent_epochs=spec.get("parent_epochs"),
    )
    (out / "run.json").write_text(
        json.dumps({"started": started, "storage": result.storage, "study": result.study_name})
    )


def _pretrain(spec: dict[str, Any]) -> None:
    """--shared-parent: train the parent of one seed into the shared cache (a one-trial inherit study)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from hwtune.tuner import Schedule, tune

    os.environ["XDG_CACHE_HOME"] = spec["parent_cache"]
    out = Path(spec["out_dir"])
    if (out / "study.db").exists():
        (out / "study.db").unlink()
    res = tune(
        spec["recipe"],
        device=spec["device"],
        data=spec["data"],
        n_trials=1,
        out_dir=out,
        study_name=f"parent-s{spec['seed']}",
        seed=spec["seed"],
        budget=Schedule(epochs=spec["epochs"], rungs=METHODS["inherit"]["rungs"]),
        progress=False,
        reports=False,
        threads=spec["threads"],
        strategy="inherit",
        parent_epochs=spec.get("parent_epochs"),
    )
    (out / "parent.json").write_text(json.dumps(res.meta.parent or {}))


def _pretrain_parents(
    args: argparse.Namespace, seeds: list[int], data: dict[str, Any], runs_dir: Path
) -> dict[str, Any]:
    """Parents of every seed, trained one after the other on the whole machine; their records by seed."""
    cache = runs_dir / "parent-cache"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    records = {}
    for seed in seeds:
        spec = {
            "seed": seed,
            "threads": max(2, args.threads),
            "parent_cache": str(cache),
            "parent_epochs": args.parent_epochs,
            "recipe": args.recipe,
            "device": args.device,
            "data": data,
            "epochs": args.epochs,
            "out_dir": str(runs_dir / f"parent-s{seed}"),
        }
        log = Path(spec["out_dir"]) / "worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.call(
                [sys.executable, __file__, "--pretrain", json.dumps(spec)], stdout=fh, stderr=fh, env=env
            )
        if rc != 0:
            raise SystemExit(f"parent of seed {seed} failed (see {log})")
        records[seed] = json.loads((Path(spec["out_dir"]) / "parent.json").read_text())
        print(f"  parent seed {seed}: {records[seed].get('seconds', float('nan')):.0f} s", flush=True)
    return {"cache": str(cache), "records": records}


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------


def _reference(args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """One reference point for every run: hwtune's rule (2x the largest candidate), measured once here."""
    import torch

    torch.set_num_threads(args.threads)
    from hwtune.tuner import reference_point_for

    ref = reference_point_for(args.recipe, device=args.device, objectives=("accuracy", "latency"))
    lat_budget = args.latency_budget_ms or ref["latency_ms"] / 4
    return ref, float(lat_budget)


def _analyse(run_dir: Path, ref: dict[str, float], checkpoints: list[float], lat_budget: float) -> dict[str, Any]:
    from datetime import datetime

    from hwtune.front import hypervolume
    from hwtune.tuner import load_result

    info = json.loads((run_dir / "run.json").read_text())
    res = load_result(info["storage"], info["study"])
    res = res.with_trials(res.trials, reference_point=ref)
    trials = [t for t in res.trials if t.finished and t.started]
    # Time counts from the process's call to tune(): the parent's training (inherit) is in the budget.
    t0 = datetime.fromtimestamp(info["started"])
    first = min((datetime.fromisoformat(t.started) for t in trials), default=t0)
    offset = (first - t0).total_seconds()
    hist = res.hypervolume_history()
    out: dict[str, Any] = {"history": [[round(h[0] + offset, 2), h[1], h[2]] for h in hist], "at": {}}
    fresh = [
        float(t.figures.wall_seconds)
        for t in trials
        if t.trained and t.figures.continue_from is None and t.duplicate_of is None and t.figures.wall_seconds
    ]
    out["seconds_per_candidate_median"] = statistics.median(fresh) if fresh else None
    out["parent_seconds"] = (res.meta.parent or {}).get("seconds")
    out["seconds_to_first_trial"] = offset
    for c in checkpoints:
        done = [t for t in trials if (datetime.fromisoformat(t.finished) - t0).total_seconds() <= c]
        hv = hypervolume(done, res.objective_specs, ref)
        ok = [
            t
            for t in done
            if t.feasible
            and t.trained
            and t.duplicate_of is None
            and t.latency_ms is not None
            and t.latency_ms <= lat_budget
        ]
        best = max((t.accuracy for t in ok if t.accuracy is not None), default=None)
        out["at"][c] = {
            "hypervolume": hv,
            "trials": sum(1 for t in done if t.complete and t.duplicate_of is None),
            "trained_full_budget": sum(
                1 for t in done if t.trained and t.figures.get("rung") == t.figures.get("max_rung")
            ),
            "best_accuracy_under_budget": best,
        }
    return out


def _plot(runs: list[dict[str, Any]], histories: dict[tuple[str, int], list], budget_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    grid = np.linspace(0, budget_s, 200)
    colors = {"inherit": "tab:red", "hwtune": "tab:blue", "nsga2-full": "tab:orange", "random": "tab:green"}
    for method in dict.fromkeys(m for m, _ in histories):
        curves = []
        for (m, _seed), hist in histories.items():
            if m != method:
                continue
            xs = [0.0] + [h[0] for h in hist]
            ys = [0.0] + [h[1] for h in hist]
            idx = np.searchsorted(xs, grid, side="right") - 1
            curves.append(np.asarray(ys)[np.clip(idx, 0, len(ys) - 1)])
        arr = np.stack(curves)
        mean = arr.mean(axis=0)
        ax.plot(grid / 60, mean, label=f"{method} (n={len(curves)})", c=colors.get(method))
        if len(curves) > 1:
            ax.fill_between(grid / 60, arr.min(axis=0), arr.max(axis=0), alpha=0.15, color=colors.get(method))
    ax.set_xlabel("wall time (min)")
    ax.set_ylabel("hypervolume (fraction of reference box)")
    ax.set_title("search efficiency at equal wall clock (mean, min-max over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class Plan:
    """What the runs compare, as parsed from the command line.

    Attributes:
        methods: Names of ``METHODS`` to run.
        seeds: One run per seed and method.
        budgets: Wall-clock budget per method (seconds).
        data: The ``data`` argument of every run (dataset name and limits).
        shared: ``--shared-parent``'s parents (``cache``, ``records`` by seed), or None.
    """

    methods: list[str]
    seeds: list[int]
    budgets: dict[str, float]
    data: dict[str, Any]
    shared: dict[str, Any] | None = None


def _jobs(args: argparse.Namespace, plan: Plan, ref: dict[str, float]) -> list[dict[str, Any]]:
    """One job per seed and method, then filler runs so every round shares the machine alike."""
    runs_dir = Path(args.runs_dir)
    shared = plan.shared
    jobs = []
    for seed in plan.seeds:
        for method in plan.methods:
            jobs.append(
                {
                    "method": method,
                    "seed": seed,
                    "budget_s": plan.budgets[method],
                    "parent_epochs": args.parent_epochs,
                    "threads": args.threads,
                    "recipe": args.recipe,
                    "device": args.device,
                    "data": plan.data,
                    "epochs": args.epochs,
                    "reference_point": ref,
                    "out_dir": str(runs_dir / f"{method}-s{seed}"),
                    "parent_cache": shared["cache"] if shared and method == "inherit" else None,
                }
            )
    # Fairness: every run must share the machine with the same number of other runs. When the job
    # count is not a multiple of --workers, filler runs (a random-search run whose results are
    # discarded) keep the last round as loaded as the others.
    n_fill = (-len(jobs)) % max(args.workers, 1)
    for i in range(n_fill):
        jobs.append({**jobs[-1], "method": "random", "filler": True, "out_dir": str(runs_dir / f"filler-{i}")})
    return jobs


def _run_jobs(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each job in its own worker process, ``--workers`` at a time; (job, exit status) in job order."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    t0 = time.monotonic()

    def launch(job: dict[str, Any]) -> tuple[dict[str, Any], int]:
        log = Path(job["out_dir"]) / "worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.call([sys.executable, __file__, "--worker", json.dumps(job)], stdout=fh, stderr=fh, env=env)
        what = "filler (load only)" if job.get("filler") else f"{job['method']} seed {job['seed']}"
        print(f"  {what}: exit {rc} ({time.monotonic() - t0:.0f} s elapsed)", flush=True)
        return job, rc

    print(
        f"{len(jobs)} runs of {args.budget_s:g} s, {args.workers} at a time, {args.threads} thread(s) each", flush=True
    )
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        return list(pool.map(launch, jobs))


def _collect(
    finished: list[tuple[dict[str, Any], int]], ref: dict[str, float], checkpoints: list[float], lat_budget: float
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], list]]:
    """The per-checkpoint rows and the histories of the runs that exited 0 (fillers left out)."""
    runs: list[dict[str, Any]] = []
    histories: dict[tuple[str, int], list] = {}
    for job, rc in finished:
        if job.get("filler"):
            continue
        if rc != 0:
            print(f"run {job['method']} seed {job['seed']} failed (see {job['out_dir']}/worker.log)", file=sys.stderr)
            continue
        a = _analyse(Path(job["out_dir"]), ref, [c for c in checkpoints if c <= job["budget_s"]], lat_budget)
        histories[(job["method"], job["seed"])] = a["history"]
        for c, v in a["at"].items():
            runs.append(
                {
                    "method": job["method"],
                    "seed": job["seed"],
                    "budget_s": c,
                    "seconds_per_candidate_median": a["seconds_per_candidate_median"],
                    "parent_seconds": a["parent_seconds"],
                    **v,
                }
            )
    return runs, histories


def _summarise(runs: list[dict[str, Any]], methods: list[str], checkpoints: list[float]) -> dict[str, Any]:
    """Per method and checkpoint: hypervolume mean/min/max, trials, best accuracy under the latency budget."""
    summary: dict[str, Any] = {}
    for method in methods:
        summary[method] = {}
        for c in checkpoints:
            at = [r for r in runs if r["method"] == method and r["budget_s"] == c]
            hv = [r["hypervolume"] for r in at]
            acc = [r["best_accuracy_under_budget"] for r in at if r["best_accuracy_under_budget"] is not None]
            spc = [r["seconds_per_candidate_median"] for r in at if r["seconds_per_candidate_median"] is not None]
            if hv:
                summary[method][str(c)] = {
                    "seconds_per_candidate_median": statistics.median(spc) if spc else None,
                    "hv_mean": statistics.fmean(hv),
                    "hv_min": min(hv),
                    "hv_max": max(hv),
                    "trials_mean": statistics.fmean(r["trials"] for r in at),
                    "best_accuracy_under_budget_mean": statistics.fmean(acc) if acc else None,
                }
    return summary


def _claims(
    summary: dict[str, Any], methods: list[str], checkpoints: list[float], shared: dict[str, Any] | None
) -> list[str]:
    """The comparisons the summary supports: inherit against scratch, hwtune against each other method."""
    claims = []
    if "inherit" in summary and "hwtune" in summary:
        inh = summary["inherit"]
        for ci in sorted(inh, key=float):
            for cs in sorted(summary["hwtune"], key=float):
                a, b = inh[ci]["hv_mean"], summary["hwtune"][cs]["hv_mean"]
                what = f"inherit at {float(ci):g} s"
                if shared:
                    parent_s = statistics.fmean(float(r.get("seconds") or 0) for r in shared["records"].values())
                    what += f" of search (+ {parent_s:.0f} s one-off parent training)"
                claims.append(
                    f"{what} HV {a:.4f} {'>=' if a >= b else '<'} scratch (hwtune) at {float(cs):g} s HV {b:.4f}"
                )
    if "hwtune" in summary:
        for c in checkpoints:
            base = summary["hwtune"].get(str(c))
            if not base:
                continue
            for other in methods:
                o = summary.get(other, {}).get(str(c))
                if other == "hwtune" or not o:
                    continue
                diff = base["hv_mean"] - o["hv_mean"]
                rel = 100 * diff / o["hv_mean"] if o["hv_mean"] else float("nan")
                claims.append(
                    f"at {c:g} s hwtune HV {base['hv_mean']:.4f} vs {other} {o['hv_mean']:.4f} "
                    f"({diff:+.4f}, {rel:+.1f}%)"
                )
    return claims


def _settings(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """The settings block of the results file."""
    shared = plan.shared
    return {
        "recipe": args.recipe,
        "device": args.device,
        "epochs": args.epochs,
        "threads": args.threads,
        "workers": args.workers,
        "seeds": plan.seeds,
        "data": plan.data,
        "methods": {
            m: {
                "sampler": METHODS[m]["sampler"],
                "rungs": list(METHODS[m]["rungs"]),
                "strategy": METHODS[m]["strategy"],
                "budget_s": plan.budgets[m],
            }
            for m in plan.methods
        },
        "parent_epochs": args.parent_epochs,
        "shared_parent": None
        if shared is None
        else {
            "note": "trained before the runs on the whole machine; the inherit budget is search time only",
            "seconds_by_seed": {str(k): v.get("seconds") for k, v in shared["records"].items()},
            "epochs": next(iter(shared["records"].values()), {}).get("epochs"),
        },
    }


def _print_table(summary: dict[str, Any], claims: list[str]) -> None:
    print(
        f"\n{'method':<12} {'budget_s':>9} {'HV mean':>9} {'HV min':>8} {'HV max':>8} {'trials':>7} "
        f"{'best acc@lat':>13} {'s/cand':>7}"
    )
    for method, per in summary.items():
        for c, v in per.items():
            acc = v["best_accuracy_under_budget_mean"]
            spc = v["seconds_per_candidate_median"]
            acc_txt = "-" if acc is None else f"{100 * acc:.2f}%"
            spc_txt = "-" if spc is None else f"{spc:.1f}"
            print(
                f"{method:<12} {float(c):>9.0f} {v['hv_mean']:>9.4f} {v['hv_min']:>8.4f} {v['hv_max']:>8.4f} "
                f"{v['trials_mean']:>7.1f} {acc_txt:>13} {spc_txt:>7}"
            )
    for line in claims:
        print(line)


def main() -> int:
    args = _parse()
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    if args.pretrain:
        _pretrain(json.loads(args.pretrain))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {list(METHODS)}", file=sys.stderr)
        return 2
    from _provenance import machine_info

    machine = machine_info(threads=args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    budgets = {m: args.budget_s for m in methods}
    for item in filter(None, (x.strip() for x in args.method_budget.split(","))):
        name, _, value = item.partition("=")
        budgets[name.strip()] = float(value)
    checkpoints = sorted(
        {round(float(c) * args.budget_s, 1) for c in args.checkpoints.split(",")} | {float(b) for b in budgets.values()}
    )
    ref, lat_budget = _reference(args)
    print(f"reference point {ref}; latency budget for best accuracy {lat_budget:.4f} ms", flush=True)
    data: dict[str, Any] = {"name": "fashion-mnist"}
    if args.train_limit:
        data["train_limit"] = args.train_limit
    if args.val_limit:
        data["val_limit"] = args.val_limit
    runs_dir = Path(args.runs_dir)
    shared = _pretrain_parents(args, seeds, data, runs_dir) if args.shared_parent and "inherit" in methods else None
    plan = Plan(methods, seeds, budgets, data, shared)
    finished = _run_jobs(args, _jobs(args, plan, ref))
    runs, histories = _collect(finished, ref, checkpoints, lat_budget)
    summary = _summarise(runs, methods, checkpoints)
    claims = _claims(summary, methods, checkpoints, shared)
    machine["loadavg_after"] = machine_info()["loadavg"]
    out = {
        "machine": machine,
        "reference_point": ref,
        "latency_budget_ms": lat_budget,
        "budget_s": args.budget_s,
        "checkpoints_s": checkpoints,
        "settings": _settings(args, plan),
        "runs": runs,
        "summary": summary,
        "claims": claims,
        "histories": {f"{m}-s{s}": h for (m, s), h in histories.items()},
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    if histories:
        _plot(runs, histories, args.budget_s, out_path.with_suffix(".png"))
    _print_table(summary, claims)
    print(f"wrote {out_path} and {out_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
