"""Shared fixtures."""

import pytest
import torch

from tests.helpers.config import TINY


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for the module's tests: on shared cores a thread never waits at a parallel barrier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
