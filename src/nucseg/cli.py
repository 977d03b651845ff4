"""The ``nucseg`` command line: a thin shell that parses, builds a config and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nucseg import __version__
from nucseg._logging import setup_logging
from nucseg.pipeline import IMAGE_SUFFIXES, error_message

log = logging.getLogger("nucseg")

DEFAULT_METHOD = "fiji"
DEFAULT_MODEL = "default"


def _param(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as JSON when it can be (numbers, null, strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _choose(args: argparse.Namespace) -> None:
    """Fill in the default: the bundled model if any, else the Fiji method (with a warning)."""
    from nucseg.pipeline import bundled_models

    if args.model is not None and args.method is not None:
        raise ValueError("give either --method or --model, not both")
    if args.model is None and args.method is None:
        if DEFAULT_MODEL in bundled_models():
            args.model = DEFAULT_MODEL
        else:
            log.warning(
                "no bundled model %r in this installation: using the %s method instead "
                "(pass --method or --model to choose)",
                DEFAULT_MODEL,
                DEFAULT_METHOD,
            )
            args.method = DEFAULT_METHOD


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """--param pairs, with --backend (a model's option) added."""
    params = dict(args.param)
    if getattr(args, "backend", None) is not None:
        if args.method is not None:
            raise ValueError(f"--backend applies to a model, not to the {args.method} method")
        params["backend"] = args.backend
    return params


def _check_segmenter(args: argparse.Namespace) -> Path | None:
    """Check --method/--model/--param without loading the model; returns the model folder."""
    from nucseg.pipeline import check_segmenter

    _choose(args)
    return check_segmenter(args.method, model=args.model, **_params(args))


def _segmenter(args: argparse.Namespace):
    from nucseg.pipeline import make_segmenter

    _choose(args)
    return make_segmenter(
        args.method, model=args.model, mpp=getattr(args, "mpp", None), **_params(args)
    )


def _method_name(args: argparse.Namespace) -> str:
    return args.method if args.method is not None else f"model:{args.model}"


def _write_text(path: Path, text: str, *, overwrite: bool) -> None:
    from nucseg.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(text)


def _check_output_file(path: Path | None, option: str, *, overwrite: bool) -> None:
    """Refuse an output file that cannot be written, before any work (the option named)."""
    from nucseg.atomic import check_writable_folder

    if path is None:
        return
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} exists; pass --overwrite to replace it")
    check_writable_folder(path.parent, what=f"the folder of {option}")


def cmd_segment(args: argparse.Namespace) -> int:
    from nucseg._checks import check_mpp
    from nucseg.pipeline import image_files, plan_outputs, segment_files

    images = image_files(args.images)  # inputs, options and outputs first: then the model
    if args.mpp is not None:
        check_mpp(args.mpp, what=f"--mpp {args.mpp:g}", force=args.force_mpp)
    _check_segmenter(args)
    plan_outputs(images, args.out, overwrite=args.overwrite, skip_existing=args.skip_existing)
    segmenter = _segmenter(args)
    from nucseg.slide.cli import scale_warnings

    if args.mpp is None:  # with --mpp the images are resampled to the model's scale
        for line in scale_warnings(images, mpp=None, model=args.model):
            print(line, file=sys.stderr)

    def show(record: dict) -> None:  # as each image finishes, above the progress bar
        from tqdm.auto import tqdm

        if record["status"] == "done":
            tqdm.write(
                f"{record['image']}: {record['n_nuclei']} nuclei -> {record['labels']}, "
                f"{record['overlay']}, {record['csv']}, {record['geojson']}",
                file=sys.stdout,
            )
        elif record["status"] == "skipped":
            tqdm.write(f"{record['image']}: skipped, its outputs exist", file=sys.stdout)
        else:
            tqdm.write(f"nucseg: error: {record['error']}", file=sys.stderr)
        sys.stdout.flush()  # each line as its image finishes, also into a pipe

    records = segment_files(
        images,
        segmenter,
        args.out,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        progress=sys.stderr.isatty(),
        on_result=show,
        mpp=args.mpp,
    )
    failed = [r["image"] for r in records if r["status"] == "failed"]
    done = [r["image"] for r in records if r["status"] != "failed"]
    if failed and len(records) > 1:
        print(
            f"nucseg: error: {len(failed)} of {len(records)} images failed: "
            f"{', '.join(failed)}; finished: {', '.join(done) or 'none'}",
            file=sys.stderr,
        )
    return 0 if not failed else 1 if done else 2  # 1: some images done, 2: none


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nucseg import datasets, report
    from nucseg.classical import describe
    from nucseg.pipeline import evaluate, provenance

    _check_output_file(args.json, "--json", overwrite=args.overwrite)
    _check_output_file(args.markdown, "--markdown", overwrite=args.overwrite)
    if Path(args.dataset).is_dir():  # a folder with images/ and labels/ of matching stems
        folder = Path(args.dataset)
        samples = list(datasets.load_folder(folder / "images", folder / "labels"))[: args.limit]
        total = len(samples)
    else:
        name, split = datasets.resolve_eval_dataset(args.dataset)
        ids = datasets.ids(name, split=split)[: args.limit]
        samples = (datasets.load_sample(name, i) for i in ids)
        total = len(ids)
    model_folder = _check_segmenter(args)
    # before the work: the commit, command and model files that produce the result
    origin = provenance(models=[model_folder] if model_folder is not None else [])
    segmenter = _segmenter(args)
    from nucseg.slide.run import DEFAULT_MODEL_MPP, model_mpp

    scale = model_mpp(model_folder)[0] if model_folder is not None else DEFAULT_MODEL_MPP
    result = evaluate(
        segmenter, samples, total=total, progress=sys.stderr.isatty(), model_mpp=scale
    )
    params = describe(args.method) if args.method is not None else {}
    result = {
        "method": _method_name(args),
        "dataset": args.dataset,
        "params": {**params, **_params(args)},
        **result,
        "provenance": origin,
    }
    text = "\n\n".join(
        [
            f"## {result['method']} on {args.dataset} ({result['n_images']} images)",
            report.summary_table(result, name=result["method"]),
            *([report.type_table(result)] if "types" in result else []),
            report.per_image_table(result),
        ]
    )
    print(text)
    if args.markdown is not None:
        _write_text(Path(args.markdown), text + "\n", overwrite=args.overwrite)
    if args.json is not None:
        _write_text(Path(args.json), json.dumps(result, indent=1) + "\n", overwrite=args.overwrite)
    return 0


def _duration(text: str) -> float:
    """Seconds of a duration such as ``90m``, ``1.5h``, ``600s`` or ``600``."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90m or 2h, got {text!r}"
        ) from None


def cmd_train(args: argparse.Namespace) -> int:
    from nucseg.atomic import read_json
    from nucseg.train import TrainConfig, fit

    values = read_json(args.config, what="config file")
    if not isinstance(values, dict):
        raise ValueError(f"{args.config}: expected a JSON object of TrainConfig fields")
    if args.time_budget is not None:
        values.update(time_budget_s=args.time_budget, steps=None)
    if args.steps is not None:
        values.update(steps=args.steps, time_budget_s=None)
    run = fit(TrainConfig.from_dict(values), args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained: {run}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from nucseg.train import retune

    record = retune(
        args.run, tta=args.tta, tile=args.tile, overlap=args.overlap, params_from=args.params_from
    )
    done = (
        f"{args.run / 'thresholds.json'}: {record['method']} {record['params']}, "
        f"predict {record['predict']}"
    )
    if args.params_from is not None:
        print(f"{done}; copied from {args.params_from}")
        return 0
    best = max((row["aji"] for row in record.get("tuning", [])), default=float("nan"))
    print(f"{done}; validation AJI {best:.4f}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from nucseg.atomic import read_json
    from nucseg.reproduce import ReproduceConfig, Reproduction, write_report

    if args.report_only:
        models = args.models if args.models is not None else args.out / "models"
        for path in write_report(args.out, models / "predictions"):
            print(path)
        return 0
    config = ReproduceConfig.from_dict(read_json(args.config, what="config file"))
    run = Reproduction(config, args.out, args.models, allow_code_change=args.allow_code_change)
    run.run(methods=args.methods)
    for name in ("table2a.md", "table2b.md"):
        if (args.out / name).is_file():
            print((args.out / name).read_text())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nucseg import report
    from nucseg.atomic import read_json

    results = [read_json(p, what="result file") for p in args.results]
    names = list(dict.fromkeys(r["dataset"] for r in results))
    text = "\n\n".join(
        f"### {d}\n\n" + report.comparison_table(results, dataset=d, paper_rows=args.paper)
        for d in names
    )
    print(text)
    if args.out is not None:
        _write_text(Path(args.out), text + "\n", overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nucseg.models import export_model
    from nucseg.pipeline import resolve_model

    folder = resolve_model(args.model)
    if args.out.suffix.lower() != ".onnx":
        raise ValueError(f"{args.out}: the output must be an .onnx file")
    _check_output_file(args.out, "OUT", overwrite=args.overwrite)
    meta = export_model(folder, args.out)
    print(f"wrote {args.out} ({meta['model']}, {meta['out_channels']} output channels)")
    return 0


def cmd_quantise(args: argparse.Namespace) -> int:
    from nucseg.pipeline import resolve_model
    from nucseg.quantise import quantise_model

    folder = resolve_model(args.model)
    record = quantise_model(folder, tiles=args.tiles, seed=args.seed, overwrite=args.overwrite)
    check = record["validation"]
    verdict = "passes: used by --param precision=int8, and by auto on CPUs without bf16" if (
        record["passes"]) else "fails: not used"  # fmt: skip
    print(
        f"wrote {record['folder']}: validation AJI fp32 {check['fp32']['source_mean_aji']:.4f}, "
        f"int8 {check['int8']['source_mean_aji']:.4f} (loss {check['gap']:+.4f}, allowed "
        f"{check['tolerance']}): {verdict}"
    )
    return 0


def cmd_datasets_verify(args: argparse.Namespace) -> int:
    from nucseg.datasets.manifest import COLUMNS, verify
    from nucseg.report import markdown_table

    names = list(COLUMNS) if args.dataset == "all" else [args.dataset]
    bad = 0
    for name in names:
        rows = verify(name)
        problems = [r for r in rows if r.status != "ok"]
        bad += len(problems)
        shown = rows if args.all_rows else problems
        print(f"{name}: {len(rows) - len(problems)} of {len(rows)} files ok")
        if shown:
            print(
                markdown_table(["id", "file", "status"], [[r.id, r.file, r.status] for r in shown])
            )
    return 1 if bad else 0


def cmd_datasets_pack(args: argparse.Namespace) -> int:
    from nucseg.datasets.pack import pack

    sizes = pack(args.out, quality=args.quality, include_tnbc=args.tnbc,
                 monuseg_split=args.monuseg_split, overwrite=args.overwrite)  # fmt: skip
    for name, size in sizes.items():
        print(f"{args.out / name}: {size / 2**20:.1f} MiB")
    print(f"use it with: NUCSEG_DATA={args.out} nucseg ...")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from nucseg import datasets

    for key, (name, split) in datasets.EVAL_DATASETS.items():
        print(f"{key:20s} {name}/{split}: {len(datasets.ids(name, split=split))} images")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the viewer until interrupted (Ctrl-C: exit status 0)."""
    from nucseg.viewer import serve

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    try:
        serve(args.outputs, source=args.source, mpp=args.mpp, port=args.port or 0,
              tile_format=args.tile_format, browser=not args.no_browser,
              max_outlines=args.max_outlines)  # fmt: skip
    except KeyboardInterrupt:
        print("nucseg view: stopped", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``nucseg`` command."""
    parser = argparse.ArgumentParser(
        prog="nucseg", description="Nuclei instance segmentation in H&E histopathology."
    )
    parser.add_argument("--version", action="version", version=f"nucseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    def method_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--method", default=None, help="classical method: otsu, watershed or fiji")
        p.add_argument(
            "--model",
            default=None,
            metavar="PATH_OR_NAME",
            help="trained model: a run folder or a bundled model name (default: the bundled "
            f"model {DEFAULT_MODEL!r}; the {DEFAULT_METHOD} method if none is bundled)",
        )
        p.add_argument(
            "--param",
            action="append",
            type=_param,
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter (repeatable). A model's: tile (a multiple of 32), "
            "overlap (0 to <1), batch_size (>= 1), tta (none, flips, d4), precision (auto, "
            "bf16, fp32, int8: see nucseg quantise). A method's: see `nucseg evaluate "
            "--method M --param x=1` (the error lists them), e.g. fiji's sigma, e.g. "
            "--param tile=512",
        )
        p.add_argument(
            "--backend",
            choices=("auto", "torch", "openvino"),
            default=None,
            help="what runs a model's network: auto (default: OpenVINO where installed and in "
            "agreement with torch, else torch), torch (the reference) or openvino",
        )
        p.add_argument("--overwrite", action="store_true", help="replace existing output files")

    p = sub.add_parser(
        "segment",
        help="segment images; write labels, overlay, CSV and GeoJSON",
        description="Segment images; write NAME_labels.tif, NAME_overlay.png, NAME_nuclei.csv "
        "and NAME_nuclei.geojson per image NAME. Reads RGB(A) 8-bit images: "
        f"{', '.join(IMAGE_SUFFIXES)}. An image that fails is reported and the others go on; "
        "the exit status is then 1.",
    )
    p.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help=f"image files or folders (every {'/'.join(IMAGE_SUFFIXES)} file in a folder)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip an image whose four output files all exist (e.g. to finish a killed run)",
    )
    p.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="microns per pixel of the images: they are resampled to the model's and the labels "
        "back, as nucseg slide does (default: not resampled, each file's own for the "
        "measurements in um; a warning when it differs from the model's by more than 25 %%)",
    )
    p.add_argument(
        "--force-mpp",
        action="store_true",
        help="use an --mpp outside the plausible 0.05-5 microns per pixel",
    )
    method_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="score a method on a dataset (AJI, mAP, F1, PQ, ...)")
    p.add_argument(
        "--dataset",
        required=True,
        help="monuseg-breast, tnbc, monuseg-nonbreast, monuseg-challenge-train, "
        "monuseg-challenge-test, monuseg (see `nucseg datasets list`), or a folder holding "
        "images/ and labels/ with matching file stems",
    )
    p.add_argument("--json", type=Path, help="write the full results (incl. per image) as JSON")
    p.add_argument("--markdown", type=Path, help="write the printed tables as Markdown")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    method_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train a network; writes a run folder")
    p.add_argument("config", type=Path, help="JSON file of TrainConfig fields (see docs)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--time-budget",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="train for this long (e.g. 90m, 2h, 600s) instead of the config's steps",
    )
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a non-empty folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="re-tune a trained run's post-processing on its validation")
    p.add_argument("run", type=Path, help="run folder written by `nucseg train`")
    p.add_argument(
        "--tta",
        choices=["none", "flips", "d4"],
        default=None,
        help="test-time augmentation to tune for (default: the run's)",
    )
    p.add_argument("--tile", type=int, help="prediction tile side (default: the run's)")
    p.add_argument("--overlap", type=float, help="prediction tile overlap (default: the run's)")
    p.add_argument(
        "--params-from",
        type=Path,
        metavar="RUN",
        help="copy this run's tuned post-processing and prediction settings instead of tuning "
        "(for a run trained on every image, with no validation images of its own)",
    )
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("reproduce", help="train and score every method of the paper's Table 2")
    p.add_argument("config", type=Path, help="JSON config, e.g. configs/reproduce-cpu.json")
    p.add_argument("--out", type=Path, required=True, help="run folder: scores, tables, figures")
    p.add_argument("--models", type=Path, help="where trained networks go (default OUT/models)")
    p.add_argument("--report-only", action="store_true", help="redraw tables and figures only")
    p.add_argument(
        "--allow-code-change",
        action="store_true",
        help="add scores to a run whose existing scores came from another commit",
    )
    p.add_argument(
        "--methods",
        type=lambda text: [m for m in text.split(",") if m],
        metavar="M1,M2",
        help="run only these of the config's methods, in this order (default: all, config order)",
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("compare", help="Markdown table of result JSONs beside the paper's rows")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT_JSON")
    p.add_argument(
        "--paper",
        nargs="*",
        default=[],
        metavar="ROW",
        help="also show these rows of the paper's Table 2, e.g. 'GB U-Net'",
    )
    p.add_argument("--out", type=Path, help="write the table to this Markdown file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "export",
        help="write a model's network as ONNX (uint8 pixels in, logits out)",
        description="Write the network of a model folder (or bundled model) as an ONNX file: "
        "input 'pixels' (N, rows, cols, 3) uint8 RGB, output 'logits' (N, rows, cols, C) "
        "float32, the class logits first; rows and cols multiples of the metadata's "
        "size_multiple. Runs in OpenVINO or ONNX Runtime.",
    )
    p.add_argument("model", metavar="MODEL", help="a run folder or a bundled model name")
    p.add_argument("out", type=Path, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quantise",
        help="make a model's int8 network (NNCF), checked on its validation images",
        description="Quantise a model folder's network to int8 with NNCF, calibrated on tiles "
        "of its training images, and score fp32 and int8 on its validation images. The int8 "
        "network is written to MODEL/int8/ with its record (int8.json); it is used (--param "
        "precision=int8, or precision auto on a CPU without native bf16) only if its mean "
        "validation AJI is within 0.005 of fp32's. Needs the model's training datasets and "
        "NNCF (pip install nncf).",
    )
    p.add_argument("model", metavar="MODEL", help="a run folder or a bundled model name")
    p.add_argument("--tiles", type=int, default=128, help="calibration tiles (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration tiles")
    p.add_argument("--overwrite", action="store_true", help="replace an existing int8/")
    p.set_defaults(func=cmd_quantise)

    p = sub.add_parser("datasets", help="dataset utilities")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    q = dsub.add_parser("verify", help="check files and checksums against the manifests")
    q.add_argument(
        "--dataset",
        choices=["monuseg", "tnbc", "consep", "cpm15", "dsb2018-he", "all"],
        default="all",
    )
    q.add_argument("--all-rows", action="store_true", help="list every file, not only problems")
    q.set_defaults(func=cmd_datasets_verify)
    q = dsub.add_parser("pack", help="compact copy (WebP) for a machine with a small upload limit")
    q.add_argument("out", type=Path, help="folder to write the data root into")
    q.add_argument("--quality", type=int, default=95, help="WebP quality of training images")
    q.add_argument("--tnbc", action="store_true", help="pack TNBC too (lossless)")
    q.add_argument("--monuseg-split", default="all", help="pack one MoNuSeg split (train, test)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing pack")
    q.set_defaults(func=cmd_datasets_pack)
    q = dsub.add_parser("list", help="list the evaluation datasets and their sizes")
    q.set_defaults(func=cmd_datasets_list)

    p = sub.add_parser(
        "view",
        help="browse a run's outputs in a local web viewer (slide, nuclei, flags)",
        description="Serve a read-only viewer of OUT/<slide> (a `nucseg slide` output), of OUT "
        "(all its slides), or of a `nucseg segment` output folder (with --source) on "
        "127.0.0.1; prints the address and opens a browser tab. See docs/viewer.md.",
    )
    p.add_argument("outputs", type=Path, metavar="OUT", help="output folder to show")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument(
        "--source", type=Path, default=None, metavar="FOLDER",
        help="where the slides or images are, if not at the paths the run recorded (needed "
        "for `nucseg segment` outputs)",
    )  # fmt: skip
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of the images")
    p.add_argument("--tile-format", choices=["jpeg", "webp"], default="jpeg", help="tile encoding")
    p.add_argument(
        "--max-outlines", type=int, default=20_000, metavar="N",
        help="most outlines drawn at once; a view with more shows the density map",
    )  # fmt: skip
    p.set_defaults(func=cmd_view)

    from nucseg.slide.cli import add_parser as add_slide_parser  # light: no torch

    add_slide_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nucseg`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    previous = _on_sigterm_raise()
    # a slide run keeps its finished chunks: --resume continues it, and finishes its outputs
    again = "; continue with the same command and --resume" if args.command == "slide" else ""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"nucseg: error: interrupted (Ctrl-C); finished files are kept{again}",
              file=sys.stderr)  # fmt: skip
        return 130
    except Terminated:
        print(f"nucseg: error: terminated (SIGTERM); finished files are kept{again}",
              file=sys.stderr)  # fmt: skip
        return 143
    except (OSError, KeyError, ValueError, TypeError) as err:
        if args.verbose:
            raise
        print(f"nucseg: error: {error_message(err)}", file=sys.stderr)
        return 2
    finally:
        _restore_sigterm(previous)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that temporaries are removed as on Ctrl-C."""


def _on_sigterm_raise() -> Any:
    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. main() called from a worker thread)
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
