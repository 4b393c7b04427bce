"""Search settings: the user's hard limits (:class:`Constraints`), the training schedule (:class:`Schedule`) and
how candidates get their weights (:class:`Strategy`).

Frozen value objects with ``to_dict``/``from_dict``; every problem is collected and raised once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hwtune._util import is_num
from hwtune.errors import ConfigError, did_you_mean, reject_unknown_keys

__all__ = ["DEFAULT_N_TRIALS", "STRATEGIES", "Constraints", "Schedule", "Strategy"]

DEFAULT_N_TRIALS = 20
# How candidates get their weights: trained from scratch per candidate, or inherited from one
# trained parent network (see hwtune.supernet).
STRATEGIES = ("scratch", "inherit")
# The limits a Constraints holds, in the order they are stored.
_LIMITS = ("max_latency_ms", "max_ram_bytes", "max_storage_bytes", "max_params")


@dataclass(frozen=True)
class Constraints:
    """The user's hard limits (the device's own RAM/storage limits are always applied too).

    Attributes:
        max_latency_ms: Batch-1 latency on the device.
        max_ram_bytes: Working memory: peak activation bytes at batch 1.
        max_storage_bytes: Weight bytes at the candidate's precision.
        max_params: Parameters (as papers state a model budget: "under 100 K parameters").
    """

    max_latency_ms: float | None = None
    max_ram_bytes: int | None = None
    max_storage_bytes: int | None = None
    max_params: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for key in _LIMITS:
            v = getattr(self, key)
            if v is None:
                continue
            if not is_num(v) or v <= 0:
                problems.append(f"constraints: {key} must be a number > 0, got {v!r}")
        if problems:
            raise ConfigError("\n".join(problems))

    @classmethod
    def coerce(cls, value: Constraints | Mapping[str, Any] | None) -> Constraints:
        """Accept a ``Constraints``, ``None`` or a mapping (``*_kb`` keys are converted to bytes)."""
        if value is None:
            return cls()
        if isinstance(value, Constraints):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"constraints must be a mapping or Constraints, got {type(value).__name__}")
        known = {*_LIMITS, "max_ram_kb", "max_storage_kb"}
        problems = [
            f"constraints: unknown key {k!r}, expected one of {', '.join(sorted(known))}{did_you_mean(k, known)}"
            for k in value
            if k not in known
        ]
        if problems:
            raise ConfigError("\n".join(problems))
        kw: dict[str, Any] = {k: value[k] for k in _LIMITS if value.get(k) is not None}
        for kb_key, byte_key in (("max_ram_kb", "max_ram_bytes"), ("max_storage_kb", "max_storage_bytes")):
            if value.get(kb_key) is not None:
                v = value[kb_key]
                if not is_num(v) or v <= 0:
                    raise ConfigError(f"constraints: {kb_key} must be a number > 0, got {v!r}")
                kw[byte_key] = round(float(v) * 1024)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _LIMITS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraints:
        return cls.coerce(dict(data))


@dataclass(frozen=True)
class Schedule:
    """The training budget per candidate and the successive-halving rungs.

    Attributes:
        epochs: Full budget: epochs of training a candidate gets at the last rung.
        rungs: Cumulative fractions of ``epochs`` at each rung, increasing, ending at 1.0. ``(1.0,)``
            trains every feasible candidate to the full budget (no early stopping).
        eta: Promotion rate: the best ``1/eta`` of the candidates at a rung (Pareto rank, then
            crowding distance) continue to the next rung.
        batch_size: Training batch size.
        lr: Learning rate (``None``: the trainer's default).
        calibration_samples: Samples from the train split to calibrate int8 quantization.
        latency_budget_s: Time budget of each latency measurement (measured devices).
        val_batch_size: Evaluation batch size.
        zero_rung: Prepend a rung of 0 epochs: candidates inherit trained weights (strategy
            ``inherit``) and are first scored without any training; ``epochs``/``rungs`` are then
            fine-tuning budgets of the promoted ones.
    """

    epochs: float = 1.0
    rungs: tuple[float, ...] = (0.25, 1.0)
    eta: float = 3.0
    batch_size: int = 128
    lr: float | None = None
    calibration_samples: int = 256
    latency_budget_s: float = 1.0
    val_batch_size: int = 512
    zero_rung: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not is_num(self.epochs) or not self.epochs > 0:
            problems.append(f"budget: epochs must be a number > 0, got {self.epochs!r}")
        rungs = tuple(self.rungs)
        if not rungs or any(not is_num(r) for r in rungs):
            problems.append(f"budget: rungs must be a non-empty sequence of fractions, got {self.rungs!r}")
        else:
            if any(b <= a for a, b in itertools.pairwise(rungs)) or rungs[0] <= 0:
                problems.append(f"budget: rungs must increase strictly from > 0, got {list(rungs)}")
            if abs(rungs[-1] - 1.0) > 1e-9:
                problems.append(f"budget: the last rung must be 1.0 (the full budget), got {rungs[-1]}")
        if not is_num(self.eta) or not self.eta > 1:
            problems.append(f"budget: eta must be a number > 1, got {self.eta!r}")
        for key in ("batch_size", "calibration_samples", "val_batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"budget: {key} must be an integer >= 1, got {v!r}")
        if self.lr is not None and (not is_num(self.lr) or not self.lr > 0):
            problems.append(f"budget: lr must be a number > 0 or None, got {self.lr!r}")
        if not is_num(self.latency_budget_s) or not self.latency_budget_s > 0:
            problems.append(f"budget: latency_budget_s must be a number of seconds > 0, got {self.latency_budget_s!r}")
        if not isinstance(self.zero_rung, bool):
            problems.append(f"budget: zero_rung must be true or false, got {self.zero_rung!r}")
        if problems:
            raise ConfigError("\n".join(problems))
        object.__setattr__(self, "rungs", tuple(float(r) for r in rungs))

    @classmethod
    def full(cls, epochs: float = 1.0, **kw: Any) -> Schedule:
        """Every feasible candidate trained to the full budget (plain search, no early stopping)."""
        return cls(epochs=epochs, rungs=(1.0,), **kw)

    @classmethod
    def coerce(cls, value: Schedule | Mapping[str, Any] | float | None) -> Schedule:
        if value is None:
            return cls()
        if isinstance(value, Schedule):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(epochs=float(value))
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(f"budget must be a Schedule, a mapping or a number of epochs, got {type(value).__name__}")

    @property
    def rung_epochs(self) -> tuple[float, ...]:
        """Cumulative epochs at each rung (a leading 0.0 with ``zero_rung``)."""
        body = tuple(self.epochs * r for r in self.rungs)
        return (0.0, *body) if self.zero_rung else body

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "rungs": list(self.rungs),
            "eta": self.eta,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "calibration_samples": self.calibration_samples,
            "latency_budget_s": self.latency_budget_s,
            "val_batch_size": self.val_batch_size,
            "zero_rung": self.zero_rung,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "budget")
        kw = dict(data)
        if "rungs" in kw:
            kw["rungs"] = tuple(kw["rungs"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Optuna plumbing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """How candidates get their weights, with what that needs (a parent's training, a user's model).

    Attributes:
        name: ``"scratch"`` (every candidate trained from its own initialization), ``"inherit"``
            (sub-networks of one parent trained once) or ``"compress"`` (set by :func:`hwtune.compress`);
            None: the family's default, or what a resumed study used.
        parent_epochs: ``inherit``: epochs of the parent's training (default: the recipe's
            ``[parent] epochs``, else 3).
        source_model: ``compress``: the user's model the study compresses (``sha256``, ``class``,
            ``source`` and ``archive``, a ``torch.export`` file stored with the study).

    Example:
        >>> Strategy.coerce("inherit", parent_epochs=2).parent_epochs
        2
    """

    name: str | None = None
    parent_epochs: float | None = None
    source_model: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.name is not None and self.name not in (*STRATEGIES, "compress"):
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.name!r}")
        if self.parent_epochs is not None and (not is_num(self.parent_epochs) or self.parent_epochs <= 0):
            problems.append(f"parent_epochs must be a number > 0, got {self.parent_epochs!r}")
        if self.source_model is not None and not isinstance(self.source_model, Mapping):
            problems.append(f"source_model must be a mapping, got {type(self.source_model).__name__}")
        if problems:
            raise ConfigError("\n".join(problems))

    @classmethod
    def coerce(cls, value: Strategy | str | None, *, parent_epochs: float | None = None) -> Strategy:
        """A ``Strategy``, a strategy name or None; ``parent_epochs`` (the flat keyword) replaces the object's."""
        if isinstance(value, Strategy):
            return value if parent_epochs is None else replace(value, parent_epochs=parent_epochs)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"strategy must be a name or a Strategy, got {type(value).__name__}")
        return cls(name=value, parent_epochs=parent_epochs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parent_epochs": self.parent_epochs,
            "source_model": None if self.source_model is None else dict(self.source_model),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Strategy:
        reject_unknown_keys(data, {"name", "parent_epochs", "source_model"}, "strategy")
        return cls(**dict(data))
