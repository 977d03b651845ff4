"""Datasets laid out as ``images/`` + ``labels/`` (+ ``types/``) with a manifest: CoNSeP, CPM-15
and the stained brightfield images of DSB-2018 (see ``shared/datasets/README.md``).

- ``consep`` (Graham et al. 2019): 41 colorectal tiles of 1000 x 1000 pixels at 40x from
  UHCW (not TCGA), lossless WebP images, CoNSeP's split ``"train"`` (27) / ``"test"`` (14),
  and a nucleus type for every label (``types/<id>.tsv``: 1 other, 2 inflammatory,
  3 epithelial, 4 spindle-shaped, HoVer-Net's four CoNSeP classes).
- ``cpm15`` (Vu et al. 2019): 15 TCGA tiles of glioblastoma and head-and-neck carcinoma, 7 at
  20x (``"20x"``, 0.5 um/px) and 8 at 40x (``"40x"``, 0.25 um/px).
- ``dsb2018-he`` (Caicedo et al. 2019): 107 stained brightfield tiles of 320 x 256 pixels,
  resolution unknown (``mpp`` None: taken as they are).

Each :class:`~nucseg.datasets.Sample` carries its ``mpp`` (the manifest's ``approx_mpp``) and, for
CoNSeP, ``types``. None of them is breast tissue.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from nucseg.datasets._common import Sample, data_root
from nucseg.datasets._read import read_label_file, read_rgb
from nucseg.datasets.manifest import read_manifest

#: Dataset name -> its splits (besides ``"all"``) as ``split -> (manifest column, value)``.
SPLITS: dict[str, dict[str, tuple[str, str]]] = {
    "consep": {"train": ("split", "train"), "test": ("split", "test")},
    "cpm15": {"20x": ("magnification", "20"), "40x": ("magnification", "40")},
    "dsb2018-he": {},
}
#: HoVer-Net's CoNSeP classes, by the value in ``types/<id>.tsv``.
CONSEP_TYPES = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}


def splits(name: str) -> tuple[str, ...]:
    """The split names of a labelled dataset, ``"all"`` last."""
    return (*SPLITS[name], "all")


def _folder(name: str, root: str | Path | None) -> Path:
    return (Path(root) if root is not None else data_root()) / name


@cache
def _rows(name: str, folder: Path) -> dict[str, dict[str, str]]:
    return {row["id"]: row for row in read_manifest(name, folder.parent)}


def labelled_ids(name: str, split: str = "all", *, root: str | Path | None = None) -> list[str]:
    """Sorted ids of a split (``KeyError`` listing the splits for an unknown one)."""
    if split not in splits(name):
        raise KeyError(f"unknown {name} split {split!r}; valid splits: {', '.join(splits(name))}")
    rows = _rows(name, _folder(name, root).resolve())
    if split == "all":
        return sorted(rows)
    column, value = SPLITS[name][split]
    return sorted(i for i, row in rows.items() if row[column] == value)


def image_path(folder: Path, image_id: str) -> Path:
    """The image file of ``image_id``: ``images/<id>.webp`` or ``.png``."""
    for suffix in (".webp", ".png"):
        path = folder / "images" / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no image for {image_id!r} in {folder / 'images'} (.webp or .png)")


def read_types(path: Path) -> dict[int, int]:
    """``label -> type`` from a two-column TSV with the header ``label<TAB>type``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[0].strip().split("\t") != ["label", "type"]:
        raise ValueError(f"{path}: expected the header 'label<TAB>type', got {lines[0]!r}")
    types = {}
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            label, kind = line.split("\t")
            types[int(label)] = int(kind)
            if types[int(label)] not in CONSEP_TYPES:
                raise ValueError(f"{path}, line {number}: type {kind!r} is not one of 1-4")
    return types


def load_labelled_sample(name: str, image_id: str, *, root: str | Path | None = None) -> Sample:
    """Read one image with its labels, resolution and (CoNSeP) types."""
    folder = _folder(name, root)
    row = _rows(name, folder.resolve())[image_id]
    image = read_rgb(image_path(folder, image_id))
    labels = read_label_file(folder / "labels" / f"{image_id}.png").astype(np.int32)
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"{name} {image_id}: labels {labels.shape} do not match the image {image.shape[:2]}"
        )
    types_file = folder / "types" / f"{image_id}.tsv"
    types = read_types(types_file) if types_file.is_file() else None
    mpp = None if row["approx_mpp"] in ("", "unknown") else float(row["approx_mpp"])
    return Sample(image_id, image, labels, row["organ"], name, mpp=mpp, types=types)
