"""hwtune.compression._scopes: a trial archive loaded back keeps the module names export needs.

The precision plan of a compression candidate names module prefixes of the pruned model (``s2``,
``layer4``). The model export ships is loaded from the trial's ``torch.export`` archive; these tests
check that every tracer sees the same names on the loaded model as on the model the search scored,
for a nested user model (SE blocks in stages, a concatenating transition) and torchvision's ResNet-18.
"""

from __future__ import annotations

from collections import Counter

import pytest
from support import nested_model


def _mixed_candidate(space, *, drop: bool = True):
    """Every stage pruned to its smallest width, the droppable blocks dropped, precisions alternating."""
    params = {}
    for i, st in enumerate(space.stages):
        params[f"{st.name}.width"] = min(st.width)
        params[f"{st.name}.depth"] = min(st.depth) if drop else max(st.depth)
        params[f"{st.name}.precision"] = "int8" if i % 2 else "fp32"
    return space.candidate(params)


def _onnx_ops(model, example, path):
    import onnx

    from hwtune.onnx_export import export_onnx, onnx_node_module

    export_onnx(model, example, path)
    return Counter((onnx_node_module(n.name), n.op_type) for n in onnx.load(str(path)).graph.node if n.op_type != "Identity")


def _roundtrip(model, shape, tmp_path):
    from hwtune.tuner.compress import export_archive, load_compress_model

    return load_compress_model(export_archive(model, shape, tmp_path / "m.pt2"))


@pytest.fixture(scope="module")
def nested_pruned(tmp_path_factory):
    import torch

    from hwtune.compression import apply_candidate, derive_space

    model = nested_model().eval()
    example = torch.zeros(1, 1, 28, 28)
    space = derive_space(model, example)
    cand = _mixed_candidate(space)
    pruned, _ = apply_candidate(model, space, cand, example_input=example)
    loaded = _roundtrip(pruned, (1, 1, 28, 28), tmp_path_factory.mktemp("scopes"))
    return space, cand, pruned, loaded, example


def test_loaded_archive_computes_the_same_and_keeps_state_dict_names(nested_pruned):
    import torch

    _, _, pruned, loaded, _ = nested_pruned
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-5)
    assert set(loaded.state_dict()) == set(pruned.state_dict())


def test_onnx_of_the_loaded_archive_has_the_searched_models_module_paths(nested_pruned, tmp_path):
    _, _, pruned, loaded, example = nested_pruned
    searched = _onnx_ops(pruned, example, tmp_path / "searched.onnx")
    shipped = _onnx_ops(loaded, example, tmp_path / "shipped.onnx")
    assert shipped == searched
    assert any(path.startswith("s2.t2.b.") for path, _ in shipped)  # three levels deep, not flattened


def test_mixed_plan_quantizes_the_same_nodes_on_both(nested_pruned, tmp_path):
    import numpy as np
    import onnx

    from hwtune.compression import precision_plan
    from hwtune.onnx_export import export_onnx, onnx_node_module
    from hwtune.quant import quantize

    space, cand, pruned, loaded, example = nested_pruned
    plan = precision_plan(space, cand)
    assert plan.is_mixed and any(p.startswith("s") for p, _ in plan.overrides)
    calib = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)
    kinds = []
    for name, model in (("searched", pruned), ("shipped", loaded)):
        src = export_onnx(model, example, tmp_path / f"{name}.onnx")
        res = quantize(src, tmp_path / f"{name}.int8.onnx", plan, calibration=calib)
        g = onnx.load(str(res.path)).graph
        kinds.append(Counter((onnx_node_module(n.name), n.op_type) for n in g.node if n.op_type != "Identity"))
    assert kinds[0] == kinds[1]


def test_loaded_archive_trains_with_batch_norm_and_exports_again(nested_pruned):
    import torch

    _, _, _, loaded, _ = nested_pruned
    bn = loaded.get_submodule("stem.1")
    before = bn.running_mean.clone()
    loaded.train()
    out = loaded(torch.randn(4, 1, 28, 28))
    out.sum().backward()
    loaded.eval()
    assert not torch.equal(before, bn.running_mean)  # batch statistics updated in train mode
    assert loaded.get_submodule("stem.0").weight.grad is not None
    ep = torch.export.export(loaded, (torch.randn(2, 1, 28, 28),))
    paths = {list(n.meta["nn_module_stack"].values())[-1][0] for n in ep.graph.nodes if n.meta.get("nn_module_stack")}
    assert any(p.startswith("s2.t2.a") for p in paths)  # ExecuTorch/LiteRT plans match module paths too


def test_torchvision_resnet18_mixed_member_ships_from_its_archive(tmp_path):
    import torch
    import torchvision

    from hwtune.compression import apply_candidate, derive_space, precision_plan
    from hwtune.quant import quantize

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    example = torch.zeros(1, 3, 32, 32)
    space = derive_space(model, example)
    cand = _mixed_candidate(space)
    pruned, _ = apply_candidate(model, space, cand, example_input=example)
    loaded = _roundtrip(pruned, (1, 3, 32, 32), tmp_path)
    plan = precision_plan(space, cand)
    assert plan.is_mixed
    searched = _onnx_ops(pruned, example, tmp_path / "searched.onnx")
    shipped = _onnx_ops(loaded, example, tmp_path / "shipped.onnx")
    assert shipped == searched
    import numpy as np

    calib = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    quantize(tmp_path / "shipped.onnx", tmp_path / "shipped.int8.onnx", plan, calibration=calib)  # no override lost


def test_block_dropped_over_a_concatenation_prunes(nested_pruned):
    """Dropping the only block of a stage splits the channel group it coupled across a concat."""
    import torch

    from hwtune.compression import apply_candidate

    space, _, _, _, example = nested_pruned
    model = nested_model().eval()
    cand = _mixed_candidate(space)
    assert any(cand.choice(st.name).depth < len(st.blocks) for st in space.stages)
    pruned, info = apply_candidate(model, space, cand, example_input=example)
    assert info["macs_after"] < info["macs_before"] and info["dropped_blocks"]
    assert pruned(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
