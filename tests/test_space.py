"""Search spaces and candidates: every bundled recipe loads, validates and round-trips."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from support import BINARY, REPO_ROOT, cli_error

import hwtune
from hwtune._resources import resource_files
from hwtune.errors import ConfigError, UnknownNameError
from hwtune.families import get_family
from hwtune.precision import PrecisionPlan
from hwtune.space import Candidate, SearchSpace, list_recipes

RECIPES = sorted(resource_files("models"))
# Enumerating every candidate is cheap up to this many.
ENUMERABLE = 10_000

GOOD = """
family = "convnet"
dataset = "fashion-mnist"
[input]
channels = 1
size = 28
classes = 10
[knobs]
stem_stride = 2
width = [[4, 8], [8, 16]]
depth = [1, 2]
kernel_size = 3
[precision]
choices = ["fp32", "int8", "mixed"]
mixed = { default = "int8", stem = "fp32", head = "fp32" }
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- bundled recipes ---------------------------------------------------------------------


def test_bundled_recipes_are_listed():
    assert {"fashion-convnet", "fashion-mobilenet"} <= set(list_recipes())
    assert list_recipes() == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_validates_and_round_trips(name):
    space = SearchSpace.from_recipe(name)
    assert space.name == name and space.family in hwtune.list_families()
    assert space.size() > 1 and space.param_choices()
    assert SearchSpace.from_dict(space.to_dict(), source=name) == space
    assert json.loads(json.dumps(space.to_dict())) == space.to_dict()
    # every searched parameter value is a plain categorical (what Optuna accepts)
    for choices in space.param_choices().values():
        assert all(isinstance(c, (str, int, float)) for c in choices)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_samples_build_and_map_back(name):
    space = SearchSpace.from_recipe(name)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(5):
        cand = space.sample(rng)
        assert cand in space
        params = space.params_of(cand)
        assert set(params) == set(space.param_choices())
        assert space.candidate(params) == cand
        assert Candidate.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand
        seen.add(cand.key)
        prefixes = get_family(space.family).stage_prefixes(cand)
        assert tuple(prefixes) == space.stages
        plan = cand.precision_plan(prefixes)
        assert isinstance(plan, PrecisionPlan)
    model = space.build(cand)
    assert [n for n, _ in model.named_children()] == ["stem", "stages", "head"]
    assert len(seen) > 1


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_size_counts_distinct_candidates(name):
    space = SearchSpace.from_recipe(name)
    if space.size() > ENUMERABLE:
        first = list(zip(range(2000), space.enumerate()))
        assert len({c for _, c in first}) == 2000
        return
    keys = {c.key for c in space.enumerate()}
    assert len(keys) == space.size()


def test_fashion_convnet_is_cheap_and_spans_a_range():
    space = SearchSpace.from_recipe("fashion-convnet")
    assert space.dataset == "fashion-mnist" and space.input.shape == (1, 28, 28) and space.num_classes == 10
    assert space.precision_choices == ("fp32", "int8", "mixed")
    assert space.train.epochs == 1.0
    assert space.knob_choices["stage1.width"] == (8, 12, 16)
    assert "stem_stride" not in space.param_choices()  # fixed in the recipe
    assert space.fixed_params["stem_stride"] == 2


def test_unknown_recipe_name_suggests(tmp_path):
    with pytest.raises(UnknownNameError) as exc:
        SearchSpace.from_recipe("fashion-convnt")
    assert "did you mean 'fashion-convnet'" in str(exc.value)
    with pytest.raises(ConfigError, match="recipe file not found"):
        SearchSpace.from_recipe(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        SearchSpace.from_recipe(write(tmp_path, "family = [", "bad.toml"))


# ---- recipe validation -------------------------------------------------------------------


def test_good_recipe_from_file(tmp_path):
    space = SearchSpace.from_recipe(write(tmp_path, GOOD))
    assert space.name == "r" and space.num_stages == 2
    assert space.size() == 2 * 2 * 2 * 2 * 3
    assert space.param_choices() == {
        "stage1.width": (4, 8),
        "stage1.depth": (1, 2),
        "stage2.width": (8, 16),
        "stage2.depth": (1, 2),
        "precision": ("fp32", "int8", "mixed"),
    }


def test_bad_recipe_lists_every_problem(tmp_path):
    text = """
familly = "convnet"
family = "convnet"
dataset = "fashion-mnist"
[input]
channels = 0
size = 28
[knobs]
widht = [8]
width = [[4, 8], [8, 16], [16, 4000]]
depth = [[1], [2]]
kernel_size = [3, 4, 3]
[precision]
choices = ["fp32", "int4", "mixd"]
mixed = { default = "int8", stemm = "fp32" }
[train]
epochs = 0
"""
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_recipe(write(tmp_path, text))
    lines = str(exc.value).splitlines()
    src = str(tmp_path / "r.toml")
    expected = [
        f"{src}: unknown key 'familly'; did you mean 'family'?",
        f"{src}: input.channels must be an integer >= 1, got 0",
        f"{src}: missing required key 'input.classes'",
        f"{src}: train.epochs must be a number > 0, got 0",
        f"{src}: unknown key 'knobs.widht' for family 'convnet'; did you mean 'width'",
        f"{src}: knobs.depth must give one entry per stage (3 stages), got 2",
        f"{src}: knobs.width (stage 3) must be an integer in [1, 2048], got 4000",
        f"{src}: knobs.kernel_size must be one of 1, 3, 5, 7, got 4",
        f"{src}: knobs.kernel_size lists a choice twice: [3, 4, 3]",
        f"{src}: precision.mixed is a policy not listed in precision.choices; did you mean 'mixd'?",
        f"{src}: precision.choices entry 'int4' must be one of fp32, fp16, int8",
        f"{src}: precision.choices entry 'mixd' must be one of fp32, fp16, int8",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert len(lines) == len(expected)  # a per-stage spec given once is reported once


def test_bad_family_and_policy_stage(tmp_path):
    text = GOOD.replace('family = "convnet"', 'family = "convnett"').replace("stem =", "stemm =")
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_recipe(write(tmp_path, text))
    assert "family must be one of convnet, mobilenet_v2, nb201, resnet, got 'convnett'; did you mean 'convnet'?" in str(
        exc.value
    )
    text = GOOD.replace("stem =", "stage3 =")
    with pytest.raises(ConfigError, match=r"precision.mixed.stage3 is not a stage.*stages: stem, stage1, stage2, head"):
        SearchSpace.from_recipe(write(tmp_path, text))


def test_family_input_rules_apply_to_recipes(tmp_path):
    text = """
family = "nb201"
dataset = "cifar10"
[input]
channels = 3
size = 30
classes = 10
[knobs]
arch = { ops = ["none", "nor_conv_3x3"], edge_9_9 = ["none"] }
"""
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_recipe(write(tmp_path, text))
    assert "knobs.arch: unknown key 'edge_9_9'" in str(exc.value)
    with pytest.raises(ConfigError, match="input_size must be a multiple of 4"):
        SearchSpace.from_recipe(write(tmp_path, text.replace(', edge_9_9 = ["none"]', "")))


def test_nb201_recipe_searches_edges():
    space = SearchSpace.from_recipe("cifar-nb201")
    assert space.size() == 5**6 * 2
    params = {f"arch.edge_{j}_{i}": "nor_conv_3x3" for j, i in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))}
    cand = space.candidate({**params, "precision": "fp32"})
    assert (
        cand.knob("arch")
        == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    assert cand.knob("channels") == 16 and cand.knob("cells_per_stage") == 5


# ---- candidate() / sampling --------------------------------------------------------------


def test_candidate_from_params_and_errors(tmp_path):
    space = SearchSpace.from_recipe(write(tmp_path, GOOD))
    params = {"stage1.width": 8, "stage1.depth": 2, "stage2.width": 16, "stage2.depth": 1, "precision": "mixed"}
    cand = space.candidate(params)
    assert cand.knob("width") == (8, 16) and cand.knob("depth") == (2, 1) and cand.knob("kernel_size") == (3, 3)
    assert cand.knob("stem_stride") == 2 and cand.knob("stem_width") == 16  # family default filled in
    assert dict(cand.stage_precision) == {"stem": "fp32", "stage1": "int8", "stage2": "int8", "head": "fp32"}
    with pytest.raises(ConfigError) as exc:
        space.candidate({"stage1.widht": 8, "stage1.depth": 5, "precision": "int8"})
    text = str(exc.value)
    assert "unknown parameter 'stage1.widht'; did you mean 'stage1.width'" in text
    assert "parameter 'stage1.depth' must be one of 1, 2, got 5" in text
    assert "parameter 'stage1.width' is missing" in text and "parameter 'stage2.depth' is missing" in text


def test_sampling_is_seeded_for_every_rng_kind(tmp_path):
    space = SearchSpace.from_recipe(write(tmp_path, GOOD))
    for make in (np.random.default_rng, random.Random, lambda s: s):
        a = [space.sample(make(3)) for _ in range(3)]
        b = [space.sample(make(3)) for _ in range(3)]
        assert a == b
    rng = np.random.default_rng(0)
    draws = {space.sample(rng) for _ in range(200)}
    assert len(draws) > 20 and all(c in space for c in draws)
    with pytest.raises(ConfigError, match="rng must be"):
        space.sample("seed")


def test_candidate_outside_space_is_rejected(tmp_path):
    space = SearchSpace.from_recipe(write(tmp_path, GOOD))
    outside = Candidate("convnet", {**space.sample(0).knob_dict, "width": (32, 16)}, precision="fp16")
    assert outside not in space
    with pytest.raises(ConfigError) as exc:
        space.params_of(outside)
    assert "stage1.width = 32 is not among [4, 8]" in str(exc.value) and "precision 'fp16'" in str(exc.value)


# ---- Candidate value object --------------------------------------------------------------


def test_candidate_is_frozen_hashable_and_normalised():
    a = Candidate("convnet", {"width": [8, 16], "depth": [1, 2]}, precision="int8")
    b = Candidate("convnet", (("depth", (1, 2)), ("width", (8, 16))), precision="int8")
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.knobs == (("depth", (1, 2)), ("width", (8, 16)))
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.precision = "fp32"  # type: ignore[misc]
    assert Candidate("convnet", {"width": [8, 17]}).key != Candidate("convnet", {"width": [8, 16]}).key


def test_candidate_json_round_trip_and_stable_key():
    cand = Candidate(
        "convnet",
        {"width": [8, 16], "depth": [1, 2], "stem_stride": 2},
        precision="mixed",
        stage_precision={"head": "fp32", "stage2": "int8", "stem": "fp32", "stage1": "int8"},
    )
    data = json.loads(json.dumps(cand.to_dict()))
    assert data["knobs"] == {"depth": [1, 2], "stem_stride": 2, "width": [8, 16]}
    assert list(data["stage_precision"]) == ["stem", "stage1", "stage2", "head"]  # stage order, not alphabetical
    assert Candidate.from_dict(data) == cand
    # Pinned: a key must not change between releases (study artifacts are filed under it).
    assert cand.key == Candidate.from_dict(data).key
    assert cand.key.startswith("convnet-") and len(cand.key) == len("convnet-") + 12
    assert cand.key == "convnet-" + __import__("hashlib").sha256(cand.to_json().encode()).hexdigest()[:12]
    assert cand.label == "convnet depth=1,2 stem_stride=2 width=8,16 @ mixed(int8; fp32: stem, head)"


def test_candidate_precision_plan():
    cand = Candidate(
        "convnet",
        {"width": [8, 16]},
        precision="mixed",
        stage_precision={"stem": "fp32", "stage1": "int8", "stage2": "int8", "head": "fp32"},
    )
    plan = cand.precision_plan()  # the family's own prefixes
    assert plan.default == "int8" and plan.is_mixed
    assert plan.for_module("stem.conv") == "fp32"
    assert plan.for_module("stages.1.0.conv") == "int8"
    assert plan.for_module("head.fc") == "fp32"
    assert Candidate("convnet", {}, precision="int8").precision_plan() == PrecisionPlan.uniform("int8")
    with pytest.raises(ConfigError, match="no module prefix"):
        cand.precision_plan({"stem": "stem"})


def test_candidate_rejects_bad_values():
    with pytest.raises(ConfigError, match="JSON scalar"):
        Candidate("convnet", {"width": object()})
    with pytest.raises(ConfigError, match="needs stage_precision"):
        Candidate("convnet", {}, precision="mixed")
    with pytest.raises(ConfigError, match="uniform but stage_precision differs"):
        Candidate("convnet", {}, precision="int8", stage_precision={"stem": "fp32"})
    with pytest.raises(ConfigError, match="unknown key 'knob'; did you mean 'knobs'"):
        Candidate.from_dict({"family": "convnet", "knob": {}})
    with pytest.raises(UnknownNameError, match="did you mean 'width'"):
        Candidate("convnet", {"width": [8]}).knob("widht")


# -- bad recipe files (binary, unsafe names) ----------------------------------------------------------


def test_binary_recipe_is_one_line_naming_the_file(tmp_path, capsys):
    from hwtune.space import SearchSpace

    bad = tmp_path / "space.toml"
    bad.write_bytes(b'family = "convnet"\n\0\0\0')  # valid UTF-8, but NUL bytes: not text
    with pytest.raises(ConfigError, match=r"space\.toml: not a text file \(NUL byte at offset 19\)"):
        SearchSpace.from_recipe(bad)
    bad.write_bytes(BINARY)
    line = cli_error(capsys, ["tune", str(bad), "--device", "host", "--out", str(tmp_path / "run")])
    assert "space.toml" in line and "expected a recipe" in line
    assert not (tmp_path / "run").exists()


def test_recipe_names_are_safe(tmp_path):
    from hwtune.space import SearchSpace

    text = (REPO_ROOT / "models" / "fashion-convnet.toml").read_text()
    path = tmp_path / "r.toml"
    path.write_text('name = "../../evil"\n' + text)
    with pytest.raises(ConfigError, match=r"name must be a name of .*got '../../evil'"):
        SearchSpace.from_recipe(path)
    odd = tmp_path / "my recipe (v2).toml"
    odd.write_text(text)
    assert SearchSpace.from_recipe(odd).name == "my-recipe-v2-"


def test_stored_spaces_are_rebuilt_by_kind():
    """A stored recipe space has no ``kind`` (what every release wrote); other kinds are registered."""
    from hwtune.candidate import Candidate as CandidateHome
    from hwtune.space import space_from_dict, space_kinds

    space = SearchSpace.from_recipe("fashion-convnet")
    assert "kind" not in space.to_dict()
    assert space_from_dict(space.to_dict()) == space
    assert {"recipe", "compress"} <= set(space_kinds())
    with pytest.raises(ConfigError, match=r"unknown kind 'recipes'; did you mean 'recipe'.*\(known: compress, recipe"):
        space_from_dict({**space.to_dict(), "kind": "recipes"})
    assert Candidate is CandidateHome  # hwtune.space.Candidate stays importable
    cand = space.sample(random.Random(1))
    assert space.candidate_from_dict(cand.to_dict()) == cand
