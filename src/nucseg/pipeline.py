"""Engines that orchestrate: segment image files to disk, evaluate a method on a dataset.

A *segmenter* is any callable ``image (H, W, 3) uint8 -> labels (H, W) int32``. The CLI builds one
from ``--method`` (and later ``--model``) with :func:`make_segmenter` and hands it to
:func:`segment_files` or :func:`evaluate`.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nucseg import __version__

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


def make_segmenter(
    method: str | None = None, *, model: str | None = None, **params: Any
) -> Segmenter:
    """Return ``image -> labels`` for a classical ``method`` or a trained ``model``.

    Parameters
    ----------
    method : str, optional
        A registered classical method (``otsu``, ``watershed``, ``fiji``).
    model : str, optional
        A run folder or bundled model name (see :func:`resolve_model`); ``params`` then override
        its prediction settings (``tta``, ``batch_size``, ...).
    **params
        Keyword parameters of the method.

    Raises
    ------
    KeyError
        If ``method`` is unknown; the message lists the valid methods.
    TypeError
        If a parameter is not accepted by the method.
    """
    if (method is None) == (model is None):
        raise ValueError("give exactly one of a method and a model")
    if model is not None:
        from nucseg.infer import PREDICT_OPTIONS, Predictor

        allowed = set(PREDICT_OPTIONS)
        if set(params) - allowed:
            raise TypeError(
                f"a model has no parameter(s) {sorted(set(params) - allowed)}; "
                f"valid: {sorted(allowed)}"
            )
        return Predictor.load(resolve_model(model), **params)
    from nucseg.classical import describe, get_method

    func = get_method(method)
    unknown = set(params) - set(describe(method))
    if unknown:
        raise TypeError(
            f"method {method!r} has no parameter(s) {sorted(unknown)}; "
            f"valid: {sorted(describe(method))}"
        )
    return functools.partial(func, **params)


def output_paths(image_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Return the output file of each kind for ``image_path``, named from its stem."""
    stem = Path(image_path).stem
    return {key: Path(out_dir) / f"{stem}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def segment_files(
    paths: Sequence[str | os.PathLike],
    segmenter: Segmenter,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Segment image files and write, per image, labels, overlay, measurements and GeoJSON.

    Every output is checked before any work starts, so a run never stops half-way on an existing
    file; each file is written under a temporary name and renamed when complete.

    Parameters
    ----------
    paths : sequence of path-like
        Image files (TIFF, PNG, JPEG).
    segmenter : callable
        ``image -> labels``.
    out_dir : path-like
        Output folder, created if missing.
    overwrite : bool, optional
        Replace existing outputs instead of refusing.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    list of dict
        Per image: ``image``, ``n_nuclei``, ``seconds`` and the written paths.

    Raises
    ------
    FileExistsError
        If an output exists and ``overwrite`` is False; nothing is written then.
    """
    from nucseg import io

    out_dir = Path(out_dir)
    stems = [Path(p).stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"several input images share the stem(s) {duplicates}: outputs would clash"
        )
    if not overwrite:
        existing = [str(q) for p in paths for q in output_paths(p, out_dir).values() if q.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} output file(s) exist, e.g. {existing[0]}; "
                "pass --overwrite to replace them"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(paths, desc="segment", unit="image", disable=not progress):
        image = io.read_image(path)
        start = time.perf_counter()
        labels = segmenter(image)
        seconds = time.perf_counter() - start
        out = output_paths(path, out_dir)
        table = io.measure_nuclei(image, labels)
        io.write_labels(out["labels"], labels, overwrite=overwrite)
        io.write_png(out["overlay"], io.overlay(image, labels), overwrite=overwrite)
        io.write_csv(out["csv"], table, overwrite=overwrite)
        io.export_geojson(out["geojson"], labels, measurements=table, overwrite=overwrite)
        n = int(labels.max())
        log.info("%s: %d nuclei in %.2f s", path, n, seconds)
        records.append(
            {
                "image": str(path),
                "n_nuclei": n,
                "seconds": seconds,
                **{k: str(v) for k, v in out.items()},
            }
        )
    return records


def evaluate(
    segmenter: Segmenter,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    total: int | None = None,
    progress: bool = True,
    keep: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Segment every sample and score it against its labels.

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
        variants, ``per_image``) plus ``seconds_per_image``.
    """
    from nucseg.metrics import Evaluator

    evaluator = Evaluator()
    seconds = []
    bar = tqdm(samples, total=total, desc="evaluate", unit="image", disable=not progress)
    for image_id, image, labels in bar:
        start = time.perf_counter()
        prediction = segmenter(image)
        seconds.append(time.perf_counter() - start)
        evaluator.process(image_id, labels, prediction)
        if keep is not None:
            keep(image_id, image, prediction)
    if not seconds:
        raise ValueError("no samples to evaluate")
    result = evaluator.evaluate()
    result["seconds_per_image"] = float(np.mean(seconds))
    return result


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Describe how a result was produced: command, commit, machine, versions, date."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                # code changes only: result files being rewritten do not make a run dirty
                [
                    "git",
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ":/",
                    ":(top,exclude)results",
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    argv = list(sys.argv if argv is None else argv)
    command = (
        " ".join(["nucseg", *argv[1:]]) if argv and argv[0].endswith("nucseg") else " ".join(argv)
    )
    return {
        "command": command,
        "commit": commit,
        "dirty": dirty,
        "nucseg": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
