"""Shared fixtures."""

from __future__ import annotations

import pytest
from helpers import data_root_or_skip


@pytest.fixture(scope="session")
def data_root():
    """The folder holding monuseg/ and tnbc/ (skips, or fails in CI, when absent)."""
    return data_root_or_skip()
