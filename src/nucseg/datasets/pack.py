"""A compact copy of the datasets for machines that get only a small working tree (a GPU box).

``nucseg datasets pack OUT`` writes, under ``OUT``, a data root that :func:`nucseg.datasets.load`
reads like the original (point ``NUCSEG_DATA`` at it):

- ``monuseg/``: the paper's 36 training images as WebP at ``quality`` (95: visually lossless, a
  tenth of the TIFF size), the 8 test images as lossless WebP, every image's instance labels as a
  16-bit PNG (the XML polygons rasterised exactly as :func:`nucseg.datasets.read_monuseg` does);
- ``tnbc/`` (with ``--tnbc``): the 50 images as lossless WebP, the masks copied byte for byte.

Each dataset gets a ``MANIFEST.tsv`` with the original columns, an ``image_file`` column and the
sha256 of the packed files, so ``nucseg datasets verify`` checks a pack too. Test images are
lossless, so scores on a pack equal scores on the original; the lossy training images change
what a model learns a little (noted in the run's provenance by the data root).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from nucseg.datasets import monuseg, tnbc
from nucseg.datasets._common import data_root
from nucseg.datasets.manifest import MANIFEST, read_manifest, sha256_file
from nucseg.io import atomic_write


def _write_webp(path: Path, image: np.ndarray, quality: int | None) -> None:
    """RGB image as WebP: lossy at ``quality`` (0-100), lossless when ``quality`` is None."""
    params = [cv2.IMWRITE_WEBP_QUALITY, 101 if quality is None else int(quality)]  # 101: lossless
    ok, encoded = cv2.imencode(".webp", image[..., ::-1], params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode WebP")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _write_label_png(path: Path, labels: np.ndarray) -> None:
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: {labels.max()} labels do not fit a 16-bit PNG")
    ok, encoded = cv2.imencode(".png", labels.astype(np.uint16))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_write(path, overwrite=True) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def pack(
    out: str | Path,
    *,
    root: str | Path | None = None,
    quality: int = 95,
    include_tnbc: bool = False,
    ids: dict[str, list[str]] | None = None,
    monuseg_split: str = "all",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write a compact data root under ``out``; returns the bytes written per dataset.

    ``monuseg_split`` packs one MoNuSeg split only (``"train"``: what training needs;
    ``"test"``: what evaluation needs); ``ids`` restricts a dataset to the listed image ids (e.g.
    for tests). Default: everything.

    Raises
    ------
    FileExistsError
        If ``out`` holds a pack already and ``overwrite`` is False.
    """
    out = Path(out)
    source = Path(root) if root is not None else data_root()
    names = ["monuseg", "tnbc"] if include_tnbc else ["monuseg"]
    existing = [out / name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    for folder in existing:
        shutil.rmtree(folder)
    sizes = {}
    test_ids = set(monuseg.monuseg_ids("test", root=source))
    rows = []

    keep = set(monuseg.monuseg_ids(monuseg_split, root=source))

    def chosen(name: str) -> list[dict[str, str]]:
        rows = read_manifest(name, source)
        rows = [r for r in rows if r["id"] in keep] if name == "monuseg" else rows
        return rows if ids is None or name not in ids else [r for r in rows if r["id"] in ids[name]]

    for row in tqdm(chosen("monuseg"), desc="pack monuseg", disable=not progress):
        image, labels, _ = monuseg.read_monuseg(row["id"], root=source)
        image_path = f"images/{row['id']}.webp"
        _write_webp(out / "monuseg" / image_path, image, None if row["id"] in test_ids else quality)
        _write_label_png(out / "monuseg" / "labels" / f"{row['id']}.png", labels)
        rows.append({**row, "annotation": "labels", "image_file": image_path,
                     "sha256_image": sha256_file(out / "monuseg" / image_path),
                     "sha256_annotation": sha256_file(out / "monuseg" / "labels" /
                                                      f"{row['id']}.png")})  # fmt: skip
    _write_manifest(out / "monuseg" / MANIFEST, rows)
    if include_tnbc:
        rows = []
        for row in tqdm(chosen("tnbc"), desc="pack tnbc", disable=not progress):
            image, _ = tnbc.read_tnbc(row["id"], root=source)
            image_path = f"Slide_{row['patient']}/{row['id']}.webp"
            _write_webp(out / "tnbc" / image_path, image, None)
            mask = f"GT_{row['patient']}/{row['id']}.png"
            (out / "tnbc" / mask).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / "tnbc" / mask, out / "tnbc" / mask)
            rows.append({**row, "image_file": image_path,
                         "sha256_image": sha256_file(out / "tnbc" / image_path)})  # fmt: skip
        _write_manifest(out / "tnbc" / MANIFEST, rows)
    for name in names:
        sizes[name] = sum(p.stat().st_size for p in (out / name).rglob("*") if p.is_file())
    return sizes
