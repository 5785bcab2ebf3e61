"""A team's inputs on labelled items: the model's calibrated probabilities, each item's human answer and its
reference label, as policies are fitted on and reports score them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from teaming._validation import DataError, InputError, check_labels, check_probs
from teaming.analysis import Interval, mean_interval
from teaming.datasets import load_images, resolve_labels
from teaming.items import item_runs, parse_items
from teaming.labels import HumanLabels, chance_right, vote
from teaming.model import Model, load_model
from teaming.model.base import outputs_in_chunks
from teaming.model.train import resolve_device
from teaming.policy import fitted_positions


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
    ids: list[str] | None = None  # the items' ids in their image set

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

    def provenance(self, art, model: Path | str, images: str, labels: str, items: str | None, reviewers: int) -> dict:
        """What a policy fitted on these items records of them (its `model_`): the model, the images and labels,
        and the positions, so that a report can leave them out."""
        return {
            "name": art.meta.name,
            "path": str(model),
            "created": art.meta.created,
            "fitted_on": f"{labels} items {items} of {images}",
            "images": images,
            "fitted_items": item_runs(self.positions),
            "reviewers": reviewers,
        }

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
            None if self.ids is None else [i for i, k in zip(self.ids, keep) if k],
        )
        return kept, int((~keep).sum())

    def without_fitted(self, policy, images: str) -> tuple["TeamData", int]:
        """These items less those `policy` was fitted on (by position in `images`, or by id where it records
        ids), and how many were left out."""
        positions = fitted_positions(policy, images)
        ids = set((policy.model_ or {}).get("fitted_ids") or [])
        if ids and self.ids is not None and self.positions is not None:
            positions = np.union1d(positions, self.positions[[i in ids for i in self.ids]])
        return self.without(positions)

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


def team_warnings(data: TeamData, policy) -> list[str]:
    """A policy that does not pay, in plain words with the way out: a team less accurate than the model alone,
    a familiarity guard that sends ordinary items to people who then do worse, everything sent to people."""
    reasons = policy.reasons(data.probs, unfamiliarity=data.unfamiliarity, features=data.features)
    defer, machine = reasons != "", float((data.probs.argmax(1) == data.y).mean())
    out = []
    if defer.all():
        out.append("every item goes to people: the model is never confident enough here")
    if data.human_counts is None and np.array_equal(data.human_draws[0], data.y):
        return out  # no person apart from the reference: nothing to compare the team with
    team, unsure_only = data.human_accuracy(defer).mean, data.human_accuracy(reasons == "unsure").mean
    if team < machine:
        out.append(
            f"the team ({team:.2%}) is less accurate than the model alone ({machine:.2%}): on the items it sends "
            "to people, they are right less often than the model would be"
            + (
                "; the model beats them at every confidence, so only the guard's items go to people"
                if not (reasons == "unsure").any()
                else ""
            )
        )
    guarded = reasons == "unfamiliar"
    if guarded.any() and unsure_only > team:
        out.append(
            f"the familiarity guard sends {guarded.mean():.1%} of these ordinary items to people and costs "
            f"{100 * (unsure_only - team):.2f} points of team accuracy here: refit with a higher "
            "--unfamiliar-quantile (0.99 sends about 1%, 1 only what is stranger than every fitting item)"
        )
    return out


def unused_positions(meta, data) -> np.ndarray:
    """Positions of every item in `data` the model was not trained, calibrated or guarded on: what fit-policy,
    report, evaluate and export score by default (for the shipped model on its own images, 7000..9999)."""
    keep = np.ones(len(data), dtype=bool)
    if data.source == meta.data.get("images"):
        keep[meta.used_positions()] = False
    used = meta.used_ids()
    if used:
        keep &= np.array([i not in used for i in data.ids])
    if not keep.any():
        raise DataError("every item trained or calibrated the model: score it on other items (--items)")
    return np.flatnonzero(keep)


def refuse_used_items(meta, source: str, ids: list[str], positions: np.ndarray) -> None:
    """DataError when items trained, calibrated or guarded the model: by position in the image set it was trained
    on, or by item id for an imported model (which records its splits by id)."""
    seen = np.intersect1d(positions, meta.used_positions()) if source == meta.data.get("images") else []
    if len(seen):
        raise DataError(
            f"{len(seen)} of these items ({seen[0]}..{seen[-1]}) trained or calibrated the model; "
            f"fit and score on items it has not seen ({meta.data.get('held_out_items') or 'held-out items'})"
        )
    used = meta.used_ids()
    taken = [i for i in ids if i in used]
    if taken:
        raise DataError(
            f"{len(taken)} of these items (e.g. {taken[0]!r}) calibrated or guarded the model; fit and score on "
            "the items its import kept for the policy and the report (their ids are in model.json's data.splits)"
        )


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
    progress: bool = False,
) -> tuple[Model, TeamData]:
    """The model and its TeamData on labelled items, from the specs the command line takes.

    The human answer is the item's single label when it has one (a CIFAR-10N column), else the majority of
    `reviewers` annotators sampled (seeded) in proportion to the votes, as if that many people had reviewed it.
    The reference is the images' hard label, or the majority of all human votes. Sampled answers are drawn
    `draws` times (seeds seed, seed + 1, ...); the first draw is the one policies are fitted on. Items the model
    was trained or calibrated on are refused unless `allow_trained`.
    """
    _check_team_specs(labels, reviewers, reference)
    art = load_model(model, resolve_device(device))
    data = load_images(images, art.contract, art.classes)
    if data.classes != art.classes:
        raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
    human = resolve_labels(labels, data)
    assert isinstance(human, HumanLabels)
    idx = parse_items(items, len(data)) if items else unused_positions(art.meta, data)
    if not allow_trained:
        refuse_used_items(art.meta, data.source, [data.ids[i] for i in idx], idx)
    human = human.subset(idx)
    single = bool(np.all(human.votes == 1))
    answer_draws = human.majority()[None] if single else _answer_draws(human, reviewers, seed, draws, len(art.classes))
    if reference == "hard":
        if data.labels is None:
            raise DataError("these images carry no hard labels; use --reference majority")
        y = data.labels[idx]
    else:
        y = human.majority()
    out = outputs_in_chunks(art, data.images[torch.from_numpy(idx)], "running the model" if progress else None)
    counts = None if single else human.counts
    ids = [data.ids[i] for i in idx]
    extras = (answer_draws, out.unfamiliarity, idx, out.features, ids)
    team = TeamData(out.probs, answer_draws[0], y, art.classes, counts, *extras)
    return art, team


def _check_team_specs(labels: str, reviewers: int, reference: str) -> None:
    """Refuse (DataError) what `load_team` cannot build a team from, before anything is loaded."""
    if reviewers < 1:
        raise DataError(f"--reviewers must be at least 1, got {reviewers}")
    if reference not in ("hard", "majority"):
        raise DataError(f"--reference must be 'hard' or 'majority', got {reference!r}")
    if labels == "hard":
        raise DataError("--labels must name human labels (cifar10h, cifar10n:COL or a CSV), not 'hard'")


def _answer_draws(human: HumanLabels, reviewers: int, seed: int, draws: int, n_classes: int) -> np.ndarray:
    """draws x items: each the majority of `reviewers` annotators sampled in proportion to the votes (seed + k)."""

    def draw(s: int) -> np.ndarray:
        rng = np.random.default_rng(s)
        return vote(np.stack([human.sample(rng) for _ in range(reviewers)], 1), n_classes)

    return np.stack([draw(seed + k) for k in range(max(draws, 1))])
