"""Fixtures shared by the decoding tests."""

import pytest

from tiny_models import enabled_pair


@pytest.fixture(scope="module")
def pair():
    """A tiny enabled target and its head, built once per test module."""
    return enabled_pair()
