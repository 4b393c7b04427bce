"""Model families: every registered family builds, runs, traces, exports; knobs are checked."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hwtune
from hwtune.errors import ConfigError, UnknownNameError
from hwtune.families import ModelFamily, create_model, get_family, list_families, register_family, unregister_family
from hwtune.families.nb201 import NB201_OPS, cell_connected, format_arch, parse_arch

NB201_CSV = Path("/work/shared/data/hw-nas-bench/nb201_cifar10_latency.csv")
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"

# One tiny candidate (<= 32 channels) and its input per family. A newly registered family
# fails test_every_family_has_a_tiny_candidate until it gets one here.
TINY: dict[str, tuple[dict, dict]] = {
    "convnet": (
        {"width": [4, 8], "depth": [1, 2], "kernel_size": [3, 5], "stem_width": 4},
        {"in_channels": 1, "input_size": 28},
    ),
    "mobilenet_v2": (
        {
            "width_mult": 0.25,
            "depth": [1, 1, 1, 1, 1, 1, 1],
            "expand_ratio": [1, 2, 2, 2, 2, 2, 2],
            "kernel_size": [3, 5, 3, 5, 3, 7, 3],
            "last_channel": 32,
        },
        {"in_channels": 1, "input_size": 28},
    ),
    "resnet": ({"width": [8, 16], "depth": [1, 2]}, {"in_channels": 3, "input_size": 32}),
    "nb201": ({"arch": ARCH0, "channels": 4, "cells_per_stage": 1}, {"in_channels": 3, "input_size": 32}),
}


def conv_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of Conv2d and Linear layers including bias (the NAS-Bench-201 convention)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            positions = out.numel() // out.shape[0]
            kh, kw = module.kernel_size
            total += positions * module.in_channels // module.groups * kh * kw
            total += positions if module.bias is not None else 0
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features + (module.out_features if module.bias is not None else 0)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(family: str, num_classes: int = 10) -> tuple[nn.Module, torch.Tensor]:
    knobs, inp = TINY[family]
    torch.manual_seed(0)
    model = create_model(family, knobs, num_classes=num_classes, **inp).eval()
    x = torch.randn(
        2, inp["in_channels"], inp["input_size"], inp["input_size"], generator=torch.Generator().manual_seed(0)
    )
    return model, x


# ---- registry ----------------------------------------------------------------------------


def test_builtin_families_are_registered():
    assert list_families() == ["convnet", "mobilenet_v2", "nb201", "resnet"]
    assert hwtune.list_families() == list_families()


def test_every_family_has_a_tiny_candidate():
    assert sorted(TINY) == list_families()


def test_unknown_family_suggests_close_name():
    with pytest.raises(UnknownNameError) as exc:
        create_model("mobilenet_v5", {})
    assert str(exc.value) == "unknown family 'mobilenet_v5'; did you mean 'mobilenet_v2'? (hwtune list-families)"
    assert isinstance(exc.value, LookupError) and isinstance(exc.value, ValueError)


def test_duplicate_registration_raises():
    class Again(ModelFamily):
        name = "convnet"

    with pytest.raises(ConfigError, match="already registered"):
        register_family(Again)
    assert type(get_family("convnet")).__name__ == "ConvNetFamily"


def test_register_new_family_then_remove():
    @register_family
    class Toy(ModelFamily):
        name = "toy_test_family"

        def _build(self, knobs, *, num_classes, in_channels, input_size):
            return nn.Linear(in_channels, num_classes)

    try:
        assert "toy_test_family" in list_families()
        assert isinstance(create_model("toy_test_family", {}, in_channels=3), nn.Linear)
    finally:
        unregister_family("toy_test_family")
    assert "toy_test_family" not in list_families()


# ---- every family x tiny candidate -------------------------------------------------------


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_builds_and_forwards(family):
    model, x = tiny(family, num_classes=7)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    assert [name for name, _ in model.named_children()] == ["stem", "stages", "head"]


@pytest.mark.parametrize("family", sorted(TINY))
def test_stage_prefixes_name_real_modules(family):
    model, _ = tiny(family)
    fam = get_family(family)
    knobs = TINY[family][0]
    prefixes = fam.stage_prefixes(knobs)
    assert tuple(prefixes) == fam.stages(knobs)
    assert fam.stages(knobs)[0] == "stem" and fam.stages(knobs)[-1] == "head"
    modules = dict(model.named_modules())
    for stage, prefix in prefixes.items():
        assert prefix in modules, (stage, prefix)
    # Every parameter belongs to exactly one stage.
    for name, _ in model.named_parameters():
        owners = [s for s, p in prefixes.items() if name.startswith(p + ".")]
        assert len(owners) == 1, name


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_fx_traces(family):
    model, x = tiny(family)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    # Module paths survive tracing (the profiler names layers by them).
    targets = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert any(str(t).startswith("stages.") for t in targets)


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_exports_to_onnx_and_matches(family, tmp_path):
    import onnxruntime as ort

    from hwtune.onnx_export import export_onnx

    model, x = tiny(family)
    path = export_onnx(model, x[:1], tmp_path / f"{family}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})  # dynamic batch: exported at 1, run at 2
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ---- knob validation ---------------------------------------------------------------------


def test_invalid_candidate_lists_every_problem():
    with pytest.raises(ConfigError) as exc:
        create_model("convnet", {"width": [8, 16, 0], "depth": [1, 7.5, 3], "kernel_size": 4, "widht": 3})
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("candidate knob 'widht' is not a knob of family 'convnet'; did you mean 'width'")
    assert "candidate knob 'width' for stage 3 must be an integer in [1, 2048], got 0" in lines
    assert "candidate knob 'depth' for stage 2 must be an integer in [1, 16], got 7.5" in lines
    assert (
        sum(
            "candidate knob 'kernel_size' for stage" in line and "must be one of 1, 3, 5, 7, got 4" in line
            for line in lines
        )
        == 3
    )
    assert len(lines) == 6


def test_validate_message_format_matches_the_brief():
    fam = get_family("mobilenet_v2")
    with pytest.raises(ConfigError) as exc:
        fam.validate({"depth": [1, 7, 9, 1, 1, 1, 1]})
    assert "candidate knob 'depth' for stage 3 must be an integer in [1, 8], got 9" in str(exc.value)
    assert "stage 2" not in str(exc.value)


def test_stage_count_mismatch_and_range():
    with pytest.raises(ConfigError) as exc:
        create_model("convnet", {"width": [8, 16], "depth": [1, 1, 1]})
    assert "same number of stages" in str(exc.value)
    with pytest.raises(ConfigError, match="must give 7 values"):
        create_model("mobilenet_v2", {"depth": [1, 1]})
    with pytest.raises(ConfigError, match="candidate knob 'width' is required"):
        create_model("convnet", {"depth": [1, 1]})


def test_bad_input_settings_are_config_errors():
    with pytest.raises(ConfigError) as exc:
        create_model("convnet", {}, num_classes=0, in_channels=-1)
    assert "num_classes must be an integer >= 1, got 0" in str(exc.value)
    assert "in_channels must be an integer >= 1, got -1" in str(exc.value)
    with pytest.raises(ConfigError, match="multiple of 4"):
        create_model("nb201", {"channels": 4, "cells_per_stage": 1}, in_channels=3, input_size=30)


def test_scalars_broadcast_and_floats_normalised():
    fam = get_family("convnet")
    knobs = fam.resolve({"width": [8, 16], "kernel_size": 5})
    assert knobs["kernel_size"] == (5, 5) and knobs["depth"] == (1, 1)
    model = create_model("convnet", {"width": [8, 16], "kernel_size": 5})
    assert model.stages[1][0].conv.kernel_size == (5, 5) and model.stages[1][0].conv.stride == (2, 2)
    mb = get_family("mobilenet_v2")
    assert mb.resolve({"width_mult": 1}) == mb.resolve({"width_mult": 1.0})
    assert isinstance(mb.resolve({"width_mult": 1})["width_mult"], float)


def test_candidate_object_is_accepted_and_family_checked():
    from hwtune.space import Candidate

    cand = Candidate("convnet", {"width": [4, 8], "depth": [1, 1]})
    assert isinstance(create_model("convnet", cand), nn.Module)
    with pytest.raises(ConfigError, match="for family 'convnet', not 'resnet'"):
        create_model("resnet", cand)


def test_knobs_change_the_model():
    base = {"width": [8, 16], "depth": [1, 1], "kernel_size": [3, 3]}
    x = torch.zeros(1, 1, 28, 28)
    m0 = conv_linear_macs(create_model("convnet", base), x)
    assert conv_linear_macs(create_model("convnet", {**base, "width": [8, 32]}), x) > m0
    assert conv_linear_macs(create_model("convnet", {**base, "depth": [2, 1]}), x) > m0
    assert conv_linear_macs(create_model("convnet", {**base, "kernel_size": [5, 3]}), x) > m0
    assert conv_linear_macs(create_model("convnet", {**base, "stem_stride": 2}), x) < m0


# ---- reference architectures -------------------------------------------------------------


def test_mobilenet_v2_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    for width_mult in (1.0, 0.5):
        ours = create_model("mobilenet_v2", {"width_mult": width_mult}, num_classes=1000, in_channels=3, input_size=224)
        ref = torchvision.models.mobilenet_v2(width_mult=width_mult)
        assert n_params(ours) == n_params(ref)
    assert n_params(create_model("mobilenet_v2", {}, num_classes=1000, in_channels=3, input_size=224)) == 3_504_872
    x = torch.zeros(1, 3, 224, 224)
    assert conv_linear_macs(ours, x) == conv_linear_macs(ref.eval(), x)


def test_mobilenet_small_input_uses_stride_one_stem():
    small = create_model("mobilenet_v2", TINY["mobilenet_v2"][0], in_channels=1, input_size=28)
    large = create_model("mobilenet_v2", TINY["mobilenet_v2"][0], in_channels=1, input_size=224)
    assert small.stem.conv.stride == (1, 1) and large.stem.conv.stride == (2, 2)
    assert small.stages[1][0].conv.dw.conv.kernel_size == (5, 5)


def test_resnet18_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    ours = create_model("resnet", {}, num_classes=1000, in_channels=3, input_size=224)
    ref = torchvision.models.resnet18()
    assert n_params(ours) == n_params(ref) == 11_689_512
    x = torch.zeros(1, 3, 224, 224)
    assert conv_linear_macs(ours, x) == conv_linear_macs(ref.eval(), x)


# ---- NAS-Bench-201 -----------------------------------------------------------------------


def test_nb201_arch0_reproduces_benchmark_macs_and_params():
    model = hwtune.create_model("nb201", {"arch": ARCH0}, num_classes=10, in_channels=3, input_size=32)
    assert conv_linear_macs(model, torch.zeros(1, 3, 32, 32)) == 15_647_370
    assert n_params(model) == 129_306


def _csv_rows(indices):
    if not NB201_CSV.exists():
        pytest.skip(f"{NB201_CSV} not available")
    with NB201_CSV.open() as fh:
        rows = {int(r["arch_idx"]): r for r in csv.DictReader(fh)}
    return [rows[i] for i in indices]


# A spread of op mixes, including a disconnected cell (cell_connected == 0).
@pytest.mark.parametrize("row", [0, 1, 2, 3, 5, 13, 77, 1000, 9999, 15624])
def test_nb201_matches_csv_rows(row):
    (r,) = _csv_rows([row])
    model = create_model("nb201", {"arch": r["arch_str"]}, num_classes=10, in_channels=3, input_size=32)
    assert conv_linear_macs(model, torch.zeros(1, 3, 32, 32)) / 1e6 == pytest.approx(float(r["flops_M"]), abs=1e-5)
    assert n_params(model) / 1e6 == pytest.approx(float(r["params_M"]), abs=1e-6)
    assert cell_connected(r["arch_str"]) == (r["cell_connected"] == "1")


def test_nb201_disconnected_cell_runs_and_exports(tmp_path):
    import onnxruntime as ort

    from hwtune.onnx_export import export_onnx

    arch = format_arch(("none",) * 6)
    assert not cell_connected(arch)
    model = create_model("nb201", {"arch": arch, "channels": 4, "cells_per_stage": 1}, in_channels=3, input_size=32)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.fx.symbolic_trace(model)
    session = ort.InferenceSession(
        str(export_onnx(model, x, tmp_path / "none.onnx")), providers=["CPUExecutionProvider"]
    )
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_nb201_arch_string_round_trip_and_errors():
    assert format_arch(parse_arch(ARCH0)[0] + parse_arch(ARCH0)[1] + parse_arch(ARCH0)[2]) == ARCH0
    with pytest.raises(ConfigError) as exc:
        create_model(
            "nb201",
            {"arch": "|conv_3x3~0|+|none~0|none~1|+|none~0|none~2|skip_connect~2|"},
            in_channels=3,
            input_size=32,
        )
    text = str(exc.value)
    assert "unknown op 'conv_3x3' on edge 1<-0; did you mean 'nor_conv_3x3'" in text
    assert "edge 2 of node 3 must be written 'op~1', got 'none~2'" in text
    with pytest.raises(ConfigError, match="3 node groups"):
        get_family("nb201").validate({"arch": "|none~0|"})
    assert len(NB201_OPS) == 5
