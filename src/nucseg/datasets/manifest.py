"""Dataset manifests: read ``MANIFEST.tsv`` and verify the files it lists against their sha256.

Each dataset folder under the data root holds a tab-separated ``MANIFEST.tsv`` with one row per
image (see ``shared/datasets/README.md``):

- ``monuseg``: id, split, organ, n_nuclei, annotation (``xml`` or ``labels``), sha256_image,
  sha256_annotation, source. Files: ``images/<id>.tif`` and ``annotations/<id>.xml`` or
  ``labels/<id>.png``.
- ``tnbc``: id, patient, n_nuclei_8conn, sha256_image, sha256_mask, source. Files:
  ``Slide_<patient>/<id>.png`` and ``GT_<patient>/<id>.png``.

An optional ``image_file`` column gives another image path relative to the dataset folder: the
compact packs of :mod:`nucseg.datasets.pack` store WebP images there.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from nucseg.datasets._common import data_root

MANIFEST = "MANIFEST.tsv"
COLUMNS = {
    "monuseg": ("id", "split", "organ", "n_nuclei", "annotation", "sha256_image",
                "sha256_annotation"),
    "tnbc": ("id", "patient", "n_nuclei_8conn", "sha256_image", "sha256_mask"),
    **{name: ("id", "split", "organ", "n_nuclei", "magnification", "approx_mpp",
              "sha256_image", "sha256_label") for name in ("consep", "cpm15", "dsb2018-he")},
}  # fmt: skip
#: Image suffix of the labelled datasets (``images/<id><suffix>``).
LABELLED_SUFFIX = {"consep": ".webp", "cpm15": ".png", "dsb2018-he": ".png"}
STATUSES = ("ok", "missing", "checksum mismatch", "unlisted")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class VerifyRow:
    """Result of checking one file: ``status`` is one of :data:`STATUSES`.

    ``id`` is empty for an unlisted file; ``file`` is relative to the dataset folder.
    """

    id: str
    file: str
    status: str


def _dataset_dir(name: str, root: str | Path | None) -> Path:
    if name not in COLUMNS:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(COLUMNS)}")
    return (Path(root) if root is not None else data_root()) / name


def read_manifest(name: str, root: str | Path | None = None) -> list[dict[str, str]]:
    """Read the manifest of dataset ``name`` into one dict per row, in file order.

    Parameters
    ----------
    name : str
        ``"monuseg"`` or ``"tnbc"``.
    root : str or Path, optional
        The data root holding the dataset folders; default :func:`nucseg.datasets.data_root`.

    Returns
    -------
    list of dict
        Column name -> value (strings).

    Raises
    ------
    KeyError
        For an unknown dataset name.
    FileNotFoundError
        If the manifest is missing.
    ValueError
        If a required column is missing or an id is repeated.
    """
    path = _dataset_dir(name, root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in COLUMNS[name] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [dict(row) for row in reader]
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise ValueError(f"{path}: id {row['id']!r} is listed twice")
        seen.add(row["id"])
    return rows


def image_file(name: str, row: dict[str, str]) -> str:
    """Path of a manifest row's image, relative to the dataset folder."""
    if row.get("image_file"):
        return row["image_file"]
    if name == "monuseg":
        return f"images/{row['id']}.tif"
    if name == "tnbc":
        return f"Slide_{row['patient']}/{row['id']}.png"
    if name in LABELLED_SUFFIX:
        return f"images/{row['id']}{LABELLED_SUFFIX[name]}"
    raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(COLUMNS)}")


def listed_files(name: str, row: dict[str, str]) -> list[tuple[str, str]]:
    """Return ``(relative path, sha256)`` of the image and annotation files of a manifest row."""
    image_id = row["id"]
    if name == "monuseg":
        folders = {"xml": ("annotations", ".xml"), "labels": ("labels", ".png")}
        if row["annotation"] not in folders:
            raise ValueError(
                f"monuseg manifest, {image_id}: annotation must be 'xml' or 'labels', "
                f"got {row['annotation']!r}"
            )
        folder, suffix = folders[row["annotation"]]
        return [
            (image_file(name, row), row["sha256_image"]),
            (f"{folder}/{image_id}{suffix}", row["sha256_annotation"]),
        ]
    if name == "tnbc":
        patient = row["patient"]
        return [
            (image_file(name, row), row["sha256_image"]),
            (f"GT_{patient}/{image_id}.png", row["sha256_mask"]),
        ]
    if name in LABELLED_SUFFIX:
        files = [
            (image_file(name, row), row["sha256_image"]),
            (f"labels/{image_id}.png", row["sha256_label"]),
        ]
        if name == "consep":  # the types carry no checksum in the manifest: listed, not hashed
            files.append((f"types/{image_id}.tsv", ""))
        return files
    raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(COLUMNS)}")


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(name: str, root: str | Path | None = None) -> list[VerifyRow]:
    """Check every file listed in a dataset's manifest, and look for files it does not list.

    Parameters
    ----------
    name : str
        ``"monuseg"`` or ``"tnbc"``.
    root : str or Path, optional
        The data root holding the dataset folders; default :func:`nucseg.datasets.data_root`.

    Returns
    -------
    list of VerifyRow
        The listed files in manifest order (``"ok"``, ``"missing"`` or ``"checksum mismatch"``),
        then files on disk that the manifest does not list (``"unlisted"``, sorted). The
        manifest itself and hidden files (names starting with ``.``) are not reported.
    """
    folder = _dataset_dir(name, root)
    results: list[VerifyRow] = []
    listed: set[str] = set()
    for row in read_manifest(name, root=folder.parent):
        for rel, expected in listed_files(name, row):
            listed.add(rel)
            path = folder / rel
            if not path.is_file():
                status = "missing"
            elif expected and sha256_file(path) != expected.lower():
                status = "checksum mismatch"
            else:
                status = "ok"
            results.append(VerifyRow(id=row["id"], file=rel, status=status))
    on_disk = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for rel in on_disk:
        if rel != MANIFEST and rel not in listed:
            results.append(VerifyRow(id="", file=rel, status="unlisted"))
    return results
