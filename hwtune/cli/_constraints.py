"""The constraint options ``hwtune tune`` and ``hwtune compress`` share, read one way:
``--max-latency-ms``, ``--max-ram-kb``, ``--max-storage-kb``, ``--max-params``."""

from __future__ import annotations

import argparse

__all__ = ["constraint_arguments"]

CONSTRAINT_OPTIONS = ("max_latency_ms", "max_ram_kb", "max_storage_kb", "max_params")


def constraint_arguments(args: argparse.Namespace) -> dict[str, float]:
    """The ``constraints=`` argument of the API: the limits given on the command line (``*_kb`` as
    given; ``Constraints.coerce`` converts them to bytes)."""
    return {k: v for k in CONSTRAINT_OPTIONS if (v := getattr(args, k)) is not None}
