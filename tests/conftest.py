"""Shared fixtures: the embedded CIFAR-10 test images (always present) and the shared data folder (optional)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teaming.data import ImageSet, load_default_test, shared_data_dir
from teaming.labels import HumanLabels, load_cifar10h

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cifar_test() -> ImageSet:
    return load_default_test()


@pytest.fixture(scope="session")
def cifar10h() -> HumanLabels:
    return load_cifar10h()


@pytest.fixture(scope="session")
def shared_dir():
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data (or $TEAMING_DATA) with the CIFAR-10 training pack is absent")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
