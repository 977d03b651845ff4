"""TNBC (Naylor et al. 2019): 50 H&E tiles of 512x512 pixels of triple-negative breast cancer.

Layout under ``<root>/tnbc``: ``Slide_XX/XX_N.png`` (image N of patient XX; 47 are RGBA with an
alpha channel that is always 255, which is dropped) and ``GT_XX/XX_N.png`` (its mask). Ids are
``"XX_N"``, e.g. ``"01_1"``.

The masks are *binary* (0 and 255), not instance-labelled. Instances are taken as the connected
components of the foreground with 8-connectivity (a 3x3 structuring element). Touching nuclei that
share a boundary cannot be told apart in a binary mask: they stay merged into one instance, and
nothing here tries to split them. 8-connectivity is chosen because it reproduces the manifest's
``n_nuclei_8conn`` (4028 components over the 50 images, close to the 4022 nuclei the paper
reports), while 4-connectivity gives 4056, among them 29 tiny fragments under 10 pixels.

TNBC is only ever a test set: the splits ``"test"`` and ``"all"`` both hold the 50 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nucseg.datasets._common import Sample, data_root
from nucseg.datasets._read import read_label_file, read_rgb
from nucseg.datasets.manifest import image_file, read_manifest

NAME = "tnbc"
SPLITS = ("test", "all")
ORGAN = "breast"
_EIGHT = np.ones((3, 3), dtype=bool)


def mask_to_labels(mask: np.ndarray) -> np.ndarray:
    """Instance labels from a binary mask: 8-connected components of ``mask > 0``.

    Parameters
    ----------
    mask : ndarray
        ``(H, W)`` mask, any nonzero value is foreground.

    Returns
    -------
    ndarray
        ``(H, W) int32``, components numbered 1..N in raster order.

    Examples
    --------
    >>> mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=np.uint8)
    >>> mask_to_labels(mask)
    array([[1, 0, 0],
           [0, 1, 0],
           [0, 0, 0],
           [2, 2, 0]], dtype=int32)
    """
    labels, _ = ndi.label(np.asarray(mask) > 0, structure=_EIGHT)
    return labels.astype(np.int32, copy=False)


def _patient(image_id: str) -> str:
    patient, sep, number = image_id.partition("_")
    if not sep or not patient.isdigit() or not number.isdigit():
        raise KeyError(f"not a TNBC id: {image_id!r}; ids look like '01_1' (patient_image)")
    return patient


def tnbc_ids(split: str = "test", *, root: str | Path | None = None) -> list[str]:
    """Sorted ids of a split (``"test"`` and ``"all"`` are the same 50 images)."""
    if split not in SPLITS:
        raise KeyError(f"unknown tnbc split {split!r}; valid splits: {', '.join(SPLITS)}")
    return sorted(row["id"] for row in read_manifest(NAME, root))


def read_tnbc(image_id: str, *, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one TNBC image and its instance labels.

    Parameters
    ----------
    image_id : str
        ``"XX_N"``, e.g. ``"01_1"``.
    root : str or Path, optional
        The data root holding ``tnbc/``; default :func:`nucseg.datasets.data_root`.

    Returns
    -------
    image : ndarray
        ``(512, 512, 3) uint8`` RGB.
    labels : ndarray
        ``(512, 512) int32``: 8-connected components of the mask, 1..N.
    """
    patient = _patient(image_id)
    folder = (Path(root) if root is not None else data_root()) / NAME
    rows = {row["id"]: row for row in read_manifest(NAME, root)}
    if image_id not in rows:
        raise KeyError(f"unknown tnbc id {image_id!r}; valid ids: {', '.join(sorted(rows))}")
    image = read_rgb(folder / image_file(NAME, rows[image_id]))
    mask_path = folder / f"GT_{patient}" / f"{image_id}.png"
    mask = read_label_file(mask_path)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{mask_path} has shape {mask.shape}, its image {image.shape[:2]}")
    return image, mask_to_labels(mask)


def load_tnbc_sample(image_id: str, *, root: str | Path | None = None) -> Sample:
    """Read one TNBC image as a :class:`~nucseg.datasets.Sample`."""
    image, labels = read_tnbc(image_id, root=root)
    return Sample(id=image_id, image=image, labels=labels, organ=ORGAN, dataset=NAME)
