"""A team's inputs on labelled items: the model's calibrated probabilities, each item's human answer and its
reference label, as policies are fitted on and reports score them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from teaming._validation import DataError, InputError, check_labels, check_probs
from teaming.data import parse_items
from teaming.datasets import load_images, resolve_labels
from teaming.labels import HumanLabels, vote
from teaming.model.artifact import Artifact, load_artifact
from teaming.model.train import resolve_device


@dataclass
class TeamData:
    """One labelled item set: calibrated machine probabilities, one human answer and a reference label per item."""

    probs: np.ndarray
    human: np.ndarray
    y: np.ndarray
    classes: list[str]
    human_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.probs = check_probs(self.probs)
        if self.probs.ndim != 2:
            raise InputError(f"a team takes N x C probabilities, got {self.probs.shape}")
        n, c = self.probs.shape
        if len(self.classes) != c:
            raise InputError(f"{len(self.classes)} class names for {c} probability columns")
        self.human = check_labels(self.human, n, c, "human answers")
        self.y = check_labels(self.y, n, c, "reference labels")


def load_team(
    model: str | Path,
    images: str = "default",
    labels: str = "cifar10h",
    items: str | None = None,
    reviewers: int = 1,
    reference: str = "hard",
    seed: int = 0,
    device: str = "auto",
) -> tuple[Artifact, TeamData]:
    """The artifact and its TeamData on labelled items, from the specs the command line takes.

    The human answer is the item's single label when it has one (a CIFAR-10N column), else the majority of
    `reviewers` annotators sampled (seeded) in proportion to the votes, as if that many people had reviewed it.
    The reference is the images' hard label, or the majority of all human votes.
    """
    if reviewers < 1:
        raise DataError(f"--reviewers must be at least 1, got {reviewers}")
    if reference not in ("hard", "majority"):
        raise DataError(f"--reference must be 'hard' or 'majority', got {reference!r}")
    if labels == "hard":
        raise DataError("--labels must name human labels (cifar10h, cifar10n:COL or a CSV), not 'hard'")
    art = load_artifact(model, resolve_device(device))
    data = load_images(images, art.meta.input_size, art.classes)
    if data.classes != art.classes:
        raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
    human = resolve_labels(labels, data)
    assert isinstance(human, HumanLabels)
    idx = parse_items(items, len(data))
    human = human.subset(idx)
    rng = np.random.default_rng(seed)
    single = bool(np.all(human.votes == 1))
    answers = human.majority() if single else np.stack([human.sample(rng) for _ in range(reviewers)], 1)
    if reference == "hard":
        if data.labels is None:
            raise DataError("these images carry no hard labels; use --reference majority")
        y = data.labels[idx]
    else:
        y = human.majority()
    probs = art.predict_proba(data.images[torch.from_numpy(idx)])
    counts = None if single else human.counts
    return art, TeamData(probs, vote(answers, len(art.classes)), y, art.classes, counts)
