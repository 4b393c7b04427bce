"""Batch augmentations (hwtune.augment) and their use in fine-tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwtune.augment import AUGMENTATIONS, MAX_SHIFT_PX, augmenter, parse_augment, random_hflip, random_shift
from hwtune.errors import ConfigError


def _batch(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 2, 9, 11, generator=torch.Generator().manual_seed(1))


def test_every_shifted_image_is_a_window_of_its_edge_padded_original():
    x = _batch()
    m = 2
    out = random_shift(x, m, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * m + 1)
            for dx in range(2 * m + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 9, dx : dx + 11])
        ]
        assert hits, f"image {i} is not a shifted copy"
        offsets.add(hits[0])
    assert len(offsets) > 10  # the offsets vary per image (25 possible)
    assert (m, m) in offsets or len(offsets) >= 20


def test_flip_mirrors_about_half_of_the_images_and_keeps_the_rest():
    x = _batch(400)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 150 < sum(flipped) < 250


def test_augmenter_is_reproducible_and_checks_its_name():
    x = _batch()
    a, b = augmenter("shift-flip", 3), augmenter("shift-flip", 3)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(augmenter("shift-flip", 4)(x), augmenter("shift-flip", 3)(x))
    assert augmenter(None, 0) is None and augmenter("none", 0) is None
    flat = torch.randn(4, 10)
    assert augmenter("shift", 0)(flat) is flat  # not an image batch: unchanged
    with pytest.raises(ConfigError, match="unknown augmentation 'shfit'.*shift") as exc:
        augmenter("shfit", 0)
    assert "\n" not in str(exc.value)
    assert {"none", "shift", "shift-flip", "crop:4", "hflip", "erasing:0.25"} == set(AUGMENTATIONS)
    assert MAX_SHIFT_PX == 2


def test_old_names_are_aliases_of_the_batched_steps():
    x = _batch()
    assert parse_augment("shift-flip") == ["shift", "hflip"] == parse_augment(["shift", "hflip"])
    assert torch.equal(augmenter("shift-flip", 5)(x), augmenter("shift,hflip", 5)(x))
    assert parse_augment("none") == [] and augmenter("none,none", 0) is None


def test_v2_crop_moves_each_image_within_its_zero_padding():
    x = _batch(32) + 10.0  # no zeros in the images: the padding shows
    out = augmenter("crop:4", 0)(x)
    assert out.shape == x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(out[i], padded[i, :, dy : dy + 9, dx : dx + 11])
        ]
        assert hits, f"image {i} is not a window of its padded original"
        offsets.add(hits[0])
    assert len(offsets) > 5  # each image draws its own offset


def test_v2_erasing_zeroes_a_rectangle_in_about_p_of_the_images():
    x = _batch(200) + 10.0
    out = augmenter("erasing:0.5", 1)(x)
    erased = [(out[i] == 0).any().item() for i in range(len(x))]
    assert 60 < sum(erased) < 140
    assert all(torch.equal(out[i], x[i]) for i in range(len(x)) if not erased[i])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("crop:x", "'crop:x': expected crop:P with a whole number of pixels 1..64"),
        ("crop:0", "crop:P"),
        ("erasing:2", "'erasing:2': expected erasing:P with 0 < P <= 1"),
        ("crop:4,rotate", "unknown augmentation 'rotate'"),
    ],
)
def test_bad_steps_are_one_line_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as exc:
        augmenter(spec, 0)
    assert "\n" not in str(exc.value)


def test_finetune_trains_on_augmented_batches(fashion_dir):
    from hwtune.data import load_dataset
    from hwtune.supernet import finetune

    splits = load_dataset("fashion-mnist", root=fashion_dir, train_limit=256, val_limit=64)

    def run(augment):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)
        )
        stats = finetune(model, splits, epochs=1, lr=0.05, batch_size=64, seed=0, augment=augment)
        return stats, torch.cat([p.detach().flatten() for p in model.parameters()])

    (s_plain, w_plain), (s_aug, w_aug), (_, w_aug2) = run(None), run("shift-flip"), run("shift-flip")
    assert torch.equal(w_aug, w_aug2)  # seeded
    assert not torch.equal(w_plain, w_aug)
    assert s_aug.augment == "shift-flip" and s_plain.augment == "none"
    with pytest.raises(ConfigError, match="unknown augmentation"):
        run("rotate")
    s_std, w_std = run("crop:4,hflip")
    assert s_std.augment == "crop:4,hflip" and not torch.equal(w_std, w_plain)


def test_recipes_declare_their_augmentation():
    from hwtune.space import SearchSpace

    raw = SearchSpace.from_recipe("fashion-convnet").to_dict()
    assert "augment" not in raw["train"]  # bundled recipes declare none: nothing changes for them
    raw["train"]["augment"] = ["crop:4", "hflip"]
    space = SearchSpace.from_dict(raw)
    assert space.train.augment == ("crop:4", "hflip")
    assert SearchSpace.from_dict(space.to_dict()).train.augment == ("crop:4", "hflip")  # stored with a study
    raw["train"]["augment"] = ["crop:4", "rotate"]
    with pytest.raises(ConfigError, match="<recipe>: train.augment: unknown augmentation 'rotate'"):
        SearchSpace.from_dict(raw)
