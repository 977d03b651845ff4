"""Tests of nucseg.objects, and that the classical and network pipelines share it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from nucseg.objects import remove_small


def test_remove_small_relabels():
    labels = np.array([[5, 5, 0, 2, 0, 7, 7, 7]])
    # areas: label 5 -> 2 pixels, label 2 -> 1, label 7 -> 3; keep >= 2, in label order 5 then 7
    np.testing.assert_array_equal(remove_small(labels, min_size=2), [[1, 1, 0, 0, 0, 2, 2, 2]])


def test_remove_small_keeps_everything_at_min_size_one_and_nothing_when_empty():
    labels = np.array([[3, 0], [0, 9]])
    np.testing.assert_array_equal(remove_small(labels, min_size=1), [[1, 0], [0, 2]])
    assert remove_small(np.zeros((2, 3), np.int32), min_size=5).tolist() == [[0, 0, 0]] * 2


def test_postprocess_does_not_import_classical():
    code = "import sys, nucseg.postprocess; sys.exit('nucseg.classical' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
