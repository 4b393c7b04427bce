"""hwtune.errors: the classes every loader raises."""

from __future__ import annotations

from hwtune.errors import CalibrationError, ConfigError, DataError, ExportError, HwtuneError, StudyError


def test_every_loader_error_is_a_hwtune_error():
    """The error classes the loaders raise are HwtuneErrors, so the CLI prints them as one line."""
    for cls in (ConfigError, DataError, CalibrationError, ExportError, StudyError):
        assert issubclass(cls, HwtuneError)
