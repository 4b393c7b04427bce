"""Moved to :mod:`hwtune.graph`; re-exported so imports written against hwtune 0.1 keep working."""

from __future__ import annotations

from hwtune.graph import FlopCount, count_flops, flop_counter

__all__ = ["FlopCount", "count_flops", "flop_counter"]
