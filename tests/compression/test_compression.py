"""hwtune.compression: loading a user's model, deriving its space, applying candidates."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import torch.nn.functional as F
from torch import nn

import hwtune
from hwtune.compression import (
    CompressCandidate,
    CompressSpace,
    apply_candidate,
    check_model,
    check_space,
    derive_space,
    dropped_blocks,
    kept_channels,
    load_user_model,
    precision_plan,
    read_state_dict,
    stage_prefixes,
    state_sha256,
)
from hwtune.errors import ConfigError, ModelError, UnknownNameError
from hwtune.graph import count_flops
from hwtune.onnx_export import export_onnx


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# Models with custom blocks


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class SEBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.se = SqueezeExcite(c)

    def forward(self, x):
        return F.relu(x + self.se(self.bn(self.conv(x))))


class Branches(nn.Module):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(cin, c, 1)
        self.b = nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class CustomNet(nn.Module):
    """SE residual blocks, a stride-2 conv, a concatenation of two branches, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = SEBlock(16)
        self.block2 = SEBlock(16)
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.branches = Branches(24, 12)
        self.mix = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = F.relu(self.mix(self.branches(F.relu(self.down(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class OwnConv(nn.Module):
    """A convolution Torch-Pruning does not know: its own 4-D weight used through F.conv2d."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3) * 0.1)

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


class PartlyCustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.own = OwnConv(8, 8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.c2(F.relu(self.own(F.relu(self.c1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class OnlyCustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.own = OwnConv(1, 10)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.own(x), 1).flatten(1)


X28 = (2, 1, 28, 28)


def _x(shape=X28):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _smallest(space: CompressSpace) -> dict:
    return {k: v[-1] for k, v in space.param_choices().items()}


def _check_pruned(model, space, params, x, tmp_path: Path, *, onnx: bool = True) -> tuple[nn.Module, dict]:
    """Apply, then: runs, expected channel counts, info JSON-able, ONNX export agrees with torch."""
    pruned, info = apply_candidate(model, space, params, example_input=x)
    cand = space.candidate(params) if isinstance(params, dict) else params
    mods = dict(pruned.named_modules())
    dropped = dropped_blocks(space, cand)
    for st in space.stages:
        width = cand.choice(st.name).width
        for g in st.groups:
            live = [
                layer for layer in g.layers if layer in mods and not any(layer.startswith(b + ".") for b in dropped)
            ]
            for layer in live:
                m = mods[layer]
                got = m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
                assert got == kept_channels(g.channels, width, space.round_to), (layer, got, g.channels, width)
    for b in dropped:
        assert isinstance(mods[b], nn.Identity)
    with torch.no_grad():
        y = pruned(x)
    assert tuple(y.shape) == (x.shape[0], space.num_classes)
    assert info["macs_after"] <= info["macs_before"]
    assert info["macs_after"] == count_flops(pruned, x).macs
    assert info["params_after"] == sum(p.numel() for p in pruned.parameters())
    json.dumps(info)
    if not onnx:
        return pruned, info
    onnx_path = export_onnx(pruned, x, tmp_path / "pruned.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y_onnx,) = sess.run(None, {"input": x.numpy()})
    assert torch.allclose(torch.from_numpy(y_onnx), y, atol=1e-4, rtol=1e-3)
    return pruned, info


# --------------------------------------------------------------------------------------------
# Space derivation and pruning


def test_kept_channels_rounding_and_bounds():
    assert kept_channels(64, 0.25) == 16
    assert kept_channels(10, 0.75) == 8  # 7.5 rounds half up
    assert kept_channels(10, 0.75, round_to=8) == 8
    assert kept_channels(4, 0.01) == 1  # never zero
    assert kept_channels(6, 0.5, round_to=8) == 6  # never more than there are
    assert kept_channels(64, 1.0) == 64


def test_resnet18_space_and_pruning(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    space = derive_space(model, x)
    names = [st.name for st in space.stages]
    assert names == ["stage1", "stage2", "stage3", "stage4", "stage5", "head"]
    assert space.stage("stage2").blocks == ("layer1.0", "layer1.1")
    assert space.stage("stage3").blocks == ("layer2.1",)  # layer2.0 has a projection shortcut
    # The residual chain of stage 2 couples the stem conv with every block output.
    chain = next(g for g in space.stage("stage2").groups if "conv1" in g.layers)
    assert set(chain.layers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"} and chain.channels == 64
    assert all("fc" not in g.layers for st in space.stages for g in st.groups)  # classifier never pruned
    assert space.stage("head").width == (1.0,)
    assert space.param_choices()["stage2.depth"] == (2, 1, 0)
    pruned, info = _check_pruned(model, space, space.uniform(0.5), x, tmp_path)
    assert pruned.conv1.in_channels == 3  # input channels never pruned
    assert pruned.fc.out_features == 10
    assert info["macs_after"] < 0.35 * info["macs_before"]
    _check_pruned(model, space, _smallest(space), x, tmp_path, onnx=False)


def test_mobilenet_v2_space_and_pruning(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    space = derive_space(model, x)
    blocks = [b for st in space.stages for b in st.blocks]
    # Identity-shortcut inverted residuals only (torchvision's use_res_connect).
    expected = [f"features.{i}" for i, m in enumerate(model.features) if getattr(m, "use_res_connect", False)]
    assert blocks == expected
    # The depthwise conv is pruned together with the expansion conv feeding it.
    g = next(g for st in space.stages for g in st.groups if g.root == "features.2.conv.1.0")
    assert set(g.layers) == {"features.2.conv.0.0", "features.2.conv.1.0"}
    _check_pruned(model, space, space.uniform(0.75), x, tmp_path, onnx=False)
    pruned, _ = _check_pruned(model, space, _smallest(space), x, tmp_path)
    assert pruned.classifier[1].out_features == 10


FAMILY_KNOBS = {
    "convnet": {"width": [8, 16], "depth": [1, 2]},
    "resnet": {"width": [8, 16], "depth": [2, 2]},
    "mobilenet_v2": {
        "width_mult": 0.25,
        "depth": (1, 2, 2, 1, 1, 1, 1),
        "expand_ratio": (1, 2, 2, 2, 2, 2, 2),
        "last_channel": 32,
    },
}


@pytest.mark.parametrize("family", sorted(FAMILY_KNOBS))
def test_hwtune_families(family, tmp_path):
    model = hwtune.create_model(
        family, hwtune.Candidate(family, FAMILY_KNOBS[family]), num_classes=10, in_channels=1, input_size=28
    ).eval()
    x = _x()
    space = derive_space(model, x)
    assert space.input_shape == (1, 28, 28) and space.num_classes == 10
    assert any(st.groups for st in space.stages)
    if family != "convnet":  # plain convnet has no residual blocks
        assert any(st.blocks for st in space.stages)
    _check_pruned(model, space, space.uniform(0.5), x, tmp_path)
    _check_pruned(model, space, _smallest(space), x, tmp_path)


def test_custom_blocks_squeeze_excite_and_concat(tmp_path):
    model = CustomNet().eval()
    x = _x()
    space = derive_space(model, x)
    assert [st.name for st in space.stages] == ["stage1", "stage2", "head"]
    s1 = space.stage("stage1")
    # The SE gates stay in their block's stage (their 1x1 outputs take the block's resolution).
    assert {"block1.se.fc1", "block1.se.fc2", "block2.se.fc2"} <= set(s1.layers)
    assert s1.blocks == ("block1", "block2")
    chain = next(g for g in s1.groups if "stem.0" in g.layers)
    assert {"block1.conv", "block2.conv", "block1.se.fc2", "block2.se.fc2"} <= set(chain.layers)
    roots = {g.root for g in space.stage("stage2").groups}
    assert {"branches.a", "branches.b.0", "down", "mix"} <= roots
    pruned, info = _check_pruned(model, space, space.uniform(0.5), x, tmp_path)
    # The concatenation feeds mix: its input is the sum of both pruned branches.
    assert pruned.mix.in_channels == pruned.branches.a.out_channels + pruned.branches.b[0].out_channels == 12
    assert pruned.fc.in_features == 16 and pruned.fc.out_features == 10
    assert info["channels"]["stage2"]["mix"] == [32, 16]


def test_depth_drop_keeps_shapes_and_is_exactly_a_block_removal(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    space = derive_space(model, x)
    params = {**space.baseline().params(), "stage2.depth": 1, "stage4.depth": 0}
    assert dropped_blocks(space, params) == ["layer1.1", "layer3.1"]  # the deepest of stage 2 goes first
    pruned, info = _check_pruned(model, space, params, x, tmp_path, onnx=False)
    by_hand = torchvision.models.resnet18(num_classes=10).eval()
    by_hand.load_state_dict(model.state_dict())
    by_hand.layer1[1] = nn.Identity()
    by_hand.layer3[1] = nn.Identity()
    with torch.no_grad():
        assert torch.equal(pruned(x), by_hand(x))
    assert info["dropped_blocks"] == ["layer1.1", "layer3.1"]


def test_baseline_candidate_changes_nothing():
    model = CustomNet().eval()
    x = _x()
    space = derive_space(model, x)
    before = state_sha256(model)
    pruned, info = apply_candidate(model, space, space.baseline(), example_input=x)
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))
    assert info["macs_after"] == info["macs_before"] and info["dropped_blocks"] == []
    apply_candidate(model, space, _smallest(space), example_input=x)
    assert state_sha256(model) == before and model.stem[0].out_channels == 16  # the parent is untouched


def test_taylor_importance_needs_a_batch_and_ranks_differently():
    model = CustomNet().eval()
    x = _x((8, 1, 28, 28))
    y = torch.arange(8) % 10
    space = derive_space(model, x)
    with pytest.raises(ConfigError) as err:
        apply_candidate(model, space, space.uniform(0.5), example_input=x, importance="taylor")
    assert "batch" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        apply_candidate(model, space, space.uniform(0.5), example_input=x, importance="magnitud")
    assert "did you mean 'magnitude'" in _one_line(err)
    taylor, _ = apply_candidate(model, space, space.uniform(0.5), example_input=x, importance="taylor", batch=(x, y))
    l1, _ = apply_candidate(model, space, space.uniform(0.5), example_input=x, importance="l1")
    assert taylor.mix.out_channels == l1.mix.out_channels == 16
    assert not torch.equal(taylor.mix.weight, l1.mix.weight)


def test_unsupported_layer_left_unpruned_with_a_note(tmp_path):
    model = PartlyCustomNet().eval()
    x = _x()
    space = derive_space(model, x)
    assert any("own (OwnConv)" in n and "c1" in n for n in space.notes), space.notes
    roots = {g.root for st in space.stages for g in st.groups}
    assert roots == {"c2"}
    pruned, _ = _check_pruned(model, space, space.uniform(0.5), x, tmp_path)
    assert pruned.c1.out_channels == 8 and pruned.c2.out_channels == 8


def test_nothing_prunable_is_one_line_naming_the_layer():
    with pytest.raises(ModelError) as err:
        derive_space(OnlyCustomNet().eval(), _x())
    assert "nothing in OnlyCustomNet can be pruned" in _one_line(err)


def test_ignored_and_named_stages():
    model = CustomNet().eval()
    x = _x()
    space = derive_space(model, x, ignored=["branches"])
    roots = {g.root for st in space.stages for g in st.groups}
    assert "branches.a" not in roots and "branches.b.0" not in roots and "mix" in roots
    assert any("branches.a" in n and "ignored" in n for n in space.notes)
    with pytest.raises(ConfigError) as err:
        derive_space(model, x, ignored=["branchez"])
    assert "did you mean 'branches'" in _one_line(err)
    named = derive_space(model, x, stages={"early": ["stem", "block1"], "late": ["branches", "mix"]})
    assert [st.name for st in named.stages] == ["early", "other", "late"]
    assert named.stage("other").layers == ("block2.conv", "block2.se.fc1", "block2.se.fc2", "down", "fc")
    with pytest.raises(ConfigError) as err:
        derive_space(model, x, stages={"early": ["stemm"]})
    assert "did you mean 'stem'" in _one_line(err)


def test_model_that_does_not_run_or_has_wrong_output():
    model = CustomNet().eval()
    with pytest.raises(ModelError) as err:
        derive_space(model, torch.randn(1, 3, 28, 28))
    assert "does not run on an input of shape (1, 3, 28, 28)" in _one_line(err)
    check_model(model, _x(), 10)
    with pytest.raises(ModelError) as err:
        check_model(model, _x(), 7)
    assert "expected (2, 7)" in _one_line(err)
    with pytest.raises(ModelError) as err:
        check_model(model, torch.randn(2, 3, 28, 28), 10)
    assert "(2, 3, 28, 28)" in _one_line(err)

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(ModelError) as err:
        check_model(Pair(), _x(), 10)
    assert "returns a tuple" in _one_line(err)


# --------------------------------------------------------------------------------------------
# The space as data


def test_space_param_view_and_candidates():
    space = derive_space(CustomNet().eval(), _x(), precisions=("fp32", "int8"))
    choices = space.param_choices()
    assert choices["stage1.width"] == (1.0, 0.75, 0.5, 0.25)
    assert choices["stage1.depth"] == (2, 1, 0)
    assert "head.width" not in choices and space.fixed_params["head.width"] == 1.0
    params = {k: v[1] for k, v in choices.items()}
    cand = space.candidate(params)
    assert cand.params() == {**space.fixed_params, **params}
    assert CompressCandidate.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand
    assert cand.key.startswith("compress-") and cand.key == space.candidate(params).key
    with pytest.raises(ConfigError) as err:
        space.candidate({**params, "stage1.widht": 0.5, "stage2.width": 0.3})
    msg = str(err.value)
    assert "did you mean 'stage1.width'" in msg and "'stage2.width' must be one of" in msg
    with pytest.raises(ConfigError, match="'stage1.depth' is missing"):
        space.candidate({k: v for k, v in params.items() if k != "stage1.depth"})


def test_space_toml_round_trip_and_edits(tmp_path):
    model = CustomNet().eval()
    x = _x()
    space = derive_space(model, x)
    path = tmp_path / "space.toml"
    path.write_text(space.to_toml())
    loaded = CompressSpace.from_toml(path)
    assert loaded == space and loaded.path == path
    assert CompressSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    check_space(loaded, model, x)
    # An edit of the choices is a new, valid space.
    path.write_text(space.to_toml().replace("width = [1.0, 0.75, 0.5, 0.25]", "width = [1.0, 0.5]", 1))
    edited = CompressSpace.from_toml(path)
    assert edited.param_choices()["stage1.width"] == (1.0, 0.5)
    # Bad edits: every problem, each naming the file and key.
    text = (
        space.to_toml()
        .replace("depth = [2, 1, 0]", "depth = [3]")
        .replace('precision = ["fp32", "int8"]', 'precision = ["int4"]', 1)
    )
    path.write_text(text.replace("round_to = 1", "round_to = 1\nwidht = 2"))
    with pytest.raises(ConfigError) as err:
        CompressSpace.from_toml(path)
    assert f"{path}: unknown key 'widht'" in str(err.value)
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        CompressSpace.from_toml(path)
    lines = str(err.value).splitlines()
    assert any("stages.stage1.depth must be a non-empty list of integers in [0, 2]" in ln for ln in lines)
    assert any("stages.stage1.precision" in ln and "int4" in ln for ln in lines)
    assert all(ln.startswith(str(path)) for ln in lines)
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        CompressSpace.from_toml(path)
    with pytest.raises(ConfigError, match="not found"):
        CompressSpace.from_toml(tmp_path / "missing.toml")
    # A recipe for another model is caught before any trial.
    other = derive_space(PartlyCustomNet().eval(), x)
    with pytest.raises(ConfigError) as err:
        check_space(other, model, x)
    assert "group 'c2' is not a prunable channel group of the model" in str(err.value)


def test_stage_prefixes_and_mixed_precision_plan_quantize(tmp_path):
    model = CustomNet().eval()
    x = _x()
    space = derive_space(model, x, precisions=("fp32", "int8"))
    params = {k: v[0] for k, v in space.param_choices().items()}
    params.update({"stage1.precision": "int8", "stage2.precision": "int8", "stage1.depth": 1})
    prefixes = stage_prefixes(space, params)
    assert prefixes["stage1"] == ["stem", "block1"]  # block2 is dropped
    assert prefixes["stage2"] == ["down", "branches", "mix"] and prefixes["head"] == ["fc"]
    plan = precision_plan(space, params)
    assert plan.default == "int8" and plan.overrides == (("fc", "fp32"),)
    pruned, _ = apply_candidate(model, space, params, example_input=x)
    onnx_path = export_onnx(pruned, x, tmp_path / "m.onnx")
    from hwtune.quant import quantize

    result = quantize(onnx_path, tmp_path / "m.int8.onnx", plan)  # an unmatched prefix would raise
    assert any("fc" in n for n in result.excluded_nodes)


# --------------------------------------------------------------------------------------------
# Loading


FACTORY_SRC = """
import torch
from torch import nn

def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))

def not_a_model():
    return 42

def broken():
    raise RuntimeError("no GPU here")
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "usernet.py"
    path.write_text(textwrap.dedent(FACTORY_SRC))
    return path


def test_load_file_factory_and_weights_kinds(factory_file, tmp_path):
    model = load_user_model(f"{factory_file}:build")
    assert isinstance(model, nn.Sequential) and not model.training
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    for weights in (tmp_path / "w.pt", tmp_path / "ckpt.pth"):
        other = load_user_model(f"{factory_file}:build", weights=weights)
        assert state_sha256(other) == state_sha256(model)
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    other = load_user_model(f"{factory_file}:build", weights=tmp_path / "w.safetensors")
    assert state_sha256(other) == state_sha256(model)
    assert load_user_model(f"{factory_file}:build", kwargs={"num_classes": 3})[-1].out_features == 3


def test_load_package_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(FACTORY_SRC))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userpkg", raising=False)
    model = load_user_model("userpkg.nets:build")
    assert isinstance(model, nn.Sequential)
    with pytest.raises(ModelError) as err:
        load_user_model("userpkg.nope:build")
    assert "cannot import module 'userpkg.nope'" in _one_line(err)


def test_load_torchvision_builder():
    pytest.importorskip("torchvision")
    model = load_user_model("torchvision:resnet18", kwargs={"num_classes": 10})
    assert model.fc.out_features == 10
    with pytest.raises(UnknownNameError) as err:
        load_user_model("torchvision:resnet81")
    assert "did you mean 'resnet18'" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        load_user_model("torchvision:resnet18", kwargs={"num_clases": 10})
    assert "torchvision:resnet18" in _one_line(err)


def test_load_export_archive_prunes_and_exports(tmp_path):
    model = CustomNet().eval()
    x = _x()
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "net.pt2")
    loaded = load_user_model(tmp_path / "net.pt2")
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
        assert loaded(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    loaded.train()  # the exported module refuses train(); the loaded one is an ordinary module
    assert isinstance(loaded.get_submodule("stem.0"), nn.Conv2d)
    loaded.eval()
    space = derive_space(loaded, x)
    assert any(st.groups for st in space.stages)
    _check_pruned(loaded, space, space.uniform(0.5), x, tmp_path)
    with pytest.raises(ConfigError, match="carries its own weights"):
        load_user_model(tmp_path / "net.pt2", weights=tmp_path / "w.pt")
    (tmp_path / "junk.pt2").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError) as err:
        load_user_model(tmp_path / "junk.pt2")
    assert "junk.pt2: not a torch.export archive" in _one_line(err)


def test_unsafe_and_broken_inputs_are_one_line_errors(factory_file, tmp_path):
    model = load_user_model(f"{factory_file}:build")
    torch.save(model, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:build", weights=tmp_path / "whole.pt")
    msg = _one_line(err)
    assert "whole.pt: refused: not a plain state dict" in msg and "weights_only" in msg
    (tmp_path / "garbage.pt").write_bytes(b"\x89not a checkpoint" * 20)
    with pytest.raises(ModelError) as err:
        read_state_dict(tmp_path / "garbage.pt")
    assert "garbage.pt: not a PyTorch weights file" in _one_line(err)
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError) as err:
        read_state_dict(tmp_path / "garbage.safetensors")
    assert "garbage.safetensors: not a safetensors file" in _one_line(err)
    with pytest.raises(ModelError, match="weights file not found"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="unknown weights format '.ckpt'"):
        read_state_dict(tmp_path / "w.ckpt")
    torch.save({"a": 1}, tmp_path / "notensors.pt")
    with pytest.raises(ModelError, match="expected a state dict"):
        read_state_dict(tmp_path / "notensors.pt")


def test_factory_and_weights_mismatch_errors(factory_file, tmp_path):
    with pytest.raises(ModelError) as err:
        load_user_model(f"{tmp_path / 'missing.py'}:build")
    assert "missing.py: model file not found" in _one_line(err)
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:biuld")
    assert "no function 'biuld'; did you mean 'build'" in _one_line(err)
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:not_a_model")
    assert "not_a_model() returned a int, expected a torch.nn.Module" in _one_line(err)
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:broken")
    assert "calling broken() failed: RuntimeError: no GPU here" in _one_line(err)
    bad_py = tmp_path / "bad.py"
    bad_py.write_text("def build(:\n")
    with pytest.raises(ModelError) as err:
        load_user_model(f"{bad_py}:build")
    assert "bad.py: importing it failed: SyntaxError" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        load_user_model("just-a-name")
    assert "must be path/to/file.py:factory" in _one_line(err)
    # Weights for another model: wrong keys, then wrong shapes.
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:build", weights=tmp_path / "linear.pt")
    msg = _one_line(err)
    assert "linear.pt: weights do not fit Sequential" in msg and "4 missing (0.weight" in msg and "2 unexpected" in msg
    other = load_user_model(f"{factory_file}:build", kwargs={"num_classes": 3})
    torch.save(other.state_dict(), tmp_path / "three.pt")
    with pytest.raises(ModelError) as err:
        load_user_model(f"{factory_file}:build", weights=tmp_path / "three.pt")
    assert "4.weight is (3, 8) in the file, (10, 8) in the model" in _one_line(err)


def test_public_names_pinned():
    import hwtune.compression as hc

    assert hc.__all__ == [
        "ChannelGroup",
        "CompressCandidate",
        "CompressSpace",
        "StageChoice",
        "StageSpace",
        "UserModelSpace",
        "apply_candidate",
        "check_model",
        "check_space",
        "derive_space",
        "dropped_blocks",
        "kept_channels",
        "load_user_model",
        "load_weights",
        "precision_plan",
        "read_state_dict",
        "stage_prefixes",
        "state_sha256",
    ]
    for name in hc.__all__:
        assert getattr(hc, name) is not None
    with pytest.raises(ConfigError, match="stage 's1' must be"):
        CompressCandidate.from_dict({"stages": {"s1": {"width": "wide", "depth": 0, "precision": "fp32"}}})
