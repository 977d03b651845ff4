"""Small readers for image and label files, local to the dataset loaders.

``nucseg.io`` may import or replace these; they exist here so the loaders do not depend on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an RGB image file as an ``(H, W, 3) uint8`` array.

    An alpha channel is dropped; a palette image is converted to RGB.

    Parameters
    ----------
    path : str or Path
        A ``.png``, ``.jpg``/``.jpeg`` or ``.tif``/``.tiff`` file.

    Returns
    -------
    ndarray
        ``(H, W, 3) uint8``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the image is greyscale, has another channel count, or is not 8-bit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() in _TIFF:
        array = np.asarray(tifffile.imread(path))
    else:
        with Image.open(path) as im:
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            array = np.array(im)  # a writable copy
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2)):
        raise ValueError(f"{path}: greyscale image of shape {array.shape}; an RGB image is needed")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{path}: expected an (H, W, 3) or (H, W, 4) image, got {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit (uint8) pixels, got {array.dtype}")
    if array.shape[2] == 4:
        if array[..., 3].min() < 255:
            log.debug("%s: dropping an alpha channel that is not fully opaque", path)
        array = array[..., :3]
    return np.ascontiguousarray(array)


def read_label_file(path: str | Path) -> np.ndarray:
    """Read a label (or mask) file as a 2-D integer array, values unchanged.

    Parameters
    ----------
    path : str or Path
        A ``.png`` (8- or 16-bit greyscale, 32-bit integer or palette indices), ``.tif`` or
        ``.tiff``.

    Returns
    -------
    ndarray
        ``(H, W)`` of an integer dtype (``bool`` masks become ``uint8``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a single-channel integer image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() in _TIFF:
        array = np.asarray(tifffile.imread(path))
    else:
        with Image.open(path) as im:
            array = np.array(im)  # writable; palette images give their indices
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: expected integer label values, got dtype {array.dtype}")
    return array
