"""Probe images: mild shifts keep shape and content; unfamiliar sets are seeded uint8 images of the model's size."""

from __future__ import annotations

import torch

from teaming.probes import grayscale, jpeg, resample, shifted, unfamiliar_sets


def test_shifts_keep_shape_and_stay_close(cifar_test):
    images = cifar_test.images[:50]
    for name, out in shifted(images).items():
        assert out.shape == images.shape and out.dtype == torch.uint8, name
        assert (out.float() - images.float()).abs().mean() < 40, name
    g = grayscale(images)
    assert (g[:, 0] == g[:, 1]).all() and (g[:, 1] == g[:, 2]).all()
    assert not torch.equal(jpeg(images, 50), images) and not torch.equal(resample(images), images)


def test_unfamiliar_sets_are_seeded_and_sized(cifar_test):
    a = unfamiliar_sets(cifar_test.images[:100], n=20, seed=3)
    b = unfamiliar_sets(cifar_test.images[:100], n=20, seed=3)
    assert {"photos", "digits", "noise", "constant", "shuffled_pixels", "textures", "faces"} <= set(a)
    for name, images in a.items():
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32), name
        assert torch.equal(images, b[name]), name
    flat = a["constant"].flatten(2)
    assert (flat == flat[:, :, :1]).all()
    shuffled = a["shuffled_pixels"].flatten(2).sort(-1).values
    originals = cifar_test.images[:100].flatten(2).sort(-1).values
    assert all((originals == s).all((1, 2)).any() for s in shuffled)  # the pixels of real images, rearranged
