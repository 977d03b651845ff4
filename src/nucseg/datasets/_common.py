"""Pieces shared by the dataset modules: where the data lives and what one sample is."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "NUCSEG_DATA"

# The repository root when the package is used from a source checkout (src layout):
# src/nucseg/datasets/_common.py -> parents[3].
_REPO_ROOT = Path(__file__).resolve().parents[3]


def _candidate_roots() -> list[Path]:
    """Default places for the datasets, in the order they are tried."""
    candidates = [
        Path.cwd().parent / "shared" / "datasets",
        _REPO_ROOT.parent / "shared" / "datasets",
        Path.cwd() / "shared" / "datasets",
        _REPO_ROOT / "shared" / "datasets",
    ]
    unique: list[Path] = []
    for path in candidates:
        if path.resolve() not in unique:
            unique.append(path.resolve())
    return unique


def data_root() -> Path:
    """Return the folder that holds the datasets (``monuseg/``, ``tnbc/``).

    The environment variable ``NUCSEG_DATA`` wins when set. Otherwise the first existing folder
    among ``../shared/datasets`` relative to the current working directory, ``../shared/datasets``
    relative to the repository root, then ``shared/datasets`` inside either of them.

    Returns
    -------
    Path
        The datasets folder.

    Raises
    ------
    FileNotFoundError
        If ``NUCSEG_DATA`` names a missing folder, or none of the default folders exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env!r} is not a folder; point it at the datasets")
        return path
    candidates = _candidate_roots()
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"datasets folder not found; tried {tried}. Set {ENV_VAR} to the folder that holds "
        "monuseg/ and tnbc/"
    )


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated image.

    Unpacks as ``(id, image, labels)``, so ``for id, image, labels in load(...)`` works.

    Attributes
    ----------
    id : str
        Image identifier within its dataset (e.g. ``"TCGA-A7-A13E-01Z-00-DX1"``, ``"01_1"``).
    image : ndarray
        ``(H, W, 3) uint8`` RGB image.
    labels : ndarray
        ``(H, W) int32`` instance labels, 0 = background, nuclei 1..N consecutive.
    organ : str
        Organ of origin (``"unknown"`` where the dataset does not say).
    dataset : str
        Dataset name (``"monuseg"``, ``"tnbc"``, ``"consep"``, ``"folder"``...).
    mpp : float or None
        Microns per pixel where the dataset states it (None: unknown, or the 40x of the
        paper's sets, which need no resampling for the bundled models).
    types : dict of int to int, or None
        Nucleus type of each label where the dataset has them (CoNSeP: 1 other,
        2 inflammatory, 3 epithelial, 4 spindle-shaped), else None.
    """

    id: str
    image: np.ndarray
    labels: np.ndarray
    organ: str
    dataset: str
    mpp: float | None = None
    types: dict[int, int] | None = None

    def __iter__(self) -> Iterator[object]:
        yield self.id
        yield self.image
        yield self.labels
