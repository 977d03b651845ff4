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


@pytest.fixture(autouse=True, scope="session")
def torch_for_auto():
    """``auto`` means torch in the test suite (NUCSEG_BACKEND), in this process and the
    commands it starts: OpenVINO's threads must not meet the suite's signals and forks. The
    OpenVINO backend is tested by name (tests/test_backends.py) and its agreement with torch in
    results/backends/agreement.json."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NUCSEG_BACKEND", "torch")
        yield
