"""Access to the real datasets for tests: skip with a reason when absent, fail in CI.

CI sets ``NUCSEG_REQUIRE_DATA=1``, which turns every such skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _missing(reason: str):
    if os.environ.get("NUCSEG_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}; NUCSEG_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(reason)


def data_root_or_skip() -> Path:
    """Return the data root (``nucseg.datasets.data_root``), or skip / fail if it is absent."""
    from nucseg.datasets import data_root

    try:
        return data_root()
    except FileNotFoundError as err:
        _missing(f"datasets not found: {err}")


def data_file(relative: str) -> Path:
    """Return the dataset file ``relative`` to the data root, or skip / fail if it is absent."""
    path = data_root_or_skip() / relative
    if not path.exists():
        _missing(f"dataset file {path} not found (set NUCSEG_DATA to the datasets folder)")
    return path
