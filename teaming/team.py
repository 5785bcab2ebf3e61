"""A team's inputs on labelled items: the model's calibrated probabilities, each item's human answer and its
reference label, as policies are fitted on and reports score them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from teaming._validation import DataError, InputError, check_labels, check_probs
from teaming.analysis import Interval, mean_interval
from teaming.data import parse_items
from teaming.datasets import load_images, resolve_labels
from teaming.labels import HumanLabels, chance_right, vote
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
    human_draws: np.ndarray | None = None  # S x N: the human answers under S seeds; row 0 is `human`
    unfamiliarity: np.ndarray | None = None  # the model's familiarity-guard score per item, when it has a guard
    positions: np.ndarray | None = None  # where the items lie in their image set
    features: np.ndarray | None = None  # the model's penultimate features (what a learned rejector reads)

    def __post_init__(self) -> None:
        self.probs = check_probs(self.probs)
        if self.probs.ndim != 2:
            raise InputError(f"a team takes N x C probabilities, got {self.probs.shape}")
        n, c = self.probs.shape
        if len(self.classes) != c:
            raise InputError(f"{len(self.classes)} class names for {c} probability columns")
        self.human = check_labels(self.human, n, c, "human answers")
        self.y = check_labels(self.y, n, c, "reference labels")
        if self.human_draws is None:
            self.human_draws = self.human[None]
        self.human_draws = check_labels(np.asarray(self.human_draws).T, n, c, "human answer draws").T

    def without(self, positions: np.ndarray) -> tuple["TeamData", int]:
        """These items less those at `positions` (e.g. the ones a policy was fitted on), and how many left."""
        if self.positions is None or not len(positions):
            return self, 0
        keep = ~np.isin(self.positions, positions)
        if not keep.any():
            raise DataError("every item was used to fit the policy; score it on other items (--items)")
        if keep.all():
            return self, 0
        k = lambda a: None if a is None else a[..., keep]  # noqa: E731
        kept = TeamData(
            self.probs[keep],
            self.human[keep],
            self.y[keep],
            self.classes,
            None if self.human_counts is None else self.human_counts[keep],
            k(self.human_draws),
            k(self.unfamiliarity),
            self.positions[keep],
            None if self.features is None else self.features[keep],
        )
        return kept, int((~keep).sum())

    def human_accuracy_per_item(self) -> np.ndarray:
        """Each item's chance that its sampled person is right: the share of its annotators who were (when the
        votes are known), else whether its one answer is."""
        if self.human_counts is None:
            return (self.human == self.y).astype(np.float64)
        return chance_right(self.human_counts, self.y)

    def human_accuracy(self, defer: np.ndarray | None = None) -> Interval:
        """Accuracy of the human alone (defer=None) or of the team deferring `defer`, as the mean over the human
        answer draws with its 95% interval."""
        ok = self.human_draws == self.y
        if defer is not None:
            ok = np.where(defer, ok, self.probs.argmax(1) == self.y)
        return mean_interval(ok.mean(1))


def load_team(
    model: str | Path,
    images: str = "default",
    labels: str = "cifar10h",
    items: str | None = None,
    reviewers: int = 1,
    reference: str = "hard",
    seed: int = 0,
    device: str = "auto",
    draws: int = 20,
    allow_trained: bool = False,
) -> tuple[Artifact, TeamData]:
    """The artifact and its TeamData on labelled items, from the specs the command line takes.

    The human answer is the item's single label when it has one (a CIFAR-10N column), else the majority of
    `reviewers` annotators sampled (seeded) in proportion to the votes, as if that many people had reviewed it.
    The reference is the images' hard label, or the majority of all human votes. Sampled answers are drawn
    `draws` times (seeds seed, seed + 1, ...); the first draw is the one policies are fitted on. Items the model
    was trained or calibrated on are refused unless `allow_trained`.
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
    seen = np.intersect1d(idx, art.meta.used_positions()) if data.source == art.meta.data.get("images") else []
    if len(seen) and not allow_trained:
        raise DataError(
            f"{len(seen)} of these items ({seen[0]}..{seen[-1]}) trained or calibrated the model; "
            f"fit and score on items it has not seen ({art.meta.data.get('held_out_items') or 'held-out items'})"
        )
    human = human.subset(idx)
    single = bool(np.all(human.votes == 1))

    def draw(s: int) -> np.ndarray:
        rng = np.random.default_rng(s)
        return vote(np.stack([human.sample(rng) for _ in range(reviewers)], 1), len(art.classes))

    answer_draws = human.majority()[None] if single else np.stack([draw(seed + k) for k in range(max(draws, 1))])
    if reference == "hard":
        if data.labels is None:
            raise DataError("these images carry no hard labels; use --reference majority")
        y = data.labels[idx]
    else:
        y = human.majority()
    out = art.outputs(data.images[torch.from_numpy(idx)])
    counts = None if single else human.counts
    team = TeamData(
        out.probs, answer_draws[0], y, art.classes, counts, answer_draws, out.unfamiliarity, idx, out.features
    )
    return art, team
