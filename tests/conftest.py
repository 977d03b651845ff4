"""Shared fixtures."""

from __future__ import annotations

import pytest
from helpers import data_root_or_skip


@pytest.fixture(scope="session")
def data_root():
    """The folder holding monuseg/ and tnbc/ (skips, or fails in CI, when absent)."""
    return data_root_or_skip()


@pytest.fixture(autouse=True, scope="session")
def model_cache(tmp_path_factory):
    """The OpenVINO backend's cache (NUCSEG_CACHE) in a temporary folder, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("nucseg-cache")
        patch.setenv("NUCSEG_CACHE", str(folder))
        yield folder
