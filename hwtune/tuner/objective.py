"""One trial = one candidate at one training budget.

1. **Suggest** the candidate; a candidate the study already evaluated is copied, not retrained.
2. **Cheap profile first** (no training): MACs, params, bytes, peak activations and latency on the
   device; a candidate that violates a hard constraint is recorded as infeasible and never trained.
   A promotion (a continuation trial queued by :mod:`hwtune.tuner.halving`) inherits its origin's
   profile and weights instead.
3. **Train** the weights up to the target rung.
4. **What ships is what is scored**: int8/fp16/mixed candidates are shipped to the runtime
   (quantized with calibration from the train split) and evaluated there; on ``measure`` devices their
   latency is measured on the shipped file. Inherited weights scored untrained (a zero rung) are scored
   only as shipped (no fp32 score), and on a TFLite Micro microcontroller the file the profile converted
   to measure the arena is the one that ships (one conversion per candidate).
5. The trained weights and the shipped model file are stored as Optuna artifacts (in the study's
   artifact store), so any trial can be exported later and the dashboard shows both.

With several workers, a trial first claims its (candidate, rung) under the study lock
(:mod:`hwtune.tuner.halving`); latency measured while other workers of the study run on this machine
is labelled "shared CPU" (``latency_conditions``) and re-measured alone at the end of
``tune(workers=K)``.

A failure in any step fails this trial only, with the step's name and the reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._tempdirs import work_dir
from hwtune.errors import StorageUnavailableError
from hwtune.tuner.constraints import constraint_values, violations_text
from hwtune.tuner.context import SearchContext
from hwtune.tuner.halving import Coordination, claim_or_twin, completed_by_key, wait_until_done
from hwtune.tuner.inputs import candidate_seed, stage_precision_of
from hwtune.tuner.pipeline import converts_once
from hwtune.tuner.storage import BufferedTrial, fresh_trials, optuna_module, requeue, trial_figures_dict, worker_id

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.space import CandidateLike

__all__ = ["PROFILE_KEYS", "ArtifactStoreFailed", "TrialFailed", "failure_reason", "make_objective"]

# Figures of the cheap profile that a trial records (and a promotion inherits).
PROFILE_KEYS = (
    "macs",
    "flops",
    "params",
    "weight_bytes",
    "peak_activation_bytes",
    "working_memory_bytes",
    "working_memory_source",
    "storage_bytes",
    "latency_ms",
    "latency_source",
    "latency_label",
    "latency",
    "runtime",
    "fits",
    "notes",
)
# The device-dependent part of a profile (per device in a multi-device study).
_DEVICE_KEYS = (
    "latency_ms",
    "latency_source",
    "latency_label",
    "latency",
    "runtime",
    "fits",
    "peak_activation_bytes",
    "weight_bytes",
    "working_memory_bytes",
    "working_memory_source",
    "storage_bytes",
)
# Figures a repeat of an evaluated candidate does not copy from it (they describe the run itself).
_NO_COPY = {
    "worker",
    "wall_seconds",
    "retry_of",
    "retries",
    "requeued",
    "duplicate_of",
    "continue_from",
    "rung_target",
    "retried",
    "claim",
}


# A candidate whose trial the artifact store failed runs again up to this many times in a row.
STORE_TRIES = 3


class TrialFailed(Exception):
    """A candidate could not be evaluated; the reason is in the trial's ``failure`` figure."""


class ArtifactStoreFailed(Exception):
    """Writing a trial's file to the artifact store failed (disk full, S3 unreachable): the candidate is
    not at fault, so its trial is failed with this reason and the candidate re-queued (once)."""


def _trained_on(stats: Any) -> str:
    """``"cpu, fp32, contiguous (step too short to gain)"``: device, precision and memory format of a training."""
    fmt = getattr(stats, "memory_format", None)
    return f"{stats.device}, {getattr(stats, 'amp', 'fp32')}" + (f", {fmt}" if fmt else "")


def failure_reason(exc: BaseException) -> str:
    """One line: the exception's type and first line (out-of-memory named as such)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, MemoryError) or "out of memory" in first.lower():
        return f"out of memory ({type(exc).__name__}: {first})"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def make_objective(
    ctx: SearchContext, study: Any, *, store: Any = None, coord: Coordination | None = None
) -> Callable[[Any], list[float]]:
    """The function ``study.optimize`` calls once per trial.

    Args:
        ctx: The run's settings and counters.
        study: The Optuna study.
        store: The study's Optuna artifact store (default: a file-system store at ``ctx.artifact_dir``).
        coord: The study lock and worker census (several workers); None for a lone in-process run.
    """
    if store is None:
        store = optuna_module().artifacts.FileSystemArtifactStore(str(ctx.artifact_dir))

    def objective(optuna_trial: Any) -> list[float]:
        return CandidateTrial(ctx, study, optuna_trial, store=store, coord=coord).run()

    return objective


class CandidateTrial:
    """The steps of one trial; ``stage`` names the step running now (for the failure message)."""

    def __init__(
        self, ctx: SearchContext, study: Any, optuna_trial: Any, *, store: Any, coord: Coordination | None = None
    ) -> None:
        self.ctx = ctx
        self.study = study
        self.optuna_trial = optuna_trial
        self.trial = BufferedTrial(optuna_trial)
        self.store = store
        self.coord = coord
        self.t_start = time.monotonic()
        self.stage = "suggest"
        self._infeasible_values: list[float] = []
        self._sharing: int | None = None
        # The file the profile converted for the weights this trial scores (inherited weights scored
        # untrained at a zero rung): shipped as is instead of converted again.
        self._preshipped: Any = None

    # -- entry ----------------------------------------------------------------------------------
    def run(self) -> list[float]:
        # Written at once (not buffered): a resume tells a killed worker's trial by this.
        self.optuna_trial.set_user_attr("worker", worker_id())
        trial = self.trial
        try:
            return self._dispatch()
        except StorageUnavailableError:
            raise  # the study database is gone: nothing can be recorded; the worker stops
        except KeyboardInterrupt:
            trial.set_user_attr("failure", "interrupted (Ctrl-C) while running; the candidate may be retried")
            trial.set_user_attr("wall_seconds", time.monotonic() - self.t_start)
            with contextlib.suppress(Exception):
                trial.flush()
            raise
        except Exception as exc:
            reason = f"{self.stage}: {failure_reason(exc)}"
            if isinstance(exc, ArtifactStoreFailed):
                reason = f"{self.stage}: {exc}"
                if requeue(self.study, self.optuna_trial, max_tries=STORE_TRIES):
                    trial.set_user_attr("requeued", True)
                    reason += " (candidate re-queued)"
            trial.set_user_attr("failure", reason)
            trial.set_user_attr("failure_stage", self.stage)
            trial.set_user_attr("wall_seconds", time.monotonic() - self.t_start)
            trial.flush(final=True)
            raise TrialFailed(reason) from exc

    def _dispatch(self) -> list[float]:
        ctx, trial, study = self.ctx, self.trial, self.study
        params = {name: back[trial.suggest_categorical(name, labels)] for name, (labels, back) in ctx.dists.items()}
        cand = ctx.space.candidate(params)
        key = cand.key
        trial.set_user_attr("candidate", cand.to_dict())
        trial.set_user_attr("candidate_key", key)
        trial.set_user_attr("precision", cand.precision)
        trial.set_user_attr("label", getattr(cand, "label", key))
        top = self.optuna_trial.user_attrs
        promotion = top.get("rung_target") is not None and top.get("continue_from") is not None
        rung = int(top["rung_target"]) if promotion else 0
        done = self._claim(key, rung, promotion)
        if done is not None:
            return self._copy_result(done)  # a repeat, or already done by another worker
        origin = None
        if promotion:
            # A promotion: continue the stored weights of the origin trial to rung `rung`.
            origin = study._storage.get_trial(
                study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(top["continue_from"]))
            )
        ctx.consecutive_duplicates = 0
        trial.flush()
        return self._evaluate(cand, origin=origin, target_rung=rung if promotion else None)

    def _claim(self, key: str, rung: int, promotion: bool) -> Any | None:
        """Claim (candidate, rung) for this trial; returns a completed trial to copy instead, if any.

        A twin RUNNING elsewhere is waited for (its result is then copied; if it failed, this trial
        claims the candidate and evaluates it). The completed results and the running twins are looked
        up in one read of the study: a twin completing between two reads would be in neither.
        """
        study = self.study
        while True:
            with self.coord.lock() if self.coord is not None else contextlib.nullcontext():
                trials = fresh_trials(study)
                prior = completed_by_key(study, trials).get(key)
                if prior is not None and (not promotion or int(trial_figures_dict(prior).get("rung", 0) or 0) >= rung):
                    return prior
                twin = claim_or_twin(study, self.optuna_trial, key, rung, trials)
            if twin is None:
                return None
            self.stage = f"wait for trial {twin.number}"
            self.ctx.log(f"trial {self.trial.number}: its candidate is being evaluated by trial {twin.number}; waiting")
            wait_until_done(study, twin)

    def _copy_result(self, prior: Any) -> list[float]:
        """Record this trial as a repeat of the completed ``prior`` (nothing trained)."""
        trial = self.trial
        for k, v in trial_figures_dict(prior).items():
            if k not in _NO_COPY and k not in trial.attrs:
                trial.set_user_attr(k, v)
        for k, v in prior.constraints.items():
            trial.set_constraint(k, v)
        trial.set_user_attr("duplicate_of", prior.number)
        trial.set_user_attr("epochs_trained", 0.0)
        trial.set_user_attr("wall_seconds", time.monotonic() - self.t_start)
        trial.flush(final=True)
        self.ctx.consecutive_duplicates += 1
        return list(prior.values)

    # -- the candidate's steps ------------------------------------------------------------------
    def _evaluate(self, cand: CandidateLike, *, origin: Any, target_rung: int | None) -> list[float]:
        """Profile (or inherit the origin's profile), train to the target rung, ship, score, store."""
        ctx, trial = self.ctx, self.trial
        self.stage = "build"
        plan = ctx.pipeline.plan(cand)
        trial.set_user_attr("stage_precision", stage_precision_of(cand))
        trial.set_user_attr("precision_plan", plan.to_dict() if hasattr(plan, "to_dict") else str(plan))
        seed = candidate_seed(ctx.seed, cand.key)
        quantized = plan.precisions != ("fp32",)
        # Inherited weights scored untrained on a microcontroller: the profile's conversion is the shipped file.
        once = origin is None and ctx.schedule.rung_epochs[0] == 0 and converts_once(ctx.pipeline, plan)
        with work_dir("trial") if once else contextlib.nullcontext() as keep:
            if origin is None:
                started = self._profile_fresh(cand, plan, seed, Path(keep) if keep else None)
                if started is None:
                    return self._infeasible_values
                model, figures, start = started
            else:
                model, figures, start = self._continue_origin(cand, origin, target_rung)
            acc_fp32, epochs = self._train_rungs(model, seed, start, quantized=quantized)
            if epochs != start["epochs"]:  # trained since the profile converted it
                self._preshipped = None
            trial.set_user_attr("seed", seed)
            trial.flush()
            val_accuracy = self._ship_and_score(model, cand, plan, acc_fp32, figures, measure=origin is None)
        self._save_weights(model, cand, seed)
        trial.set_user_attr("val_accuracy", val_accuracy)
        trial.set_user_attr("wall_seconds", time.monotonic() - self.t_start)
        trial.flush(final=True)
        return ctx.values_for({**figures, "val_accuracy": val_accuracy})

    def _profile_fresh(
        self, cand: CandidateLike, plan: Any, seed: int, keep: Path | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
        """Cheap profile and constraints on every device; None when infeasible everywhere (never trained).

        The primary device's figures go to the top level; with several devices every device's figures
        and constraint values go to ``per_device``, and Optuna is told the lowest value per constraint
        (the candidate is trained when it fits at least one device).

        With ``keep`` (the first rung trains nothing, and the device's working memory is measured on the int8
        file: :func:`~hwtune.tuner.pipeline.converts_once`), the profile converts the weights that are scored,
        with the real calibration, and keeps the file there: the candidate is converted once, not twice.
        """
        ctx, trial, pipeline = self.ctx, self.trial, self.ctx.pipeline
        stage_precisions = tuple(stage_precision_of(cand).values()) or (cand.precision,)
        self.stage = "profile"
        t0 = time.monotonic()
        once = keep is not None
        model = pipeline.initial_model(cand, seed=seed, data=ctx.data) if once else pipeline.build(cand)
        per_device: dict[str, dict[str, Any]] = {}
        combined: dict[str, float] = {}
        for dev in ctx.devices:
            kw: dict[str, Any] = {}
            if keep is not None and dev.id == pipeline.device.id:
                kw = {"calibration": ctx.calibration_batch(), "ship_to": keep / f"model{pipeline.runtime.suffix}"}
            prof = pipeline.profile(
                model, plan, measure=True, time_budget_s=ctx.schedule.latency_budget_s, device=dev, **kw
            )
            if kw:
                self._preshipped = prof.get("shipped")
            figs = {k: prof.get(k) for k in PROFILE_KEYS}
            cons = constraint_values(figs, ctx.constraints, dev, stage_precisions)
            infeasible = violations_text(cons, figs, ctx.constraints, dev, stage_precisions)
            per_device[dev.id] = {
                **{k: figs[k] for k in _DEVICE_KEYS},
                "device": dev.id,
                "constraints": cons,
                "infeasible": infeasible or None,
            }
            for k, v in cons.items():
                combined[k] = min(combined.get(k, v), v)
        self._label_sharing(per_device)
        primary = per_device[ctx.device.id]
        prof_primary = {k: primary.get(k) for k in _DEVICE_KEYS}
        figures: dict[str, Any] = {**{k: prof.get(k) for k in PROFILE_KEYS}, **prof_primary}
        figures["latency_profile_ms"] = figures["latency_ms"]
        figures["profile_seconds"] = time.monotonic() - t0
        for k, v in figures.items():
            trial.set_user_attr(k, v)
        if len(ctx.devices) > 1:
            trial.set_user_attr("per_device", per_device)
            trial.set_user_attr("devices", ",".join(per_device))
        trial.flush()
        for k, v in combined.items():
            trial.set_constraint(k, v)
        if any(v > 0 for v in combined.values()):
            trial.set_user_attr(
                "infeasible", [f"{d}: {m}" for d, f in per_device.items() for m in f["infeasible"] or []]
            )
            untrained: dict[str, Any] = {
                "trained": False,
                "budget_epochs": 0.0,
                "epochs_trained": 0.0,
                "val_accuracy": None,
            }
            for k, v in untrained.items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("wall_seconds", time.monotonic() - self.t_start)
            trial.flush(final=True)
            self._infeasible_values = ctx.values_for({**figures, "val_accuracy": None})
            return None
        if primary["infeasible"]:
            trial.set_user_attr("infeasible", [f"{ctx.device.id}: {m}" for m in primary["infeasible"]])
        if not once:
            self.stage = "build"
            # Fresh weights from the candidate seed (profiling may have traced the other model), or
            # weights inherited from a trained parent: the pipeline decides.
            model = pipeline.initial_model(cand, seed=seed, data=ctx.data)
        return model, figures, {"rung": 0, "epochs": 0.0, "rungs": [], "target": 0, "train_seconds": 0.0}

    def _continue_origin(
        self, cand: CandidateLike, origin: Any, target_rung: int | None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """A promotion: the origin's profile stands (latency and memory do not change with training);
        its weights continue training from where the origin stopped."""
        import torch

        ctx, trial = self.ctx, self.trial
        oa = trial_figures_dict(origin)
        figures = {
            k: oa.get(k) for k in (*PROFILE_KEYS, "latency_profile_ms", "quantization", "per_device", "infeasible")
        }
        figures["profile_seconds"] = 0.0
        for k, v in figures.items():
            trial.set_user_attr(k, v)
        if oa.get("latency_conditions") is not None:
            trial.set_user_attr("latency_conditions", oa["latency_conditions"])
        if oa.get("devices") is not None:
            trial.set_user_attr("devices", oa["devices"])
        for k, v in origin.constraints.items():
            trial.set_constraint(k, v)
        trial.set_user_attr("continue_from", origin.number)
        trial.set_user_attr("rung_target", target_rung)
        self.stage = "build"
        model = ctx.pipeline.build(cand)
        self.stage = "load weights"
        optuna = optuna_module()
        with work_dir("trial") as tmp:
            path = Path(tmp) / "weights.pt"
            try:
                optuna.artifacts.download_artifact(
                    artifact_store=self.store, file_path=str(path), artifact_id=oa["artifact_id"]
                )
            except Exception as exc:  # the store is down (the file itself is checked by torch.load below)
                raise ArtifactStoreFailed(f"artifact store: cannot read {path.name}: {failure_reason(exc)}") from exc
            blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        start_rung = int(oa.get("rung", 0)) + 1
        trial.flush()
        return (
            model,
            figures,
            {
                "rung": start_rung,
                "epochs": float(oa.get("budget_epochs") or 0.0),
                "rungs": list(oa.get("rungs") or []),
                "target": int(target_rung if target_rung is not None else start_rung),
                "train_seconds": float(oa.get("train_seconds") or 0),
            },
        )

    def _train_rungs(
        self, model: Any, seed: int, start: dict[str, Any], *, quantized: bool
    ) -> tuple[float | None, float]:
        """Train the same weights up to the target rung; returns (fp32 val accuracy, epochs reached).

        A quantized candidate's weights that no rung trained (inherited, scored as they are) are not scored in
        fp32 (None): the shipped file's score is the one that counts, and halving ranks by it.
        """
        ctx, trial, sched = self.ctx, self.trial, self.ctx.schedule
        trained_epochs = epochs_before = start["epochs"]
        rungs = start["rungs"]
        train_seconds, samples = 0.0, 0
        acc_fp32: float | None = float("nan")
        for r in range(start["rung"], start["target"] + 1):
            self.stage = f"train (rung {r})"
            t0 = time.monotonic()
            epochs = sched.rung_epochs[r] - trained_epochs
            stats = None
            if epochs > 0:  # a zero rung (inherited weights) is scored without training
                stats = ctx.pipeline.train(
                    model,
                    ctx.data,
                    epochs=epochs,
                    batch_size=sched.batch_size,
                    lr=sched.lr,
                    seed=seed + r,
                    threads=ctx.threads,
                )
            train_seconds += time.monotonic() - t0
            trained_epochs = sched.rung_epochs[r]
            samples += int(getattr(stats, "samples_seen", 0) or 0)
            if getattr(stats, "device", None):  # where it trained: "cpu", "cuda:0 (NVIDIA H100 ...)"
                trial.set_user_attr("train_device", _trained_on(stats))
            if quantized and sched.rung_epochs[r] == 0:
                acc_fp32 = None
            else:
                self.stage = f"evaluate (rung {r})"
                acc_fp32 = ctx.pipeline.evaluate(model, ctx.data.val, batch_size=sched.val_batch_size)
                if not math.isfinite(acc_fp32):
                    raise FloatingPointError(f"validation accuracy is {acc_fp32}")
            rungs.append(
                {
                    "rung": r,
                    "epochs": trained_epochs,
                    "val_accuracy": acc_fp32,
                    "trial": trial.number,
                    "final_loss": _finite_or_none(getattr(stats, "final_loss", None)),
                    "seconds": time.monotonic() - t0,
                }
            )
            trial.set_user_attr("rungs", rungs)
        for k, v in (
            ("rung", start["target"]),
            ("max_rung", len(sched.rung_epochs) - 1),
            ("budget_epochs", trained_epochs),
            ("epochs_trained", trained_epochs - epochs_before),
            ("samples_seen", samples),
            ("train_seconds", train_seconds + start["train_seconds"]),
            ("val_accuracy_fp32", acc_fp32),
            ("trained", True),
        ):
            trial.set_user_attr(k, v)
        return acc_fp32, trained_epochs

    def _ship_and_score(
        self,
        model: Any,
        cand: CandidateLike,
        plan: Any,
        acc_fp32: float | None,
        figures: dict[str, Any],
        *,
        measure: bool,
    ) -> float:
        """Accuracy of what ships; on measure devices, the latency of the shipped file (once, at rung 0).

        Every trained candidate is shipped and the file stored as an artifact beside its weights;
        fp32 candidates keep their torch accuracy (the fp32 file computes the same function).
        """
        ctx, trial, pipeline = self.ctx, self.trial, self.ctx.pipeline
        accuracy_by_precision = {} if acc_fp32 is None else {"fp32": acc_fp32}
        val_accuracy, accuracy_source = acc_fp32, "torch (fp32)"
        quantized = plan.precisions != ("fp32",)
        with work_dir("trial") as tmp:
            self.stage = "quantize" if quantized else "ship"
            shipped = self._preshipped
            if shipped is None:
                calib = ctx.calibration_batch() if "int8" in plan.precisions else None
                shipped = pipeline.ship(model, plan, Path(tmp), calibration=calib, seed=int(ctx.seed or 0))
            trial.set_user_attr("onnx_bytes" if shipped.format == "onnx" else "shipped_bytes", shipped.size_bytes)
            self._upload(Path(shipped.path), "shipped_artifact_id", "application/octet-stream")
            if quantized:
                trial.set_user_attr("quantization", shipped.info)
                self.stage = "evaluate quantized"
                val_accuracy = pipeline.evaluate(shipped, ctx.data.val, batch_size=ctx.schedule.val_batch_size)
                accuracy_by_precision[getattr(plan, "label", cand.precision)] = val_accuracy
                accuracy_source = f"{shipped.runtime} (shipped file)"
                if measure:
                    # The graph of the shipped file does not change with training: measured once, at rung 0.
                    self._measure_shipped(shipped, plan, figures)
        trial.set_user_attr("accuracy_by_precision", accuracy_by_precision)
        trial.set_user_attr("accuracy_source", accuracy_source)
        if val_accuracy is None:  # pragma: no cover - an fp32 plan is always scored in fp32
            raise RuntimeError("no accuracy: an fp32 candidate was not scored")
        return val_accuracy

    def _sharing_workers(self) -> int:
        """Live workers of this study on this machine, counted once per trial (1 when running alone)."""
        if self._sharing is None:
            self._sharing = 1
            if self.coord is not None:
                with contextlib.suppress(Exception):
                    self._sharing = self.coord.local_workers(self.study)
        return self._sharing

    def _label_sharing(self, per_device: dict[str, dict[str, Any]]) -> None:
        """Say whether measured latencies were taken alone or while other workers of the study ran here."""
        measured = [d for d in self.ctx.devices if d.latency_source == "measure"]
        if not measured:
            return
        n = self._sharing_workers()
        conditions = "alone" if n <= 1 else f"shared CPU ({n} workers)"
        self.trial.set_user_attr("latency_conditions", conditions)
        if n <= 1:
            return
        for dev in measured:
            figs = per_device.get(dev.id)
            if figs is not None and figs.get("latency_ms") is not None:
                figs["latency_label"] = f"{figs.get('latency_label') or 'measured'} [{conditions}]"

    def _measure_shipped(self, shipped: Any, plan: Any, figures: dict[str, Any]) -> None:
        """Latency of the shipped file on every device measured here (this machine)."""
        ctx, trial = self.ctx, self.trial
        per_device = trial.attrs.get("per_device")
        for dev in ctx.devices:
            if dev.latency_source != "measure":
                continue
            self.stage = "measure quantized"
            lat = ctx.pipeline.measure(shipped, time_budget_s=ctx.schedule.latency_budget_s, device=dev)
            if lat.get("median_ms") is None:
                continue
            lat["label"] = f"{lat.get('label', 'measured')} (the shipped {plan.label} file)"
            if self._sharing_workers() > 1:
                lat["label"] += f" [shared CPU ({self._sharing_workers()} workers)]"
            update = {"latency": lat, "latency_label": lat["label"], "latency_ms": float(lat["median_ms"])}
            if dev.id == ctx.device.id:
                for k, v in update.items():
                    trial.set_user_attr(k, v)
                figures["latency_ms"] = float(lat["median_ms"])
            if per_device and dev.id in per_device:
                per_device[dev.id].update(update)
                trial.set_user_attr("per_device", per_device)

    def _save_weights(self, model: Any, cand: CandidateLike, seed: int) -> None:
        import torch

        self.stage = "save weights"
        with work_dir("trial") as tmp:
            weights = Path(tmp) / "weights.pt"
            torch.save({"state_dict": model.state_dict(), "candidate": cand.to_dict(), "seed": seed}, weights)
            self._upload(weights, "artifact_id", "application/x-pytorch")
            for key, path in self.ctx.pipeline.extra_artifacts(model, Path(tmp)).items():
                self._upload(path, key, "application/octet-stream")  # e.g. a compress trial's .pt2 model

    def _upload(self, path: Path, attr: str, mimetype: str) -> None:
        """Store ``path`` as an artifact of this trial (listed by optuna-dashboard); its id goes to ``attr``.

        The id is recorded only once the store has the whole file, and a trial is COMPLETE only after
        all its uploads: a store that fails leaves a failed trial, never a complete one without files.
        """
        try:
            artifact_id = optuna_module().artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=self.trial.trial, mimetype=mimetype
            )
        except StorageUnavailableError:
            raise
        except Exception as exc:  # OSError (disk full), botocore's EndpointConnectionError / ClientError, ...
            raise ArtifactStoreFailed(f"artifact store: cannot write {path.name}: {failure_reason(exc)}") from exc
        self.trial.set_user_attr(attr, artifact_id)
