"""Segment one whole slide: checks, tissue, plan, chunks (resumable), outputs, report.

Everything is written to ``OUT/<slide stem>/``: the final files (``nuclei.parquet``,
``nuclei.geojson[.gz]``, ``labels.ome.tif``, ``tissue.png``, ``thumbnail_overlay.png``,
``report.json``, ``report.html``) and, while the run is going, the work folder ``chunks/``
with ``plan.json`` and one pair of files per finished chunk. A run killed at any point
continues with ``resume=True`` and redoes only the chunks without their Parquet file.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from nucseg.slide import engine, tissue
from nucseg.slide.engine import DEFAULT_CHUNK, DEFAULT_MODEL_MPP, model_mpp  # noqa: F401 (public)
from nucseg.slide.reader import open_slide

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL_MPP", "model_mpp", "output_paths", "segment_slide", "slide_stem"]


def slide_stem(path: str | os.PathLike) -> str:
    """Output folder name of a slide: its file name without the (``.ome``) extension."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_paths(folder: Path, *, gzip: bool = False, labels: bool = True) -> dict[str, Path]:
    """The final files of a slide's output folder."""
    paths = {
        "parquet": folder / "nuclei.parquet",
        "geojson": folder / ("nuclei.geojson.gz" if gzip else "nuclei.geojson"),
        "tissue": folder / "tissue.png",
        "overlay": folder / "thumbnail_overlay.png",
        "report": folder / "report.json",
        "html": folder / "report.html",
    }
    if labels:
        paths["labels"] = folder / "labels.ome.tif"
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_png(path: Path, rgb: np.ndarray, *, overwrite: bool) -> None:
    from nucseg.io import write_png

    write_png(path, rgb, overwrite=overwrite)


class OutputsExist(FileExistsError):
    """A slide's finished outputs exist and ``overwrite`` was not given: nothing was changed."""


def _slide_mpp(
    path: str | os.PathLike, reader: Any, mpp: float | None, *, force: bool = False
) -> float:
    """The slide's microns per pixel: ``mpp`` if given, else the file's; checked
    (:func:`nucseg._checks.check_mpp`: finite, > 0 and within 0.05-5 unless ``force``)."""
    from nucseg._checks import check_mpp

    if mpp is not None:
        return check_mpp(mpp, what=f"{path}: --mpp {mpp}", force=force)
    if reader.mpp is None:
        raise ValueError(
            f"{path}: the file records no microns per pixel; pass --mpp (e.g. --mpp 0.25 "
            "for a 40x scan)"
        )
    return check_mpp(reader.mpp, what=f"{path}: the file's microns per pixel", force=force)


def _prepare_folder(
    path: Path, out_dir: str | os.PathLike, *, gzip: bool, labels: bool, overwrite: bool,
    resume: bool,
) -> tuple[Path, dict[str, Path], Path]:  # fmt: skip
    """The slide's output folder, output files and chunk folder, checked before any work.

    Refuses existing outputs without ``overwrite`` (:class:`OutputsExist`) and an unfinished
    run's chunks without ``resume`` or ``overwrite``; with ``overwrite`` alone those chunks are
    discarded. A ``chunks/`` folder without a finished chunk (a start that failed) blocks
    nothing: it is discarded. With ``resume``, outputs of a run interrupted while it wrote them
    (chunks present, no ``report.json`` yet) are written again from the chunks.
    """
    folder = Path(out_dir) / slide_stem(path)
    outputs = output_paths(folder, gzip=gzip, labels=labels)
    chunk_dir = folder / "chunks"
    if chunk_dir.is_dir() and not any(chunk_dir.glob("r*_c*.parquet")) and not resume:
        shutil.rmtree(chunk_dir)  # planned, never started: nothing to keep
    existing = [str(p) for p in outputs.values() if p.exists()]
    unfinished = chunk_dir.is_dir() and not outputs["report"].exists()
    if existing and not overwrite and not (resume and unfinished):
        hint = "pass --overwrite to replace it"
        if unfinished:
            hint = "its run was interrupted while writing its outputs: pass --resume to finish it"
        raise OutputsExist(f"{existing[0]} exists; {hint}")
    if chunk_dir.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"{chunk_dir} holds an unfinished run; pass --resume to continue it or "
            "--overwrite to start again"
        )
    if chunk_dir.exists() and overwrite and not resume:
        shutil.rmtree(chunk_dir)
    return folder, outputs, chunk_dir


def _slide_tissue(
    reader: Any, slide_mpp: float, region: Any
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Overview, downsample asked and read, and tissue mask (restricted to ``region``)."""
    asked = max(1.0, tissue.OVERVIEW_MPP / slide_mpp)
    overview, downsample = tissue.read_overview(reader, asked)
    mask = tissue.tissue_mask(overview, mpp=downsample * slide_mpp)
    if region is not None:
        mask &= tissue.roi_mask(region, mask.shape, downsample)
    return overview, asked, downsample, mask


def segment_slide(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    method: str | None = None,
    segmenter: Callable[[np.ndarray], np.ndarray] | None = None,
    mpp: float | None = None,
    force_mpp: bool = False,
    roi: list[tuple[int, int, int, int]] | None = None,
    roi_geojson: str | os.PathLike | None = None,
    chunk: int = DEFAULT_CHUNK,
    halo: int = 128,
    predict: dict[str, Any] | None = None,
    labels: bool = True,
    gzip: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    keep_chunks: bool = False,
    progress: bool = True,
    thumbnail_size: int = 4000,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Segment every nucleus of a whole slide into ``out_dir/<slide stem>/``.

    Parameters
    ----------
    path : path-like
        The slide (SVS, NDPI, MRXS, OME-TIFF, tiled TIFF, ...; see :mod:`nucseg.slide.reader`).
    out_dir : path-like
        Parent of the slide's output folder.
    model : str, optional
        Run folder or bundled model name (default: the bundled ``default`` model).
    method : str, optional
        A classical method instead of a model (no stain normalisation, model mpp 0.25).
    segmenter : callable, optional
        Any ``image -> labels`` instead of both (its mpp is taken as 0.25).
    mpp : float, optional
        Microns per level-0 pixel, overriding the file's.
    force_mpp : bool, optional
        Accept a microns per pixel (``mpp`` or the file's) outside 0.05-5.
    roi : list of (x, y, w, h), optional
        Level-0 rectangles to restrict the work to.
    roi_geojson : path-like, optional
        GeoJSON of (QuPath) annotations to restrict the work to.
    chunk, halo : int, optional
        Chunk core side and halo width in work pixels; the halo must exceed the largest
        nucleus (a kept nucleus touching a halo edge is counted as ``cut`` in the report).
    predict : dict, optional
        Prediction settings overriding the model's (``tile``, ``overlap``, ``batch_size``...).
    labels : bool, optional
        Write ``labels.ome.tif``.
    gzip : bool, optional
        Write ``nuclei.geojson.gz`` instead of ``nuclei.geojson``.
    resume : bool, optional
        Continue an interrupted run, redoing only unfinished chunks.
    overwrite : bool, optional
        Replace existing outputs (and discard an unfinished run's chunks unless ``resume``).
    keep_chunks : bool, optional
        Keep the ``chunks/`` work folder after the outputs are written.
    progress : bool, optional
        Show a progress bar over the tissue chunks.
    thumbnail_size : int, optional
        Longest side of ``thumbnail_overlay.png`` in pixels (a picture over 2 MB is written with
        a 256-colour palette, and shrunk if still over; full detail is in the label pyramid).
    argv : list of str, optional
        The command line, for the report.

    Returns
    -------
    dict
        The report (also written as ``report.json``).

    Raises
    ------
    ValueError
        If the slide cannot be read, its mpp is unknown and ``mpp`` not given (before any model
        is loaded), or a resumed run was planned with other settings.
    FileExistsError
        If outputs exist without ``overwrite``, or chunks of an unfinished run without
        ``resume`` or ``overwrite``.
    """
    started = time.perf_counter()
    path = Path(path)
    reader = open_slide(path)
    try:
        job = _check(
            path, reader, out_dir, model=model, method=method, segmenter=segmenter, mpp=mpp,
            force_mpp=force_mpp, roi=roi, roi_geojson=roi_geojson, gzip=gzip, labels=labels,
            overwrite=overwrite, resume=resume,
        )  # fmt: skip
        with _clean_failed_start(job.folder, job.chunk_dir):
            job.folder.mkdir(parents=True, exist_ok=True)
            # the network is built (torch imported, weights loaded, batch norms folded) in a
            # thread while the tissue is found and the stain statistics fitted
            loading = _start_loading(job.work, predict or {})
            seen, plan = _plan(job, chunk=chunk, halo=halo, resume=resume)
            segment, setup = _fit_stain_step(job, seen, plan, loading)
            chunk_stats = _chunks_step(job, plan, segment, progress=progress)
        report = _finish(
            job, seen, plan, segment, setup, chunk_stats, overwrite=overwrite, resume=resume,
            keep_chunks=keep_chunks, thumbnail_size=thumbnail_size, argv=argv, started=started,
        )  # fmt: skip
    finally:
        reader.close()
    return report


@dataclasses.dataclass
class _Job:
    """One slide's run, as checked before any work: what :func:`segment_slide`'s steps share."""

    path: Path
    reader: Any
    slide_mpp: float
    region: Any
    folder: Path
    outputs: dict[str, Path]
    chunk_dir: Path
    work: dict[str, Any]
    times: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Tissue:
    """The slide's overview, its downsample, tissue mask and area."""

    overview: np.ndarray
    downsample: float
    mask: np.ndarray
    mm2: float


def _check(
    path: Path, reader: Any, out_dir: str | os.PathLike, *, model: str | None,
    method: str | None, segmenter: Any, mpp: float | None, force_mpp: bool, roi: Any,
    roi_geojson: Any, gzip: bool, labels: bool, overwrite: bool, resume: bool,
) -> _Job:  # fmt: skip
    """Everything checked before any work: the slide's mpp, the ROI, the output folder (existing
    outputs, an unfinished run) and what segments (a model, a method or a callable)."""
    slide_mpp = _slide_mpp(path, reader, mpp, force=force_mpp)
    region = tissue.roi_geometry(roi, roi_geojson)
    tissue.check_roi(region, reader.dimensions, path)
    folder, outputs, chunk_dir = _prepare_folder(
        path, out_dir, gzip=gzip, labels=labels, overwrite=overwrite, resume=resume
    )
    work = _resolve_work(model, method, segmenter)
    return _Job(path, reader, slide_mpp, region, folder, outputs, chunk_dir, work)


def _plan(job: _Job, *, chunk: int, halo: int, resume: bool) -> tuple[_Tissue, engine.SlidePlan]:
    """The tissue (an empty mask is one warning: the outputs will hold no nuclei) and the plan
    of chunks over it, saved in ``chunks/plan.json`` (a resumed run's must be the same)."""
    t = time.perf_counter()
    overview, _, downsample, mask = _slide_tissue(job.reader, job.slide_mpp, job.region)
    mm2 = float(mask.sum()) * (downsample * job.slide_mpp) ** 2 / 1e6
    job.times["tissue_s"] = time.perf_counter() - t
    if not mask.any():
        where = "" if job.region is None else " in the ROI"
        log.warning("%s: no tissue found%s: the outputs hold no nuclei", job.path, where)
    plan = engine.make_plan(
        job.reader, mpp=job.slide_mpp, model_mpp=job.work["mpp"], chunk=chunk, halo=halo,
        tissue=mask, tissue_downsample=downsample, roi=job.region,
    )  # fmt: skip
    _save_plan(job.chunk_dir, plan, resume=resume)
    return _Tissue(overview, downsample, mask, mm2), plan


def _fit_stain_step(
    job: _Job, seen: _Tissue, plan: engine.SlidePlan, loading: Future | None
) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """The chunks' segmenter, with the slide's stain statistics (:func:`_build_segmenter`)."""
    t = time.perf_counter()
    tissue_work_mpx = float(seen.mask.sum()) * (seen.downsample / plan.scale) ** 2 / 1e6
    built = _build_segmenter(
        job.work, job.reader, plan, loading, job.chunk_dir, tissue_work_mpx=tissue_work_mpx
    )
    job.times["model_and_stain_s"] = time.perf_counter() - t
    return built


def _chunks_step(
    job: _Job, plan: engine.SlidePlan, segment: Any, *, progress: bool
) -> dict[str, Any]:
    """:func:`_run_chunks`, timed: the whole phase and its reading, network and finishing."""
    t = time.perf_counter()
    stats = _run_chunks(job.reader, plan, segment, job.chunk_dir, progress=progress)
    job.times["chunks_s"] = time.perf_counter() - t
    job.times["chunk_read_s"] = stats.pop("read_s")  # waiting for the reading thread
    job.times["chunk_segment_s"] = stats.pop("segment_s")  # normalisation and network
    job.times["chunk_finish_s"] = stats.pop("finish_s")  # post-processing and writing
    return stats


def _finish(
    job: _Job, seen: _Tissue, plan: engine.SlidePlan, segment: Any, setup: Any,
    chunk_stats: dict[str, Any], *, overwrite: bool, resume: bool, keep_chunks: bool,
    thumbnail_size: int, argv: list[str] | None, started: float,
) -> dict[str, Any]:  # fmt: skip
    """The slide's outputs from its chunks, then ``report.json`` and ``report.html``; the
    ``chunks/`` folder is removed unless ``keep_chunks``."""
    assembled = _assemble(
        job.reader, plan, job.chunk_dir, job.outputs, seen.overview, seen.downsample, seen.mask,
        overwrite=overwrite or resume, stem=slide_stem(job.path), times=job.times,
        thumbnail_size=thumbnail_size,
    )  # fmt: skip
    report = _report(job, seen, plan, segment, setup, chunk_stats, assembled, argv, started)
    with _atomic_json(job.outputs["report"], overwrite or resume) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    write_html_report(job.outputs, overwrite=overwrite or resume)
    if not keep_chunks:
        shutil.rmtree(job.chunk_dir)
    return report


def _report(
    job: _Job, seen: _Tissue, plan: engine.SlidePlan, segment: Any, setup: Any,
    chunk_stats: dict[str, Any], assembled: dict[str, Any], argv: list[str] | None,
    started: float,
) -> dict[str, Any]:  # fmt: skip
    """``report.json``'s content."""
    from nucseg.pipeline import provenance

    reader, n, tissue_mm2 = job.reader, assembled["nuclei"], seen.mm2
    return {
        "slide": str(job.path),
        "format": reader.format,
        "dimensions": list(reader.dimensions),
        "levels": len(reader.levels),
        "mpp_file": reader.mpp,
        "mpp": job.slide_mpp,
        "work_mpp": plan.work_mpp,
        "level_read": plan.level,
        "scale": plan.scale,
        "model": job.work["describe"],
        "stain": (setup or {}).get("stain"),
        "predict": (setup or {}).get("predict"),
        "runtime": (setup or {}).get("runtime"),
        "chunk": plan.chunk,
        "halo": plan.halo,
        "chunks": len(plan.chunks),
        "chunks_resumed": chunk_stats["resumed"],
        "cut_nuclei": sum(chunk_stats["cut"]),
        "tissue_mm2": tissue_mm2,
        "roi": plan.roi_wkt,
        "nuclei": n,
        "nuclei_per_mm2": n / tissue_mm2 if tissue_mm2 > 0 else None,
        **_types_entry(job.outputs["parquet"], tissue_mm2),
        "tissue_mpx": tissue_mm2 * 1e6 / job.slide_mpp**2 / 1e6,
        "chunk_mpx": chunk_stats["pixels"] * plan.scale**2 / 1e6,
        "network_mpx": getattr(segment, "network_pixels", 0) * plan.scale**2 / 1e6,
        "seconds": time.perf_counter() - started,
        "times": job.times,
        "quality": assembled["quality"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "outputs": {k: str(v) for k, v in job.outputs.items()},
        **provenance(argv),
    }


def _types_entry(parquet: Path, tissue_mm2: float) -> dict[str, Any]:
    """The report's ``types`` (per-type counts and densities), absent for an untyped model."""
    from nucseg.slide.type_report import slide_types

    types = slide_types(parquet, tissue_mm2=tissue_mm2)
    return {} if types is None else {"types": types}


@contextlib.contextmanager
def _clean_failed_start(folder: Path, chunk_dir: Path) -> Iterator[None]:
    """If the block fails (or is interrupted) before any chunk is finished, remove the
    ``chunks/`` folder it made, and the slide's folder if it made it and it is empty: a start
    that failed (a damaged slide, a wrong option) leaves nothing behind."""
    had_folder, had_chunks = folder.exists(), chunk_dir.exists()
    try:
        yield
    except BaseException:
        if not had_chunks and chunk_dir.is_dir() and not any(chunk_dir.glob("r*_c*.parquet")):
            shutil.rmtree(chunk_dir, ignore_errors=True)
        if not had_folder and folder.is_dir() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_html_report(outputs: dict[str, Path], *, overwrite: bool) -> None:
    """``report.html`` (:mod:`nucseg.slide.htmlreport`) beside ``report.json``; a failure is
    one warning line, since every other output is written by then."""
    from nucseg.slide.htmlreport import write_slide_report

    try:
        write_slide_report(outputs["report"].parent, overwrite=overwrite)
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s: report.html not written: %s", outputs["report"].parent, err)


def _atomic_json(path: Path, overwrite: bool):
    from nucseg.io import atomic_write

    return atomic_write(path, overwrite=overwrite)


def _resolve_work(model: str | None, method: str | None, segmenter: Any) -> dict[str, Any]:
    """What segments the chunks: a model folder, a classical method, or a callable; its mpp."""
    given = sum(x is not None for x in (model, method, segmenter))
    if given > 1:
        raise ValueError("give at most one of a model, a method and a segmenter")
    if segmenter is not None:
        return {"kind": "callable", "segmenter": segmenter, "mpp": DEFAULT_MODEL_MPP,
                "describe": {"callable": repr(segmenter)}}  # fmt: skip
    if method is not None:
        from nucseg.classical import get_method

        get_method(method)  # unknown: KeyError listing the valid names
        return {"kind": "method", "method": method, "mpp": DEFAULT_MODEL_MPP,
                "describe": {"method": method}}  # fmt: skip
    from nucseg.pipeline import resolve_model
    from nucseg.provenance import portable_path

    folder = resolve_model(model or "default")
    value, source = model_mpp(folder)
    weights = folder / "model.safetensors"
    return {
        "kind": "model",
        "folder": folder,
        "mpp": value,
        "describe": {
            "model": str(model or "default"),
            "folder": portable_path(folder),  # no machine path in reports
            "sha256": _sha256(weights),
            "mpp": value,
            "mpp_source": source,
        },
    }


def _save_plan(chunk_dir: Path, plan: engine.SlidePlan, *, resume: bool) -> None:
    from nucseg.io import atomic_write

    chunk_dir.mkdir(parents=True, exist_ok=True)
    file = chunk_dir / "plan.json"
    if file.is_file():
        old = engine.SlidePlan.from_json(file.read_text())
        if old != plan:
            raise ValueError(
                f"{file}: the unfinished run was planned with other settings (slide, mpp, "
                "model mpp, chunk, halo, tissue or ROI); pass --overwrite to start again"
            )
        return
    with atomic_write(file) as tmp:
        tmp.write_text(plan.to_json())


def _start_loading(work: dict[str, Any], predict: dict[str, Any]) -> Future | None:
    """For a model, :func:`nucseg.slide.engine.load_predictor` started in a thread (None
    otherwise); the thread ends with the load, and its errors surface at ``result()``."""
    if work["kind"] != "model":
        return None
    from nucseg.atomic import worker_thread_signals

    pool = ThreadPoolExecutor(max_workers=1, initializer=worker_thread_signals)
    args = (str(work["folder"]), json.dumps(predict, sort_keys=True))
    future = pool.submit(engine.load_predictor, *args)
    pool.shutdown(wait=False)
    return future


def _build_segmenter(
    work: dict[str, Any],
    reader: Any,
    plan: engine.SlidePlan,
    loading: Future | None,
    chunk_dir: Path,
    *,
    tissue_work_mpx: float | None = None,
) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """The chunks' segmenter; for a model, the slide's stain statistics are fitted once and kept
    in ``chunks/stain.json``, so a resumed run (or a worker) uses the very same ones, with the
    choice of normalising through a colour table (slides with at least
    :data:`nucseg.slide.engine.COLOUR_TABLE_MIN_MPX` of tissue). The statistics are fitted with
    the model folder's normaliser while ``loading`` (:func:`_start_loading`) builds the network."""
    if work["kind"] == "callable":
        return work["segmenter"], {}
    if work["kind"] == "method":
        from nucseg.pipeline import make_segmenter

        return make_segmenter(work["method"]), {}
    from nucseg.stain import read_normaliser

    normaliser = read_normaliser(work["folder"])  # what Predictor.load reads: the same one
    stain_file = chunk_dir / "stain.json"
    if stain_file.is_file():
        saved = json.loads(stain_file.read_text())
        source, table = saved["source"], saved.get("colour_table", True)
    else:
        from nucseg.io import atomic_write

        source = engine.fit_stain(reader, plan, normaliser)
        table = tissue_work_mpx is None or tissue_work_mpx >= engine.COLOUR_TABLE_MIN_MPX
        with atomic_write(stain_file) as tmp:
            tmp.write_text(json.dumps({"source": source, "colour_table": table}))
    predictor = loading.result()
    stain = None
    if predictor.normaliser is not None:
        stain = {"normaliser": predictor.normaliser.name, "source": source}
    segmenter = engine.ChunkSegmenter(predictor, source, colour_table=table)
    runtime = predictor.runtime if hasattr(predictor, "runtime") else None
    return segmenter, {"stain": stain, "predict": predictor.options, "runtime": runtime}


def finish_workers() -> int:
    """Chunks post-processed at once: ``NUCSEG_FINISH_WORKERS``, else one per 4 cores (1 on up
    to 7 cores, where one thread beside the network already keeps the cores busy), at most 4."""
    value = os.environ.get("NUCSEG_FINISH_WORKERS")
    if value is not None:
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"NUCSEG_FINISH_WORKERS must be a positive integer, got {value!r}")
        return workers
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _run_chunks(
    reader: Any, plan: engine.SlidePlan, segment: Any, chunk_dir: Path, *, progress: bool
) -> dict[str, Any]:
    """Segment the unfinished chunks in a pipeline: the next chunk is read while the network
    works on the current one, and the previous ones are post-processed, measured and written
    meanwhile (numpy, SciPy and shapely release the GIL; on 2 cores this fills the gaps the
    network leaves). Post-processing and finishing a chunk on one core take about three quarters
    of the network's time on all cores (results/slide/chunk_profile.json), so a machine with more
    cores (or a GPU) finishes :func:`finish_workers` chunks at once. At most that many chunks
    wait to be finished, so memory stays flat."""
    from tqdm.auto import tqdm

    from nucseg.slide.chunkio import read_chunk_info, write_chunk

    todo = [c for c in plan.chunks if not engine.chunk_done(chunk_dir, c)]
    stats: dict[str, Any] = {"resumed": len(plan.chunks) - len(todo), "cut": [], "pixels": 0}
    stats.update(read_s=0.0, segment_s=0.0, finish_s=0.0)
    for index in plan.chunks:
        r0, c0, r1, c1 = plan.core(index)
        stats["pixels"] += (r1 - r0) * (c1 - c0)
    bar = tqdm(total=len(todo), desc=Path(plan.slide).name, unit="chunk", disable=not progress)
    start, done_pixels = time.perf_counter(), 0
    staged = hasattr(segment, "predict") and hasattr(segment, "labels")
    stain = engine.stain_decision(segment)

    def finish(index: tuple[int, int], pixels: np.ndarray, predicted: Any) -> float:
        t = time.perf_counter()
        labels, types = predicted, None
        if staged and hasattr(segment, "typed_labels"):
            labels, types = segment.typed_labels(pixels.shape[:2], predicted)
        elif staged:
            labels = segment.labels(pixels.shape[:2], predicted)
        labels = np.asarray(labels, dtype=np.int32)
        write_chunk(plan, index, pixels, labels, chunk_dir, types=types, stain=stain)
        return time.perf_counter() - t

    def account(job: Any, index: tuple[int, int]) -> None:
        nonlocal done_pixels
        stats["finish_s"] += job.result()
        r0, c0, r1, c1 = plan.core(index)
        done_pixels += (r1 - r0) * (c1 - c0) * plan.scale**2
        bar.set_postfix_str(f"{done_pixels / 1e6 / (time.perf_counter() - start):.2f} MPx/s")
        bar.update()

    from nucseg.atomic import worker_thread_signals

    workers = finish_workers()
    hold = {"initializer": worker_thread_signals}  # signals go to this thread
    with (
        ThreadPoolExecutor(max_workers=1, **hold) as reading,
        ThreadPoolExecutor(max_workers=workers, **hold) as ending,
    ):
        pending = reading.submit(engine.read_chunk, reader, plan, todo[0]) if todo else None
        finishing: collections.deque[tuple[Any, tuple[int, int]]] = collections.deque()
        for i, index in enumerate(todo):
            t = time.perf_counter()
            pixels = pending.result()
            stats["read_s"] += time.perf_counter() - t
            if i + 1 < len(todo):
                pending = reading.submit(engine.read_chunk, reader, plan, todo[i + 1])
            t = time.perf_counter()
            predicted = segment.predict(pixels) if staged else segment(pixels)
            stats["segment_s"] += time.perf_counter() - t
            while len(finishing) >= workers:  # chunks done in order: resume stays simple
                account(*finishing.popleft())
            finishing.append((ending.submit(finish, index, pixels, predicted), index))
        while finishing:
            account(*finishing.popleft())
    bar.close()
    for index in plan.chunks:
        stats["cut"].append(read_chunk_info(chunk_dir, engine.chunk_name(index)).cut)
    return stats


def _assemble(
    reader: Any,
    plan: engine.SlidePlan,
    chunk_dir: Path,
    outputs: dict[str, Path],
    overview: np.ndarray,
    downsample: float,
    mask: np.ndarray,
    *,
    overwrite: bool,
    stem: str,
    times: dict[str, float],
    thumbnail_size: int = 4000,
) -> dict[str, Any]:
    from nucseg.slide import writers
    from nucseg.slide.chunkio import read_chunk_info

    infos = [read_chunk_info(chunk_dir, engine.chunk_name(c)) for c in plan.chunks]
    shape = (reader.dimensions[1], reader.dimensions[0])
    t = time.perf_counter()
    n = writers.write_parquet(outputs["parquet"], infos, overwrite=overwrite)
    times["parquet_s"] = time.perf_counter() - t
    t = time.perf_counter()
    writers.write_geojson(outputs["geojson"], infos, stem=stem, overwrite=overwrite)
    times["geojson_s"] = time.perf_counter() - t
    if "labels" in outputs:
        t = time.perf_counter()
        writers.write_label_pyramid(
            outputs["labels"], infos, shape=shape, scale=plan.scale, mpp=plan.mpp,
            overwrite=overwrite,
        )  # fmt: skip
        times["labels_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tissue_rgb = np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)
    _write_png(outputs["tissue"], tissue_rgb, overwrite=overwrite)
    # the slide shrunk to thumbnail_size pixels a side (read from the pyramid level just finer
    # and resampled), if finer than the tissue overview
    side = max(shape) / thumbnail_size
    view = overview
    if side < downsample:
        from nucseg.slide.tissue import read_overview

        view, _ = read_overview(reader, max(side, 1.0))
    writers.write_thumbnail(
        outputs["overlay"], view, infos, shape=shape, scale=plan.scale, size=thumbnail_size,
        overwrite=overwrite,
    )  # fmt: skip
    times["overlay_s"] = time.perf_counter() - t
    summary = _quality_summary(infos, stem)
    summary["scale"] = _scale_check(outputs["parquet"], plan.mpp, stem)
    summary["slide_flags"] = [summary["scale"]["warning"]] if _flagged(summary["scale"]) else []
    return {"nuclei": n, "quality": summary}


def _flagged(scale: dict[str, Any] | None) -> bool:
    return scale is not None and scale["warning"] is not None


def _scale_check(table: Path, mpp: float, stem: str) -> dict[str, Any] | None:
    """:func:`nucseg.quality.scale_check` of the slide's nuclei (their ``area_um2`` column); a
    mismatch is logged as one warning line."""
    import pyarrow.parquet as pq

    from nucseg.quality import scale_check

    areas = pq.read_table(table, columns=["area_um2"]).column("area_um2").to_numpy()
    scale = scale_check(areas, mpp=mpp)
    if _flagged(scale):
        log.warning("%s: %s", stem, scale["warning"])
    return scale


def _quality_summary(infos: list[Any], stem: str) -> dict[str, Any]:
    """The chunks' quality figures (:func:`nucseg.slide.chunkio.chunk_quality`) for the report,
    and one warning line per kind of flag with the number of chunks that raised it."""
    assessed = {info.name: info.quality for info in infos if info.quality is not None}
    kinds: dict[str, list[str]] = {}
    for name, figures in assessed.items():
        for line in figures["warnings"]:
            kinds.setdefault(line.split(" (")[0].split(":")[0], []).append(name)
    for kind, names in kinds.items():
        first = assessed[names[0]]
        if kind.startswith("stain") and first.get("stain_remedy"):
            continue  # a stain flag the slide's stain decision acted on: it said so in its line
        line = next(w for w in first["warnings"] if w.split(" (")[0].split(":")[0] == kind)
        log.warning("%s: %d of %d tissue chunks: %s", stem, len(names), len(assessed), line)
    return {
        "chunks_assessed": len(assessed),
        "chunks_flagged": len({n for names in kinds.values() for n in names}),
        "flags": {kind: names for kind, names in kinds.items()},
        "chunks": assessed,
    }
