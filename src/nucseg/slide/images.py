"""Whole images through the slide engine: what ``nucseg segment`` and the Python API run.

An image is segmented as a one-level slide held in memory (:class:`ArrayReader`): the same plan
(:func:`nucseg.slide.engine.make_plan`: resampled to the model's microns per pixel when the
image's are given, cut into chunks of :data:`nucseg.slide.run.DEFAULT_CHUNK` pixels with a halo),
the same stain statistics (:func:`nucseg.slide.engine.fit_stain`), the same chunk segmenter and,
for an image of several chunks, the same rule and files (:func:`nucseg.slide.chunkio.write_chunk`:
a nucleus belongs to the chunk whose core holds its centroid) and the same composition back to
the image's pixels (:func:`nucseg.slide.writers.compose_labels`). So ``segment``, the Python API
and ``nucseg slide`` give one image the same labels, and an image larger than a chunk never goes
through the network in one piece.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.scale import resize_labels
from nucseg.slide import engine
from nucseg.slide.reader import ImageReader

__all__ = ["ArrayReader", "ImageSegmenter", "segment_image"]


class ArrayReader(ImageReader):
    """An ``(H, W, 3) uint8`` image in memory as a one-level slide of ``mpp`` microns per pixel."""

    def __init__(self, image: np.ndarray, *, mpp: float | None = None, name: str = "image") -> None:
        super(ImageReader, self).__init__(name)  # no file to read
        self._image = image
        rows, cols = image.shape[:2]
        self.levels = [(cols, rows)]
        self.downsamples = [1.0]
        self.mpp = mpp


def segment_image(
    image: np.ndarray,
    segment: Any,
    *,
    mpp: float | None = None,
    model_mpp: float,
    chunk: int | None = None,
    halo: int = 128,
    stain: str = "auto",
) -> tuple[np.ndarray, Any, dict[str, Any] | None]:
    """Labels of ``image`` on its own pixel grid, the nuclei's voted types and the stain
    statistics used: ``(labels, types, source)``.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
    segment : nucseg.infer.Predictor or callable
        A model's predictor (stain statistics fitted as for a slide), or ``image -> labels``.
    mpp : float, optional
        The image's microns per pixel; None: the model's (no resampling).
    model_mpp : float
        The model's microns per pixel; the image is resampled to it and the labels back.
    chunk, halo : int
        Chunk core and halo in model pixels (default: ``nucseg slide``'s).
    stain : {"auto", "always", "never"}
        What the model's normaliser does (:data:`nucseg.quality.STAIN_POLICIES`).

    Returns
    -------
    labels : (H, W) int32 array
    types : nucseg.nucleus_types.NucleusTypes or None
        None for a model without a type head or a classical method.
    source : dict or None
        The stain statistics (:func:`nucseg.slide.engine.fit_stain`).
    """
    from nucseg.slide.engine import DEFAULT_CHUNK

    reader = ArrayReader(image, mpp=mpp if mpp is not None else model_mpp)
    plan = engine.make_plan(reader, mpp=reader.mpp, model_mpp=model_mpp,
                            chunk=chunk or DEFAULT_CHUNK, halo=halo)  # fmt: skip
    source = None
    if hasattr(segment, "maps_to_labels"):  # a model: the slide's stain fit, then its chunks
        source = engine.fit_stain(reader, plan, segment.normaliser, policy=stain)
        segment = engine.ChunkSegmenter(segment, source)
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    if len(plan.chunks) == 1:  # the window is the whole image: every nucleus is the chunk's
        labels, types = engine.segment_typed(
            segment, engine.read_chunk(reader, plan, plan.chunks[0])
        )
        work, types = _sequential(labels, types)
        return resize_labels(work, image.shape[:2], factor=plan.scale), types, source
    from nucseg.slide.chunkio import read_chunk_info, write_chunk
    from nucseg.slide.writers import compose_labels

    with tempfile.TemporaryDirectory(prefix="nucseg-image-") as folder:
        infos, names = [], None
        stain = engine.stain_decision(segment)
        for index in plan.chunks:
            pixels = engine.read_chunk(reader, plan, index)
            labels, types = engine.segment_typed(segment, pixels)
            names = names or (types.names if types is not None else None)
            write_chunk(plan, index, pixels, labels, Path(folder), types=types, stain=stain)
            infos.append(read_chunk_info(Path(folder), engine.chunk_name(index)))
        labels = compose_labels(infos, rows, cols, scale=plan.scale)
        return labels, _chunk_types(infos, names), source


def _chunk_types(infos: list[Any], names: tuple[str, ...] | None) -> Any:
    """The types of composed labels from the chunks' Parquet rows (global id = row + 1)."""
    if names is None:
        return None
    import pyarrow.parquet as pq

    from nucseg.nucleus_types import NucleusTypes, prob_column

    columns = [prob_column(name) for name in names]
    probs = [np.stack([pq.read_table(i.parquet, columns=columns)[c].to_numpy() for c in columns],
                      axis=1) for i in infos if i.n]  # fmt: skip
    probs = np.concatenate(probs) if probs else np.zeros((0, len(names)), np.float32)
    return NucleusTypes(np.arange(1, len(probs) + 1, dtype=np.int64),
                        probs.astype(np.float32), tuple(names))  # fmt: skip


def _sequential(labels: np.ndarray, types: Any = None) -> tuple[np.ndarray, Any]:
    """Labels renumbered 1..N in the order of their values (as a chunk's files keep them), and
    their types (if any) renumbered alike."""
    import dataclasses

    labels = np.asarray(labels, dtype=np.int32)
    values = np.unique(labels)
    values = values[values > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[values] = np.arange(1, values.size + 1, dtype=np.int32)
    if types is not None:
        keep = np.isin(types.labels, values)
        types = dataclasses.replace(types, labels=lut[types.labels[keep]].astype(np.int64),
                                    probs=types.probs[keep])  # fmt: skip
    return lut[labels], types


class ImageSegmenter:
    """``image -> labels`` of a model (or classical method) through :func:`segment_image`.

    Parameters
    ----------
    segment : nucseg.infer.Predictor or callable
        The model's predictor, with its folder's tile, overlap, thresholds and normaliser.
    model_mpp : float
        The model's microns per pixel.
    mpp : float, optional
        The images' microns per pixel (``segment --mpp``); None: taken to be the model's.
    chunk : int, optional
        Chunk core in model pixels (default :data:`nucseg.slide.run.DEFAULT_CHUNK`): a larger
        image is segmented chunk by chunk.

    ``normaliser.last_estimate`` says what the stain fit decided for the last image (the
    quality report reads it).
    """

    def __init__(
        self, segment: Any, *, model_mpp: float, mpp: float | None = None, chunk: int | None = None,
        stain: str = "auto",
    ) -> None:  # fmt: skip
        self.segment, self.model_mpp, self.mpp, self.chunk = segment, model_mpp, mpp, chunk
        self.stain = stain  # what the model's normaliser does: nucseg.quality.STAIN_POLICIES
        self.normaliser = getattr(segment, "normaliser", None)

    @classmethod
    def from_model(
        cls, folder: str | Path, *, mpp: float | None = None, chunk: int | None = None,
        **predict: Any,
    ) -> ImageSegmenter:  # fmt: skip
        """The model of ``folder`` (its own prediction settings, ``predict`` overriding them;
        ``stain`` in ``predict`` sets the stain policy, :data:`nucseg.quality.STAIN_POLICIES`)."""
        from nucseg.slide.engine import model_mpp

        stain = predict.pop("stain", "auto")
        return cls(engine.engine_predictor(folder, **predict), model_mpp=model_mpp(folder)[0],
                   mpp=mpp, chunk=chunk, stain=stain)  # fmt: skip

    @classmethod
    def from_method(cls, segment: Any, *, mpp: float | None = None) -> ImageSegmenter:
        """A classical method's ``image -> labels``, whose parameters suit 40x images."""
        from nucseg.slide.engine import DEFAULT_MODEL_MPP

        return cls(segment, model_mpp=DEFAULT_MODEL_MPP, mpp=mpp)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.typed(image)[0]

    def typed(self, image: np.ndarray, *, mpp: float | None = None) -> tuple[np.ndarray, Any]:
        """Labels of ``image`` and their voted types (None for a model without a type head);
        ``mpp``: this image's microns per pixel, if not the segmenter's (a dataset's sample)."""
        from nucseg._checks import check_image

        image = check_image(image)
        mpp = self.mpp if mpp is None else mpp
        labels, types, source = segment_image(
            image, self.segment, mpp=mpp, model_mpp=self.model_mpp, chunk=self.chunk,
            stain=self.stain,
        )  # fmt: skip
        if self.normaliser is not None:
            self.normaliser.last_estimate = (
                {"accepted": True, "reason": None, "remedy": source["remedy"]}
                if source is not None and "remedy" in source
                else {"accepted": source["accepted"], "reason": source["reason"]}
                if source is not None
                else {"accepted": False, "reason": "too little stain to estimate"}
            )
        return labels, types
