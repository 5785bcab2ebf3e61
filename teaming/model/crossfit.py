"""Cross-fitting: out-of-fold logits for every item, by training on the other folds."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from teaming.labels import HumanLabels
from teaming.model.predict import predict_logits
from teaming.model.train import TrainConfig, train


def kfold_indices(n: int, k: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K disjoint held-out folds over n items (shuffled with seed): [(train_idx, test_idx), ...]."""
    from sklearn.model_selection import KFold

    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of items ({n}), got {k}")
    return [(tr, te) for tr, te in KFold(k, shuffle=True, random_state=seed).split(np.arange(n))]


def cross_fit(
    images: torch.Tensor,
    targets: HumanLabels | np.ndarray,
    config: TrainConfig,
    k: int = 10,
    pretrained: nn.Module | None = None,
    folds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    num_classes: int | None = None,
    tta: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Out-of-fold logits (N x C): train on k-1 folds (from a copy of `pretrained` if given), predict the held-out one.

    Peterson et al.'s CIFAR-10H protocol: with `pretrained` trained on CIFAR-10 train, this is their fine-tune setup.
    """
    folds = folds or kfold_indices(len(images), k, config.seed)
    out: np.ndarray | None = None
    sub = targets.subset if isinstance(targets, HumanLabels) else (lambda idx: np.asarray(targets)[idx])
    for fold, (tr, te) in enumerate(tqdm(folds, desc="folds", disable=not progress)):
        init = copy.deepcopy(pretrained) if pretrained is not None else None
        cfg = TrainConfig(**{**config.to_dict(), "seed": config.seed + fold})
        res = train(images[torch.from_numpy(tr)], sub(tr), cfg, init=init, num_classes=num_classes, progress=False)
        logits = predict_logits(res.net, images[torch.from_numpy(te)], tta=tta).numpy()
        if out is None:
            out = np.zeros((len(images), logits.shape[1]), dtype=np.float32)
        out[te] = logits
    assert out is not None
    return out
