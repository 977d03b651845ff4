"""Score candidate models on each source's held-out validation images; apply the rule of
docs/generalisation.md (committed before any candidate was scored).

    python benchmarks/select_multisource.py --candidate ms-types=runs/ms-types \\
        --candidate ms-types-2=runs/ms-types-2 --out-name selection-round2 --prefix round2

The validation images are those the run held out (its seed draws them per source:
``nucseg.training.data.split_ids`` and ``source_split``); every candidate is scored on the same
images, each brought to the model's resolution (``nucseg.scale``). Writes
``results/generalisation/<prefix>_<name>.json`` per candidate (prefix ``validation``) and
``<out-name>.json``. Only validation images are read: no test set plays a part.
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
from nucseg.training.data import source_splits

OUT = Path("results/generalisation")
MONUSEG_MARGIN = 0.01  # the rule: MoNuSeg validation AJI at least the default's minus this


def validation_ids(run: Path) -> dict[str, list[str]]:
    """Dataset name -> the run's held-out validation ids of that source."""
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    return {dataset: sorted(val) for dataset, _, val in source_splits(config)}


def score(
    name: str, folder: Path, ids: dict[str, list[str]], overwrite: bool, prefix: str = "validation"
) -> dict:
    path = OUT / f"{prefix}_{name}.json"
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


def _network_facts(folder: Path) -> dict:
    """The weights' size and the network's parameter count (speed per pixel follows them)."""
    from nucseg.models import load_model

    weights = folder / "model.safetensors"
    model = load_model(weights)
    return {
        "network": model.nucseg_config.name,
        "weights_mib": weights.stat().st_size / 2**20,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


SOURCE_MEAN_MARGIN = 0.01  # the fourth round's rule: source mean at least the default's minus this
MONUSEG_TIE = 0.001  # the fourth round's rule: MoNuSeg AJIs this close are a tie


def _eligible(
    new: dict, default: dict, facts: dict, base: dict, rule: str = "source-mean"
) -> dict[str, bool]:
    """The rule's conditions for a candidate other than the default."""
    monuseg = "monuseg"
    if rule == "monuseg":  # the fourth round: the source mean must hold, MoNuSeg chooses
        held = {"source_mean_within_margin": new["source_mean_aji"]
                >= default["source_mean_aji"] - SOURCE_MEAN_MARGIN}  # fmt: skip
    else:
        held = {"monuseg_within_margin": new["sources"][monuseg]["aji"]
                >= default["sources"][monuseg]["aji"] - MONUSEG_MARGIN}  # fmt: skip
    return {
        **held,
        "weights_within_16_mib": facts["weights_mib"] <= 16,
        # the same network with at most a few more output channels: no slower per pixel
        "same_network": facts["network"] == base["network"]
        and facts["parameters"] <= base["parameters"] * 1.01,
    }


def choose_by_monuseg(records: dict[str, dict]) -> str:
    """The fourth round's choice among eligible records: the highest MoNuSeg validation AJI;
    among those within :data:`MONUSEG_TIE` of it, the highest source mean."""
    best = max(r["sources"]["monuseg"]["aji"] for r in records.values())
    tied = [n for n, r in records.items() if r["sources"]["monuseg"]["aji"] >= best - MONUSEG_TIE]
    return max(tied, key=lambda n: records[n]["source_mean_aji"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--candidate",
        action="append",
        required=True,
        metavar="NAME=RUN",
        help="a candidate run folder (repeat for several; the first's validation images are used)",
    )
    parser.add_argument(
        "--out-name", default="selection", help="the selection file's name under results/"
    )
    parser.add_argument(
        "--prefix",
        default="validation",
        help="the per-candidate files' prefix (a round scored with other code keeps its own)",
    )
    parser.add_argument(
        "--rule",
        choices=("source-mean", "monuseg"),
        default="source-mean",
        help="source-mean (rounds 1-3): eligible if MoNuSeg validation AJI >= the default's "
        "- 0.01, chosen by the highest source mean; monuseg (round 4): eligible if the source "
        "mean >= the default's - 0.01, chosen by the highest MoNuSeg validation AJI (within "
        "0.001: the higher source mean)",
    )
    parser.add_argument("--overwrite", action="store_true", help="score again")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs = dict(item.split("=", 1) for item in args.candidate)
    runs = {name: Path(folder) for name, folder in runs.items()}
    ids = validation_ids(next(iter(runs.values())))
    for run in runs.values():
        if validation_ids(run) != ids:
            raise SystemExit(f"{run}: holds out other validation images than the first candidate")
    default_folder = resolve_model("default")
    default = score("default", default_folder, ids, args.overwrite, args.prefix)
    base = _network_facts(default_folder)
    records, checks, facts = {"default": default}, {}, {"default": base}
    for name, run in runs.items():
        records[name] = score(name, run, ids, args.overwrite, args.prefix)
        facts[name] = _network_facts(run)
        checks[name] = _eligible(records[name], default, facts[name], base, args.rule)
    eligible = ["default"] + [n for n in runs if all(checks[n].values())]
    if args.rule == "monuseg":
        chosen = choose_by_monuseg({n: records[n] for n in eligible})
        rule = ("docs/generalisation.md, fourth round: a candidate is eligible if its source-mean "
                f"validation AJI is at least the default's minus {SOURCE_MEAN_MARGIN}, its "
                "weights within 16 MiB and its network no slower; the eligible one (default "
                "included) with the highest MoNuSeg validation AJI is chosen, the higher source "
                f"mean among those within {MONUSEG_TIE} of it")  # fmt: skip
    else:
        chosen = max(eligible, key=lambda n: records[n]["source_mean_aji"])
        rule = ("docs/generalisation.md: a candidate is eligible if its MoNuSeg validation AJI "
                f"is at least the default's minus {MONUSEG_MARGIN}, its weights within 16 MiB "
                "and its network no slower; the eligible one (default included) with the "
                "highest source-mean validation AJI is chosen")  # fmt: skip
    selection = {
        "rule": rule,
        "source_mean_aji": {n: r["source_mean_aji"] for n, r in records.items()},
        "per_source_aji": {d: {n: r["sources"][d]["aji"] for n, r in records.items()} for d in ids},
        "network": facts,
        "checks": checks,
        "eligible": eligible,
        "chosen": chosen,
        "provenance": provenance(models=[default_folder, *runs.values()]),
    }
    with atomic_write(OUT / f"{args.out_name}.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(selection, indent=1) + "\n")
    print(json.dumps({k: selection[k] for k in ("source_mean_aji", "checks", "chosen")}, indent=1))


if __name__ == "__main__":
    main()
