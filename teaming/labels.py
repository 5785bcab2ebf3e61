"""What people said about each item: vote counts per class, the targets derived from them, and majority votes.

One tie rule holds everywhere: a tie goes to the tied class named first. For reviewers' answers (N x k) that
is the earliest reviewer's answer among the tied classes; for bare vote counts, which keep no order, the lowest
class id.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from teaming._validation import DataError, check_labels


@dataclass
class HumanLabels:
    """Per-item vote counts (N x C) from one or more annotators, aligned with item ids."""

    counts: np.ndarray
    ids: list[str]
    classes: list[str]
    seconds: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts)
        if self.counts.ndim != 2 or self.counts.shape[1] != len(self.classes):
            raise DataError(f"counts must be N x {len(self.classes)}, got {self.counts.shape}")
        if len(self.ids) != self.counts.shape[0]:
            raise DataError(f"{self.counts.shape[0]} rows of counts but {len(self.ids)} item ids")
        if self.counts.shape[0] == 0:
            raise DataError("no labelled items")
        if np.any(self.counts < 0) or not np.all(np.isfinite(self.counts)):
            raise DataError("counts must be finite and non-negative")
        empty = np.flatnonzero(self.counts.sum(1) == 0)
        if empty.size:
            raise DataError(f"{empty.size} items have no label, e.g. {self.ids[empty[0]]!r}")
        self.counts = self.counts.astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_counts(cls, counts: np.ndarray, classes: Sequence[str], ids: Sequence[str] | None = None) -> "HumanLabels":
        """From a CIFAR-10H style counts matrix."""
        counts = np.asarray(counts)
        return cls(counts, list(ids) if ids is not None else [str(i) for i in range(len(counts))], list(classes))

    @classmethod
    def from_annotators(
        cls, columns: Sequence[np.ndarray], classes: Sequence[str], ids: Sequence[str] | None = None
    ) -> "HumanLabels":
        """From per-annotator label columns (CIFAR-10N random_label1..3): one vote each per item."""
        if not columns:
            raise DataError("no annotator columns")
        cols = [np.asarray(c) for c in columns]
        n = len(cols[0])
        if any(len(c) != n for c in cols):
            raise DataError(f"annotator columns differ in length: {[len(c) for c in cols]}")
        counts = np.zeros((n, len(classes)), dtype=np.int64)
        for col in cols:
            col = _check_label_ids(col, len(classes))
            np.add.at(counts, (np.arange(n), col), 1)
        return cls(counts, list(ids) if ids is not None else [str(i) for i in range(n)], list(classes))

    @classmethod
    def from_csv(cls, path: str | Path, classes: Sequence[str], ids: Sequence[str] | None = None) -> "HumanLabels":
        """From a long CSV `item_id,annotator_id,label[,seconds]`; label is a class name or id.

        Rows follow `ids` when given (items without votes are an error), else first-seen order.
        """
        path = Path(path)
        if not path.exists():
            raise DataError(f"no label file at {path}")
        by_name = {c: i for i, c in enumerate(classes)}
        votes: dict[str, np.ndarray] = {}
        secs: dict[str, float] = {}
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"item_id", "annotator_id", "label"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise DataError(f"{path}: header must include {sorted(need)}, got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                label = _parse_label(row["label"], by_name, len(classes), f"{path}:{line}")
                item = row["item_id"]
                votes.setdefault(item, np.zeros(len(classes), dtype=np.int64))[label] += 1
                if row.get("seconds") not in (None, ""):
                    try:
                        secs[item] = secs.get(item, 0.0) + float(row["seconds"])
                    except ValueError as err:
                        raise DataError(f"{path}:{line}: seconds {row['seconds']!r} is not a number") from err
        if not votes:
            raise DataError(f"{path}: no label rows")
        order = list(ids) if ids is not None else list(votes)
        unknown = sorted(set(votes) - set(order))
        like = f" (the photos' ids look like {order[0]!r})" if ids is not None else ""
        if unknown:
            raise DataError(f"{path}: {_items(len(unknown))} not among the photos, e.g. {unknown[0]!r}{like}")
        missing = [i for i in order if i not in votes]
        if missing:
            some = "1 photo has" if len(missing) == 1 else f"{len(missing)} photos have"
            raise DataError(f"{path}: {some} no vote, e.g. {missing[0]!r}")
        seconds = np.array([secs.get(i, np.nan) for i in order]) if secs else None
        return cls(np.stack([votes[i] for i in order]), order, list(classes), seconds)

    def subset(self, index: Sequence[int] | slice | np.ndarray) -> "HumanLabels":
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        secs = None if self.seconds is None else self.seconds[idx]
        return HumanLabels(self.counts[idx], [self.ids[i] for i in idx], list(self.classes), secs)

    def aligned_to(self, ids: Sequence[str]) -> "HumanLabels":
        """Rows reordered to follow `ids`; every id must have labels."""
        pos = {item: i for i, item in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise DataError(f"{len(missing)} items have no human labels, e.g. {missing[0]!r}")
        return self.subset(np.array([pos[i] for i in ids], dtype=np.int64))

    def with_ids(self, ids: Sequence[str]) -> "HumanLabels":
        """The same rows under new ids (e.g. to match an image set loaded by index)."""
        return HumanLabels(self.counts, list(ids), list(self.classes), self.seconds)

    @property
    def votes(self) -> np.ndarray:
        """Number of judgements per item."""
        return self.counts.sum(1)

    def soft(self) -> np.ndarray:
        """Vote shares per class: the soft target people give."""
        return self.counts / self.votes[:, None]

    def majority(self) -> np.ndarray:
        """The most chosen class per item (lowest class id on ties: counts keep no order)."""
        return majority(self.counts)

    def sample(self, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """One annotator's answer per item, drawn in proportion to the votes."""
        rng = np.random.default_rng(rng)
        cum = np.cumsum(self.counts, 1)
        draw = rng.integers(0, self.votes)[:, None]
        return (draw >= cum).sum(1)

    def entropy(self) -> np.ndarray:
        """Entropy (nats) of the vote shares: 0 when everyone agrees."""
        p = self.soft()
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(p), 0.0).sum(1)

    def agreement(self) -> np.ndarray:
        """Share of votes that went to the majority class."""
        return self.counts.max(1) / self.votes

    def chance_right(self, y: np.ndarray) -> np.ndarray:
        """Each item's chance that one sampled annotator names its true class `y`: the share of votes for it."""
        return chance_right(self.counts, y)


def chance_right(counts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per item, the share of its N x C vote counts that went to its true class `y` (what one sampled person
    gets right on average)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts[np.arange(len(y)), y] / counts.sum(1)


def _items(n: int) -> str:
    return "1 voted item is" if n == 1 else f"{n} voted items are"


def _check_label_ids(col: np.ndarray, num_classes: int) -> np.ndarray:
    if col.dtype.kind not in "iu":
        raise DataError(f"label ids must be integers, got {col.dtype}")
    bad = np.flatnonzero((col < 0) | (col >= num_classes))
    if bad.size:
        raise DataError(f"label id {int(col[bad[0]])} at row {bad[0]} is out of range 0..{num_classes - 1}")
    return col.astype(np.int64)


def _parse_label(value: str, by_name: Mapping[str, int], num_classes: int, where: str) -> int:
    value = value.strip()
    if value in by_name:
        return by_name[value]
    try:
        label = int(value)
    except ValueError:
        raise DataError(f"{where}: unknown class name {value!r}; known: {list(by_name)}") from None
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: label id {label} is out of range 0..{num_classes - 1}")
    return label


def earliest_majority(answers: Sequence[int]) -> int:
    """The answer given most often; a tie goes to the tied answer given first. The one tie rule of the project,
    for one item's answers in the order they came (`majority` applies it to many items at once)."""
    if not len(answers):
        raise DataError("no answers to take a majority of")
    answers = list(answers)
    top = max(answers.count(a) for a in answers)
    return next(a for a in answers if answers.count(a) == top)


def majority(counts: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """The most voted class per item from N x C vote counts; a tie goes to the tied class named first in `order`
    (N x k answers in the order they were given: `earliest_majority` of each row), or to the lowest class id
    without one (counts keep no order, so the class named first is the lowest id)."""
    counts = np.asarray(counts)
    if order is None:
        return (counts == counts.max(1, keepdims=True)).argmax(1)
    return np.array([earliest_majority(row) for row in np.asarray(order).tolist()], dtype=np.int64)


def vote(answers: np.ndarray, num_classes: int) -> np.ndarray:
    """One answer per item: a single reviewer's (N,) as given, or the majority of k reviewers (N x k)."""
    a = check_labels(answers, len(answers), num_classes, "answers")
    if a.ndim == 1:
        return a
    counts = np.zeros((len(a), num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(a)), a.shape[1]), a.ravel()), 1)
    return majority(counts, a)


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line in the order of a model's outputs (blank lines skipped);
    DataError for a missing file, no names or a name given twice."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no classes file at {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names (one per line)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: class names must be unique, {twice[0]!r} is given {names.count(twice[0])} times")
    return names
