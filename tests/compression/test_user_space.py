"""hwtune/compression/user_space.py: a user model's derived space seen as the tuner's space, stored as kind
``compress`` and rebuilt through the space registry."""

from __future__ import annotations

import pytest

from hwtune.compression import ChannelGroup, CompressCandidate, CompressSpace, StageSpace, UserModelSpace
from hwtune.errors import ConfigError, StudyError
from hwtune.space import CandidateLike, SearchSpace, SpaceLike, space_from_dict, space_kinds
from hwtune.tuner.inputs import space_from_info


def _protocol_members(proto: type) -> set[str]:
    return {n for n in vars(proto) if not n.startswith("_")}


def _space() -> UserModelSpace:
    cspace = CompressSpace(input_shape=(1, 28, 28), num_classes=10, stages=(
        StageSpace("stage1", layers=("conv",), groups=(ChannelGroup("conv", ("conv",), 16),),
                   width=(1.0, 0.5), precision=("fp32", "int8")),
        StageSpace("stage2", layers=("fc",), groups=(), width=(1.0,), precision=("fp32", "int8")),
    ))
    return UserModelSpace(cspace, name="compress-net", dataset="fashion-mnist", epochs=0.5, batch_size=64)


def test_stored_kind_compress_round_trips_through_the_registry():
    space = _space()
    stored = space.to_dict()
    assert stored["kind"] == "compress" and "compress" in space_kinds() and "recipe" in space_kinds()
    again = space_from_dict(stored)
    assert isinstance(again, UserModelSpace) and again.to_dict() == stored
    assert (again.input.shape, again.num_classes, again.train.epochs, again.train.batch_size) == \
        ((1, 28, 28), 10, 0.5, 64)
    cand = again.candidate({"stage1.width": 0.5, "precision": "int8"})
    assert isinstance(cand, CompressCandidate)
    assert again.candidate_from_dict(cand.to_dict()) == cand
    assert space_from_info({"name": "compress-net", "space": stored}).to_dict() == stored


def test_a_space_stored_by_0_1_still_opens():
    """The layout compression studies wrote before the move out of hwtune.tuner (kind, name, dataset, train, space)."""
    old = {"kind": "compress", "name": "compress-net", "dataset": "user",
           "train": {"epochs": 1.0, "batch_size": 128}, "space": _space().cspace.to_dict()}
    space = space_from_info({"space": old})
    assert isinstance(space, UserModelSpace) and space.cspace == _space().cspace


def test_a_damaged_stored_space_is_one_study_error():
    with pytest.raises(StudyError, match="stored space cannot be rebuilt"):
        space_from_info({"space": {"kind": "compress", "name": "x"}})
    with pytest.raises(StudyError, match="unknown kind 'compres'; did you mean 'compress'"):
        space_from_info({"space": {"kind": "compres"}})
    with pytest.raises(ConfigError, match="already registered"):
        from hwtune.space import register_space_kind

        register_space_kind("compress", UserModelSpace.from_dict)


def test_both_spaces_and_candidates_play_the_same_role():
    recipe = SearchSpace.from_recipe("fashion-convnet")
    derived = _space()
    for space in (recipe, derived):
        missing = [n for n in _protocol_members(SpaceLike) if not hasattr(space, n)]
        assert not missing, (type(space).__name__, missing)
        cand = space.candidate({k: v[0] for k, v in space.param_choices().items()})
        missing = [n for n in _protocol_members(CandidateLike) if not hasattr(cand, n)]
        assert not missing, (type(cand).__name__, missing)
        assert space.candidate_from_dict(cand.to_dict()) == cand
        assert space_from_dict(space.to_dict()).to_dict() == space.to_dict()


def test_uniform_precision_that_a_stage_cannot_run_is_refused():
    cspace = CompressSpace(input_shape=(1, 28, 28), num_classes=10, stages=(
        StageSpace("stage1", layers=("conv",), groups=(), width=(1.0,), precision=("fp32",)),))
    with pytest.raises(ConfigError, match="stage stage1 cannot run int8"):
        UserModelSpace(cspace, name="n", dataset="d").candidate({"precision": "int8"})
    with pytest.raises(ConfigError, match="only square inputs"):
        UserModelSpace(CompressSpace(input_shape=(1, 28, 14), num_classes=10, stages=cspace.stages), name="n",
                       dataset="d")
