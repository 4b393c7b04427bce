"""Peak size of simultaneously alive buffers in a sequential schedule (the activation-memory rule)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["liveness_peak"]


def liveness_peak(
    buffers: Mapping[Any, tuple[int, int, int]],
    merges: Mapping[Any, Any] | None = None,
    steps: int | None = None,
) -> tuple[int, int]:
    """Peak total size of simultaneously alive buffers in a sequential schedule.

    Args:
        buffers: key -> (bytes, first step, last step); a buffer is alive on every step
            ``first <= s <= last`` (it exists while its producer runs and until its last consumer ran).
        merges: key -> key of a buffer it shares memory with (runtime fusion writes in place). The merged
            buffer disappears and extends the lifetime of its target.
        steps: Number of steps (default: one past the largest step seen).

    Returns:
        (peak bytes, step at which it is first reached).
    """
    live: dict[Any, list[int]] = {k: [b, f, last] for k, (b, f, last) in buffers.items()}
    for src, dst in (merges or {}).items():
        root = dst
        seen = {src}
        while root in (merges or {}) and root not in seen:  # follow chains conv <- bn <- relu
            seen.add(root)
            root = merges[root]  # type: ignore[index]
        if src not in live or root not in live or src == root:
            continue
        b, f, last = live.pop(src)
        live[root][1] = min(live[root][1], f)
        live[root][2] = max(live[root][2], last)
    if not live:
        return 0, 0
    n = steps if steps is not None else max(v[2] for v in live.values()) + 1
    delta = [0] * (n + 1)
    for b, f, last in live.values():
        delta[f] += b
        delta[min(last, n - 1) + 1] -= b
    peak, peak_step, cur = 0, 0, 0
    for s in range(n):
        cur += delta[s]
        if cur > peak:
            peak, peak_step = cur, s
    return peak, peak_step
