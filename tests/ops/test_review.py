"""The review loop's rules: tasks per decision, kept images, final answers, audit human and reference."""

from __future__ import annotations

import numpy as np

from teaming.ops.review import AUDIT, DEFER, audit_answers, final_label, keeps_image, review_tasks


def test_tasks_and_images_per_decision():
    assert review_tasks(False, False, 3) == ()
    assert review_tasks(True, False, 3) == (DEFER,)
    assert review_tasks(False, True, 3) == (AUDIT,) * 3
    assert review_tasks(True, True, 2) == (DEFER, AUDIT, AUDIT)
    assert keeps_image(True, False) and keeps_image(False, True) and not keeps_image(False, False)


def test_final_label_is_the_machines_or_the_defer_reviewers():
    assert final_label(False, 4, [(AUDIT, 1)]) == 4
    assert final_label(True, 4, []) is None
    assert final_label(True, 4, [(AUDIT, 1), (DEFER, 2), (DEFER, 3)]) == 2


def test_audit_answers_first_label_plays_the_human():
    audited = [
        ([0.7, 0.3], [0, 1, 1]),  # human 0, reference majority of (1, 1) = 1
        ([0.2, 0.8], [1, 0, 1]),  # human 1, reference tie (0, 1) -> the earlier, 0
        ([0.5, 0.5], [1, 1]),  # not fully audited yet: left out
    ]
    probs, human, ref = audit_answers(audited, 3)
    np.testing.assert_array_equal(probs, [[0.7, 0.3], [0.2, 0.8]])
    assert human.tolist() == [0, 1] and ref.tolist() == [1, 0]
    empty = audit_answers([([0.5, 0.5], [1])], 3)
    assert [len(a) for a in empty] == [0, 0, 0]
