"""The largest candidates of a search space under a parameter limit: its capacity frontier.

A candidate is on the capacity frontier under ``max_params`` when it has at most that many
parameters and no other such candidate has as many parameters *and* as many MACs, one of them more.
These are the members a model budget stated in parameters ("under 100 K") leaves the most room to
learn in. ``hwtune demo`` starts its search with them: measured there (``benchmarks/results/
demo-finalize.json``, 30 epochs of finalize on the training split), members of 87-99 K parameters
and 2.98-5.03 M MACs reached 92.30-93.01% test and members of 58-68 K 91.66-92.23%, while one epoch
of search training did not rank them so.

Finding them builds every candidate of one precision once on the CPU (about 1 ms each for the
fashion-convnet space) to count its parameters. MACs, the slower count, are counted only for the
candidates that cannot grow: where raising any ordered knob (width, depth, kernel size) by one
choice passes the limit. In a family whose parameters and MACs grow with every such knob (the
bundled convolutional families), no other candidate can be on the frontier.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from hwtune.errors import ConfigError
from hwtune.space import SearchSpace

__all__ = ["Capacity", "capacity_frontier"]


class Capacity:
    """A candidate with its parameter and MAC counts.

    Attributes:
        candidate: The candidate (:class:`hwtune.space.Candidate`).
        params: Trainable parameters.
        macs: Multiply-accumulates of one inference.
    """

    __slots__ = ("candidate", "macs", "params")

    def __init__(self, candidate: Any, params: int, macs: int) -> None:
        self.candidate, self.params, self.macs = candidate, int(params), int(macs)

    def __repr__(self) -> str:
        return f"Capacity({self.candidate.label!r}, params={self.params}, macs={self.macs})"


def _ordered(choices: Sequence[Any]) -> bool:
    """Choices a knob can be raised along: numbers (not booleans), more than one."""
    return len(choices) > 1 and all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)


def capacity_frontier(space: SearchSpace, max_params: int, precision: str) -> list[Capacity]:
    """The candidates of ``space`` in ``precision`` on the capacity frontier under ``max_params``.

    Args:
        space: The search space.
        max_params: The parameter limit (inclusive).
        precision: One of the space's precision choices; the frontier's candidates all have it.

    Returns:
        The frontier, fewest MACs first (so most parameters first); empty when no candidate fits.

    Raises:
        ConfigError: a limit that is not a positive integer, or a precision the space does not offer.
    """
    import torch

    from hwtune.graph import count_flops

    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
        raise ConfigError(f"capacity frontier: max_params must be a positive integer, got {max_params!r}")
    if precision not in space.precision_choices:
        raise ConfigError(
            f"capacity frontier: {space.name} offers precisions {', '.join(space.precision_choices)}, got {precision!r}"
        )
    names = [p.name for p in space.params]
    grid = [tuple(sorted(p.choices)) if _ordered(p.choices) else tuple(p.choices) for p in space.params]
    params_of: dict[tuple[Any, ...], int] = {}
    for combo in itertools.product(*grid):
        cand = space.candidate({**dict(zip(names, combo, strict=True)), "precision": precision})
        params_of[combo] = sum(t.numel() for t in space.build(cand).parameters())

    def grows(combo: tuple[Any, ...]) -> bool:
        """Some ordered knob can go one choice up and stay under the limit."""
        for i, choices in enumerate(grid):
            if not _ordered(choices) or combo[i] == choices[-1]:
                continue
            up = (*combo[:i], choices[choices.index(combo[i]) + 1], *combo[i + 1 :])
            if params_of[up] <= max_params:
                return True
        return False

    c, h, w = space.input_shape
    example = torch.zeros(1, c, h, w)
    found: list[Capacity] = []
    for combo, n in params_of.items():
        if n > max_params or grows(combo):
            continue
        cand = space.candidate({**dict(zip(names, combo, strict=True)), "precision": precision})
        found.append(Capacity(cand, n, count_flops(space.build(cand), example).macs))
    frontier = [
        a
        for a in found
        if not any(
            b.params >= a.params and b.macs >= a.macs and (b.params, b.macs) != (a.params, a.macs) for b in found
        )
    ]
    return sorted(frontier, key=lambda a: (a.macs, -a.params))
