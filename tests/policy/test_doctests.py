"""The examples in the policies' docstrings run, and say what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["teaming.policy.threshold", "teaming.policy.certified", "teaming.policy.rejector"])
def test_the_policy_examples_hold(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
