"""Bringing an image to a model's resolution and its labels back: one rule for every entry point.

A model learns nuclei at one resolution (microns per pixel, "mpp"; 0.25 for the bundled model,
40x). An image at another resolution is resampled by ``image_mpp / model_mpp`` before the
network sees it, unless the two differ by less than :data:`MPP_TOLERANCE` (1 %): the rule
``nucseg slide`` applies to slides, and training and evaluation apply to datasets (CPM-15's
20x tiles are enlarged x2). Images shrink with area averaging and grow bilinearly (OpenCV's
``INTER_AREA`` / ``INTER_LINEAR``, by whether the area shrinks); label images are resampled by
nearest neighbour: each output pixel takes the source pixel under its centre
(:func:`source_pixels`). The slide engine reads every region through :func:`resize_image`, and
images and slides map their work-resolution labels back through :func:`source_pixels`.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Relative difference of two resolutions under which an image is not resampled.
MPP_TOLERANCE = 0.01


def scale_factor(image_mpp: float | None, model_mpp: float) -> float:
    """Model pixels per image pixel: ``image_mpp / model_mpp``, or 1 within the tolerance.

    ``image_mpp`` None (unknown) gives 1: the image is taken as it is.

    Examples
    --------
    >>> scale_factor(0.5, 0.25)
    2.0
    >>> scale_factor(0.252, 0.25)
    1.0
    >>> scale_factor(None, 0.25)
    1.0
    """
    if image_mpp is None:
        return 1.0
    if not (np.isfinite(image_mpp) and image_mpp > 0):
        raise ValueError(f"microns per pixel must be a positive number, got {image_mpp!r}")
    factor = float(image_mpp) / float(model_mpp)
    return 1.0 if abs(factor - 1.0) < MPP_TOLERANCE else factor


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """``(rows, columns)`` of a ``shape[:2]`` image resampled by ``factor`` (at least 1 each)."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, C)`` or ``(H, W)`` image resampled to ``shape`` (rows, columns).

    Area averaging when it shrinks, bilinear when it grows; the dtype is kept.
    """
    rows, cols = int(shape[0]), int(shape[1])
    if (rows, cols) == tuple(image.shape[:2]):
        return image
    shrink = rows * cols < image.shape[0] * image.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (cols, rows), interpolation=method)


def source_pixels(positions: np.ndarray, factor: float) -> np.ndarray:
    """Index of the source pixel under the centre of each output pixel ``positions``, for
    ``factor`` output pixels per source pixel: ``floor((position + 0.5) / factor)``.

    Examples
    --------
    >>> source_pixels(np.arange(5), 2.0).tolist()
    [0, 0, 1, 1, 2]
    """
    return np.floor((np.asarray(positions) + 0.5) / factor).astype(np.int64)


def resize_labels(
    labels: np.ndarray, shape: tuple[int, int], *, factor: float | None = None
) -> np.ndarray:
    """An ``(H, W)`` label image resampled to ``shape`` by nearest neighbour, ids unchanged.

    Each output pixel takes the label under its centre. ``factor`` (output pixels per label
    pixel, e.g. a slide plan's ``scale``) places the centres as :func:`source_pixels` does, as
    a slide's label image is composed; None: the ratio of the two shapes, axis by axis. A
    nucleus smaller than a pixel of the new grid may vanish when shrinking; ids are not
    renumbered.
    """
    rows, cols = int(shape[0]), int(shape[1])
    if (rows, cols) == tuple(labels.shape[:2]) and factor in (None, 1.0):
        return labels
    if factor is None:
        r = ((np.arange(rows) + 0.5) * labels.shape[0] / rows).astype(np.int64)
        c = ((np.arange(cols) + 0.5) * labels.shape[1] / cols).astype(np.int64)
    else:
        r, c = source_pixels(np.arange(rows), factor), source_pixels(np.arange(cols), factor)
    r, c = np.minimum(r, labels.shape[0] - 1), np.minimum(c, labels.shape[1] - 1)
    return np.ascontiguousarray(labels[r[:, None], c[None, :]])
