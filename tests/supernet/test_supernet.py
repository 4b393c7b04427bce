"""Weight inheritance (hwtune.supernet): slicing a parent into candidates, BN recalibration,
sandwich training and distilled fine-tuning, on tiny spaces of the three sliceable families."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from hwtune.errors import ConfigError, ModelError
from hwtune.families import get_family
from hwtune.space import SearchSpace
from hwtune.supernet import (
    ChannelOrder,
    FinetuneStats,
    ParentStats,
    SubnetView,
    check_sliceable,
    distill_loss,
    extract,
    family_of,
    finetune,
    importance_order,
    is_sliceable,
    largest_candidate,
    recalibrate_bn,
    sandwich_step,
    smallest_candidate,
    train_parent,
    why_not_sliceable,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
INPUT = {"channels": 1, "size": 28, "classes": 10}
# Tiny spaces (<= 32 channels where the family allows). mobilenet_v2 at width_mult 0.25 has 8
# channels in the stem and in stage 1, so its stage-1 first block gets a residual add that the
# 0.35 parent (16 and 8 channels) lacks.
SPACES = {
    "convnet": {
        "stem_stride": 2,
        "stem_width": [4, 8],
        "width": [[4, 8], [8, 16]],
        "depth": [1, 2],
        "kernel_size": [3, 5],
    },
    "resnet": {"width": [[4, 8], [8, 16]], "depth": [1, 2]},
    "mobilenet_v2": {
        "width_mult": [0.25, 0.35],
        "depth": [[1], [1, 2], [1, 2], [1], [1], [1], [1]],
        "expand_ratio": [[1], [2, 3], [2, 3], [2], [2], [2], [2]],
        "kernel_size": [3, 5],
        "last_channel": [16, 32],
    },
}
FAMILIES = sorted(SPACES)


def make_space(family: str, knobs: dict | None = None) -> SearchSpace:
    raw = {
        "schema_version": 1,
        "family": family,
        "dataset": "fashion-mnist",
        "input": INPUT,
        "knobs": SPACES[family] if knobs is None else knobs,
        "precision": {"choices": ["fp32", "int8"]},
    }
    return SearchSpace.from_dict(raw, source=f"tiny-{family}.toml", name=f"tiny-{family}")


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm affine and statistics, so slicing mistakes show in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def make_parent(space: SearchSpace, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(space.build(largest_candidate(space)), seed).eval()


def random_order(parent: nn.Module, seed: int = 0) -> ChannelOrder:
    """A random permutation of every channel group of ``parent``."""
    groups = family_of(parent).channel_groups(parent)
    sizes = {}
    for path, (out_group, _) in groups.items():
        module = parent.get_submodule(path)
        if out_group is not None and isinstance(module, nn.BatchNorm2d):
            sizes[out_group] = module.num_features
    gen = torch.Generator().manual_seed(seed)
    return ChannelOrder({g: tuple(torch.randperm(n, generator=gen).tolist()) for g, n in sizes.items()})


def candidates(space: SearchSpace, n: int = 4) -> list:
    return [smallest_candidate(space), largest_candidate(space), *(space.sample(i) for i in range(n))]


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def fashion_tiny():
    from hwtune.data import load_dataset

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", root=FASHION_DIR, train_limit=256, val_limit=128, test_limit=64)


X = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# ---- which families and spaces share a parent -------------------------------------------------


def test_sliceable_families_and_nb201_refused():
    assert all(is_sliceable(f) for f in FAMILIES)
    assert not is_sliceable("nb201")
    why = why_not_sliceable("nb201")
    assert "nb201" in why and "scratch" in why and "convnet" in why
    nb201 = SearchSpace.from_recipe("cifar-nb201")
    assert why_not_sliceable(nb201) == why
    with pytest.raises(ConfigError, match="nb201.*cannot share a parent"):
        largest_candidate(nb201)
    with pytest.raises(ConfigError, match="nb201"):
        check_sliceable(get_family("nb201"))


def test_mobilenet_expand_ratio_mixing_one_is_refused():
    knobs = dict(SPACES["mobilenet_v2"], expand_ratio=[[1], [1, 3], [2], [2], [2], [2], [2]])
    why = why_not_sliceable(make_space("mobilenet_v2", knobs))
    assert why is not None and "tiny-mobilenet_v2" in why and "expand_ratio of stage 2" in why


def test_largest_and_smallest_candidates():
    space = make_space("convnet")
    big, small = largest_candidate(space), smallest_candidate(space, precision="int8")
    assert big.knob("width") == (8, 16) and big.knob("depth") == (2, 2) and big.knob("kernel_size") == (5, 5)
    assert big.knob("stem_width") == 8 and big.precision == "fp32"
    assert small.knob("width") == (4, 8) and small.knob("depth") == (1, 1) and small.precision == "int8"
    assert big in space and small in space


# ---- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_extract_has_exactly_the_candidates_architecture(family):
    space = make_space(family)
    parent = make_parent(space)
    order = importance_order(parent)
    for cand in candidates(space):
        for o in (None, order):
            sub = extract(parent, space, cand, order=o)
            assert type(sub) is type(parent)
            assert shapes(sub) == shapes(space.build(cand)), cand.label


@pytest.mark.parametrize("family", FAMILIES)
def test_largest_candidate_reproduces_the_parent(family):
    space = make_space(family)
    parent = make_parent(space)
    with torch.no_grad():
        ref = parent(X)
        assert torch.equal(extract(parent, space, largest_candidate(space))(X), ref)
        # Any consistent permutation of the channels is the same function: this fails when two
        # layers tied by a residual add are given different orders.
        for order in (importance_order(parent), importance_order(parent, method="l1"), random_order(parent, 3)):
            assert torch.allclose(extract(parent, space, largest_candidate(space), order=order)(X), ref, atol=1e-4)


def test_untied_residual_groups_would_break_the_permutation(monkeypatch):
    """Negative control of the test above: resnet with its residual ties cut changes its output."""
    space = make_space("resnet")
    parent = make_parent(space)
    family = get_family("resnet")
    real = family.channel_groups

    def untied(model):
        return {p: (f"{p}:out" if o is not None else None, i) for p, (o, i) in real(model).items()}

    monkeypatch.setattr(type(family), "channel_groups", lambda self, model: untied(model))
    order = random_order(parent, 3)
    with torch.no_grad():
        out = extract(parent, space, largest_candidate(space), order=order)(X)
        assert not torch.allclose(out, parent(X), atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_extracted_model_equals_the_view_on_the_parent(family):
    space = make_space(family)
    parent = make_parent(space)
    for order in (None, random_order(parent, 5)):
        view = SubnetView(parent, space, order=order)
        for cand in candidates(space, 3):
            with torch.no_grad():
                assert torch.allclose(view(cand, X), extract(parent, space, cand, order=order)(X), atol=1e-5)


def test_kernel_centre_and_channel_slicing_convnet():
    space = make_space("convnet")
    parent = make_parent(space)
    order = random_order(parent, 1)
    cand = space.candidate(
        {
            "stem_width": 4,
            "stage1.width": 4,
            "stage2.width": 8,
            "stage1.depth": 1,
            "stage2.depth": 2,
            "stage1.kernel_size": 3,
            "stage2.kernel_size": 5,
            "precision": "fp32",
        }
    )
    sub = extract(parent, space, cand, order=order)
    stem = list(order.indices("stem")[:4])
    s1 = list(order.indices("stages.0.0")[:4])
    w = parent.stages[0][0].conv.weight  # 8 x 8 x 5 x 5
    assert torch.equal(sub.stages[0][0].conv.weight, w[s1][:, stem][:, :, 1:4, 1:4])
    assert torch.equal(sub.stem.bn.running_var, parent.stem.bn.running_var[stem])
    # stage 2 keeps 5x5 kernels, and its second block follows the sub-network's first one
    s2a, s2b = list(order.indices("stages.1.0")[:8]), list(order.indices("stages.1.1")[:8])
    assert torch.equal(sub.stages[1][1].conv.weight, parent.stages[1][1].conv.weight[s2b][:, s2a])
    assert torch.equal(sub.head.fc.weight, parent.head.fc.weight[:, s2b])
    assert torch.equal(sub.head.fc.bias, parent.head.fc.bias)


def test_resnet_residual_channels_share_one_order():
    space = make_space("resnet")
    parent = make_parent(space)
    order = random_order(parent, 2)
    cand = space.candidate(
        {"stage1.width": 4, "stage2.width": 8, "stage1.depth": 2, "stage2.depth": 1, "precision": "fp32"}
    )
    sub = extract(parent, space, cand, order=order)
    stem = list(order.indices("stem")[:4])  # stem + every stage-1 block output: one residual stream
    h = list(order.indices("stages.0.1.conv1")[:4])
    s2 = list(order.indices("stages.1")[:8])
    assert torch.equal(sub.stem.conv.weight, parent.stem.conv.weight[stem])
    assert torch.equal(sub.stages[0][1].conv2.weight, parent.stages[0][1].conv2.weight[stem][:, h])
    assert torch.equal(sub.stages[0][0].bn2.running_mean, parent.stages[0][0].bn2.running_mean[stem])
    assert torch.equal(sub.stages[1][0].downsample.conv.weight, parent.stages[1][0].downsample.conv.weight[s2][:, stem])
    assert torch.equal(sub.head.fc.weight, parent.head.fc.weight[:, s2])


def test_mobilenet_residual_blocks_keep_their_input_group():
    space = make_space("mobilenet_v2")
    parent = make_parent(space)
    groups = get_family("mobilenet_v2").channel_groups(parent)
    # stage 2 (stride 2) opens a group; its second block adds its input, so projects into it
    assert groups["stages.1.0.conv.project.conv"][0] == "stages.1.0"
    assert groups["stages.1.1.conv.project.conv"] == ("stages.1.0", "stages.1.1.hidden")
    assert groups["stages.1.1.conv.dw.conv"] == ("stages.1.1.hidden", "stages.1.1.hidden")
    assert groups["stages.0.0.conv.dw.conv"] == ("stem", "stem")  # expand_ratio 1: no hidden group
    order = random_order(parent, 4)
    cand = space.candidate(
        {**{p: max(c) for p, c in space.knob_choices.items()}, "width_mult": 0.25, "precision": "fp32"}
    )
    sub = extract(parent, space, cand, order=order)
    # at width_mult 0.25 stem and stage 1 both have 8 channels: a residual add the parent lacks
    assert sub.stages[0][0].use_residual and not parent.stages[0][0].use_residual
    keep = list(order.indices("stages.1.0")[:8])
    hid = list(order.indices("stages.1.1.hidden")[: sub.stages[1][1].conv.project.conv.in_channels])
    ref = parent.stages[1][1].conv.project.conv.weight[keep][:, hid]
    assert torch.equal(sub.stages[1][1].conv.project.conv.weight, ref)


def test_importance_order_ranks_by_bn_scale_summed_over_tied_layers():
    space = make_space("resnet")
    parent = make_parent(space)
    with torch.no_grad():
        parent.stages[1][0].conv1.weight.zero_()
        parent.stages[1][0].conv1.weight[5].fill_(1.0)
    order = importance_order(parent)
    gamma = parent.stages[0][0].bn1.weight.abs()
    assert order.indices("stages.0.0.conv1") == tuple(torch.argsort(gamma, descending=True, stable=True).tolist())
    tied = [parent.stem.bn, parent.stages[0][0].bn2, parent.stages[0][1].bn2]
    score = sum(m.weight.abs() / m.weight.abs().mean() for m in tied)
    assert order.indices("stem") == tuple(torch.argsort(score, descending=True, stable=True).tolist())
    assert importance_order(parent, "resnet", method="l1").indices("stages.1.0.conv1")[0] == 5
    assert ChannelOrder.from_dict(order.to_dict()) == order
    with pytest.raises(ConfigError, match="permutation"):
        ChannelOrder({"stem": (0, 0, 1)})
    with pytest.raises(ConfigError, match="method"):
        importance_order(parent, method="taylor")


def test_extract_errors():
    space = make_space("convnet")
    parent = make_parent(space)
    big = make_space("convnet", dict(SPACES["convnet"], width=[[4, 8], [8, 32]]))
    with pytest.raises(ModelError, match="parent has only 16"):
        extract(parent, big, largest_candidate(big))
    with pytest.raises(ConfigError, match="input_size"):
        extract(parent, "convnet", smallest_candidate(space))
    sub = extract(parent, "convnet", smallest_candidate(space), input_size=28)
    assert shapes(sub) == shapes(space.build(smallest_candidate(space)))
    with pytest.raises(ModelError, match="sliceable family"):
        importance_order(nn.Sequential(nn.Linear(2, 2)))


# ---- BatchNorm recalibration -------------------------------------------------------------------


def test_recalibrate_bn_reestimates_running_statistics(fashion_tiny):
    space = make_space("convnet")
    parent = make_parent(space)
    sub = extract(parent, space, smallest_candidate(space))
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    out = recalibrate_bn(sub, fashion_tiny, n_images=64, batch_size=64)
    assert out is sub and not sub.training
    after = sub.state_dict()
    assert not torch.allclose(after["stem.bn.running_mean"], before["stem.bn.running_mean"])
    assert torch.equal(after["stem.conv.weight"], before["stem.conv.weight"])  # weights untouched
    assert all(m.momentum == 0.1 for m in sub.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(after["stem.bn.num_batches_tracked"]) == 1
    # One batch + cumulative average: the running mean is exactly that batch's mean.
    idx = torch.randperm(len(fashion_tiny.train), generator=torch.Generator().manual_seed(0))[:64]
    x = fashion_tiny.train.batch(idx)[0]
    with torch.no_grad():
        batch_mean = sub.stem.conv(x).mean(dim=(0, 2, 3))
    assert torch.allclose(after["stem.bn.running_mean"], batch_mean, atol=1e-5)


@pytest.mark.parametrize("channels_last", ["0", "1"])
def test_recalibrate_bn_under_bf16_and_either_layout_matches_fp32(fashion_tiny, monkeypatch, channels_last):
    monkeypatch.setenv("HWTUNE_CHANNELS_LAST", channels_last)  # the layout the measurement would pick, pinned
    space = make_space("convnet")
    parent = make_parent(space)
    ref = recalibrate_bn(extract(parent, space, smallest_candidate(space)), fashion_tiny, n_images=64)
    sub = recalibrate_bn(extract(parent, space, smallest_candidate(space)), fashion_tiny, n_images=64, amp="bf16")
    for (name, a), b in zip(ref.state_dict().items(), sub.state_dict().values(), strict=True):
        assert b.dtype == a.dtype, name  # statistics stay fp32
        if "running" in name:
            assert torch.allclose(a, b, rtol=0.05, atol=0.02), name
    assert all(p.is_contiguous() for p in sub.parameters())  # the layout is restored for export
    with pytest.raises(ConfigError, match="fp16"):
        recalibrate_bn(sub, fashion_tiny, n_images=64, amp="fp16")  # no fp16 autocast on the CPU


# ---- sandwich training and fine-tuning ---------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_one_sandwich_step_updates_shared_weights(family, fashion_tiny):
    space = make_space(family)
    torch.manual_seed(0)
    parent = space.build(largest_candidate(space)).train()
    before = copy.deepcopy(parent.state_dict())
    view = SubnetView(parent, space)
    opt = torch.optim.SGD(parent.parameters(), lr=0.1)
    x, y = fashion_tiny.train.batch(torch.arange(32))
    subnets = [smallest_candidate(space), space.sample(random.Random(0))]
    opt.zero_grad()
    loss, sub_loss = sandwich_step(parent, view, subnets, x, y)
    assert parent.head.fc.weight.grad is not None and parent.head.fc.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.isfinite(torch.tensor([loss, sub_loss])).all() and loss > 0 and sub_loss > 0
    changed = [k for k, v in parent.state_dict().items() if not torch.equal(v, before[k])]
    assert "stem.conv.weight" in changed and "head.fc.weight" in changed


def test_view_gradients_land_in_the_sliced_part_only():
    space = make_space("convnet")
    torch.manual_seed(0)
    parent = space.build(largest_candidate(space)).train()
    small = smallest_candidate(space)
    SubnetView(parent, space)(small, X).square().sum().backward()
    g = parent.stages[1][0].conv.weight.grad  # parent 16 x 8 x 5 x 5, smallest 8 x 4 x 3 x 3
    assert g[:8, :4, 1:4, 1:4].abs().sum() > 0
    outside = g.clone()
    outside[:8, :4, 1:4, 1:4] = 0
    assert outside.abs().sum() == 0
    assert parent.stages[1][1].conv.weight.grad is None  # depth 1: second block unused
    assert parent.stem.bn.num_batches_tracked == 0  # the view leaves the parent's BN statistics alone


def test_train_parent_on_tiny_data(fashion_tiny):
    space = make_space("convnet")
    parent, stats = train_parent(space, fashion_tiny, epochs=1, batch_size=64, n_random=1, threads=1)
    assert not parent.training and shapes(parent) == shapes(space.build(largest_candidate(space)))
    assert stats.steps == 4 and stats.samples_seen == 256 and stats.epochs == 1.0 and not stats.stopped_early
    assert torch.isfinite(torch.tensor([stats.first_loss, stats.final_loss, stats.final_sub_loss])).all()
    assert ParentStats.from_dict(stats.to_dict()) == stats
    again, _ = train_parent(space, fashion_tiny, epochs=1, batch_size=64, n_random=1, threads=1)
    assert all(torch.equal(a, b) for a, b in zip(parent.state_dict().values(), again.state_dict().values()))
    _, short = train_parent(space, fashion_tiny, epochs=1, batch_size=64, time_limit_s=1e-9)
    assert short.stopped_early and short.steps == 1
    with pytest.raises(ConfigError, match="cannot share a parent"):
        train_parent(SearchSpace.from_recipe("cifar-nb201"), fashion_tiny, epochs=1)
    with pytest.raises(ConfigError, match="kd_weight"):
        train_parent(space, fashion_tiny, epochs=1, kd_weight=2.0)


def test_finetune_distils_from_the_parent(fashion_tiny):
    space = make_space("convnet")
    teacher = make_parent(space)
    teacher_state = copy.deepcopy(teacher.state_dict())
    sub = extract(teacher, space, smallest_candidate(space))
    before = copy.deepcopy(sub.state_dict())
    stats = finetune(sub, fashion_tiny, epochs=0.5, teacher=teacher, batch_size=32, threads=1)
    assert stats.steps == 4 and stats.kd_weight == 0.5 and torch.isfinite(torch.tensor(stats.final_loss))
    assert not torch.equal(sub.state_dict()["stem.conv.weight"], before["stem.conv.weight"])
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())  # teacher untouched
    assert not teacher.training
    assert FinetuneStats.from_dict(stats.to_dict()) == stats
    plain = finetune(sub, fashion_tiny, epochs=0.25, batch_size=32)
    assert plain.kd_weight == 0.0


def test_distill_loss_terms():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=gen), torch.randn(8, 10, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    ce = nn.functional.cross_entropy(s, y)
    assert torch.allclose(distill_loss(s, t, y, kd_weight=0.0), ce)
    assert torch.allclose(distill_loss(s, None, y), ce)
    assert torch.allclose(distill_loss(s, s, y, kd_weight=0.3), 0.7 * ce)  # KL(p || p) = 0
    kd = distill_loss(s, t, y, kd_weight=1.0, temperature=2.0)
    ref = nn.functional.softmax(t / 2, 1) * (nn.functional.log_softmax(t / 2, 1) - nn.functional.log_softmax(s / 2, 1))
    assert torch.allclose(kd, ref.sum(1).mean() * 4)
