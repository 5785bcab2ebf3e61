"""Synthetic outliers: made from the training images alone, the right shapes, reproducible, no whole object."""

from __future__ import annotations

import numpy as np
import torch

from teaming.model.outliers import (
    close_ups,
    mosaics,
    noised,
    patch_shuffled,
    phase_scrambled,
    synthetic_outliers,
    tiled,
)


def test_outliers_are_reproducible_uint8_images_of_the_same_size(cifar_test):
    images = cifar_test.images[:40]
    out = synthetic_outliers(images, 70, seed=3)
    assert out.shape == (70, 3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out, synthetic_outliers(images, 70, seed=3))
    assert not torch.equal(out, synthetic_outliers(images, 70, seed=4))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 0 < gray.float().mean() < 0.4  # about the training augmentation's grayscale share


def test_each_kind_keeps_the_pixels_or_the_look_but_not_the_layout(cifar_test):
    images = cifar_test.images[:8]
    rng = np.random.default_rng(0)
    shuffled = patch_shuffled(images, rng)
    assert torch.equal(shuffled.flatten(1).sort(1).values, images.flatten(1).sort(1).values)  # same pixels
    assert not torch.equal(shuffled, images)
    closer = close_ups(images, rng)
    assert closer.shape == images.shape and not torch.equal(closer, images)
    tiles = mosaics(images, rng)
    assert tiles.shape == images.shape
    noisy = noised(images, rng, low=60, high=60)
    assert 40 < (noisy.float() - images.float()).std() < 70  # clipped at 0 and 255


def test_patch_shuffle_of_a_size_the_grid_does_not_divide(cifar_test):
    images = torch.nn.functional.interpolate(cifar_test.images[:4].float(), size=(30, 30)).to(torch.uint8)
    assert patch_shuffled(images, np.random.default_rng(0), grid=4).shape == (4, 3, 30, 30)


def test_texture_like_kinds_keep_the_colours_but_lose_the_shapes(cifar_test):
    images = cifar_test.images[:8]
    rng = np.random.default_rng(0)
    scrambled = phase_scrambled(images, rng)
    assert scrambled.shape == images.shape and scrambled.dtype == torch.uint8
    mean = images.float().mean((2, 3))
    assert (scrambled.float().mean((2, 3)) - mean).abs().max() < 12  # the same mean colour, up to clipping
    assert (scrambled.float() - images.float()).abs().mean() > 20  # another picture
    repeated = tiled(images, rng, smallest=4, largest=4)
    assert torch.equal(repeated[..., :4, :4], repeated[..., 4:8, 8:12])  # one patch over and over


def test_a_mix_of_one_kind(cifar_test):
    images = cifar_test.images[:10]
    rng = np.random.default_rng(1)
    expected = tiled(images[torch.from_numpy(rng.integers(0, 10, 12))], rng)
    assert torch.equal(synthetic_outliers(images, 12, seed=1, grayscale=0.0, kinds={"tiled": 1}), expected)
