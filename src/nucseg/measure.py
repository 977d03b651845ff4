"""Per-nucleus measurements and object boundaries, vectorised over all objects at once.

:func:`measure_nuclei` gives the same numbers as ``skimage.measure.regionprops_table`` (area,
centroid, perimeter, eccentricity, mean intensity) and :func:`inner_boundaries` the same pixels as
``skimage.segmentation.find_boundaries(mode="inner")``; the tests check both against scikit-image
on real MoNuSeg labels. They are written here because scikit-image computes them one region at a
time in Python: on a 1000 x 1000 image with 500 nuclei, regionprops took 0.29 s and
find_boundaries 0.2 s, against a few tens of milliseconds for one pass of array operations over
the whole image, and ``nucseg segment`` must stay within 1.5 s per image.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color.colorconv import hed_from_rgb

from nucseg._checks import check_image, check_labels, check_same_shape

#: Columns of :func:`measure_nuclei`, in order.
MEASUREMENT_COLUMNS = (
    "label",
    "area",
    "centroid_row",
    "centroid_col",
    "perimeter",
    "eccentricity",
    "mean_hematoxylin",
)

# skimage.color.separate_stains: optical density log(max(rgb, 1e-6)) / log(1e-6), then @ matrix.
_LOG_ADJUST = math.log(1e-6)
_OD_LUT = np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / _LOG_ADJUST

# skimage.measure.perimeter (4-neighbourhood): each border pixel gets code 1 + 2 per 4-connected
# and 10 per diagonal border neighbour, and the codes below are weighted; others count 0.
_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
_NEIGHBOUR_CODES = (
    ((-1, 0), 2), ((1, 0), 2), ((0, -1), 2), ((0, 1), 2),
    ((-1, -1), 10), ((-1, 1), 10), ((1, -1), 10), ((1, 1), 10),
)  # fmt: skip


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """Haematoxylin channel of :func:`skimage.color.rgb2hed` (Ruifrok & Johnston 2001), float32.

    Same values as ``rgb2hed(image)[..., 0]`` to float32 precision, from a 256-entry lookup table
    per channel instead of a logarithm per pixel.
    """
    return _hematoxylin_of(check_image(image))


def _hematoxylin_of(pixels: np.ndarray) -> np.ndarray:
    """:func:`hematoxylin` of ``(..., 3) uint8`` pixels (e.g. only those of the nuclei)."""
    lut = (_OD_LUT[:, None] * hed_from_rgb[:, 0][None, :]).astype(np.float32)  # (256, 3)
    h = lut[pixels[..., 0], 0] + lut[pixels[..., 1], 1] + lut[pixels[..., 2], 2]
    return np.maximum(h, 0.0, out=h)


def _differs_from_4_neighbour(labels: np.ndarray) -> np.ndarray:
    """True where a 4-connected neighbour inside the image has another label."""
    out = np.zeros(labels.shape, dtype=bool)
    rows = labels[1:, :] != labels[:-1, :]
    out[1:, :] |= rows
    out[:-1, :] |= rows
    cols = labels[:, 1:] != labels[:, :-1]
    out[:, 1:] |= cols
    out[:, :-1] |= cols
    return out


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-connected neighbour of another label (or the background).

    Equal to ``skimage.segmentation.find_boundaries(labels, mode="inner")``: pixels outside the
    image count as copies of the edge pixel, so the image edge itself is no boundary.
    """
    labels = check_labels(labels)
    return _differs_from_4_neighbour(labels) & (labels > 0)


def _perimeters(labels: np.ndarray, n: int) -> np.ndarray:
    """``skimage.measure.perimeter(labels == k)`` for every k in 1..n-1, in one pass."""
    padded = np.pad(labels, 1)  # background all around: the image edge is a border
    border = _differs_from_4_neighbour(padded) & (padded > 0)
    code = border.astype(np.uint8)
    h, w = labels.shape
    inner = (slice(1, h + 1), slice(1, w + 1))
    for (dr, dc), weight in _NEIGHBOUR_CODES:
        shifted = (slice(1 + dr, h + 1 + dr), slice(1 + dc, w + 1 + dc))
        same = border[shifted] & (padded[shifted] == padded[inner])
        code[inner] += (weight * same).astype(np.uint8)
    code = code[inner]
    border = border[inner]
    return np.bincount(
        labels[border], weights=_PERIMETER_WEIGHTS[code[border]], minlength=n
    ).astype(np.float64)


def measure_nuclei(
    image: np.ndarray, labels: np.ndarray, *, perimeter: bool = True
) -> dict[str, np.ndarray]:
    """Measure every nucleus: size, position, shape and haematoxylin content.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        RGB H&E image.
    labels : (H, W) integer array
        Instance labels of the same size.
    perimeter : bool, optional
        False leaves out ``perimeter``, the most costly column (about half the time), for
        callers that measure the perimeter on their polygons (the slide engine).

    Returns
    -------
    dict of str to 1-D array
        One entry per nucleus, sorted by label, in the columns :data:`MEASUREMENT_COLUMNS`:
        ``label``; ``area`` in pixels; ``centroid_row``, ``centroid_col`` (pixel-centre
        coordinates: pixel (r, c) sits at row r, column c); ``perimeter`` (scikit-image's
        estimate from the 4-connected boundary); ``eccentricity`` of the ellipse with the same
        second moments; ``mean_hematoxylin``, the mean haematoxylin channel of
        :func:`skimage.color.rgb2hed` (colour deconvolution, Ruifrok & Johnston 2001,
        Anal. Quant. Cytol. Histol. 23(4)) over the nucleus. The values equal those of
        ``skimage.measure.regionprops_table``.
    """
    image = check_image(image)
    labels = check_labels(labels)
    check_same_shape(image, labels, names=("image", "labels"))
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    n = int(ids.max()) + 1 if ids.size else 1
    area = np.bincount(ids, minlength=n).astype(np.float64)
    present = np.flatnonzero(area > 0)
    safe = np.maximum(area, 1.0)
    row_c = np.bincount(ids, weights=rows, minlength=n) / safe
    col_c = np.bincount(ids, weights=cols, minlength=n) / safe
    dr, dc = rows - row_c[ids], cols - col_c[ids]  # two passes: exact for any image size
    a = np.bincount(ids, weights=dr * dr, minlength=n) / safe  # inertia tensor [[a, b], [b, c]]
    b = -np.bincount(ids, weights=dr * dc, minlength=n) / safe
    c = np.bincount(ids, weights=dc * dc, minlength=n) / safe
    half_trace, root = (a + c) / 2, np.sqrt(((a - c) / 2) ** 2 + b**2)
    l1, l2 = np.maximum(half_trace + root, 0.0), np.maximum(half_trace - root, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        eccentricity = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / l1, 0.0, 1.0)), 0.0)
    if image.flags.c_contiguous:  # nucleus pixels only, in one gather of whole pixels
        pixels = np.take(image.reshape(-1, 3), rows * labels.shape[1] + cols, axis=0)
    else:
        pixels = image[rows, cols]
    h = _hematoxylin_of(pixels).astype(np.float64)
    mean_h = np.bincount(ids, weights=h, minlength=n) / safe
    table = {
        "label": present.astype(np.int32),
        "area": area[present].astype(np.int64),
        "centroid_row": row_c[present],
        "centroid_col": col_c[present],
        "perimeter": _perimeters(labels, n)[present] if perimeter else None,
        "eccentricity": eccentricity[present],
        "mean_hematoxylin": mean_h[present],
    }
    return {key: value for key, value in table.items() if value is not None}
