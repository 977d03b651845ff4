"""File readers of the dataset loaders: those of :mod:`nucseg.io`, returning writable arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucseg import io

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


def read_rgb(path: str | Path) -> np.ndarray:
    """:func:`nucseg.io.read_image`, as a writable ``(H, W, 3) uint8`` array."""
    image = io.read_image(path)
    return image if image.flags.writeable else image.copy()


def read_label_file(path: str | Path) -> np.ndarray:
    """:func:`nucseg.io.read_labels`, as a writable ``(H, W) int32`` array, values unchanged."""
    labels = io.read_labels(path)
    return labels if labels.flags.writeable else labels.copy()
