"""A dataset from two folders: images and their label images, paired by file stem.

``images_dir/<stem>.{png,tif,tiff,jpg,jpeg}`` pairs with ``labels_dir/<stem>.{png,tif,tiff}``.
Label images are instance labels (0 = background) and are renumbered 1..N. A label image with a
single nonzero value is read as a binary mask: its 8-connected components become the instances
(a warning is logged when that yields more than one object, since touching nuclei stay merged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential
from tqdm.auto import tqdm

from nucseg._checks import check_labels
from nucseg.datasets._common import Sample
from nucseg.datasets._read import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_label_file, read_rgb
from nucseg.datasets.tnbc import mask_to_labels

log = logging.getLogger(__name__)

NAME = "folder"
#: Picture formats: a file of one that a folder's reader does not take is an error, not skipped.
_PICTURE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in suffixes:
            if path.suffix.lower() in _PICTURE_SUFFIXES:  # meant as one: say why it is not read
                raise ValueError(
                    f"{path}: {what} files must be {', '.join(suffixes)}"
                    + (" (lossless: JPEG changes label values)" if what == "label" else "")
                )
            log.info("%s: not a %s file (%s), ignored", path, what, ", ".join(suffixes))
            continue
        if path.stem in files:
            raise ValueError(
                f"two {what} files share the stem {path.stem!r}: {files[path.stem]}, {path}"
            )
        files[path.stem] = path
    return files


def labels_from_file(path: str | Path) -> np.ndarray:
    """Read a label image as ``(H, W) int32`` instance labels 1..N (binary masks: see module)."""
    raw = check_labels(read_label_file(path), name=str(path))
    values = np.unique(raw)
    values = values[values != 0]
    if len(values) == 1:
        labels = mask_to_labels(raw)
        if labels.max() > 1:
            log.warning(
                "%s holds a single value (%d): read as a binary mask, %d instances by "
                "8-connected components (touching nuclei stay merged)",
                path, values[0], labels.max(),
            )  # fmt: skip
        return labels
    return relabel_sequential(raw)[0].astype(np.int32, copy=False)


def load_folder(
    images_dir: str | Path, labels_dir: str | Path, *, progress: bool = False
) -> Iterator[Sample]:
    """Yield the image/label pairs of two folders as :class:`~nucseg.datasets.Sample`.

    The pairing is checked when this is called; images are read one at a time as the result is
    iterated, in order of stem.

    Parameters
    ----------
    images_dir : str or Path
        Folder of RGB images (``.png .tif .tiff .jpg .jpeg``).
    labels_dir : str or Path
        Folder of label images (``.png .tif .tiff``) with the same stems.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    iterator of Sample
        ``organ`` is ``"unknown"``, ``dataset`` is ``"folder"``.

    Raises
    ------
    FileNotFoundError
        If a folder is missing.
    ValueError
        If an image has no label file or a label file no image (all are listed), if two files
        in one folder share a stem, or (while iterating) if an image and its labels differ in
        shape.
    """
    images = _files_by_stem(Path(images_dir), IMAGE_SUFFIXES, "image")
    labels = _files_by_stem(Path(labels_dir), LABEL_SUFFIXES, "label")
    no_labels = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_labels or no_image:
        problems = []
        if no_labels:
            problems.append(f"images without labels in {labels_dir}: {', '.join(no_labels)}")
        if no_image:
            problems.append(f"labels without image in {images_dir}: {', '.join(no_image)}")
        raise ValueError("; ".join(problems))
    if not images:
        log.warning("no images found in %s", images_dir)
    return _iter_folder(images, labels, progress=progress)


def _iter_folder(
    images: dict[str, Path], labels: dict[str, Path], *, progress: bool
) -> Iterator[Sample]:
    for stem in tqdm(sorted(images), desc="load folder", unit="image", disable=not progress):
        image = read_rgb(images[stem])
        label_image = labels_from_file(labels[stem])
        if label_image.shape != image.shape[:2]:
            raise ValueError(
                f"{images[stem]} has shape {image.shape[:2]} but {labels[stem]} has shape "
                f"{label_image.shape}; they must cover the same pixels"
            )
        yield Sample(id=stem, image=image, labels=label_image, organ="unknown", dataset=NAME)
