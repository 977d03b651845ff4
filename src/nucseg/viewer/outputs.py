"""What ``nucseg view PATH`` shows: the slides or images of a run's output folder.

``PATH`` may be one slide's folder (``OUT/<slide>/``, written by ``nucseg slide``), a folder of
them (a cohort, ``OUT/``), or a ``nucseg segment`` output folder (``NAME_nuclei.csv`` and
``NAME_nuclei.geojson`` per image; the images themselves are found in ``--source``, since that
command records no input path). Each becomes an :class:`Item`; nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from nucseg.slide.htmlreport import flagged_chunks

__all__ = ["Item", "find_items"]

_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class Item:
    """One slide or image to show.

    Attributes
    ----------
    name : str
        URL-safe key (unique within the viewer).
    title : str
        What the page shows.
    slide : pathlib.Path
        The slide or image file read for the tiles.
    folder : pathlib.Path
        Where its outputs are.
    kind : {"slide", "image"}
        A ``nucseg slide`` run, or one image of ``nucseg segment``.
    mpp : float or None
        Microns per level-0 pixel (None: unknown; no scale bar).
    report : dict or None
        ``report.json`` of a slide run.
    flags : list of dict
        Flagged chunks: level-0 ``x``, ``y``, ``w``, ``h``, ``chunk`` and ``warnings``.
    """

    name: str
    title: str
    slide: Path
    folder: Path
    kind: str
    mpp: float | None
    report: dict[str, Any] | None = None
    flags: tuple[dict[str, Any], ...] = ()

    def nuclei(self) -> Any:
        """Load the nuclei (:class:`nucseg.viewer.nuclei.NucleiLayer`)."""
        from nucseg.viewer.nuclei import NucleiLayer

        if self.kind == "slide":
            geojson = next(
                (p for p in (self.folder / "nuclei.geojson", self.folder / "nuclei.geojson.gz")
                 if p.is_file()), None,
            )  # fmt: skip
            return NucleiLayer.from_parquet(self.folder / "nuclei.parquet", geojson=geojson)
        stem = self.title
        return NucleiLayer.from_segment_csv(
            self.folder / f"{stem}_nuclei.csv", self.folder / f"{stem}_nuclei.geojson", mpp=self.mpp
        )


def _is_slide_folder(folder: Path) -> bool:
    return (folder / "report.json").is_file() and (folder / "nuclei.parquet").is_file()


def _slide_item(folder: Path, source: Path | None) -> Item:
    file = folder / "report.json"
    try:
        report = json.loads(file.read_text())
        recorded = Path(report["slide"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{file}: not a nucseg slide report ({err})") from None
    slide = recorded
    if not slide.is_file() and source is not None:
        slide = source / recorded.name
    if not slide.is_file():
        where = f" nor in --source {source}" if source is not None else ""
        raise FileNotFoundError(
            f"{file}: the slide {recorded} is not there{where}; pass --source FOLDER "
            "(the folder that holds it now)"
        )
    return Item(
        name=_key(folder.name),
        title=folder.name,
        slide=slide,
        folder=folder,
        kind="slide",
        mpp=report.get("mpp"),
        report=report,
        flags=tuple(flagged_chunks(report)),
    )


def _segment_items(folder: Path, source: Path | None, mpp: float | None) -> list[Item]:
    from nucseg.slide.reader import file_mpp

    stems = sorted(p.name[: -len("_nuclei.csv")] for p in folder.glob("*_nuclei.csv"))
    if source is None:
        raise ValueError(
            f"{folder}: a `nucseg segment` output ({len(stems)} images) records no image paths; "
            "pass --source FOLDER (the images it segmented)"
        )
    items = []
    for stem in stems:
        image = next((source / f"{stem}{s}" for s in _IMAGE_SUFFIXES
                      if (source / f"{stem}{s}").is_file()), None)  # fmt: skip
        if image is None:
            raise FileNotFoundError(f"--source {source}: no image named {stem}.* (for {folder})")
        if not (folder / f"{stem}_nuclei.geojson").is_file():
            raise FileNotFoundError(f"{folder / (stem + '_nuclei.geojson')}: no such file")
        items.append(
            Item(
                name=_key(stem),
                title=stem,
                slide=image,
                folder=folder,
                kind="image",
                mpp=mpp if mpp is not None else file_mpp(image),
            )  # fmt: skip
        )
    return items


def find_items(
    path: str | Path, *, source: str | Path | None = None, mpp: float | None = None
) -> list[Item]:
    """The slides or images of an output folder (see the module docstring).

    Raises
    ------
    FileNotFoundError
        If ``path`` or a slide it names is missing.
    ValueError
        If ``path`` holds no nucseg outputs, or a segment output is given without ``source``.
    """
    path = Path(path)
    source = Path(source) if source is not None else None
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (give OUT/<slide> or OUT)")
    if source is not None and not source.is_dir():
        raise FileNotFoundError(f"--source {source}: no such folder")
    if _is_slide_folder(path):
        return [_slide_item(path, source)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and _is_slide_folder(p))
    if folders:
        return [_slide_item(folder, source) for folder in folders]
    if any(path.glob("*_nuclei.csv")):
        return _segment_items(path, source, mpp)
    raise ValueError(
        f"{path}: no nucseg outputs here (report.json and nuclei.parquet of `nucseg slide`, "
        "in this folder or its subfolders, or *_nuclei.csv of `nucseg segment`)"
    )


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
