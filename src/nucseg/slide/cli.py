"""``nucseg slide``: the whole-slide command (parser and handler; heavy imports inside)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from nucseg.slide.summary import SUMMARY_COLUMNS  # noqa: F401  (re-exported)
from nucseg.slide.summary import table as _table
from nucseg.slide.summary import write_summary as _write_summary

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
        "report.json; and OUT/slides.csv, one row per slide. See docs/slides.md.",
    )
    p.add_argument("slides", nargs="+", type=Path, metavar="SLIDE")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="trained model")
    p.add_argument("--method", default=None, help="classical method instead of a model")
    p.add_argument(
        "--mpp", type=float, default=None, help="microns per level-0 pixel (overrides the file's)"
    )
    p.add_argument(
        "--roi", type=_roi, action="append", metavar="X,Y,W,H", help="level-0 region (repeatable)"
    )
    p.add_argument("--roi-geojson", type=Path, metavar="FILE", help="QuPath annotations to keep")
    p.add_argument("--chunk", type=int, default=4080, help="chunk core side, model pixels")
    p.add_argument("--halo", type=int, default=128, help="chunk halo, model pixels")
    p.add_argument("--tile", type=int, default=None, help="network tile side (default: model's)")
    p.add_argument(
        "--overlap", type=float, default=None, help="network tile overlap (default 16 pixels)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="network tiles per batch")
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
    p.add_argument("--workers", type=int, metavar="N", help="Dask LocalCluster of N processes")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="existing Dask scheduler")
    p.add_argument("--scheduler-file", type=Path, metavar="FILE", help="Dask scheduler file")
    p.set_defaults(func=cmd_slide)


def cmd_slide(args: argparse.Namespace) -> int:
    """Segment each slide; one failing slide is reported and the others go on."""
    # Before torch loads OpenMP: its threads sleep rather than spin while they wait, so the
    # network shares the cores with the reading and post-processing threads of the chunk
    # pipeline (the chunk phase about 17 % faster on 2 cores; a pure forward pass loses some).
    # A value set by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from nucseg.slide.run import segment_slide, slide_stem

    if args.model is not None and args.method is not None:
        raise ValueError("give either --model or --method, not both")
    if args.roi_geojson is not None and not args.roi_geojson.is_file():
        raise FileNotFoundError(f"--roi-geojson {args.roi_geojson}: no such file")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be a positive number of pixels, got {args.chunk}")
    if args.halo < 0:
        raise ValueError(f"--halo must be >= 0 pixels, got {args.halo}")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap is a fraction of the tile in [0, 1), got {args.overlap}")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile must be a positive number of pixels, got {args.tile}")
    stems = [slide_stem(p) for p in args.slides]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"several slides share the name(s) {clash}: their outputs would clash")
    predict = {
        k: v
        for k, v in (
            ("tile", args.tile),
            ("overlap", args.overlap),
            ("batch_size", args.batch_size),
            ("backend", args.backend),
        )
        if v is not None
    }
    if (args.workers, args.scheduler, args.scheduler_file) != (None, None, None):
        from nucseg.slide.cohort import cmd_cohort

        return cmd_cohort(args, predict)
    rows = []
    for path in args.slides:
        row: dict[str, Any] = {"slide": str(path), "status": "ok", "error": ""}
        try:
            report = segment_slide(
                path,
                args.out,
                model=args.model,
                method=args.method,
                mpp=args.mpp,
                roi=args.roi,
                roi_geojson=args.roi_geojson,
                chunk=args.chunk,
                halo=args.halo,
                predict=predict,
                labels=not args.no_labels,
                gzip=args.gzip,
                resume=args.resume,
                overwrite=args.overwrite,
                keep_chunks=args.keep_chunks,
                progress=not args.no_progress,
                argv=sys.argv,
            )
            row.update(
                nuclei=report["nuclei"],
                tissue_mm2=round(report["tissue_mm2"], 4),
                nuclei_per_mm2=round(report["nuclei_per_mm2"] or 0.0, 1),
                minutes=round(report["seconds"] / 60, 2),
                chunk_seconds=round(report["times"]["chunks_s"], 2),
            )
            from nucseg.slide.cohort import write_partition  # OUT/cohort.parquet, as with Dask

            write_partition(args.out, slide_stem(path), report["outputs"]["parquet"],
                            overwrite=args.overwrite)  # fmt: skip
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            if args.verbose:
                log.exception("%s failed", path)
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            print(f"nucseg: error: {message}", file=sys.stderr)
            row.update(status="failed", error=message)
        rows.append(row)
    _write_summary(args.out / "slides.csv", rows)
    print(_table(rows))
    return 2 if any(r["status"] != "ok" for r in rows) else 0


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
