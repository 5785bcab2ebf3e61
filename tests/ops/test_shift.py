"""`teaming simulate --shift KIND --at N`: the photos from the N-th on change as the world would change them, and
only those."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from teaming.datasets import default_test_jpegs
from teaming.ops.simulate import Replay, shifted


@pytest.fixture(scope="module")
def replay() -> Replay:
    """The embedded CIFAR-10 test photos as they are sent (no labels needed here)."""
    return Replay(default_test_jpegs, np.ones((10000, 10)), np.zeros(10000, int), [str(c) for c in range(10)])


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("kind", ["jpeg50", "grayscale", "blur", "upside-down"])
def test_a_shift_changes_the_photos_after_it_and_no_others(kind, replay):
    order = [7000, 7001, 7002, 7003]
    moved = shifted(replay, kind, set(order[2:]))
    before, after = replay.photos(order), moved.photos(order)
    assert after[:2] == before[:2]  # untouched bytes before the shift
    changed = [pixels(a).astype(int) - pixels(b).astype(int) for a, b in zip(after[2:], before[2:])]
    assert all(np.abs(d).mean() > 0.5 for d in changed)
    if kind == "grayscale":
        img = pixels(after[2])
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    if kind == "upside-down":
        assert (pixels(after[3]) == np.rot90(pixels(before[3]), 2)).mean() > 0.9  # JPEG noise aside


def test_an_unfamiliar_share_swaps_that_share_for_images_of_no_class(replay):
    pytest.importorskip("skimage", reason="the unfamiliar photos come from scikit-image")
    order = list(range(7000, 7200))
    moved = shifted(replay, "unfamiliar:0.5", set(order[100:]), seed=1)
    before, after = replay.photos(order), moved.photos(order)
    swapped = [a != b for a, b in zip(after, before)]
    assert not any(swapped[:100]) and 30 < sum(swapped[100:]) < 70


def test_an_unknown_shift_is_refused_in_one_line(replay):
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        shifted(replay, "fog", {1})
    with pytest.raises(ValueError, match=r"a share in \(0, 1\]"):
        shifted(replay, "unfamiliar:2", {1})
