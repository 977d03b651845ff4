"""Operations on instance label images shared by the classical and the network pipelines.

Label images are ``(H, W)`` non-negative integer arrays, 0 = background. :mod:`nucseg.classical`
and :mod:`nucseg.postprocess` both build on this module, so neither imports the other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["remove_small"]


def remove_small(labels: np.ndarray, *, min_size: int) -> np.ndarray:
    """Drop objects of fewer than ``min_size`` pixels and relabel the rest 1..N.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.
    min_size : int
        Smallest area, in pixels, that is kept.

    Returns
    -------
    (H, W) int32 array
        Consecutive labels 1..N in the order of the input labels.

    Examples
    --------
    >>> remove_small(np.array([[1, 1, 0, 2]]), min_size=2)
    array([[1, 1, 0, 0]], dtype=int32)
    """
    areas = np.bincount(labels.ravel())
    keep = areas >= min_size
    keep[0] = False
    if keep[1:].all():  # nothing to drop, labels already 1..N: no lookup needed
        return labels.astype(np.int32, copy=True)
    lut = np.zeros(areas.size, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]
