"""Engines that orchestrate: segment image files to disk, evaluate a method on a dataset.

A *segmenter* is any callable ``image (H, W, 3) uint8 -> labels (H, W) int32``. The CLI builds one
from ``--method`` (and later ``--model``) with :func:`make_segmenter` and hands it to
:func:`segment_files` or :func:`evaluate`.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nucseg import quality
from nucseg._checks import PREDICT_CHECKS, check_method_params, check_predict_option
from nucseg.provenance import provenance  # noqa: F401  (re-exported: one function for all)

log = logging.getLogger(__name__)

Segmenter = Callable[[np.ndarray], np.ndarray]

#: Per-image output files of :func:`segment_files`: key -> file-name suffix after the image stem.
OUTPUT_SUFFIXES = {
    "labels": "_labels.tif",
    "overlay": "_overlay.png",
    "csv": "_nuclei.csv",
    "geojson": "_nuclei.geojson",
}


#: Folder of the models bundled with the package, one sub-folder per model name.
BUNDLED_MODELS = Path(__file__).resolve().parent / "data" / "models"


def bundled_models() -> list[str]:
    """Names of the bundled models (folders holding a ``model.safetensors``)."""
    if not BUNDLED_MODELS.is_dir():
        return []
    return sorted(p.parent.name for p in BUNDLED_MODELS.glob("*/model.safetensors"))


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Return the folder of a model given as a run folder path or a bundled model's name.

    Raises
    ------
    FileNotFoundError
        If it is neither; the message lists the bundled names.
    """
    path = Path(name_or_path)
    if (path / "model.safetensors").is_file():
        return path
    if str(name_or_path) in bundled_models():
        return BUNDLED_MODELS / str(name_or_path)
    raise FileNotFoundError(
        f"model {str(name_or_path)!r} is neither a folder holding model.safetensors nor a bundled "
        f"model; bundled: {bundled_models() or 'none'}"
    )


def check_segmenter(
    method: str | None = None, *, model: str | None = None, **params: Any
) -> Path | None:
    """Check a segmenter's choice and parameters without loading anything heavy.

    Returns the model folder (see :func:`resolve_model`) or None for a classical method.

    Raises
    ------
    ValueError
        If both or neither of ``method`` and ``model`` are given, or a prediction option has a
        value the model cannot use (the message names the parameter and what it accepts).
    KeyError
        If ``method`` is unknown; the message lists the valid methods.
    TypeError
        If a parameter is not accepted by the method or model.
    FileNotFoundError
        If ``model`` is neither a model folder nor a bundled model.
    """
    if (method is None) == (model is None):
        raise ValueError("give exactly one of a method and a model")
    if model is None:
        from nucseg.classical import describe, get_method

        get_method(method)
        check_method_params(method, describe(method), params)
        return None
    unknown = set(params) - set(PREDICT_CHECKS)
    if unknown:
        raise TypeError(
            f"a model has no parameter(s) {sorted(unknown)}; valid: {sorted(PREDICT_CHECKS)}"
        )
    for key, value in params.items():
        check_predict_option(key, value)
    folder = resolve_model(model)
    from nucseg.atomic import read_json

    read_json(folder / "thresholds.json", what="model file")
    if (folder / "normaliser.json").is_file():
        read_json(folder / "normaliser.json", what="model file")
    return folder


def check_weights(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming the file unless the safetensors header of a model folder's
    ``model.safetensors`` reads (the header only: a text file, a pickle or a truncated file is
    refused before any model is built; ``nucseg slide`` calls it before opening a slide)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / "model.safetensors"

    try:
        with safe_open(os.fspath(path), framework="numpy") as file:
            file.metadata()
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def make_segmenter(
    method: str | None = None,
    *,
    model: str | None = None,
    mpp: float | None = None,
    **params: Any,
) -> Segmenter:
    """Return ``image -> labels`` for a classical ``method`` or a trained ``model``.

    Parameters
    ----------
    method : str, optional
        A registered classical method (``otsu``, ``watershed``, ``fiji``).
    model : str, optional
        A run folder or bundled model name (see :func:`resolve_model`), run through the slide
        engine with the folder's tile, overlap, thresholds and normaliser
        (:class:`nucseg.slide.images.ImageSegmenter`); ``params`` then override its prediction
        settings (``tile``, ``overlap``, ``batch_size``, ``tta``, ``precision``).
    mpp : float, optional
        Microns per pixel of the images: they are resampled to the model's (a method's: 40x)
        and the labels back, as ``nucseg slide`` does. None: taken to be the model's.
    **params
        Keyword parameters of the method.

    Raises
    ------
    KeyError, TypeError, ValueError, FileNotFoundError
        As :func:`check_segmenter`, which runs first; a damaged model file is a ValueError
        naming it.
    """
    folder = check_segmenter(method, model=model, **params)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp}")
    from nucseg.slide.images import ImageSegmenter

    if folder is not None:
        return ImageSegmenter.from_model(folder, mpp=mpp, **params)
    from nucseg.classical import get_method

    segment = functools.partial(get_method(method), **params)
    return segment if mpp is None else ImageSegmenter.from_method(segment, mpp=mpp)


#: Suffixes of the image files read (TIFF with tifffile, the others with Pillow).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders by their readable images.

    A folder contributes every file of :data:`IMAGE_SUFFIXES` directly inside it (sorted; hidden
    files and this tool's own outputs, ``*_labels.tif`` and ``*_overlay.png``, left out).

    Raises
    ------
    FileNotFoundError
        If an input does not exist, or a folder holds no readable image.
    """
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = [
                p
                for p in sorted(item.iterdir())
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not p.name.startswith(".")
                and not p.name.endswith((OUTPUT_SUFFIXES["labels"], OUTPUT_SUFFIXES["overlay"]))
            ]
            if not found:
                raise FileNotFoundError(
                    f"{item}: folder holds no image file ({', '.join(IMAGE_SUFFIXES)})"
                )
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    return files


def output_paths(image_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Return the output file of each kind for ``image_path``, named from its stem."""
    stem = Path(image_path).stem
    return {key: Path(out_dir) / f"{stem}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def plan_outputs(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> tuple[list[Path], list[Path]]:
    """Check the outputs of :func:`segment_files` before any work: ``(to segment, to skip)``.

    Creates ``out_dir`` if needed, proves it writable and removes the temporaries left there by
    killed nucseg processes (:func:`nucseg.atomic.clean_stale_temporaries`). With
    ``skip_existing`` an image whose four outputs all exist is skipped.

    Raises
    ------
    ValueError
        If two images share a stem (their outputs would clash).
    NotADirectoryError, OSError
        If ``out_dir`` is (below) a file or cannot be written.
    IsADirectoryError
        If an output name is taken by a folder.
    FileExistsError
        If outputs exist and neither ``overwrite`` nor (for complete sets) ``skip_existing``.
    """
    from nucseg.atomic import check_writable_folder, clean_stale_temporaries

    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"several input images share the stem(s) {duplicates}: outputs would clash"
        )
    out_dir = check_writable_folder(out_dir, what="--out folder")
    for stale in clean_stale_temporaries(out_dir):
        log.warning("removed %s, left by a killed nucseg process", stale)
    todo, skipped, partial = [], [], []
    for path in paths:
        outputs = list(output_paths(path, out_dir).values())
        folders = [q for q in outputs if q.is_dir()]
        if folders:
            raise IsADirectoryError(
                f"{folders[0]} is a folder, not an output file; move it or choose another --out"
            )
        present = [q for q in outputs if q.exists()]
        if skip_existing and len(present) == len(outputs):
            skipped.append(path)
            continue
        if present and not overwrite:
            partial += present
        todo.append(path)
    if partial:
        hint = "pass --overwrite to replace them"
        if not skip_existing:
            hint += " or --skip-existing to keep complete sets"
        raise FileExistsError(f"{len(partial)} output file(s) exist, e.g. {partial[0]}; {hint}")
    return todo, skipped


def segment_files(
    paths: Sequence[str | os.PathLike],
    segmenter: Segmenter,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    mpp: float | None = None,
) -> list[dict[str, Any]]:
    """Segment image files and write, per image, labels, overlay, measurements and GeoJSON.

    Every output is checked before any work starts (:func:`plan_outputs`). An image's four files
    are written to a staging folder and renamed together (:func:`nucseg.atomic.atomic_group`),
    so an image has all of its outputs or none, even after SIGTERM or Ctrl-C. An image that
    cannot be read or segmented does not stop the others: its record says why.

    Parameters
    ----------
    paths : sequence of path-like
        Image files (see :data:`IMAGE_SUFFIXES`).
    segmenter : callable
        ``image -> labels``.
    out_dir : path-like
        Output folder, created if missing.
    overwrite : bool, optional
        Replace existing outputs instead of refusing.
    skip_existing : bool, optional
        Skip an image whose four outputs exist.
    progress : bool, optional
        Show a progress bar.
    on_result : callable, optional
        Called with each image's record as soon as it is done (or skipped, or failed).
    mpp : float, optional
        Microns per pixel of every image; without it each file's own metadata (if any) is used.
        Known, it gives the GeoJSON measurements in um and um2 too.

    Returns
    -------
    list of dict
        Per image: ``image`` and ``status`` (``"done"``, ``"skipped"`` or ``"failed"``); done
        images add ``n_nuclei``, ``seconds``, the written paths, ``mpp`` and ``quality`` (the
        figures of :func:`nucseg.quality.assess`), failed ones ``error``.

    Raises
    ------
    FileExistsError, IsADirectoryError, NotADirectoryError, ValueError
        From :func:`plan_outputs`; nothing is written then.
    """
    todo, skipped = plan_outputs(paths, out_dir, overwrite=overwrite, skip_existing=skip_existing)
    records = []

    def report(record: dict[str, Any]) -> None:
        records.append(record)
        if on_result is not None:
            on_result(record)

    for path in skipped:
        report({"image": str(path), "status": "skipped"})

    def failed(path: Path, err: BaseException) -> None:  # this image only; the others go on
        log.info("%s failed: %s", path, err)
        report({"image": str(path), "status": "failed", "error": error_message(err)})

    # The next image is read and segmented in a worker thread (the network releases the GIL)
    # while this one's outputs are measured and written here, in the main thread, where the
    # renames hold signals back.
    from nucseg.atomic import worker_thread_signals

    with ThreadPoolExecutor(max_workers=1, initializer=worker_thread_signals) as pool:
        pending = pool.submit(_read_and_segment, todo[0], segmenter) if todo else None
        for i, path in enumerate(tqdm(todo, desc="segment", unit="image", disable=not progress)):
            future = pending
            try:
                segmented = future.result()
            except (ValueError, OSError) as err:
                segmented = err
            if i + 1 < len(todo):
                pending = pool.submit(_read_and_segment, todo[i + 1], segmenter)
            if isinstance(segmented, BaseException):
                failed(path, segmented)
                continue
            try:
                report(_write_one(path, segmented, out_dir, overwrite=overwrite, mpp=mpp))
            except (ValueError, OSError) as err:
                failed(path, err)
    return records


def error_message(err: BaseException) -> str:
    """The one line that describes ``err``: a KeyError's text unquoted, an OSError's reason and
    file without its ``[Errno N]`` prefix, anything else's text."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror:
        name = "" if err.filename is None else str(err.filename)
        return err.strerror if not name or name in err.strerror else f"{name}: {err.strerror}"
    return str(err).replace("\n", " ")


def _read_and_segment(path: Path, segmenter: Segmenter) -> dict[str, Any]:
    """Read an image and segment it: its pixels, labels, seconds and the stain decision."""
    from nucseg import io

    image = io.read_image(path)
    start = time.perf_counter()
    labels, types = segment_typed(segmenter, image)
    seconds = time.perf_counter() - start
    return {
        "image": image,
        "labels": labels,
        "types": types,
        "seconds": seconds,
        "estimate": _decision(segmenter),
    }


def segment_typed(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, Any]:
    """``segmenter(image)`` and, for a model with a type head, the nuclei's voted types
    (:class:`nucseg.nucleus_types.NucleusTypes`; None otherwise)."""
    typed = getattr(segmenter, "typed", None)
    return typed(image) if typed is not None else (segmenter(image), None)


def typed_table(table: dict[str, Any], types: Any) -> tuple[dict[str, Any], dict | None]:
    """The measurements with ``type`` and ``type_prob_<name>`` added (unchanged without
    types), and each label's QuPath class and colour for the GeoJSON (None without types)."""
    if types is None:
        return table, None
    from nucseg.nucleus_types import TYPE_COLOURS

    columns = types.columns(table["label"])
    classes = {
        int(label): (name, TYPE_COLOURS[name])
        for label, name in zip(np.asarray(table["label"]).tolist(), columns["type"], strict=True)
    }
    return {**table, **columns}, classes


def _write_one(
    path: Path,
    segmented: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Check, measure and write one segmented image's four files (renamed together)."""
    from nucseg import io
    from nucseg.atomic import atomic_group

    image, labels, seconds = segmented["image"], segmented["labels"], segmented["seconds"]
    if mpp is None:
        from nucseg.slide.reader import file_mpp

        mpp = file_mpp(path)
    figures = quality.assess(image, labels, stain_estimate=segmented["estimate"], mpp=mpp)
    quality.warn(str(path), figures)
    out = output_paths(path, out_dir)
    table, classes = typed_table(io.measure_nuclei(image, labels), segmented.get("types"))
    with atomic_group(out, overwrite=overwrite) as tmp:
        io.write_labels(tmp["labels"], labels)
        io.write_png(tmp["overlay"], io.overlay(image, labels))
        io.write_csv(tmp["csv"], table)
        io.export_geojson(tmp["geojson"], labels, measurements=table, mpp=mpp, types=classes)
    n = int(labels.max())
    log.info("%s: %d nuclei in %.2f s", path, n, seconds)
    return {
        "image": str(path),
        "status": "done",
        "n_nuclei": n,
        "seconds": seconds,
        **{k: str(v) for k, v in out.items()},
        "mpp": mpp,
        "quality": figures,
        **_type_counts(table),
    }


def _type_counts(table: dict[str, Any]) -> dict[str, Any]:
    """``{"types": {name: count}}`` for typed nuclei (every type named), else nothing."""
    if "type" not in table:
        return {}
    from nucseg.nucleus_types import TYPE_NAMES

    kinds = np.asarray(table["type"])
    return {"types": {name: int(np.count_nonzero(kinds == name)) for name in TYPE_NAMES}}


def _decision(segmenter: Segmenter) -> dict[str, Any] | None:
    """What the segmenter's normaliser decided for the last image (None without one)."""
    return getattr(getattr(segmenter, "normaliser", None), "last_estimate", None)


def _segment_at_scale(
    segmenter: Segmenter, image: np.ndarray, mpp: float | None, model_mpp: float
) -> tuple[np.ndarray, Any]:
    """:func:`segment_typed` of an image of ``mpp`` microns per pixel at the model's resolution,
    the labels on the image's pixels: through :class:`nucseg.slide.images.ImageSegmenter`, the
    path of ``segment --mpp`` and ``slide`` (a model's segmenter keeps its own ``model_mpp``)."""
    from nucseg.scale import scale_factor
    from nucseg.slide.images import ImageSegmenter

    if isinstance(segmenter, ImageSegmenter):
        return segmenter.typed(image, mpp=mpp)
    if scale_factor(mpp, model_mpp) == 1.0:
        return segment_typed(segmenter, image)
    return ImageSegmenter(segmenter, model_mpp=model_mpp, mpp=mpp).typed(image)


def _type_evaluator(mpp: float | None) -> Any:
    """HoVer-Net's typed scores over CoNSeP's classes, pairing within 12 px at 40x (scaled to
    the sample's pixels when it states another resolution)."""
    from nucseg.datasets.labelled import CONSEP_TYPES
    from nucseg.type_metrics import HOVERNET_RADIUS, TypeEvaluator

    radius = HOVERNET_RADIUS * 0.25 / mpp if mpp else HOVERNET_RADIUS
    return TypeEvaluator(CONSEP_TYPES, radius=radius)


def evaluate(
    segmenter: Segmenter,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    total: int | None = None,
    progress: bool = True,
    keep: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
    model_mpp: float = 0.25,
) -> dict[str, Any]:
    """Segment every sample and score it against its labels.

    A sample that states its resolution (``sample.mpp``, e.g. CPM-15's 20x tiles) is brought to
    the model's (``model_mpp``) by :mod:`nucseg.scale`'s rule, as ``nucseg slide`` does, and the
    prediction is resampled back to the sample's pixels, where it is scored.

    Parameters
    ----------
    segmenter : callable
        ``image -> labels``.
    samples : iterable of (id, image, labels)
        For example ``nucseg.datasets.load("tnbc")``.
    total : int, optional
        Number of samples, for the progress bar.
    progress : bool, optional
        Show a progress bar.
    keep : callable, optional
        Called as ``keep(id, image, prediction)`` for each sample (e.g. to save overlays).

    Returns
    -------
    dict
        The dataset scores of :class:`nucseg.metrics.Evaluator` (mean over images, pooled
        variants, ``per_image``) plus ``seconds_per_image``, and per image the sanity figures
        of :func:`nucseg.quality.assess` (``quality``; their warnings are logged). When the
        segmenter types nuclei and the samples carry ``types`` (CoNSeP), ``types`` holds
        :class:`nucseg.type_metrics.TypeEvaluator`'s scores (detection F1, per-type P/R/F1,
        mPQ+).
    """
    from nucseg.metrics import Evaluator

    evaluator, typed = Evaluator(), None
    seconds, checks = [], {}
    bar = tqdm(samples, total=total, desc="evaluate", unit="image", disable=not progress)
    for sample in bar:
        image_id, image, labels = sample
        start = time.perf_counter()
        mpp = getattr(sample, "mpp", None)
        prediction, types = _segment_at_scale(segmenter, image, mpp, model_mpp)
        seconds.append(time.perf_counter() - start)
        evaluator.process(image_id, labels, prediction)
        if types is not None and getattr(sample, "types", None) is not None:
            typed = typed or _type_evaluator(mpp)
            voted = dict(zip(types.labels.tolist(), (types.index + 1).tolist(), strict=True))
            typed.process(image_id, labels, sample.types, prediction, voted)
        checks[image_id] = quality.assess(image, prediction, stain_estimate=_decision(segmenter))
        quality.warn(image_id, checks[image_id])
        if keep is not None:
            keep(image_id, image, prediction)
    if not seconds:
        raise ValueError("no samples to evaluate")
    result = evaluator.evaluate()
    if typed is not None:
        result["types"] = typed.evaluate()
    result["seconds_per_image"] = float(np.mean(seconds))
    result["quality"] = checks
    result["quality_warnings"] = sum(len(c["warnings"]) for c in checks.values())
    return result
