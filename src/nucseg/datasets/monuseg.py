"""MoNuSeg 2018: 44 H&E tiles of 1000x1000 pixels with nucleus polygons.

Layout under ``<root>/monuseg`` (see ``shared/datasets/README.md``): ``images/<ID>.tif`` and, per
the manifest's ``annotation`` column, either ``annotations/<ID>.xml`` (Aperio XML, 27 images) or
``labels/<ID>.png`` (uint16 instance labels, 17 images).

XML to labels
-------------
Every ``Region`` with at least 3 vertices is one nucleus. Vertex ``X`` is the column and ``Y`` the
row, 0-based. A polygon covers the pixels whose centres lie inside it
(:func:`skimage.draw.polygon`), clipped to the image. Where polygons overlap, the *smaller*
nucleus keeps the pixel: polygons are painted in order of decreasing area (shoelace area of the
vertices), ties broken by region order in the file, each overwriting what is below. This is the
rule the label PNGs were built with. Labels are then renumbered 1..N in region order.

Regions that yield no label are counted, never silently lost (:class:`AnnotationReport`):
``n_few_vertices`` (fewer than 3 vertices), ``n_empty`` (no pixel centre inside, e.g. tiny or
outside the image) and ``n_hidden`` (every pixel taken by smaller overlapping nuclei).

Splits
------
``"breast"``/``"nonbreast"``: the paper's protocol (Lagree et al. 2021): test on the 8 breast
images of :data:`PAPER_TEST_CASES`, train on the other 36 (``"test"``/``"train"`` are kept as
their old names; the command line has no ``monuseg-test``, which meant the challenge's test set).
``"challenge-train"`` (30) and ``"challenge-test"`` (14): the challenge's own split. ``"all"``:
the 44 images.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon
from skimage.segmentation import relabel_sequential

from nucseg.datasets._common import Sample, data_root
from nucseg.datasets._read import read_label_file, read_rgb
from nucseg.datasets.manifest import image_file, read_manifest

log = logging.getLogger(__name__)

NAME = "monuseg"
SPLITS = ("breast", "nonbreast", "challenge-train", "challenge-test", "all", "test", "train")
#: The paper's splits under their old names (``split="test"`` always meant the 8 breast images).
ALIASES = {"test": "breast", "train": "nonbreast"}
PAPER_TEST_CASES = (
    "TCGA-A7-A13E", "TCGA-A7-A13F", "TCGA-AR-A1AK", "TCGA-AR-A1AS",
    "TCGA-E2-A1B5", "TCGA-E2-A14V", "TCGA-AC-A2FO", "TCGA-AO-A0J2",
)  # fmt: skip


@dataclass(frozen=True)
class AnnotationReport:
    """What became of the annotated nuclei of one image.

    Attributes
    ----------
    source : str
        ``"xml"`` or ``"labels"``.
    n_regions : int
        ``Region`` elements in the XML (for ``"labels"``: objects in the label image).
    n_few_vertices, n_empty, n_hidden : int
        Regions dropped: fewer than 3 vertices; covering no pixel centre; hidden by smaller
        overlapping nuclei. Always 0 for ``"labels"``.
    n_labels : int
        Objects in the returned label image.
    """

    source: str
    n_regions: int
    n_few_vertices: int
    n_empty: int
    n_hidden: int
    n_labels: int


def shoelace_area(rows: np.ndarray, cols: np.ndarray) -> float:
    """Area enclosed by a polygon given by its vertex coordinates (shoelace formula)."""
    return 0.5 * abs(float(np.dot(cols, np.roll(rows, -1)) - np.dot(rows, np.roll(cols, -1))))


def read_regions(path: str | Path) -> list[np.ndarray]:
    """Return the vertices of every ``Region`` of an Aperio XML file, in file order.

    Each entry is a ``(n, 2) float64`` array of ``(row, column)`` = ``(Y, X)``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not well-formed XML, not an Aperio ``Annotations`` document, or a vertex
        lacks a finite numeric ``X`` or ``Y``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such annotation file: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from None
    if root.tag != "Annotations":
        raise ValueError(f"{path}: expected an Aperio <Annotations> document, got <{root.tag}>")
    regions = []
    for k, region in enumerate(root.iter("Region")):
        points = []
        for vertex in region.iter("Vertex"):
            try:
                points.append((float(vertex.attrib["Y"]), float(vertex.attrib["X"])))
            except (KeyError, ValueError):
                raise ValueError(
                    f"{path}: region {k} (Id={region.get('Id')!r}) has a vertex without numeric "
                    f"X and Y: {vertex.attrib}"
                ) from None
        vertices = np.array(points, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(vertices).all():
            raise ValueError(f"{path}: region {k} (Id={region.get('Id')!r}): non-finite vertex")
        regions.append(vertices)
    return regions


def xml_to_labels(path: str | Path, shape: tuple[int, ...]) -> tuple[np.ndarray, AnnotationReport]:
    """Rasterise the nucleus polygons of an Aperio XML file into an instance label image.

    See the module docstring for the conventions (vertex X = column, pixel centres inside the
    polygon, the smaller nucleus keeps overlapping pixels, labels in region order).

    Parameters
    ----------
    path : str or Path
        The XML file.
    shape : tuple of int
        ``(H, W)`` of the image (a trailing channel axis is ignored).

    Returns
    -------
    labels : ndarray
        ``(H, W) int32``, 0 = background, nuclei 1..N in region order.
    report : AnnotationReport
        Counts of regions kept and dropped.
    """
    height, width = (int(n) for n in shape[:2])
    regions = read_regions(path)
    valid = [k for k, v in enumerate(regions) if len(v) >= 3]
    areas = {k: shoelace_area(regions[k][:, 0], regions[k][:, 1]) for k in valid}
    labels = np.zeros((height, width), dtype=np.int32)
    n_empty = 0
    for k in sorted(valid, key=lambda k: (-areas[k], k)):  # largest first: smaller ones win
        rr, cc = polygon(regions[k][:, 0], regions[k][:, 1], shape=(height, width))
        if rr.size == 0:
            n_empty += 1
        labels[rr, cc] = k + 1
    n_painted = len(valid) - n_empty
    labels = relabel_sequential(labels)[0].astype(np.int32, copy=False)
    n_labels = int(labels.max())
    report = AnnotationReport(
        source="xml",
        n_regions=len(regions),
        n_few_vertices=len(regions) - len(valid),
        n_empty=n_empty,
        n_hidden=n_painted - n_labels,
        n_labels=n_labels,
    )
    if report.n_few_vertices or report.n_empty or report.n_hidden:
        log.info(
            "%s: %d of %d regions give no label (%d with < 3 vertices, %d covering no pixel "
            "centre, %d hidden by smaller nuclei)",
            Path(path).name, len(regions) - n_labels, len(regions), report.n_few_vertices,
            report.n_empty, report.n_hidden,
        )  # fmt: skip
    return labels, report


def _folder(root: str | Path | None) -> Path:
    return (Path(root) if root is not None else data_root()) / NAME


def _manifest_row(image_id: str, root: str | Path | None) -> dict[str, str]:
    rows = {row["id"]: row for row in read_manifest(NAME, root)}
    if image_id not in rows:
        raise KeyError(f"unknown monuseg id {image_id!r}; valid ids: {', '.join(sorted(rows))}")
    return rows[image_id]


def is_paper_test(image_id: str) -> bool:
    """Whether an image belongs to the paper's test set (the 8 breast images)."""
    return any(image_id == case or image_id.startswith(case + "-") for case in PAPER_TEST_CASES)


def monuseg_ids(split: str = "breast", *, root: str | Path | None = None) -> list[str]:
    """Sorted image ids of a split (see the module docstring); ``KeyError`` for an unknown split."""
    if split not in SPLITS:
        raise KeyError(f"unknown monuseg split {split!r}; valid splits: {', '.join(SPLITS)}")
    split = ALIASES.get(split, split)
    rows = read_manifest(NAME, root)
    if split == "all":
        chosen = [r["id"] for r in rows]
    elif split in ("challenge-train", "challenge-test"):
        chosen = [r["id"] for r in rows if r["split"] == split.removeprefix("challenge-")]
    else:
        test = [r["id"] for r in rows if is_paper_test(r["id"])]
        partial_pack = any(r.get("image_file") for r in rows)  # nucseg.datasets.pack, a subset
        if len(test) != len(PAPER_TEST_CASES) and not partial_pack:
            raise ValueError(
                f"the monuseg manifest should list {len(PAPER_TEST_CASES)} paper test images "
                f"({', '.join(PAPER_TEST_CASES)}), found {len(test)}: {', '.join(test)}"
            )
        chosen = test if split == "breast" else [r["id"] for r in rows if r["id"] not in test]
    return sorted(chosen)


def read_monuseg(
    image_id: str, *, root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, AnnotationReport]:
    """Read one MoNuSeg image and its instance labels.

    Parameters
    ----------
    image_id : str
        A manifest id, e.g. ``"TCGA-A7-A13E-01Z-00-DX1"``.
    root : str or Path, optional
        The data root holding ``monuseg/``; default :func:`nucseg.datasets.data_root`.

    Returns
    -------
    image : ndarray
        ``(1000, 1000, 3) uint8`` RGB.
    labels : ndarray
        ``(1000, 1000) int32``, nuclei 1..N.
    report : AnnotationReport
        Where the labels came from and what was dropped.
    """
    row = _manifest_row(image_id, root)
    folder = _folder(root)
    image = read_rgb(folder / image_file(NAME, row))
    if row["annotation"] == "xml":
        labels, report = xml_to_labels(folder / "annotations" / f"{image_id}.xml", image.shape)
    elif row["annotation"] == "labels":
        path = folder / "labels" / f"{image_id}.png"
        labels = read_label_file(path)
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{path} has shape {labels.shape}, its image {image.shape[:2]}")
        labels = relabel_sequential(labels)[0].astype(np.int32, copy=False)
        n = int(labels.max())
        report = AnnotationReport("labels", n, 0, 0, 0, n)
    else:
        raise ValueError(
            f"monuseg manifest, {image_id}: annotation must be 'xml' or 'labels', "
            f"got {row['annotation']!r}"
        )
    return image, labels, report


def load_monuseg_sample(image_id: str, *, root: str | Path | None = None) -> Sample:
    """Read one MoNuSeg image as a :class:`~nucseg.datasets.Sample` (organ from the manifest)."""
    image, labels, _ = read_monuseg(image_id, root=root)
    organ = _manifest_row(image_id, root)["organ"]
    return Sample(id=image_id, image=image, labels=labels, organ=organ, dataset=NAME)
