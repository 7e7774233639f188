"""Shared fixtures."""

from collections import Counter

import pytest
import torch

from tests.helpers.config import TINY


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most slow tests first, each module's tests kept together (their module fixtures are built
    once): the two workers then share the longest tests from the start instead of one finishing the last alone."""
    slow = Counter(item.module for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.module])


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


@pytest.fixture(scope="module")
def causal_ckpt(tmp_path_factory):
    """A tiny checkpoint of the default model with the causal shift (one training step), the same on every run."""
    from tests.helpers.config import tiny_checkpoint

    torch.manual_seed(0)
    return tiny_checkpoint(tmp_path_factory.mktemp("causal"), ["model/shift=causal"])
