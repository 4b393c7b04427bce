"""Reports of a search: terminal table, ``front.json``, ``pareto.png``, ``hypervolume.png``, ``report.md``.

Matplotlib is imported lazily with the non-interactive Agg backend, so reports work on headless
machines and ``import hwtune`` never pays for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwtune._io import atomic_output, check_writable_dir, write_atomic
from hwtune._util import safe_name
from hwtune.errors import StudyError
from hwtune.front import TrialRecord, TuneResult

__all__ = ["plot_hypervolume", "plot_pareto", "write_reports"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _short_source(rec: TrialRecord) -> str:
    return (rec.latency_source or "unavailable").split(" ")[0]


def _accuracy_pct(rec: TrialRecord) -> float:
    """Validation accuracy in percent of a trial plotted as trained (the caller picked it for having one)."""
    if rec.accuracy is None:
        raise StudyError(f"trial #{rec.number} has no accuracy to plot")
    return 100 * rec.accuracy


def plot_pareto(result: TuneResult, path: str | Path) -> Path:
    """Accuracy vs latency: every trial, infeasible ones marked, the front highlighted and labelled."""
    plt = _pyplot()
    path = Path(path)
    trials = [t for t in result.device_trials if t.complete and t.duplicate_of is None]
    trained = [t for t in trials if t.feasible and t.trained and t.accuracy is not None and t.latency_ms is not None]
    infeasible = [t for t in trials if not t.feasible and t.latency_ms is not None]
    front = result.front
    knee = result.knee
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    sources = sorted({_short_source(t) for t in trials}) or ["measured"]
    xlabel = f"latency on {result.device} (ms, {'/'.join(sources)})"
    if trained:
        partial = [t for t in trained if t.figures.rung != t.figures.max_rung]
        full = [t for t in trained if t not in partial]
        if full:
            ax.scatter(
                [t.latency_ms for t in full],
                [_accuracy_pct(t) for t in full],
                s=18,
                c="0.55",
                label="trained (full budget)",
                zorder=2,
            )
        if partial:
            ax.scatter(
                [t.latency_ms for t in partial],
                [_accuracy_pct(t) for t in partial],
                s=18,
                facecolors="none",
                edgecolors="0.55",
                label="lower budget (not or not yet promoted)",
                zorder=2,
            )
    if infeasible:
        # Infeasible candidates were never trained: they have no accuracy. Show them on a strip
        # under the trained points, at their measured latency.
        ys = [_accuracy_pct(t) for t in trained] or [50.0]
        floor = min(ys) - 0.08 * (max(ys) - min(ys) + 1.0)
        ax.scatter(
            [t.latency_ms for t in infeasible],
            [floor] * len(infeasible),
            marker="x",
            c="tab:red",
            s=22,
            label="infeasible (not trained)",
            zorder=2,
        )
    if front:
        xs = [t.latency_ms for t in front]
        ys = [_accuracy_pct(t) for t in front]
        ax.step(xs, ys, where="post", c="tab:blue", lw=1.2, zorder=3)
        ax.scatter(xs, ys, c="tab:blue", s=36, label="Pareto front", zorder=4)
        for t in front:
            ax.annotate(
                f"#{t.number} {t.precision}",
                (t.latency_ms, _accuracy_pct(t)),
                fontsize=7,
                xytext=(4, -9),
                textcoords="offset points",
            )
    if knee is not None:
        ax.scatter(
            [knee.latency_ms],
            [_accuracy_pct(knee)],
            marker="*",
            s=180,
            c="tab:orange",
            edgecolors="k",
            linewidths=0.5,
            label=f"knee (#{knee.number})",
            zorder=5,
        )
    lim = result.constraints.get("max_latency_ms")
    if lim:
        ax.axvline(float(lim), c="tab:red", ls="--", lw=1, label=f"max latency {float(lim):g} ms")
    lats = [t.latency_ms for t in trials if t.latency_ms]
    if lats and max(lats) / max(min(lats), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{result.recipe} on {result.device}: {len(trials)} trials, front of {len(front)}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def plot_hypervolume(result: TuneResult, path: str | Path) -> Path:
    """Hypervolume (fraction of the reference box) after each finished trial, over wall time."""
    plt = _pyplot()
    path = Path(path)
    hist = result.hypervolume_history()
    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=120)
    if hist:
        xs = [0.0] + [h[0] / 60 for h in hist]
        ys = [0.0] + [h[1] for h in hist]
        ax.step(xs, ys, where="post", c="tab:blue")
        ax.scatter(xs[1:], ys[1:], s=8, c="tab:blue")
    ax.set_xlabel("wall time since the first trial started (min)")
    ax.set_ylabel("hypervolume (fraction of reference box)")
    ref = ", ".join(f"{k}={v:g}" for k, v in result.reference_point.items())
    ax.set_title(f"hypervolume over time (reference: {ref})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Save ``fig`` as PNG through a temporary file (a failed write leaves the previous plot); close it."""
    try:
        with atomic_output(path, what="a report plot") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _budget_summary(result: TuneResult) -> dict[str, Any]:
    """Training spent (epochs) vs what training every evaluated candidate to the full budget would cost."""
    full = float((result.meta.budget or {}).get("epochs") or 0)
    trained = [t for t in result.trials if t.complete and t.trained and t.duplicate_of is None]
    keys = {t.candidate_key for t in trained}
    full_keys = {t.candidate_key for t in trained if t.figures.rung == t.figures.max_rung}
    return {
        "full_budget_epochs": full,
        "trained_candidates": len(keys),
        "epochs_trained": sum(
            float(_first(t.figures.epochs_trained, t.figures.budget_epochs) or 0) for t in trained
        ),
        "epochs_if_all_full": full * len(keys),
        "reached_full_budget": len(full_keys),
        "promotions": sum(1 for t in trained if t.figures.continue_from is not None),
        "train_seconds": sum(
            float(t.figures.train_seconds or 0) for t in trained if t.figures.continue_from is None
        )
        + sum(
            float(r.get("seconds") or 0)
            for t in trained
            if t.figures.continue_from is not None
            for r in (t.figures.rungs or [])[-1:]
        ),
    }


def _shipped_runtime(result: TuneResult) -> str:
    """The runtime the study's trials were shipped to (``onnxruntime`` for studies that predate the field)."""
    names = {t.figures.runtime for t in result.trials if t.trained and t.figures.runtime}
    return ", ".join(sorted(names)) or "onnxruntime"


def _markdown(result: TuneResult, paths: Mapping[str, Path]) -> str:
    c = result.counts()
    knee = result.knee
    b = _budget_summary(result)
    meta = result.meta
    ref = ", ".join(f"`{k}` = {v:g}" for k, v in result.reference_point.items())
    cons = ", ".join(f"`{k}` = {v:g}" for k, v in result.constraints.items()) or "none (device limits only)"
    failed = [t for t in result.trials if t.state == "fail"]
    lines = [
        f"# hwtune search: {result.recipe} on {result.device}",
        "",
        f"- study `{result.study_name}` in `{result.storage}`",
        f"- objectives: {', '.join(result.objectives)}; sampler {meta.sampler or '?'}, seed {meta.seed}",
        f"- hard constraints: {cons}",
        (
            f"- trials: {c['total']} ({c['trained']} trained, {c['infeasible']} infeasible and never trained, "
            f"{c['duplicates']} repeats of evaluated candidates, {c['failed']} failed)"
        ),
        (
            f"- training budget: {b['epochs_trained']:.2f} epochs in total for {b['trained_candidates']} candidates "
            f"({b['reached_full_budget']} reached the full {b['full_budget_epochs']:g} epoch(s)); training every one "
            f"to the full budget would have taken {b['epochs_if_all_full']:.2f}"
        ),
        f"- hypervolume: **{result.hypervolume:.4f}** of the reference box ({ref})",
        "",
        "## Pareto front",
        "",
        result.front_table(markdown=True),
        "",
    ]
    if knee is not None:
        lines += [
            (
                f"Knee (balanced pick): trial **#{knee.number}**, {knee.precision}, "
                f"{100 * (knee.accuracy or 0):.2f}% validation accuracy, {knee.latency_ms:.3f} ms "
                f"({knee.figures.latency_label or knee.latency_source}). Export it with "
                f"`hwtune export --storage {result.storage} --study {result.study_name} --trial {knee.number} --out DIR`."
            ),
            "",
        ]
    if "pareto" in paths:
        lines += [f"![accuracy vs latency]({paths['pareto'].name})", ""]
    lines += _other_devices(result, paths)
    if any(t.figures.finalized for t in result.trials):
        lines += [
            "## Finalized front",
            "",
            (
                "Trials trained to convergence after the search (`hwtune finalize`), scored again as shipped; "
                "the search front above keeps the search's figures."
            ),
            "",
            result.front_table(markdown=True, finalized=True),
            "",
        ]
    if "hypervolume" in paths:
        lines += [f"![hypervolume over time]({paths['hypervolume'].name})", ""]
    if failed:
        lines += ["## Failed trials", ""]
        lines += [f"- #{t.number}: {t.failure}" for t in failed]
        lines.append("")
    load = (meta.data or {}).get("load") or {}
    held_out = isinstance(load, dict) and load.get("val_data") is not None
    check = (meta.source_model or {}).get("validation") if isinstance(meta.source_model, dict) else None
    if isinstance(check, dict) and isinstance(check.get("warning"), str):
        lines += [f"**Warning:** {check['warning']}.", ""]
    split = (
        f"the held-out validation set `{load.get('val_data')}`"
        if held_out
        else "the validation split (carved from the training set)"
    )
    lines += [
        (
            f"Accuracy is measured on {split} on what ships: the "
            f"quantized file run by {_shipped_runtime(result)} for int8/fp16/mixed candidates. Candidates stopped "
            "early by the successive-halving schedule report the accuracy at the budget they reached (column "
            "`epochs`). Latency is "
            f"{'measured' if (meta.device or {}).get('latency_source') == 'measure' else 'predicted'} on the device "
            "(`source` column). The test split is used only when a model is exported."
        ),
        "",
    ]
    return "\n".join(lines)


def _other_devices(result: TuneResult, paths: Mapping[str, Path]) -> list[str]:
    """One section per further device of a multi-device study: its front, knee and plot."""
    lines: list[str] = []
    for dev in result.devices[1:]:
        view = result.for_device(dev)
        knee = view.knee
        lines += [f"## Front on {dev}", "", f"hypervolume {view.hypervolume:.4f}", "", view.front_table(markdown=True), ""]
        if knee is not None:
            lines += [f"Knee on {dev}: trial **#{knee.number}** ({knee.latency_ms:.3f} ms, {knee.latency_source}).", ""]
        if f"pareto-{dev}" in paths:
            lines += [f"![accuracy vs latency on {dev}]({paths[f'pareto-{dev}'].name})", ""]
    return lines


def write_reports(result: TuneResult, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``front.json``, ``pareto.png``, ``hypervolume.png`` and ``report.md`` into ``out_dir``.

    Every file is written to a temporary name and renamed into place; ``out_dir`` is checked first.

    Returns:
        name -> path of every file written.

    Raises:
        ConfigError: ``out_dir`` cannot be created or written (one line naming it).
    """
    out = check_writable_dir(out_dir, what="reports")
    paths: dict[str, Path] = {}
    front_path = out / "front.json"
    payload = {
        "study": result.study_name,
        "storage": result.storage,
        "device": result.device,
        "recipe": result.recipe,
        "objectives": list(result.objectives),
        "reference_point": dict(result.reference_point),
        "constraints": dict(result.constraints),
        "hypervolume": result.hypervolume,
        "counts": result.counts(),
        "budget": _budget_summary(result),
        "interrupted": result.interrupted,
        "front": result.front_json(),
        "finalized_front": [
            {"number": t.number, "precision": t.precision, **(t.figures.finalized or {})} for t in result.finalized_front
        ],
    }
    if len(result.devices) > 1:
        payload["devices"] = {
            d: {"hypervolume": result.for_device(d).hypervolume, "front": result.for_device(d).front_json()}
            for d in result.devices
        }
    write_atomic(front_path, json.dumps(payload, indent=2, default=str) + "\n", what="front.json")
    paths["front"] = front_path
    if plots:
        paths["pareto"] = plot_pareto(result, out / "pareto.png")
        paths["hypervolume"] = plot_hypervolume(result, out / "hypervolume.png")
        for dev in result.devices[1:]:
            # device ids come from the study file: made safe before they name a file
            paths[f"pareto-{dev}"] = plot_pareto(result.for_device(dev), out / f"pareto-{safe_name(dev)}.png")
    md = out / "report.md"
    write_atomic(md, _markdown(result, paths), what="report.md")
    paths["report"] = md
    return paths
