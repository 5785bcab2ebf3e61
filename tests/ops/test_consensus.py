"""Reviewers as the log shows them: agreement, who stands apart from the team, and who only says "can't tell"."""

from __future__ import annotations

from teaming.ops.consensus import ReviewerSkill, reviewer_skills, unreliable_reviewers, with_work


def _answers(items: int = 60):
    """Three reviewers on every item; ann and bo are right, cy always answers class 0."""
    out = []
    for i in range(items):
        truth = i % 10
        out += [(i, "ann", truth), (i, "bo", truth), (i, "cy", 0)]
    return out


def test_one_person_who_disagrees_with_everyone_is_named_and_the_others_are_not():
    flagged = unreliable_reviewers(_answers())
    assert set(flagged) == {"cy"}
    assert flagged["cy"].startswith("cy gives the same answer as another reviewer on 10% of 120 shared items")
    assert unreliable_reviewers(_answers(5)) == {}  # too few shared items to say


def test_someone_who_only_says_cant_tell_is_shown_and_flagged():
    work = {
        "ann": {"class": 50, "none": 1, "unsure": 1, "skips": 0},
        "bo": {"class": 48, "none": 2, "unsure": 2, "skips": 1},
        "dee": {"class": 0, "none": 0, "unsure": 40, "skips": 12},  # never one class answer
    }
    rows = {r.reviewer: r for r in with_work(reviewer_skills([(1, "ann", 3), (1, "bo", 3)]), work)}
    dee = rows["dee"]
    assert (dee.answers, dee.unsure_answers, dee.skips) == (0, 40, 12)  # listed, not like someone who never worked
    assert any(f.startswith("answers none of these or can't tell 100% of the time") for f in dee.flags)
    assert any(f.startswith("skips 23% of the time") for f in dee.flags)
    assert rows["ann"].flags == [] and isinstance(rows["ann"], ReviewerSkill)
