"""Public H&E nuclei datasets as ``(id, image, labels)`` samples.

Images are ``(H, W, 3) uint8`` RGB, labels ``(H, W) int32`` with 0 = background and nuclei 1..N.
The data live under :func:`data_root` (``NUCSEG_DATA``, default ``../shared/datasets``); see
``shared/datasets/README.md`` for the layout and :mod:`nucseg.datasets.monuseg`,
:mod:`nucseg.datasets.tnbc` for how each dataset is turned into instance labels.

>>> for image_id, image, labels in load("tnbc"):  # doctest: +SKIP
...     print(image_id, image.shape, labels.max())

Datasets and splits
-------------------
- ``"monuseg"``: ``"breast"`` (the paper's test set: 8 breast images), ``"nonbreast"`` (the
  paper's training set: the other 36), ``"challenge-train"`` (30), ``"challenge-test"`` (14),
  ``"all"`` (44); ``"test"`` and ``"train"`` are the old names of ``"breast"`` and
  ``"nonbreast"``.
- ``"tnbc"``: ``"test"`` and ``"all"`` (the same 50 images; TNBC is only ever a test set).
- ``"consep"``: ``"train"`` (27), ``"test"`` (14), ``"all"``; samples carry nucleus ``types``.
- ``"cpm15"``: ``"20x"`` (7, 0.5 um/px), ``"40x"`` (8), ``"all"``.
- ``"dsb2018-he"``: ``"all"`` (107 stained brightfield tiles, resolution unknown).
  (:mod:`nucseg.datasets.labelled`; samples carry their ``mpp``.)
- A folder of images and labels: :func:`load_folder`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from nucseg.datasets import labelled, monuseg, tnbc
from nucseg.datasets._common import Sample, data_root
from nucseg.datasets.folder import load_folder
from nucseg.datasets.monuseg import AnnotationReport, read_monuseg, xml_to_labels
from nucseg.datasets.tnbc import read_tnbc

__all__ = [
    "EVAL_DATASETS",
    "AnnotationReport",
    "Sample",
    "data_root",
    "ids",
    "load",
    "load_folder",
    "load_sample",
    "read_monuseg",
    "read_tnbc",
    "resolve_eval_dataset",
    "xml_to_labels",
]


@dataclass(frozen=True)
class _Dataset:
    splits: tuple[str, ...]
    ids: Callable[..., list[str]]
    load_sample: Callable[..., Sample]


DATASETS: dict[str, _Dataset] = {
    monuseg.NAME: _Dataset(monuseg.SPLITS, monuseg.monuseg_ids, monuseg.load_monuseg_sample),
    tnbc.NAME: _Dataset(tnbc.SPLITS, tnbc.tnbc_ids, tnbc.load_tnbc_sample),
    **{
        name: _Dataset(
            labelled.splits(name),
            functools.partial(labelled.labelled_ids, name),
            functools.partial(labelled.load_labelled_sample, name),
        )
        for name in labelled.SPLITS
    },
}

EVAL_DATASETS: dict[str, tuple[str, str]] = {
    "monuseg-breast": ("monuseg", "breast"),
    "monuseg-nonbreast": ("monuseg", "nonbreast"),
    "monuseg-challenge-train": ("monuseg", "challenge-train"),
    "monuseg-challenge-test": ("monuseg", "challenge-test"),
    "monuseg": ("monuseg", "all"),
    "tnbc": ("tnbc", "all"),
    "consep-train": ("consep", "train"),
    "consep-test": ("consep", "test"),
    "consep": ("consep", "all"),
    "cpm15": ("cpm15", "all"),
    "cpm15-20x": ("cpm15", "20x"),
    "cpm15-40x": ("cpm15", "40x"),
    "dsb2018-he": ("dsb2018-he", "all"),
}
"""Evaluation dataset names (as used by the CLI) -> ``(dataset, split)``: ``DATASET-SPLIT``."""

#: Former command-line names whose meaning clashed with the API's split names: refused.
_AMBIGUOUS = {
    "monuseg-test": "monuseg-challenge-test (the challenge's 14 test images) or monuseg-breast "
    "(the paper's 8 breast test images)",
    "monuseg-train": "monuseg-challenge-train (the challenge's 30 training images) or "
    "monuseg-nonbreast (the paper's 36 training images)",
}


def _dataset(name: str) -> _Dataset:
    if name not in DATASETS:
        hint = "; for a folder of images and labels use load_folder()" if name == "folder" else ""
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}{hint}")
    return DATASETS[name]


def _check_split(name: str, split: str) -> None:
    splits = _dataset(name).splits
    if split not in splits:
        raise KeyError(f"unknown {name} split {split!r}; valid splits: {', '.join(splits)}")


def ids(name: str, *, split: str = "test", root: str | Path | None = None) -> list[str]:
    """Sorted image ids of a dataset split.

    Parameters
    ----------
    name : str
        ``"monuseg"`` or ``"tnbc"``.
    split : str, optional
        See the module docstring.
    root : str or Path, optional
        The data root holding the dataset folders; default :func:`data_root`.

    Raises
    ------
    KeyError
        For an unknown dataset or split; the message lists the valid ones.
    """
    _check_split(name, split)
    return _dataset(name).ids(split, root=root)


def load_sample(name: str, image_id: str, *, root: str | Path | None = None) -> Sample:
    """Read one image of a dataset by id; ``KeyError`` (listing the ids) for an unknown id."""
    all_ids = ids(name, split="all", root=root)
    if image_id not in all_ids:
        raise KeyError(f"unknown {name} id {image_id!r}; valid ids: {', '.join(all_ids)}")
    return _dataset(name).load_sample(image_id, root=root)


def load(
    name: str,
    *,
    split: str = "test",
    root: str | Path | None = None,
    progress: bool = False,
) -> Iterator[Sample]:
    """Iterate over the samples of a dataset split, reading one image at a time.

    Parameters
    ----------
    name : str
        ``"monuseg"`` or ``"tnbc"``.
    split : str, optional
        See the module docstring; default ``"test"``.
    root : str or Path, optional
        The data root holding the dataset folders; default :func:`data_root`.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    iterator of Sample
        In the order of :func:`ids`. Each unpacks as ``(id, image, labels)``.

    Raises
    ------
    KeyError
        At call time, for an unknown dataset or split.
    """
    chosen = ids(name, split=split, root=root)
    return _iter_samples(name, chosen, root=root, progress=progress)


def _iter_samples(
    name: str, chosen: list[str], *, root: str | Path | None, progress: bool
) -> Iterator[Sample]:
    read = _dataset(name).load_sample
    for image_id in tqdm(chosen, desc=f"load {name}", unit="image", disable=not progress):
        yield read(image_id, root=root)


def resolve_eval_dataset(name: str) -> tuple[str, str]:
    """Map an evaluation dataset name (see :data:`EVAL_DATASETS`) to ``(dataset, split)``."""
    if name in _AMBIGUOUS:
        raise KeyError(f"evaluation dataset {name!r} is ambiguous; use {_AMBIGUOUS[name]}")
    if name not in EVAL_DATASETS:
        raise KeyError(
            f"unknown evaluation dataset {name!r}; valid names: {', '.join(EVAL_DATASETS)}"
        )
    return EVAL_DATASETS[name]
