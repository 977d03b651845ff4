"""Score candidate models on each source's held-out validation images; apply the rule of
docs/generalisation.md (committed before any candidate was scored).

    python benchmarks/select_multisource.py --run runs/ms-types [--candidate default ...]

The validation images are those the run held out (its seed draws them per source:
``nucseg.training.data.split_ids`` and ``source_split``); every candidate is scored on the same
images, each brought to the model's resolution (``nucseg.scale``). Writes
``results/generalisation/validation_<name>.json`` per candidate and ``selection.json``. Only
validation images are read: no test set plays a part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nucseg import datasets
from nucseg.io import atomic_write
from nucseg.pipeline import evaluate, make_segmenter, resolve_model
from nucseg.provenance import provenance
from nucseg.train import TrainConfig
from nucseg.training.data import source_split, split_ids

OUT = Path("results/generalisation")
MONUSEG_MARGIN = 0.01  # the rule: MoNuSeg validation AJI at least the default's minus this


def validation_ids(run: Path) -> dict[str, list[str]]:
    """Dataset name -> the run's held-out validation ids of that source."""
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    out = {config.dataset: sorted(split_ids(config)[1])}
    for index, source in enumerate(config.all_sources[1:], start=1):
        out[source["dataset"]] = sorted(source_split(source, config.seed, index)[1])
    return out


def score(name: str, folder: Path, ids: dict[str, list[str]], overwrite: bool) -> dict:
    path = OUT / f"validation_{name}.json"
    if path.exists() and not overwrite:
        return json.loads(path.read_text())
    origin = provenance(models=[folder])
    segmenter = make_segmenter(model=str(folder))
    record = {"model": name, "sources": {}, "provenance": origin}
    for dataset, chosen in ids.items():
        samples = (datasets.load_sample(dataset, i) for i in chosen)
        result = evaluate(segmenter, samples, total=len(chosen), progress=False)
        record["sources"][dataset] = {
            "images": chosen,
            "aji": result["aji"],
            "per_image_aji": {k: v["aji"] for k, v in result["per_image"].items()},
            **({"types": result["types"]} if "types" in result else {}),
        }
        print(f"{name} {dataset}: AJI {result['aji']:.4f} ({len(chosen)} images)", flush=True)
    record["source_mean_aji"] = float(np.mean([s["aji"] for s in record["sources"].values()]))
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the multi-source run folder")
    parser.add_argument("--name", default="ms-types", help="the run's candidate name")
    parser.add_argument("--overwrite", action="store_true", help="score again")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ids = validation_ids(args.run)
    default = score("default", resolve_model("default"), ids, args.overwrite)
    new = score(args.name, args.run, ids, args.overwrite)
    monuseg = "monuseg"
    checks = {
        "source_mean_higher": new["source_mean_aji"] > default["source_mean_aji"],
        "monuseg_within_margin": new["sources"][monuseg]["aji"]
        >= default["sources"][monuseg]["aji"] - MONUSEG_MARGIN,
    }
    chosen = args.name if all(checks.values()) else "default"
    selection = {
        "rule": "docs/generalisation.md, 'The selection rule' (source-mean validation AJI higher "
        f"and MoNuSeg validation AJI at least the default's minus {MONUSEG_MARGIN})",
        "source_mean_aji": {
            "default": default["source_mean_aji"],
            args.name: new["source_mean_aji"],
        },
        "per_source_aji": {
            d: {"default": default["sources"][d]["aji"], args.name: new["sources"][d]["aji"]}
            for d in ids
        },
        "checks": checks,
        "chosen": chosen,
        "provenance": provenance(models=[resolve_model("default"), args.run]),
    }
    with atomic_write(OUT / "selection.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(selection, indent=1) + "\n")
    print(json.dumps({k: selection[k] for k in ("source_mean_aji", "checks", "chosen")}, indent=1))


if __name__ == "__main__":
    main()
