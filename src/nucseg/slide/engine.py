"""The chunk engine: plan a slide's chunks, and segment one chunk into files on disk.

A slide is worked on at the *work resolution*, the model's microns per pixel. The plan
(:class:`SlidePlan`, saved as ``plan.json`` in the run folder) fixes the pyramid level read, the
resampling from it, and a grid of square chunk *cores* over the work-resolution slide; each chunk
is read with a *halo* around its core. :func:`run_chunk` is a pure function of (plan, segmenter,
chunk index): it reads the chunk, segments it, keeps each nucleus whose centroid lies in the core
(so a nucleus is kept by exactly one chunk, whole, as long as it is smaller than the halo) and
writes two files into the run folder's ``chunks/``: ``<name>.npy``, the kept nuclei as local
labels 1..n, and ``<name>.parquet``, one row per nucleus (level-0 coordinates, um units, its
GeoJSON geometry), written last, under a temporary name, so that its presence marks the chunk
done. Single-process runs loop over the chunks; a Dask run can map the same function over them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.scale import resize_image, scale_factor
from nucseg.slide.chunkio import chunk_name
from nucseg.slide.reader import SlideReader, open_slide
from nucseg.slide.tissue import (  # noqa: F401  (re-exported: the engine's tissue test)
    BLACK_LEVEL,
    _mask_box,
    mask_boxes,
    stained,
    tissue_box,
)

log = logging.getLogger(__name__)

__all__ = [
    "ChunkSegmenter",
    "SlidePlan",
    "chunk_done",
    "chunk_task",
    "chunk_name",
    "fit_stain",
    "make_plan",
    "read_chunk",
    "read_window",
    "tissue_box",
    "run_chunk",
]

Segmenter = Callable[[np.ndarray], np.ndarray]

#: Microns per pixel of a model whose files do not record it: every model trained by nucseg so
#: far learned from 40x MoNuSeg and TNBC images (about 0.25 um/px).
DEFAULT_MODEL_MPP = 0.25


#: Default chunk core: 4080 = 17 x 240, so that a core with its two 128-pixel halos is covered by
#: exactly 18 x 18 tiles of 256 pixels overlapping by 16; the halos then add 13 % to the pixels
#: computed (25 % for 2160-pixel cores), for a peak of about 2 GB per slide process.
DEFAULT_CHUNK = 4080


def model_mpp(folder: str | os.PathLike) -> tuple[float, str]:
    """Microns per pixel a model was trained at, and where that came from.

    Read from the ``"mpp"`` key of the model folder's ``thresholds.json``, else of its
    ``config.json``; :data:`DEFAULT_MODEL_MPP` when neither has it.
    """
    for name in ("thresholds.json", "config.json"):
        file = Path(folder) / name
        if file.is_file():
            value = json.loads(file.read_text()).get("mpp")
            if value is not None:
                return float(value), name
    return DEFAULT_MODEL_MPP, "default (not recorded by the model)"


@dataclasses.dataclass(frozen=True)
class SlidePlan:
    """Everything that decides what a chunk holds; saved as ``plan.json``.

    Attributes
    ----------
    slide : str
        Slide file.
    mpp : float
        Microns per level-0 pixel used (from the file or ``--mpp``).
    work_mpp : float
        Microns per work-resolution pixel (the model's).
    level : int
        Pyramid level read.
    scale : float
        Level-0 pixels per work pixel.
    work_shape : (int, int)
        ``(rows, cols)`` of the slide at work resolution.
    chunk, halo : int
        Core side and halo width, in work pixels.
    chunks : list of (int, int)
        ``(chunk_row, chunk_col)`` of the chunks to process (those touching tissue and ROI).
    roi_wkt : str or None
        Region of interest (level-0 pixels) as WKT; nuclei whose centroid lies outside are
        dropped.
    reads : dict or None
        Per chunk name, the ``(row0, col0, row1, col1)`` part of its window (work pixels) that
        holds tissue on the overview, with a margin: only that part is read, the rest of the
        window is glass (white). None: whole windows are read.
    """

    slide: str
    mpp: float
    work_mpp: float
    level: int
    scale: float
    work_shape: tuple[int, int]
    chunk: int
    halo: int
    chunks: list[tuple[int, int]]
    roi_wkt: str | None = None
    reads: dict[str, tuple[int, int, int, int]] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SlidePlan:
        data = json.loads(text)
        data["work_shape"] = tuple(data["work_shape"])
        data["chunks"] = [tuple(c) for c in data["chunks"]]
        if data.get("reads") is not None:
            data["reads"] = {k: tuple(v) for k, v in data["reads"].items()}
        return cls(**data)

    def core(self, index: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(row0, col0, row1, col1)`` of a chunk's core in work pixels."""
        r, c = index
        rows, cols = self.work_shape
        r0, c0 = r * self.chunk, c * self.chunk
        return r0, c0, min(r0 + self.chunk, rows), min(c0 + self.chunk, cols)

    def window(self, index: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(row0, col0, row1, col1)`` of the core plus halo, clipped to the slide."""
        r0, c0, r1, c1 = self.core(index)
        rows, cols = self.work_shape
        h = self.halo
        return max(r0 - h, 0), max(c0 - h, 0), min(r1 + h, rows), min(c1 + h, cols)

    @property
    def grid(self) -> tuple[int, int]:
        """Number of chunk rows and columns covering the slide."""
        rows, cols = self.work_shape
        return math.ceil(rows / self.chunk), math.ceil(cols / self.chunk)


def make_plan(
    reader: SlideReader,
    *,
    mpp: float,
    model_mpp: float,
    chunk: int = 4080,
    halo: int = 128,
    tissue: np.ndarray | None = None,
    tissue_downsample: float = 1.0,
    roi: Any = None,
) -> SlidePlan:
    """Choose the level, resampling and chunks of a slide.

    The level read is the coarsest one at least as fine as the model's resolution; it is
    resampled to the model's mpp by :func:`nucseg.scale.scale_factor`'s rule (not within 1 %).
    Chunks are kept if their core touches ``tissue`` (an overview mask, ``tissue_downsample``
    level-0 pixels per pixel; None keeps all).
    """
    if halo < 0 or chunk < 1:
        raise ValueError(f"chunk must be >= 1 and halo >= 0, got chunk={chunk}, halo={halo}")
    # level-0 pixels per model pixel; 1 where nucseg.scale's rule leaves the image as it is
    ratio = 1.0 if scale_factor(mpp, model_mpp) == 1.0 else model_mpp / mpp
    level = reader.best_level(ratio)
    width, height = reader.dimensions
    work_shape = (max(1, round(height / ratio)), max(1, round(width / ratio)))
    plan = SlidePlan(
        slide=str(reader.path),
        mpp=float(mpp),
        work_mpp=float(mpp * ratio),
        level=int(level),
        scale=float(ratio),
        work_shape=work_shape,
        chunk=int(chunk),
        halo=int(halo),
        chunks=[],
        roi_wkt=None if roi is None else roi.wkt,
    )
    n_rows, n_cols = plan.grid
    selected = []
    reads = {}
    f = ratio / tissue_downsample  # overview pixels per work pixel
    for r in range(n_rows):
        for c in range(n_cols):
            if tissue is None:
                selected.append((r, c))
                continue
            r0, c0, r1, c1 = plan.core((r, c))
            rows = slice(max(int(r0 * f) - 1, 0), int(math.ceil(r1 * f)) + 1)
            cols = slice(max(int(c0 * f) - 1, 0), int(math.ceil(c1 * f)) + 1)
            if tissue[rows, cols].any():
                selected.append((r, c))
                reads[chunk_name((r, c))] = _tissue_read(tissue, f, plan.window((r, c)))
    return dataclasses.replace(plan, chunks=selected, reads=reads if tissue is not None else None)


#: Work pixels read around a chunk's tissue (as seen on the overview) beyond two overview pixels.
READ_MARGIN = 64


def _tissue_read(tissue: np.ndarray, f: float, window: tuple[int, int, int, int]) -> tuple:
    """The part of ``window`` (work pixels) that holds tissue on the overview ``tissue`` (``f``
    overview pixels per work pixel), grown by two overview pixels and :data:`READ_MARGIN`."""
    w0, v0, w1, v1 = window
    rows = slice(max(int(w0 * f), 0), int(math.ceil(w1 * f)))
    cols = slice(max(int(v0 * f), 0), int(math.ceil(v1 * f)))
    part = tissue[rows, cols]
    hit_r, hit_c = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
    if not hit_r.size:
        return window
    margin = 2 / f + READ_MARGIN
    r0 = max(w0, int((rows.start + hit_r[0]) / f - margin))
    r1 = min(w1, int(math.ceil((rows.start + hit_r[-1] + 1) / f + margin)))
    c0 = max(v0, int((cols.start + hit_c[0]) / f - margin))
    c1 = min(v1, int(math.ceil((cols.start + hit_c[-1] + 1) / f + margin)))
    return (r0, c0, r1, c1)


def chunk_done(chunk_dir: str | os.PathLike, index: tuple[int, int]) -> bool:
    """Whether a chunk's files are complete (its Parquet file exists)."""
    return (Path(chunk_dir) / f"{chunk_name(index)}.parquet").is_file()


def read_window(reader: SlideReader, plan: SlidePlan, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels of the work-resolution box ``(row0, col0, row1, col1)``, ``(rows, cols, 3) uint8``."""
    r0, c0, r1, c1 = box
    level_scale = reader.downsamples[plan.level]
    x, y = round(c0 * plan.scale), round(r0 * plan.scale)
    w = max(1, round((c1 - c0) * plan.scale / level_scale))
    h = max(1, round((r1 - r0) * plan.scale / level_scale))
    return resize_image(reader.read_region(x, y, w, h, plan.level), (r1 - r0, c1 - c0))


def read_chunk(reader: SlideReader, plan: SlidePlan, index: tuple[int, int]) -> np.ndarray:
    """Pixels of a chunk's window (core and halo) at work resolution; where the plan knows the
    chunk's tissue part, only that part is read and the rest is white glass."""
    window = plan.window(index)
    part = None if plan.reads is None else plan.reads.get(chunk_name(index))
    if part is None or tuple(part) == window:
        return read_window(reader, plan, window)
    w0, v0, w1, v1 = window
    r0, c0, r1, c1 = part
    pixels = np.full((w1 - w0, v1 - v0, 3), 255, dtype=np.uint8)
    pixels[r0 - w0 : r1 - w0, c0 - v0 : c1 - v0] = read_window(reader, plan, part)
    return pixels


def engine_predictor(folder: str | os.PathLike, **predict: Any) -> Any:
    """The model of ``folder`` for the engine: the tile, overlap, thresholds and normaliser of
    its folder (:meth:`nucseg.infer.Predictor.load`), ``predict`` overriding the settings. Every
    entry point (``segment``, ``evaluate``, ``slide``, the Python API) loads a model here."""
    from nucseg.infer import Predictor

    predictor = Predictor.load(folder, **predict)
    _ = predictor.backend  # built now: a damaged model fails here; compiling overlaps other work
    return predictor


#: The tile overlap of ``nucseg slide`` and ``nucseg cohort``, in pixels of the tile, where
#: ``--overlap`` is not given (never more than the model's own): docs/slides.md's rule, on
#: results/slide/tiles.json, where 8 pixels cost 0.0014 of validation AJI against the bundled
#: model's 25 % for 0.64 times the network's pixels.
SLIDE_OVERLAP_PX = 8


@functools.lru_cache(maxsize=2)
def load_predictor(folder: str, predict_json: str) -> Any:
    """:func:`engine_predictor` for slides, loaded once per process (a Dask worker runs many
    chunks): the settings of ``predict_json``, and without an ``overlap`` among them the
    slide's (:data:`SLIDE_OVERLAP_PX`)."""
    predict = json.loads(predict_json)
    predictor = engine_predictor(folder, **predict)
    if "overlap" not in predict:
        options = predictor.options
        options["overlap"] = min(float(options["overlap"]), SLIDE_OVERLAP_PX / options["tile"])
    return predictor


class ChunkSegmenter:
    """A :class:`nucseg.infer.Predictor` with stain statistics fixed for a whole slide.

    The model's normaliser maps every chunk with the same source statistics (fitted once on the
    slide's tissue), so neighbouring chunks are normalised alike; without a normaliser or
    statistics, or when :func:`fit_stain` chose not to normalise the slide (a ``{"remedy": ...}``
    source: its stains were flagged), chunks go to the network as they are.
    """

    def __init__(
        self, predictor: Any, source: dict[str, Any] | None, *, colour_table: bool = False
    ) -> None:
        self.predictor = predictor
        self.source = None if source is None or "remedy" in source else source
        self._remedy = None if source is None else source.get("remedy")
        self.colour_table = colour_table
        #: Work pixels given to the network so far (tiles times their area, overlaps counted).
        self.network_pixels = 0

    def stain_decision(self) -> dict[str, Any] | None:
        """What was decided for the slide's stains, for the chunks' quality figures
        (:func:`nucseg.quality.assess`'s ``stain_estimate``): None when the model does not
        normalise."""
        if self._remedy is not None:
            return {"accepted": True, "remedy": self._remedy}
        if self.predictor.normaliser is None:
            return None
        return {"accepted": True}

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """The normalised pixels; with ``colour_table``, through the slide's table of all
        colours (built at the first chunk, kept for the next ones: the same pixels, faster)."""
        normaliser = self.predictor.normaliser
        if normaliser is None or self.source is None:
            return image
        if not self.colour_table:
            return normaliser.apply(image, self.source)
        from nucseg._stain_base import apply_colour_table

        return apply_colour_table(image, _colour_table(normaliser, self.source))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Labels of ``image``, segmenting only the boxes of its tissue (plus a margin:
        :func:`tissue_boxes`).

        Outside the boxes every pixel is glass, which the network is not given anyway (see
        :func:`predict_tissue_maps`): cropping spares normalising, stitching and
        post-processing it, most of a chunk at the edge of the tissue or between its pieces.
        """
        return self.labels(image.shape[:2], self.predict(image))

    def predict(self, image: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]] | None:
        """The network's part: the tissue boxes of ``image``, each with its maps (None: no
        tissue). One box holds all the tissue, unless boxes around its separate pieces
        (:func:`tissue_boxes`) cover at most :data:`PIECES_AREA` of it."""
        dark = stained(image)  # once: for the boxes, then for the tiles to skip
        boxes = tissue_boxes(dark)
        if not boxes:
            return None
        out = []
        for box in boxes:
            stats = {"network_pixels": 0}
            maps = predict_tissue_maps(self.predictor, self.normalise(image[box]),
                                       tissue=dark[box], stats=stats)  # fmt: skip
            self.network_pixels += stats["network_pixels"]
            out.append((box, maps))
        return out

    def labels(
        self,
        shape: tuple[int, int],
        predicted: list[tuple[tuple[slice, slice], np.ndarray]] | None,
    ) -> np.ndarray:
        """The post-processing part: ``(rows, cols)`` labels from :meth:`predict`'s output."""
        return self.typed_labels(shape, predicted)[0]

    def typed_labels(
        self,
        shape: tuple[int, int],
        predicted: list[tuple[tuple[slice, slice], np.ndarray]] | None,
    ) -> tuple[np.ndarray, Any]:
        """:meth:`labels` and each nucleus's voted type (:class:`nucseg.nucleus_types.
        NucleusTypes`; None for a model without a type head). The nuclei of the boxes are
        numbered box after box."""
        labels = np.zeros(shape, dtype=np.int32)
        typed = []
        count = 0  # nuclei of the boxes before
        for box, maps in predicted or ():
            part = self.predictor.maps_to_labels(maps)
            found = int(part.max(initial=0))
            if count:
                part = np.where(part > 0, part + count, 0).astype(np.int32)
            labels[box] = part
            typed.append(self.predictor.maps_to_types(maps, part))
            count += found
        if not getattr(self.predictor, "type_channels", 0):
            return labels, None
        if not typed:  # no tissue: no nucleus, typed
            channels = _output_channels(self.predictor, 1)
            return labels, self.predictor.maps_to_types(
                np.zeros((1, 1, channels), np.float32), np.zeros((1, 1), np.int32)
            )
        if len(typed) == 1:
            return labels, typed[0]
        return labels, dataclasses.replace(
            typed[0],
            labels=np.concatenate([t.labels for t in typed]),
            probs=np.concatenate([t.probs for t in typed]),
        )


#: Boxes around a chunk's separate pieces of tissue replace the one box around all of it when
#: they cover at most this fraction of its area (else one box: the same tiles as a whole image).
PIECES_AREA = 0.75


def tissue_boxes(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """Where a chunk is segmented: the box around all the tissue of ``mask`` (its
    :func:`stained` pixels) grown by :data:`TISSUE_MARGIN`, or the boxes around its separate
    pieces (:func:`nucseg.slide.tissue.mask_boxes`) when they cover at most :data:`PIECES_AREA`
    of that box; none without tissue."""
    pieces = mask_boxes(mask, margin=TISSUE_MARGIN)
    if len(pieces) <= 1:  # none, or the one box (mask_boxes gives _mask_box's then)
        return pieces
    # the one box around all the tissue: around the pieces' boxes (each its tight box grown by
    # the margin and clipped, as the whole's is), without scanning the mask again
    rows = slice(min(b[0].start for b in pieces), max(b[0].stop for b in pieces))
    cols = slice(min(b[1].start for b in pieces), max(b[1].stop for b in pieces))

    def area(box: tuple[slice, slice]) -> int:
        return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)

    whole = (rows, cols)
    return pieces if sum(map(area, pieces)) <= PIECES_AREA * area(whole) else [whole]


#: Tissue, in megapixels at work resolution, from which a slide's chunks are normalised through a
#: colour table: building it costs about as much as normalising 20 Mpx directly.
COLOUR_TABLE_MIN_MPX = 40.0

_TABLES: dict[str, np.ndarray] = {}


def _colour_table(normaliser: Any, source: dict[str, Any]) -> np.ndarray:
    """The colour table of ``normaliser`` with ``source`` (the last one built is kept)."""
    key = json.dumps([normaliser.to_dict(), source], sort_keys=True, default=str)
    if key not in _TABLES:
        _TABLES.clear()
        _TABLES[key] = normaliser.colour_table(source)
    return _TABLES[key]


#: Pixels of glass kept around the tissue's bounding box in a chunk.
TISSUE_MARGIN = 64


#: Tiles with fewer tissue pixels (:func:`stained`) than this are not given to the network; their
#: maps are pure background.
MIN_TILE_TISSUE = 16


def predict_tissue_maps(
    predictor: Any, image: np.ndarray, *, tissue: np.ndarray, stats: dict[str, int] | None = None
) -> np.ndarray:
    """:func:`nucseg.infer.predict_maps` that skips the network on tiles without tissue.

    Tiles are spread evenly with at least the settings' overlap (:func:`nucseg.tiling.spread_grid`).

    ``image`` is the (normalised) network input and ``tissue`` the raw pixels on which tissue is
    detected, as in :mod:`nucseg.slide.tissue`, or their :func:`stained` mask (2-D boolean)
    when the caller already has it. Skipped tiles contribute background probabilities, blended
    like any other tile. ``stats["network_pixels"]``, when given, grows by the pixels of the
    tiles given to the network.
    """
    from nucseg.tiling import MapStitcher, pad_to

    options = predictor.options
    tile, batch_size = int(options["tile"]), int(options["batch_size"])
    padded, crop = pad_to(image, (tile, tile))
    grid = tile_grid_for(padded.shape[:2], tile, options["overlap"])
    mask = tissue if tissue.ndim == 2 and tissue.dtype == bool else stained(tissue)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"tissue covers {mask.shape} pixels, the image {image.shape[:2]}")
    dark, _ = pad_to(mask.view(np.uint8), (tile, tile))
    tissue_pixels = [int(np.count_nonzero(dark[s])) for s in grid]
    stitcher = MapStitcher(padded.shape[:2], grid=grid)
    run = [s for s, n in zip(grid, tissue_pixels, strict=True) if n >= MIN_TILE_TISSUE]
    channels = None
    backend = predictor.backend
    types = getattr(predictor, "type_channels", 0)
    if stats is not None:
        stats["network_pixels"] = stats.get("network_pixels", 0) + len(run) * tile * tile
    for start in range(0, len(run), batch_size):
        batch = run[start : start + batch_size]
        maps = backend.predict(np.stack([padded[s] for s in batch]))  # types as probabilities
        channels = maps.shape[-1]
        for tile_map, slices in zip(maps, batch, strict=True):
            stitcher.add(tile_map, slices)
    skipped = [s for s, n in zip(grid, tissue_pixels, strict=True) if n < MIN_TILE_TISSUE]
    if skipped:
        if channels is None:
            channels = _output_channels(predictor, tile)
        background = np.zeros((tile, tile, channels), dtype=np.float32)
        background[..., 0] = 1.0
        if types:  # no type: the type head's background channel
            background[..., channels - types] = 1.0
        for slices in skipped:
            stitcher.add(background, slices)
    return np.ascontiguousarray(stitcher.result(in_place=True)[crop], dtype=np.float32)


def tile_grid_for(shape: tuple[int, int], tile: int, overlap: float) -> list[tuple[slice, slice]]:
    """The tiles of an image of ``shape`` (at least a tile a side) as the engine lays them:
    spread evenly with at least ``overlap`` (a fraction of the tile) shared by neighbours."""
    from nucseg.tiling import spread_grid

    min_overlap = min(round(overlap * tile), tile - 1)
    return spread_grid(shape, tile=tile, min_overlap=min_overlap)


def _output_channels(predictor: Any, tile: int) -> int:
    channels = getattr(predictor.backend, "out_channels", None)
    return int(predictor.num_classes if channels is None else channels)


def fit_stain(
    reader: SlideReader, plan: SlidePlan, normaliser: Any, *, samples: int = 8, policy: str = "auto"
) -> Any:
    """Source stain statistics of a slide from up to ``samples`` 512-pixel tissue windows.

    Returns None (and logs why) when the tissue holds too little stain to estimate them, and
    ``{"remedy": ...}`` (logged as a warning) when the estimate is implausible or the stains
    look swapped (:func:`nucseg.quality.stain_remedy`): the slide is then segmented as scanned,
    and report.json's ``stain.source`` says so.
    """
    if normaliser is None or not plan.chunks:
        return None
    picks = np.linspace(0, len(plan.chunks) - 1, min(samples, len(plan.chunks))).round()
    pieces = []
    for i in sorted({int(p) for p in picks}):
        r0, c0, r1, c1 = plan.core(plan.chunks[i])
        side = min(512, r1 - r0, c1 - c0)
        rc, cc = (r0 + r1 - side) // 2, (c0 + c1 - side) // 2
        pieces.append(read_window(reader, plan, (rc, cc, rc + side, cc + side)))
    sizes = {p.shape for p in pieces}
    if len(sizes) != 1:
        pieces = [p[: min(s[0] for s in sizes), : min(s[1] for s in sizes)] for p in pieces]
    from nucseg.quality import stain_remedy

    mosaic = np.concatenate(pieces, axis=0)
    source = normaliser.estimate(mosaic)
    remedy = stain_remedy(mosaic, source, policy=policy)
    if remedy:
        log.warning("%s: %s", plan.slide, remedy)
        return {"remedy": remedy}
    if source.get("identity"):
        log.warning(
            "%s: stain statistics not estimated (%s); chunks not normalised",
            plan.slide,
            source["reason"],
        )
        return None
    return source


def run_chunk(
    plan: SlidePlan,
    segmenter: Segmenter,
    index: tuple[int, int],
    chunk_dir: str | os.PathLike,
    *,
    reader: SlideReader | None = None,
    pixels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Segment one chunk and write its files into ``chunk_dir``.

    Parameters
    ----------
    plan : SlidePlan
        The slide's plan.
    segmenter : callable
        ``(H, W, 3) uint8 -> (H, W) int32`` instance labels.
    index : (int, int)
        Chunk row and column.
    chunk_dir : path-like
        Where ``<name>.npy`` and ``<name>.parquet`` go.
    reader : SlideReader, optional
        An open reader of ``plan.slide`` (opened here otherwise).
    pixels : array, optional
        The chunk's pixels, already read with :func:`read_chunk` (a prefetching caller).

    Returns
    -------
    dict
        ``chunk``, ``nuclei``, ``cut`` (kept nuclei touching a halo edge), ``pixels`` (core
        pixels), ``seconds``.
    """
    from nucseg.slide.chunkio import write_chunk

    start = time.perf_counter()
    if pixels is None:
        own = reader is None
        reader = open_slide(plan.slide) if own else reader
        try:
            pixels = read_chunk(reader, plan, index)
        finally:
            if own:
                reader.close()
    read_s = time.perf_counter() - start
    labels, types = segment_typed(segmenter, pixels)
    segment_s = time.perf_counter() - start - read_s
    stain = stain_decision(segmenter)
    info = write_chunk(plan, index, pixels, labels, Path(chunk_dir), types=types, stain=stain)
    r0, c0, r1, c1 = plan.core(index)
    return {
        **info,
        "pixels": (r1 - r0) * (c1 - c0),
        "read_s": read_s,
        "segment_s": segment_s,
        "seconds": time.perf_counter() - start,
    }


def stain_decision(segmenter: Segmenter) -> dict[str, Any] | None:
    """:meth:`ChunkSegmenter.stain_decision` of a segmenter that has one, else None."""
    decide = getattr(segmenter, "stain_decision", None)
    return None if decide is None else decide()


def segment_typed(segmenter: Segmenter, pixels: np.ndarray) -> tuple[np.ndarray, Any]:
    """``segmenter(pixels)`` as int32 labels, with the nuclei's types where it gives them."""
    if hasattr(segmenter, "typed_labels") and hasattr(segmenter, "predict"):
        labels, types = segmenter.typed_labels(pixels.shape[:2], segmenter.predict(pixels))
        return np.asarray(labels, dtype=np.int32), types
    return np.asarray(segmenter(pixels), dtype=np.int32), None


def chunk_task(
    chunk_dir: str | os.PathLike,
    index: tuple[int, int],
    *,
    model: str | os.PathLike | None = None,
    method: str | None = None,
    predict: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment one chunk of a planned run from what its ``chunks/`` folder holds: for workers.

    Reads ``plan.json`` (and, for a model, ``stain.json``) from ``chunk_dir``, builds the
    segmenter (a model is loaded once per process, see :func:`load_predictor`) and calls
    :func:`run_chunk`; a chunk already done is skipped. The task carries a path and two integers,
    never pixels, so a Dask worker sharing the slide and the output folder can run it.

    Parameters
    ----------
    chunk_dir : path-like
        The run's ``chunks/`` folder, as written by :func:`nucseg.slide.segment_slide`.
    index : (int, int)
        Chunk row and column, one of the plan's chunks.
    model : path-like, optional
        Model folder (as resolved by :func:`nucseg.pipeline.resolve_model`).
    method : str, optional
        A classical method instead.
    predict : dict, optional
        Prediction settings, as given to :func:`nucseg.slide.segment_slide`.
    """
    chunk_dir = Path(chunk_dir)
    index = (int(index[0]), int(index[1]))
    if chunk_done(chunk_dir, index):
        return {"chunk": chunk_name(index), "skipped": True}
    plan = SlidePlan.from_json((chunk_dir / "plan.json").read_text())
    if index not in plan.chunks:
        raise ValueError(f"chunk {index} is not one of the {len(plan.chunks)} chunks of the plan")
    if (model is None) == (method is None):
        raise ValueError("give exactly one of a model folder and a method")
    if method is not None:
        from nucseg.classical import get_method

        segmenter = get_method(method)
    else:
        predictor = load_predictor(str(model), json.dumps(predict or {}, sort_keys=True))
        saved = json.loads((chunk_dir / "stain.json").read_text())
        table = saved.get("colour_table", True)
        segmenter = ChunkSegmenter(predictor, saved["source"], colour_table=table)
    return run_chunk(plan, segmenter, index, chunk_dir)
