"""Stain stress benchmark: how a segmenter holds up when the validation images are re-stained.

The 4 validation images of the default recipe (held-out non-breast MoNuSeg images, never the test
sets) are re-stained in controlled, realistic ways, each at a few strengths, and segmented; each
variant's mean AJI over the 4 images is compared with the unperturbed mean AJI. The worst
variant's ratio is the headline figure. Variants (all deterministic):

- ``conc-h-*`` / ``conc-e-*`` / ``overstain-*``: haematoxylin, eosin or both concentrations
  scaled (colour deconvolution with Ruifrok & Johnston's matrix, :func:`nucseg.augment.restain`);
- ``h-brownpurple-*``, ``e-lavender-*``, ``e-orange-*``: a stain vector turned part-way (0.5)
  or all the way (1.0) towards another hue;
- ``matrix-<image>``: the palette of another MoNuSeg or TNBC image (its Macenko stain matrix and
  concentrations, transferred with :class:`nucseg.stain.MacenkoNormalizer` fitted on it; only its
  colours are used, never its labels);
- ``offpalette-*``: strongly off-palette synthetic stains, both vectors replaced;
- ``fade-*``: low contrast (blended towards white); ``jpeg-*``: JPEG at quality 50 and 25;
  ``scan20x``: a 20x scan resampled to 40x (area-downsampled by 2, bilinear back up).

    python benchmarks/bench_stain.py --model src/nucseg/data/models/default --name old-default
    python benchmarks/bench_stain.py --method fiji --name fiji
    python benchmarks/bench_stain.py --table     # results/stain/table.md from every JSON there

Each run writes ``results/stain/<name>.json`` (per image and variant AJI, the summary, the
command, commit, modified files and the SHA-256 of every model file) and rewrites the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nucseg import datasets
from nucseg.augment import _RGB_FROM_HED, downscale, jpeg, restain
from nucseg.io import atomic_write
from nucseg.metrics import aji
from nucseg.pipeline import make_segmenter, provenance, resolve_model
from nucseg.provenance import model_sha256
from nucseg.stain import MacenkoNormalizer
from nucseg.train import TrainConfig, split_ids

RESULTS = Path("results/stain")

#: Images whose palettes are borrowed (``matrix-*``): MoNuSeg images of other organs than the
#: validation images, and TNBC images of different patients.
PALETTE_SOURCES = (
    ("monuseg", "TCGA-18-5592-01Z-00-DX1"),
    ("monuseg", "TCGA-21-5784-01Z-00-DX1"),
    ("monuseg", "TCGA-B0-5711-01Z-00-DX1"),
    ("monuseg", "TCGA-CH-5767-01Z-00-DX1"),
    ("monuseg", "TCGA-NH-A8F7-01A-01-TS1"),
    ("tnbc", "01_1"),
    ("tnbc", "04_1"),
    ("tnbc", "07_1"),
    ("tnbc", "09_1"),
    ("tnbc", "11_1"),
)


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


#: Hues a stain vector is turned towards (unit optical densities in R, G, B).
BROWN_PURPLE = _unit((0.42, 0.73, 0.53))
LAVENDER = _unit((0.45, 0.83, 0.33))
ORANGE = _unit((0.05, 0.45, 0.89))
#: Off-palette stain pairs (haematoxylin, eosin).
OFF_PALETTES = {
    "offpalette-blue-orange": (_unit((0.75, 0.60, 0.28)), ORANGE),
    "offpalette-brownpurple-lavender": (BROWN_PURPLE, LAVENDER),
    "offpalette-grey-mauve": (_unit((0.55, 0.62, 0.56)), _unit((0.35, 0.90, 0.25))),
}


def _turn(vector: np.ndarray, towards: np.ndarray, fraction: float) -> np.ndarray:
    """``vector`` turned by ``fraction`` of its angle to ``towards`` (spherical interpolation)."""
    angle = np.arccos(np.clip(vector @ towards, -1.0, 1.0))
    if angle < 1e-9:
        return vector.copy()
    return (np.sin((1 - fraction) * angle) * vector + np.sin(fraction * angle) * towards) / np.sin(
        angle
    )


def _with(h=None, e=None) -> np.ndarray:
    stains = _RGB_FROM_HED.copy()
    if h is not None:
        stains[0] = h
    if e is not None:
        stains[1] = e
    return stains


def variants(palettes: dict[str, MacenkoNormalizer]) -> dict[str, callable]:
    """Name -> function of an RGB image returning the re-stained image."""
    h0, e0 = _RGB_FROM_HED[0], _RGB_FROM_HED[1]
    out = {"none": lambda image: image}
    for stain, index in (("h", 0), ("e", 1)):
        for factor in (0.5, 0.75, 1.25, 1.5):
            scale = np.ones(3)
            scale[index] = factor
            out[f"conc-{stain}-{factor}"] = lambda im, s=scale: restain(
                im, stains=_RGB_FROM_HED, scale=s
            )
    for factor in (1.6, 2.0):
        scale = np.array([factor, factor, 1.0])
        out[f"overstain-{factor}"] = lambda im, s=scale: restain(im, stains=_RGB_FROM_HED, scale=s)
    for fraction in (0.5, 1.0):
        turned = {
            f"h-brownpurple-{fraction}": _with(h=_turn(h0, BROWN_PURPLE, fraction)),
            f"e-lavender-{fraction}": _with(e=_turn(e0, LAVENDER, fraction)),
            f"e-orange-{fraction}": _with(e=_turn(e0, ORANGE, fraction)),
        }
        for name, stains in turned.items():
            out[name] = lambda im, s=stains: restain(im, stains=s)
    for name, (h, e) in OFF_PALETTES.items():
        stains = _with(h=h, e=e)
        out[name] = lambda im, s=stains: restain(im, stains=s)
    for name, normaliser in palettes.items():
        out[f"matrix-{name}"] = normaliser.transform
    for keep in (0.6, 0.4):
        out[f"fade-{keep}"] = lambda im, k=keep: (255 - (255 - im.astype(np.float32)) * k).astype(
            np.uint8
        )
    for quality in (50, 25):
        out[f"jpeg-{quality}"] = lambda im, q=quality: jpeg(im, q)
    out["scan20x"] = lambda im: downscale(im, 0.5)
    return out


def validation_ids() -> list[str]:
    """The 4 validation images of the default recipe (``configs/default.json``'s split)."""
    config = TrainConfig.from_dict(json.loads(Path("configs/default.json").read_text()))
    ids, val = split_ids(config)
    return [i for i in ids if i in val]


def model_hashes(model: str | None) -> dict[str, str]:
    """SHA-256 of a model folder's files (nucseg.provenance.model_sha256); {} for a method."""
    return {} if model is None else model_sha256(resolve_model(model))


def summarise(per_variant: dict[str, float]) -> dict[str, object]:
    """Ratios to the unperturbed AJI, the worst variant and the mean ratio."""
    base = per_variant["none"]
    ratios = {k: v / base for k, v in per_variant.items() if k != "none"}
    worst = min(ratios, key=ratios.get)
    return {
        "unperturbed_aji": base,
        "mean_aji": float(np.mean(list(per_variant.values()))),
        "mean_ratio": float(np.mean(list(ratios.values()))),
        "worst_variant": worst,
        "worst_ratio": ratios[worst],
        "worst_aji": per_variant[worst],
        "ratios": ratios,
    }


def write_table() -> Path:
    """results/stain/table.md: one row per JSON in results/stain/."""
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        if "summary" not in record:  # selection.json
            continue
        s = record["summary"]
        rows.append(
            f"| {record['name']} | {s['unperturbed_aji']:.4f} | {s['mean_aji']:.4f} | "
            f"{s['mean_ratio']:.3f} | {s['worst_ratio']:.3f} ({s['worst_variant']}) | "
            f"{record['n_variants']} |"
        )
    text = (
        "# Stain stress benchmark (validation images)\n\n"
        "Written by `python benchmarks/bench_stain.py --table` from the JSON files here; each "
        "JSON holds its command, commit and model hashes. AJI is the mean over the 4 validation "
        "images; ratios are to the unperturbed AJI.\n\n"
        "| model | unperturbed AJI | mean AJI | mean ratio | worst ratio (variant) | variants |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    path = RESULTS / "table.md"
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or bundled name")
    parser.add_argument("--method", help="a classical method instead (e.g. fiji)")
    parser.add_argument("--name", help="name of the row and of results/stain/NAME.json")
    parser.add_argument("--variants", nargs="*", help="only these variants (for a quick look)")
    parser.add_argument("--table", action="store_true", help="only rewrite results/stain/table.md")
    parser.add_argument("--overwrite", action="store_true", help="replace results/stain/NAME.json")
    args = parser.parse_args()
    if args.table:
        print(write_table().read_text())
        return
    if (args.model is None) == (args.method is None) or not args.name:
        parser.error("give --name and exactly one of --model and --method")
    out = RESULTS / f"{args.name}.json"
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    origin = provenance()
    segment = make_segmenter(args.method, model=args.model)
    palettes = {}
    for dataset, image_id in PALETTE_SOURCES:
        image = datasets.load_sample(dataset, image_id).image
        palettes[f"{dataset}-{image_id[:12]}"] = MacenkoNormalizer().fit(image)
    table = variants(palettes)
    if args.variants:
        table = {k: v for k, v in table.items() if k in {"none", *args.variants}}
    ids = validation_ids()
    samples = [datasets.load_sample("monuseg", i) for i in ids]
    scores: dict[str, dict[str, float]] = {}
    rejected: dict[str, int] = {}
    start = time.perf_counter()
    with tqdm(total=len(table) * len(samples), desc=args.name, unit="image") as bar:
        for name, transform in table.items():
            scores[name] = {}
            for sample in samples:
                image = transform(sample.image)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    labels = segment(image)
                rejected[name] = rejected.get(name, 0) + sum(
                    "stain estimate rejected" in str(w.message) for w in caught
                )
                scores[name][sample.id] = aji(sample.labels, labels)
                bar.update(1)
    per_variant = {name: float(np.mean(list(s.values()))) for name, s in scores.items()}
    summary = summarise(per_variant)
    record = {
        "benchmark": "stain stress: validation AJI under re-staining",
        "name": args.name,
        "model": args.model,
        "method": args.method,
        "model_sha256": model_hashes(args.model),
        "validation_images": ids,
        "n_variants": len(table) - 1,
        "summary": summary,
        "per_variant_aji": per_variant,
        "per_image_aji": scores,
        "stain_estimates_rejected": rejected,
        "seconds": time.perf_counter() - start,
        "provenance": origin,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, overwrite=args.overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{args.name}: unperturbed AJI {summary['unperturbed_aji']:.4f}, mean over variants "
        f"{summary['mean_aji']:.4f}, mean ratio {summary['mean_ratio']:.3f}, worst ratio "
        f"{summary['worst_ratio']:.3f} ({summary['worst_variant']})"
    )
    write_table()


if __name__ == "__main__":
    main()
