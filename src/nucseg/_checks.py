"""Validation of the two data contracts, done once at public entry points.

Images are ``(H, W, 3) uint8`` RGB arrays; label images are ``(H, W)`` integer arrays with
0 = background and objects 1..N (the values need not be consecutive on input).
"""

from __future__ import annotations

import numpy as np


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an ``(H, W, 3) uint8`` array, else raise ``ValueError``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name}: expected an RGB image of shape (H, W, 3), got shape {image.shape}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    return image


def check_labels(labels: np.ndarray, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` if it is a 2-D non-negative integer array, else raise ``ValueError``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label image, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer label image, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(
            f"{name}: label values must be >= 0 (0 = background), found {labels.min()}"
        )
    return labels


def check_same_shape(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same (rows, columns)."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"{names[0]} has shape {a.shape[:2]} but {names[1]} has shape {b.shape[:2]}; "
            "they must cover the same pixels"
        )
