"""hwtune.capacity: the capacity frontier under a parameter limit, against brute force."""

from __future__ import annotations

import pytest
import torch
from support import tiny_recipe, write_recipe

from hwtune.capacity import capacity_frontier
from hwtune.errors import ConfigError
from hwtune.graph import count_flops
from hwtune.space import SearchSpace


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> SearchSpace:
    # 16 shapes (stem 4/8, stage widths 4/8 and 8/16, kernel 3/5) x fp32/int8
    return SearchSpace.from_recipe(write_recipe(tmp_path_factory.mktemp("cap"), text=tiny_recipe(kernel_size=[3, 5])))


def _brute_force(space: SearchSpace, limit: int, precision: str) -> set[str]:
    counted = []
    for cand in space.enumerate():
        if cand.precision != precision:
            continue
        model = space.build(cand)
        n = sum(p.numel() for p in model.parameters())
        if n <= limit:
            counted.append((cand.key, n, count_flops(model, torch.zeros(1, *space.input_shape)).macs))
    return {
        k
        for k, n, m in counted
        if not any(n2 >= n and m2 >= m and (n2, m2) != (n, m) for _, n2, m2 in counted)
    }


def test_the_frontier_is_what_brute_force_finds_at_every_limit(space):
    sizes = sorted({sum(p.numel() for p in space.build(c).parameters()) for c in space.enumerate()})
    for limit in (sizes[0], sizes[len(sizes) // 3], sizes[len(sizes) // 2], sizes[-2], sizes[-1]):
        found = capacity_frontier(space, limit, "int8")
        assert {a.candidate.key for a in found} == _brute_force(space, limit, "int8"), limit
        assert all(a.params <= limit and a.candidate.precision == "int8" for a in found)
        assert [a.macs for a in found] == sorted(a.macs for a in found)  # fewest MACs first
    # the whole space: its one largest member
    (top,) = capacity_frontier(space, sizes[-1], "fp32")
    assert top.params == sizes[-1]


def test_nothing_fits_and_bad_arguments(space):
    assert capacity_frontier(space, 1, "fp32") == []
    with pytest.raises(ConfigError, match="max_params must be a positive integer, got 0"):
        capacity_frontier(space, 0, "fp32")
    with pytest.raises(ConfigError, match="offers precisions fp32, int8, got 'mixed'"):
        capacity_frontier(space, 10_000, "mixed")


def test_the_demo_space_under_100k_parameters():
    space = SearchSpace.from_recipe("fashion-convnet")
    found = capacity_frontier(space, 100_000, "mixed")
    # measured: six members from 99,954 parameters / 2.73 M MACs to 90,554 / 5.03 M
    assert [(a.params, a.macs) for a in (found[0], found[-1])] == [(99_954, 2_732_928), (90_554, 5_033_504)]
    assert len(found) == 6
