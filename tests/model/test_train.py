"""Training on real (sub-sampled) CIFAR-10H: soft, hard and sampled-annotator losses, seeds, fine-tuning, folds."""

import importlib
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from teaming._validation import DataError
from teaming.model.calibration import softmax
from teaming.model.crossfit import cross_fit, kfold_indices
from teaming.model.metrics import accuracy, cross_entropy
from teaming.model.outliers import synthetic_outliers
from teaming.model.predict import predict_logits
from teaming.model.train import (
    TrainConfig,
    augment,
    batch_targets,
    finetune_config,
    pretrain_config,
    soft_cross_entropy,
    train,
)
from teaming.model.weights import interpolate_weights

TINY = dict(widths=(16, 32, 64), batch_size=200, epochs=4)


@pytest.fixture(scope="module")
def small(cifar_test, cifar10h, cpu_training):
    idx = np.arange(3000)
    return cifar_test.subset(idx), cifar10h.subset(idx), cifar_test.subset(np.arange(7000, 8000))


def test_soft_label_training_learns_real_images(small):
    train_set, human, held = small
    res = train(train_set.images, human, TrainConfig(loss="soft", **TINY), progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0] * 0.85, losses
    probs = softmax(predict_logits(res.net, held.images))
    assert accuracy(probs, held.labels) > 0.35  # chance is 0.10
    assert cross_entropy(probs, held.labels) < np.log(10) - 0.4


@pytest.mark.parametrize("loss", ["hard", "sampled"])
def test_hard_and_sampled_annotator_losses_also_learn(small, loss):
    train_set, human, held = small
    res = train(train_set.images, human, TrainConfig(loss=loss, label_smoothing=0.1, **TINY), progress=False)
    assert accuracy(softmax(predict_logits(res.net, held.images)), held.labels) > 0.3


def test_same_seed_same_model(small):
    train_set, human, held = small
    cfg = TrainConfig(loss="sampled", widths=(8, 16, 16), batch_size=500, epochs=1, seed=3)
    a = predict_logits(
        train(train_set.images[:1000], human.subset(slice(0, 1000)), cfg, progress=False).net, held.images[:50]
    )
    b = predict_logits(
        train(train_set.images[:1000], human.subset(slice(0, 1000)), cfg, progress=False).net, held.images[:50]
    )
    assert torch.equal(a, b)


def test_fine_tuning_starts_from_the_given_net(small):
    train_set, human, held = small
    base = train(train_set.images, human, TrainConfig(loss="hard", **TINY), progress=False).net
    before = accuracy(softmax(predict_logits(base, held.images)), held.labels)
    cfg = TrainConfig(loss="soft", widths=(16, 32, 64), batch_size=200, epochs=1, lr=0.05)
    tuned = train(train_set.images, human, cfg, init=base, progress=False).net
    after = accuracy(softmax(predict_logits(tuned, held.images)), held.labels)
    fresh = train(train_set.images, human, cfg, progress=False).net  # same small steps from scratch
    from_scratch = accuracy(softmax(predict_logits(fresh, held.images)), held.labels)
    assert before > 0.3 and abs(after - before) < 0.05
    assert from_scratch < before - 0.1


def test_outlier_exposure_makes_the_net_unsure_of_outliers_it_never_saw(small):
    """Trained with synthetic outliers pushed toward uniform probabilities, the net is less sure of fresh outliers
    (other seeds) than the same run without, and still learns the classes."""
    train_set, human, held = small
    outliers = synthetic_outliers(held.images[:500], 500, seed=99)
    confidence, acc = {}, {}
    for weight in (0.0, 1.0):
        net = train(train_set.images, human, TrainConfig(outlier_exposure=weight, **TINY), progress=False).net
        confidence[weight] = softmax(predict_logits(net, outliers)).max(1).mean()
        acc[weight] = accuracy(softmax(predict_logits(net, held.images)), held.labels)
    assert confidence[1.0] < confidence[0.0] - 0.1, confidence
    assert acc[1.0] > 0.3, acc
    tiny = TrainConfig(outlier_exposure=0.5, widths=(8, 16, 16), batch_size=1, epochs=1)
    assert train(train_set.images[:3], human.subset(slice(0, 3)), tiny, progress=False).history  # a batch of one
    with pytest.raises(ValueError, match="outlier_exposure must be >= 0"):
        TrainConfig(outlier_exposure=-0.5)


def test_weight_interpolation_lies_between_the_nets_and_re_estimates_batchnorm(small):
    """WiSE-FT: every weight halfway, both nets untouched, BatchNorm statistics measured on the images and their
    mirrors (not averaged), and the mixed net still classifies."""
    train_set, human, held = small
    cfg = TrainConfig(loss="hard", **TINY)
    start = train(train_set.images, human, cfg, progress=False).net
    tuned = train(train_set.images, human, replace(cfg, loss="soft", epochs=1, lr=0.05), init=start, progress=False).net
    before = {k: v.clone() for k, v in start.state_dict().items()}
    images = train_set.images[:1000]
    mixed = interpolate_weights(start, tuned, 0.5, images)
    assert all(torch.equal(v, before[k]) for k, v in start.state_dict().items())
    a, b, m = start.state_dict(), tuned.state_dict(), mixed.state_dict()
    assert torch.allclose(m["head.weight"], (a["head.weight"] + b["head.weight"]) / 2)
    seen = []
    hook = mixed.layers[1].norm1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].mean((0, 2, 3))))
    with torch.no_grad():
        x = images.float() / 255
        mixed(x), mixed(x.flip(-1))
    hook.remove()
    measured = (seen[0] + seen[1]) / 2
    assert torch.allclose(m["layers.1.norm1.running_mean"], measured, atol=1e-4)
    assert not torch.allclose(
        m["layers.1.norm1.running_mean"], (a["layers.1.norm1.running_mean"] + b["layers.1.norm1.running_mean"]) / 2
    )
    assert mixed.layers[1].norm1.momentum == start.layers[1].norm1.momentum
    assert accuracy(softmax(predict_logits(mixed, held.images)), held.labels) > 0.3
    with pytest.raises(ValueError, match="share must be in"):
        interpolate_weights(start, tuned, 0.0, images)


def test_cross_fit_gives_out_of_fold_logits_for_every_item(small):
    train_set, human, _ = small
    folds = kfold_indices(600, k=3, seed=0)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(600))
    oof = cross_fit(
        train_set.images[:600],
        human.subset(slice(0, 600)),
        TrainConfig(widths=(8, 16, 16), batch_size=200, epochs=1),
        folds=folds,
        progress=False,
    )
    assert oof.shape == (600, 10) and np.all(np.abs(oof).sum(1) > 0)


def test_soft_cross_entropy_and_targets():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    expected = torch.tensor([np.log1p(np.exp(-2.0)), np.log(2.0)], dtype=torch.float32)
    torch.testing.assert_close(soft_cross_entropy(logits, target), expected)
    dist = torch.tensor([[0.7, 0.3]])
    torch.testing.assert_close(batch_targets(dist, "hard", 0.2), torch.tensor([[0.9, 0.1]]))
    torch.testing.assert_close(batch_targets(dist, "soft", 0.0), dist)


def test_augment_flips_and_shifts_without_changing_shape():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment(x, flip=True, translate=2, gen=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    assert torch.equal(augment(x, flip=False, translate=0), x)


def test_bad_training_input(small):
    train_set, human, _ = small
    with pytest.raises(DataError, match="100 images but 50 targets"):
        train(train_set.images[:100], human.subset(slice(0, 50)), TrainConfig(**TINY), progress=False)
    with pytest.raises(DataError, match="hard labels must be integer ids in 0..9"):
        train(train_set.images[:10], np.full(10, 12), TrainConfig(**TINY), num_classes=10, progress=False)
    with pytest.raises(ValueError, match="loss must be soft, hard or sampled"):
        TrainConfig(loss="mse")


def test_pretrain_and_finetune_configs_keep_the_net_and_change_the_schedule():
    base = TrainConfig(widths=(8, 16, 16), lr=10.0, label_smoothing=0.1, seed=3)
    pre = pretrain_config(base)
    assert pre.loss == "hard" and pre.label_smoothing == 0.2 and pre.epochs == 10.0
    assert pre.widths == base.widths and pre.lr == base.lr and pre.seed == 3
    tune = finetune_config(base)
    assert tune.loss == "soft" and tune.label_smoothing == 0.0 and tune.epochs == 8.0 and tune.lr == pytest.approx(2.0)
    assert finetune_config(base, loss="hard").label_smoothing == 0.1  # only soft targets drop the smoothing


def test_bf16_on_a_cpu_that_only_emulates_it_warns(small, monkeypatch):
    train_module = importlib.import_module("teaming.model.train")  # the package's `train` is the function

    train_set, human, _ = small
    images, targets = train_set.images[:200], human.subset(slice(0, 200))
    cfg = TrainConfig(widths=(8, 16, 16), batch_size=100, epochs=1, bf16=True, device="cpu")
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="slower than fp32"):
        train(images, targets, cfg, progress=False)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(images, targets, cfg, progress=False)
