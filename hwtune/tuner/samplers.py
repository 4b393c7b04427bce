"""Samplers by name (a registry), or any ``optuna.samplers.BaseSampler`` the user built.

``population_size`` is NSGA-II's population and the number of random start-up trials of TPE/GP:
a search here runs tens of trials, not thousands, so the model-based part starts after 10 rather
than Optuna's default 50.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwtune.errors import ConfigError, did_you_mean

__all__ = ["SAMPLERS", "check_sampler", "make_sampler", "register_sampler", "sampler_name"]

# name -> factory(seed, population_size) -> BaseSampler
_FACTORIES: dict[str, Callable[[int | None, int], Any]] = {}


def register_sampler(name: str, factory: Callable[[int | None, int], Any]) -> None:
    """Register ``factory(seed, population_size) -> optuna sampler`` under ``name``; a duplicate raises."""
    if name in _FACTORIES:
        raise ConfigError(f"sampler {name!r} is already registered")
    _FACTORIES[name] = factory


def _nsga2(seed: int | None, population_size: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)


def _tpe(seed: int | None, population_size: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=population_size)


def _gp(seed: int | None, population_size: int) -> Any:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=population_size)


def _random(seed: int | None, population_size: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


for _name, _factory in (("nsga2", _nsga2), ("tpe", _tpe), ("gp", _gp), ("random", _random)):
    register_sampler(_name, _factory)

SAMPLERS: tuple[str, ...] = tuple(_FACTORIES)


def _is_sampler_instance(sampler: Any) -> bool:
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dependency
        return False
    return isinstance(sampler, optuna.samplers.BaseSampler)


def check_sampler(sampler: Any) -> None:
    """Raise ConfigError unless ``sampler`` is a registered name or an Optuna sampler instance."""
    if isinstance(sampler, str):
        if sampler not in _FACTORIES:
            names = ", ".join(_FACTORIES)
            raise ConfigError(f"sampler must be one of {names}, got {sampler!r}{did_you_mean(sampler, _FACTORIES)}")
        return
    if not _is_sampler_instance(sampler):
        raise ConfigError(
            f"sampler must be a name ({', '.join(_FACTORIES)}) or an optuna.samplers.BaseSampler, "
            f"got {type(sampler).__name__}"
        )


def sampler_name(sampler: Any) -> str:
    """What the study records: the registered name, or the class of a user's sampler."""
    return sampler if isinstance(sampler, str) else type(sampler).__name__


def make_sampler(sampler: Any, seed: int | None, population_size: int) -> Any:
    """The Optuna sampler for ``sampler`` (a registered name, or an instance returned as it is)."""
    check_sampler(sampler)
    if not isinstance(sampler, str):
        return sampler
    from hwtune.tuner.storage import quiet_optuna

    with quiet_optuna():
        return _FACTORIES[sampler](seed, population_size)
