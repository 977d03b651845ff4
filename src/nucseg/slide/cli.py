"""``nucseg slide``: the whole-slide command (parser and handler; heavy imports inside)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from nucseg.slide.summary import SUMMARY_COLUMNS  # noqa: F401  (re-exported)

log = logging.getLogger("nucseg")


def _roi(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        x, y, w, h = (int(float(p)) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--roi expects x,y,w,h in level-0 pixels, got {text!r}"
        ) from None
    return x, y, w, h


def add_parser(sub: Any) -> None:
    """Add the ``slide`` sub-command to the ``nucseg`` parser's sub-parsers."""
    p = sub.add_parser(
        "slide",
        help="segment whole slides (SVS, NDPI, MRXS, OME-TIFF, ...) chunk by chunk",
        description="Segment every nucleus of whole-slide images, writing OUT/<slide>/: "
        "nuclei.parquet, nuclei.geojson, labels.ome.tif, tissue.png, thumbnail_overlay.png, "
        "report.json, report.html; and OUT/slides.csv, one row per slide, and OUT/cohort.html. "
        "See docs/slides.md; `nucseg view OUT` to look at them.",
    )
    p.add_argument("slides", nargs="+", type=Path, metavar="SLIDE")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="trained model")
    p.add_argument("--method", default=None, help="classical method instead of a model")
    p.add_argument(
        "--mpp", type=float, default=None, help="microns per level-0 pixel (overrides the file's)"
    )
    p.add_argument(
        "--force-mpp",
        action="store_true",
        help="use a microns per pixel (--mpp or the file's) outside the plausible 0.05-5",
    )
    p.add_argument(
        "--roi", type=_roi, action="append", metavar="X,Y,W,H", help="level-0 region (repeatable)"
    )
    p.add_argument("--roi-geojson", type=Path, metavar="FILE", help="QuPath annotations to keep")
    p.add_argument("--chunk", type=int, default=4080, help="chunk core side, model pixels")
    p.add_argument("--halo", type=int, default=128, help="chunk halo, model pixels")
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="network tile side, a multiple of 32 up to 2048 (default: the model's)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="overlap of neighbouring network tiles as a fraction of the tile, in [0, 1) "
        "(default: 8 pixels, or the model's own if less; docs/slides.md)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="network tiles per batch, >= 1 (default: "
        "the model's)"
    )  # fmt: skip
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "openvino"),
        default=None,
        help="what runs the network (default auto: OpenVINO where installed, else torch)",
    )
    p.add_argument("--no-labels", action="store_true", help="do not write labels.ome.tif")
    p.add_argument("--gzip", action="store_true", help="write nuclei.geojson.gz")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--keep-chunks", action="store_true", help="keep the per-chunk work files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--thumbnail-size", type=int, default=4000, metavar="PIXELS",
        help="longest side of thumbnail_overlay.png (at most 2 MB: palette, then smaller)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, metavar="N", help="Dask LocalCluster of N processes")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="existing Dask scheduler")
    p.add_argument("--scheduler-file", type=Path, metavar="FILE", help="Dask scheduler file")
    p.add_argument(
        "--connect-timeout", type=float, default=120.0, metavar="SECONDS",
        help="give up connecting to --scheduler or --scheduler-file after this long (default 120)",
    )  # fmt: skip
    p.set_defaults(func=cmd_slide)


def check_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check every option of ``nucseg slide`` (no file is read, nothing heavy imported); return
    the prediction settings given. The same checks as ``nucseg segment`` (:mod:`nucseg._checks`).
    """
    from nucseg._checks import check_count, check_mpp, check_predict_option
    from nucseg.slide.run import slide_stem

    if args.model is not None and args.method is not None:
        raise ValueError("give either --model or --method, not both")
    if args.roi_geojson is not None and not args.roi_geojson.is_file():
        raise FileNotFoundError(f"--roi-geojson {args.roi_geojson}: no such file")
    check_count(args.chunk, option="--chunk", low=1, what="a positive number of pixels")
    check_count(args.halo, option="--halo", low=0, what=">= 0 pixels")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap is a fraction of the tile in [0, 1), got {args.overlap}")
    check_count(args.tile, option="--tile", low=1, what="a positive number of pixels")
    check_count(args.workers, option="--workers", low=1, what="a positive number of processes")
    if args.mpp is not None:
        check_mpp(args.mpp, what=f"--mpp {args.mpp:g}", force=args.force_mpp)
    for x, y, w, h in args.roi or []:
        if w <= 0 or h <= 0:
            raise ValueError(f"--roi {x},{y},{w},{h}: width and height must be positive")
    predict = {}
    for key, value in (("tile", args.tile), ("overlap", args.overlap),
                       ("batch_size", args.batch_size), ("backend", args.backend)):  # fmt: skip
        if value is not None:
            option = f"--{key.replace('_', '-')} {value}"
            predict[key] = check_predict_option(key, value, option=option)
    if predict and args.method is not None:
        raise ValueError(f"--method {args.method} has no network: --tile, --overlap, "
                         "--batch-size and --backend apply to a model")  # fmt: skip
    stems = [slide_stem(p) for p in args.slides]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"several slides share the name(s) {clash}: their outputs would clash")
    return predict


def cmd_slide(args: argparse.Namespace) -> int:
    """Segment each slide; one failing slide is reported and the others go on."""
    # Before torch loads OpenMP: its threads sleep rather than spin while they wait, so the
    # network shares the cores with the reading and post-processing threads of the chunk
    # pipeline (the chunk phase about 17 % faster on 2 cores; a pure forward pass loses some).
    # A value set by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from nucseg.atomic import check_writable_folder, folder_lock
    from nucseg.pipeline import check_segmenter, check_weights
    from nucseg.slide.summary import exit_status, table, write_cohort_report, write_summary

    predict = check_options(args)
    if args.thumbnail_size < 1:
        raise ValueError(f"--thumbnail-size must be a positive number of pixels, got "
                         f"{args.thumbnail_size}")  # fmt: skip
    if args.method is not None:
        check_segmenter(args.method)
    else:
        check_weights(check_segmenter(model=args.model or "default", **predict))
    check_writable_folder(args.out, what="--out folder")
    with folder_lock(args.out):
        if (args.workers, args.scheduler, args.scheduler_file) != (None, None, None):
            from nucseg.slide.cohort import cmd_cohort

            return cmd_cohort(args, predict)
        rows: list[dict[str, Any]] = []
        try:
            for path in args.slides:
                rows.append(_one_slide(path, args, predict))
        finally:  # also on Ctrl-C: the slides finished so far keep their rows
            if rows:
                write_summary(args.out / "slides.csv", rows)
    write_cohort_report(args.out)
    print(table(rows))
    return exit_status(rows)


def _one_slide(path: Path, args: argparse.Namespace, predict: dict[str, Any]) -> dict[str, Any]:
    """Segment one slide of a single-process run; its summary row. Any error of the slide
    (an unreadable file, a refusal, a library's own exception) is reported on one line and the
    row says ``failed``, except that a refused rerun keeps a finished slide's row."""
    from nucseg.pipeline import error_message
    from nucseg.slide.cohort import write_partition  # OUT/cohort.parquet, as with Dask
    from nucseg.slide.run import segment_slide, slide_stem
    from nucseg.slide.summary import failed_row, summary_row

    try:
        report = segment_slide(
            path, args.out, model=args.model, method=args.method, mpp=args.mpp,
            force_mpp=args.force_mpp, roi=args.roi, roi_geojson=args.roi_geojson,
            chunk=args.chunk, halo=args.halo, predict=predict, labels=not args.no_labels,
            gzip=args.gzip, resume=args.resume, overwrite=args.overwrite,
            keep_chunks=args.keep_chunks, progress=not args.no_progress, argv=sys.argv,
            thumbnail_size=args.thumbnail_size,
        )  # fmt: skip
        write_partition(args.out, slide_stem(path), report["outputs"]["parquet"],
                        overwrite=args.overwrite)  # fmt: skip
    except Exception as err:  # noqa: BLE001 (one slide's failure must not stop the others)
        if args.verbose:
            log.exception("%s failed", path)
        message = error_message(err)
        if not isinstance(err, OSError | KeyError | ValueError | TypeError | RuntimeError):
            message = f"{type(err).__name__}: {message}"
        if str(path) not in message:
            message = f"{path}: {message}"
        print(f"nucseg: error: {message}", file=sys.stderr)
        return failed_row(path, message, err, args.out)
    return summary_row(path, report)


def scale_warnings(images: list[Path], *, mpp: float | None, model: str | None) -> list[str]:
    """``nucseg segment``'s scale check: one line per image whose microns per pixel (``mpp``,
    else the file's own) differs from the model's by more than 25 %.

    ``model`` is a model name or folder, None for a classical method (whose parameters were
    tuned on 40x images: :data:`nucseg.slide.run.DEFAULT_MODEL_MPP`).
    """
    from nucseg.pipeline import resolve_model
    from nucseg.slide.reader import file_mpp, scale_mismatch
    from nucseg.slide.run import DEFAULT_MODEL_MPP, model_mpp

    expected = model_mpp(resolve_model(model))[0] if model is not None else DEFAULT_MODEL_MPP
    lines = []
    for image in images:
        message = scale_mismatch(mpp if mpp is not None else file_mpp(image), expected)
        if message is not None:
            lines.append(f"nucseg: warning: {image}: {message}")
    return lines
