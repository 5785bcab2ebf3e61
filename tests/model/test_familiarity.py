"""The familiarity guard: fitted on training features, it scores images unlike the training data higher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teaming.model import build_model
from teaming.model.familiarity import FamiliarityGuard
from teaming.model.train import TrainConfig


def test_guard_scores_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    labels = rng.integers(0, 2, 400)
    feats = means[labels] + rng.normal(size=(400, 2))
    guard = FamiliarityGuard.fit(feats, labels, 2)
    maha, _ = guard.raw_scores(np.array([[0.0, 0.0], [10.0, 0.5], [5.0, 8.0]]))
    assert maha[:2].max() < 1.0 < 20 < maha[2]
    typical, strange, silent = guard.score(np.array([[10.0, 0.0], [5.0, 8.0], [0.1, 0.0]]))
    assert typical < 0.9 < strange and typical < 0.9 < silent  # far from every class, or barely any response
    assert FamiliarityGuard.from_tensors(guard.tensors()).score(feats).tolist() == guard.score(feats).tolist()


def test_outlier_exposure_learns_what_the_distances_miss():
    """Outliers that share the familiar features' norm and class distances but differ along one direction are
    invisible to both distances; the guard fitted with them finds them, and keeps its weights through a save."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    feats = np.c_[10.0 * labels, rng.normal(size=(600, 3))]
    strange = np.c_[10.0 * rng.integers(0, 2, 300), rng.normal(size=(300, 3)) + [0, 0, 2]]
    plain = FamiliarityGuard.fit(feats, labels, 2)
    exposed = FamiliarityGuard.fit(feats, labels, 2, outlier_features=strange[:200])
    held = np.c_[10.0 * rng.integers(0, 2, 100), rng.normal(size=(100, 3))]

    def auroc(guard):
        u_in, u_out = guard.score(held), guard.score(strange[200:])
        return (u_out[:, None] > u_in[None, :]).mean()

    assert auroc(plain) < 0.8 < 0.85 < auroc(exposed)  # 0.92 is the best any rule can do here
    assert len(exposed.raw_scores(held)) == 3 and exposed.scales.shape[0] == 3
    loaded = FamiliarityGuard.from_tensors(exposed.tensors())
    assert np.allclose(loaded.score(held), exposed.score(held))
    assert set(plain.tensors()) == {"means", "precision", "scales"}  # guards saved before outliers still load


def test_guard_needs_labelled_features():
    with pytest.raises(ValueError, match="labelled training features"):
        FamiliarityGuard.fit(np.zeros((1, 4)), np.zeros(1, int), 3)


@pytest.fixture(scope="module")
def small_model(cifar_test, cifar10h, cpu_training):
    cfg = TrainConfig(widths=(16, 32, 32), batch_size=250, epochs=3)
    return build_model("small", cifar_test, cifar10h, np.arange(2000), None, cfg, with_fgsm=False, progress=False)


def test_a_trained_model_finds_noise_and_shuffled_pixels_unfamiliar(small_model, cifar_test):
    real = cifar_test.images[7000:7300]
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=gen)
    flat = real.flatten(2)
    shuffled = flat[:, :, torch.randperm(flat.shape[-1], generator=gen)].reshape(real.shape)
    u_real = small_model.outputs(real).unfamiliarity
    for other in (noise, shuffled):
        u = small_model.outputs(other).unfamiliarity
        auroc = (u[:, None] > u_real[None, :]).mean()
        assert auroc > 0.9, auroc
