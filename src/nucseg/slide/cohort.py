"""Cohorts on Dask: the chunks of many slides as tasks on a ``dask.distributed`` cluster.

Each slide becomes three kinds of task, all run by workers and all carrying paths, options and
chunk indices, never pixels: :func:`prepare_slide` (checks, tissue mask, plan and stain statistics,
written into the slide's ``chunks/`` folder), :func:`nucseg.slide.engine.chunk_task` once per
chunk (the very function and files of the single-process path), and :func:`finish_slide`, which
assembles the slide's outputs from the chunk files with the single-process writers (streaming,
one chunk at a time) and adds the slide's partition to ``OUT/cohort.parquet``. Scheduling,
retries and the recovery of a lost worker's tasks are Dask's: the client submits futures, follows
them with :class:`distributed.as_completed` and keeps at most ``max_active`` slides in flight, so
its memory does not grow with the cohort. A model is loaded once per worker process, by
:class:`ModelLoader` (a worker plugin) into :func:`nucseg.slide.engine.load_predictor`'s cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from distributed import WorkerPlugin

from nucseg.slide import engine, run, tissue
from nucseg.slide.reader import open_slide

log = logging.getLogger(__name__)

__all__ = [
    "ModelLoader",
    "SlideOptions",
    "finish_slide",
    "make_client",
    "prepare_slide",
    "run_cohort",
    "write_partition",
]


@dataclasses.dataclass(frozen=True)
class SlideOptions:
    """Per-slide options of a cohort run, as for :func:`nucseg.slide.segment_slide`."""

    model: str | None = None
    method: str | None = None
    mpp: float | None = None
    force_mpp: bool = False
    roi: tuple[tuple[int, int, int, int], ...] | None = None
    roi_geojson: str | None = None
    chunk: int = run.DEFAULT_CHUNK
    halo: int = 128
    predict: tuple[tuple[str, Any], ...] = ()
    labels: bool = True
    gzip: bool = False
    resume: bool = False
    overwrite: bool = False
    keep_chunks: bool = False
    thumbnail_size: int = 4000

    @property
    def predict_json(self) -> str:
        """Prediction settings as :func:`~nucseg.slide.engine.load_predictor`'s cache key."""
        return json.dumps(dict(self.predict), sort_keys=True)


class ModelLoader(WorkerPlugin):
    """Worker plugin: set torch's threads and load the model once when a worker starts.

    Registered with :meth:`distributed.Client.register_plugin`, it runs on every worker present
    and to come; the chunk tasks then find the model in the process's cache.
    """

    name = "nucseg-model"

    def __init__(self, folder: str, predict_json: str, *, threads: int | None = None) -> None:
        self.folder, self.predict_json, self.threads = folder, predict_json, threads

    def setup(self, worker: Any) -> None:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        engine.load_predictor(self.folder, self.predict_json)


class WorkerLogging(WorkerPlugin):
    """Worker plugin: a worker's nucseg warnings print as ``nucseg: warning: ...`` lines, as
    the client's (:mod:`nucseg._logging`); Dask's own logs stay quiet unless ``verbose``."""

    name = "nucseg-logging"

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose

    def setup(self, worker: Any) -> None:
        from nucseg._logging import setup_logging

        setup_logging(verbose=self.verbose)


def _work(options: SlideOptions) -> dict[str, Any]:
    return run._resolve_work(options.model, options.method, None)


def prepare_slide(
    path: str, out_dir: str, options: SlideOptions, work: dict[str, Any]
) -> dict[str, Any]:
    """Check a slide, find its tissue, plan its chunks and fit its stain statistics (a task).

    Writes ``plan.json``, ``stain.json`` (for a model) and ``tissue.npy`` into
    ``OUT/<slide>/chunks/``, exactly as :func:`nucseg.slide.segment_slide` does before its chunk
    loop, and returns the job: the slide, its folders, the plan's chunks still to do and the
    figures the report needs (a few hundred bytes).
    """
    started = time.time()
    path_ = Path(path)
    reader = open_slide(path_)
    try:
        slide_mpp = run._slide_mpp(path, reader, options.mpp, force=options.force_mpp)
        region = tissue.roi_geometry(
            [tuple(r) for r in options.roi] if options.roi else None, options.roi_geojson
        )
        tissue.check_roi(region, reader.dimensions, path)
        folder, _, chunk_dir = run._prepare_folder(
            path_, out_dir, gzip=options.gzip, labels=options.labels,
            overwrite=options.overwrite, resume=options.resume,
        )  # fmt: skip
        job = _prepare_chunks(path, reader, slide_mpp, region, folder, chunk_dir, options, work)
        fmt, dims, levels = reader.format, reader.dimensions, len(reader.levels)
        file_mpp = reader.mpp
    finally:
        reader.close()
    return {
        "slide": str(path), "out_dir": str(out_dir), "folder": str(folder),
        "chunk_dir": str(chunk_dir), "mpp": slide_mpp, "format": fmt, "dimensions": list(dims),
        "levels": levels, "mpp_file": file_mpp, "started": started, **job,
    }  # fmt: skip


def _prepare_chunks(
    path: str, reader: Any, slide_mpp: float, region: Any, folder: Path, chunk_dir: Path,
    options: SlideOptions, work: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """:func:`prepare_slide`'s work in the slide's folder: tissue, plan, stain statistics (a
    failed start leaves nothing behind, as in :func:`nucseg.slide.segment_slide`)."""
    with run._clean_failed_start(folder, chunk_dir):
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        _, asked, downsample, mask = run._slide_tissue(reader, slide_mpp, region)
        if not mask.any():
            log.warning("%s: no tissue found: the outputs hold no nuclei", path)
        tissue_s = time.perf_counter() - t
        plan = engine.make_plan(
            reader, mpp=slide_mpp, model_mpp=work["mpp"], chunk=options.chunk,
            halo=options.halo, tissue=mask, tissue_downsample=downsample, roi=region,
        )  # fmt: skip
        run._save_plan(chunk_dir, plan, resume=options.resume)
        t = time.perf_counter()
        _, setup = run._build_segmenter(
            work, reader, plan, run._start_loading(work, dict(options.predict)), chunk_dir,
            tissue_work_mpx=float(mask.sum()) * (downsample / plan.scale) ** 2 / 1e6,
        )  # fmt: skip
        stain_s = time.perf_counter() - t
        np.save(chunk_dir / "tissue.npy", mask)
    todo = [c for c in plan.chunks if not engine.chunk_done(chunk_dir, c)]
    return {
        "todo": todo, "resumed": len(plan.chunks) - len(todo), "overview_downsample": asked,
        "downsample": downsample,
        "tissue_mm2": float(mask.sum()) * (downsample * slide_mpp) ** 2 / 1e6,
        "setup": setup, "times": {"tissue_s": tissue_s, "stain_s": stain_s},
    }  # fmt: skip


def finish_slide(
    job: dict[str, Any],
    chunk_results: Sequence[dict[str, Any]],
    options: SlideOptions,
    describe: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Assemble a slide's outputs from its chunk files, write its report and partition (a task).

    ``chunk_results`` are the chunk tasks' results (Dask passes them once all have finished). The
    Parquet table, GeoJSON and label image are written by the single-process writers, one chunk
    at a time; the slide's nuclei then go to ``OUT/cohort.parquet/slide=<stem>/``.
    """
    from nucseg.atomic import atomic_write
    from nucseg.slide.chunkio import read_chunk_info

    chunk_dir, folder = Path(job["chunk_dir"]), Path(job["folder"])
    plan = engine.SlidePlan.from_json((chunk_dir / "plan.json").read_text())
    stem = run.slide_stem(job["slide"])
    outputs = run.output_paths(folder, gzip=options.gzip, labels=options.labels)
    mask = np.load(chunk_dir / "tissue.npy")
    times = dict(job["times"])
    t = time.perf_counter()
    reader = open_slide(job["slide"])
    try:
        overview, downsample = tissue.read_overview(reader, job["overview_downsample"])
        assembled = run._assemble(
            reader, plan, chunk_dir, outputs, overview, downsample, mask,
            overwrite=options.overwrite or options.resume, stem=stem, times=times,
            thumbnail_size=options.thumbnail_size,
        )  # fmt: skip
    finally:
        reader.close()
    times["assemble_s"] = time.perf_counter() - t
    n, area = assembled["nuclei"], job["tissue_mm2"]
    done = [r for r in chunk_results if not r.get("skipped")]
    setup = job["setup"] or {}
    report = {
        "slide": job["slide"], "format": job["format"], "dimensions": job["dimensions"],
        "levels": job["levels"], "mpp_file": job["mpp_file"], "mpp": plan.mpp,
        "work_mpp": plan.work_mpp, "level_read": plan.level, "scale": plan.scale,
        "model": describe, "stain": setup.get("stain"), "predict": setup.get("predict"),
        "runtime": setup.get("runtime"), "chunk": plan.chunk, "halo": plan.halo,
        "chunks": len(plan.chunks),
        "chunks_resumed": job["resumed"],
        "cut_nuclei": sum(read_chunk_info(chunk_dir, engine.chunk_name(c)).cut
                          for c in plan.chunks),
        "tissue_mm2": area, "roi": plan.roi_wkt, "nuclei": n,
        "nuclei_per_mm2": n / area if area > 0 else None,
        **run._types_entry(outputs["parquet"], area),
        "chunk_seconds": sum(r["seconds"] for r in done),
        "seconds": time.time() - job["started"], "times": times,
        "quality": assembled["quality"],
        "outputs": {k: str(v) for k, v in outputs.items()}, "distributed": True, **provenance,
    }  # fmt: skip
    with atomic_write(outputs["report"], overwrite=options.overwrite or options.resume) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    run.write_html_report(outputs, overwrite=options.overwrite or options.resume)
    write_partition(job["out_dir"], stem, outputs["parquet"],
                    overwrite=options.overwrite or options.resume)  # fmt: skip
    if not options.keep_chunks:
        shutil.rmtree(chunk_dir)
    return report


def write_partition(
    out_dir: str | os.PathLike, stem: str, table: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Copy a slide's ``nuclei.parquet`` into ``OUT/cohort.parquet/slide=<stem>/part-0.parquet``.

    The cohort table is a Hive-partitioned Parquet dataset: pandas, pyarrow, DuckDB or
    dask.dataframe read the folder and get a ``slide`` column. Copied one row group (one chunk)
    at a time, under a temporary name (a dot file, which readers skip) renamed when complete.
    """
    import pyarrow.parquet as pq

    from nucseg.atomic import atomic_write

    target = Path(out_dir) / "cohort.parquet" / f"slide={quote(stem, safe='')}" / "part-0.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    source = pq.ParquetFile(table)
    with atomic_write(target, overwrite=overwrite) as tmp:
        with pq.ParquetWriter(tmp, source.schema_arrow, compression="zstd") as writer:
            for i in range(source.num_row_groups):
                writer.write_table(source.read_row_group(i))
    return target


CONNECT_TIMEOUT_S = 120.0
"""Seconds to wait for an existing scheduler: generous (a loaded machine can take over Dask's 30 s
default), but bounded, so a wrong address still fails."""


def make_client(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Any:
    """A :class:`distributed.Client`: of a new LocalCluster of ``workers`` processes, or of the
    existing cluster at ``scheduler`` (``tcp://HOST:PORT``) or described by ``scheduler_file``,
    given up after ``timeout`` seconds.

    A local cluster has one thread per worker; a model's torch threads are then set to
    ``cores // workers`` by :class:`ModelLoader`, so the cores are not oversubscribed.
    """
    from distributed import Client, LocalCluster

    given = sum(x is not None for x in (workers, scheduler, scheduler_file))
    if given != 1:
        raise ValueError("give exactly one of --workers, --scheduler and --scheduler-file")
    if not timeout > 0:
        raise ValueError(f"--connect-timeout must be a positive number of seconds, got {timeout}")
    if scheduler is not None:
        return Client(scheduler, timeout=f"{timeout}s")
    if scheduler_file is not None:
        if not Path(scheduler_file).is_file():
            raise FileNotFoundError(f"--scheduler-file {scheduler_file}: no such file")
        return Client(scheduler_file=str(scheduler_file), timeout=f"{timeout}s")
    if workers < 1:
        raise ValueError(f"--workers must be a positive number of processes, got {workers}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.CRITICAL,  # a failed task is reported once, in slides.csv and stderr
    )  # fmt: skip
    return Client(cluster)


def _torch_threads(client: Any, local: bool) -> int | None:
    if not local:
        return None  # Dask's nanny sets OMP_NUM_THREADS=1 per worker thread
    n = max(1, len(client.scheduler_info()["workers"]))
    return max(1, (os.cpu_count() or 1) // n)


def run_cohort(
    slides: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: SlideOptions,
    *,
    client: Any,
    local: bool = False,
    max_active: int | None = None,
    torch_threads: int | None = None,
    argv: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Segment ``slides`` on the Dask cluster of ``client``; one summary row per slide.

    Each task is retried once (``retries=1``); a slide whose preparation, chunk or assembly still
    fails is reported ``failed`` with the error and the others go on. At most ``max_active``
    slides (default: twice the cluster's threads at the time, at least 4) are in flight; earlier
    slides' chunks run first. With a model, torch uses ``torch_threads`` threads per worker
    (default: the cores shared among the workers of a ``local`` cluster; else as Dask's nanny
    set ``OMP_NUM_THREADS``).

    Returns
    -------
    list of dict
        ``slide``, ``status``, ``nuclei``, ``tissue_mm2``, ``nuclei_per_mm2``, ``minutes``,
        ``chunk_seconds``, ``error``: in the order of ``slides``.
    """
    from distributed import as_completed

    from nucseg.provenance import provenance
    from nucseg.slide.summary import failed_row, summary_row

    work = _work(options)
    if work["kind"] == "model":
        threads = torch_threads if torch_threads is not None else _torch_threads(client, local)
        loader = ModelLoader(str(work["folder"]), options.predict_json, threads=threads)
        client.register_plugin(loader)
    prov = provenance(argv)
    task = {"model": str(work["folder"]) if work["kind"] == "model" else None,
            "method": options.method, "predict": dict(options.predict)}  # fmt: skip
    rows = [{"slide": str(p), "status": "ok", "error": ""} for p in slides]
    queue = list(enumerate(slides))[::-1]
    pending = as_completed()
    what: dict[str, tuple[str, int]] = {}

    def submit_prepare() -> None:
        i, path = queue.pop()
        future = client.submit(prepare_slide, str(path), str(out_dir), options, work,
                               retries=1, pure=False, priority=-i)  # fmt: skip
        what[future.key] = ("prepare", i)
        pending.add(future)

    def top_up() -> None:  # the cluster may grow (dask-jobqueue): the default limit follows it
        limit = max_active or max(4, 2 * sum(client.nthreads().values()))
        while queue and len(what) < limit:
            submit_prepare()

    top_up()
    for future in pending:
        kind, i = what.pop(future.key)
        if future.status != "finished":
            message = _message(future.exception())
            if rows[i]["slide"] not in message:
                message = f"{rows[i]['slide']}: {message}"
            log.info("%s failed: %s", rows[i]["slide"], message)
            rows[i] = failed_row(rows[i]["slide"], message, future.exception(), out_dir)
        elif kind == "prepare":
            job = future.result()
            chunks = [client.submit(engine.chunk_task, job["chunk_dir"], index, **task,
                                    retries=1, pure=False, priority=-i)
                      for index in job["todo"]]  # fmt: skip
            final = client.submit(finish_slide, job, chunks, options, work["describe"], prov,
                                  retries=1, pure=False, priority=1 - i)  # fmt: skip
            what[final.key] = ("finish", i)
            pending.add(final)
            continue
        else:
            rows[i] = summary_row(rows[i]["slide"], future.result())
        top_up()
    return rows


def _message(err: BaseException | None) -> str:
    if err is None:
        return "cancelled"
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err) or type(err).__name__


def cmd_cohort(args: Any, predict: dict[str, Any]) -> int:
    """``nucseg slide --workers N | --scheduler ADDRESS | --scheduler-file FILE``."""
    import sys

    from nucseg.slide.summary import exit_status, table, write_cohort_report, write_summary

    options = SlideOptions(
        model=args.model, method=args.method, mpp=args.mpp, force_mpp=args.force_mpp,
        roi=tuple(args.roi) if args.roi else None,
        roi_geojson=str(args.roi_geojson) if args.roi_geojson else None,
        chunk=args.chunk, halo=args.halo, predict=tuple(sorted(predict.items())),
        labels=not args.no_labels, gzip=args.gzip, resume=args.resume,
        overwrite=args.overwrite, keep_chunks=args.keep_chunks,
        thumbnail_size=args.thumbnail_size,
    )  # fmt: skip
    _work(options)  # an unknown model or method fails here, before any cluster starts
    if not args.verbose:  # distributed set its loggers up when imported: INFO, own handler
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    client = make_client(
        workers=args.workers,
        scheduler=args.scheduler,
        scheduler_file=None if args.scheduler_file is None else str(args.scheduler_file),
        timeout=args.connect_timeout,
    )
    try:
        if args.workers is not None:  # its workers print to this terminal
            client.register_plugin(WorkerLogging(verbose=args.verbose))
        print(f"dashboard: {_dashboard(client)}", flush=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = run_cohort(
            args.slides, out, options, client=client, local=args.workers is not None,
            argv=sys.argv,
        )  # fmt: skip
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None and args.workers is not None:
            cluster.close()
    for row in rows:
        if row["status"] != "ok" or row.get("refused"):
            print(f"nucseg: error: {row.get('refused') or row['error']}", file=sys.stderr)
    write_summary(Path(args.out) / "slides.csv", rows)
    write_cohort_report(args.out)
    print(table(rows))
    return exit_status(rows)


def _dashboard(client: Any) -> str:
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return f"{client.dashboard_link} (not served: the scheduler's Python lacks bokeh)"
    return client.dashboard_link
