"""The exception tree. Every error hwtune raises on purpose is an ``HwtuneError``.

Each member also subclasses the builtin that fits, so ``except ValueError`` keeps working
(scikit-learn does the same). The CLI turns any ``HwtuneError`` into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from typing import Any

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DataError",
    "ExportError",
    "HwtuneError",
    "ModelError",
    "QuantizationError",
    "RuntimeUnavailableError",
    "StorageUnavailableError",
    "StudyError",
    "TrainingDivergedError",
    "UnknownNameError",
    "did_you_mean",
    "reject_unknown_keys",
    "unknown_key_problems",
]


class HwtuneError(Exception):
    """Base class of every error hwtune raises deliberately."""


class ConfigError(HwtuneError, ValueError):
    """A profile, recipe, candidate, constraint or argument is invalid."""


class UnknownNameError(ConfigError, LookupError):
    """A device, family, recipe, builder or trial name is not known."""


class ModelError(HwtuneError, ValueError):
    """A model cannot be built, traced, exported or read, or its input shape is wrong."""


class DataError(HwtuneError, ValueError):
    """A dataset is missing, unreadable or has the wrong shape."""


class TrainingDivergedError(HwtuneError, ArithmeticError):
    """Training produced a NaN/inf loss or diverged."""


class QuantizationError(HwtuneError, RuntimeError):
    """Quantization or precision conversion failed."""


class CalibrationError(HwtuneError, ValueError):
    """A latency calibration file is malformed or cannot be fitted."""


class RuntimeUnavailableError(HwtuneError, RuntimeError):
    """A runtime or measurement was asked for that this machine or profile cannot provide."""


class ExportError(HwtuneError, RuntimeError):
    """An export failed or the exported file disagrees with what was recorded."""


class StudyError(HwtuneError, ValueError):
    """A study, storage URL or trial cannot be used."""


class StorageUnavailableError(HwtuneError, ConnectionError):
    """The study database stayed unreachable longer than the outage bound (``hwtune worker`` exits 1)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


def unknown_key_problems(
    given: Iterable[Any], allowed: Collection[str], where: str = "", *, prefix: str = "", what: str = "key"
) -> list[str]:
    """One ``"<where>: unknown key 'k'; did you mean 'x'?"`` line per key of ``given`` not in ``allowed``.

    Keys keep the order of ``given``. ``where`` names the file or table (left out with its colon when
    empty); ``prefix`` is shown in front of the key (``'input.size'``) but not matched against
    ``allowed``; ``what`` names what the keys are (``"parameter"``).

    Example:
        >>> unknown_key_problems({"epoch": 1, "seed": 0}, ("epochs", "seed"), "train")
        ["train: unknown key 'epoch'; did you mean 'epochs'?"]
    """
    head = f"{where}: " if where else ""
    return [
        f"{head}unknown {what} {repr(f'{prefix}{k}') if prefix else repr(k)}{did_you_mean(str(k), allowed)}"
        for k in given
        if k not in allowed
    ]


def reject_unknown_keys(
    given: Iterable[Any],
    allowed: Collection[str],
    where: str = "",
    *,
    sep: str = "\n",
    error: type[HwtuneError] = ConfigError,
) -> None:
    """Raise one ``error`` listing every :func:`unknown_key_problems` line (joined by ``sep``), if any."""
    problems = unknown_key_problems(given, allowed, where)
    if problems:
        raise error(sep.join(problems))
