"""Tune the classical baselines' few parameters on the MoNuSeg non-breast images only.

The objective is the mean of the paper's two headline scores, AJI and mAP (mean precision over IoU
0.50:0.05:0.95), averaged over the 36 training images of the paper's protocol; no breast image is
read. Each method is searched in stages (a grid over the first group of parameters, then over the
next group with the best of the earlier ones fixed), which keeps the run to about 10 minutes on
two cores. The chosen values are the defaults in ``nucseg.classical`` (``tests/test_classical.py``
checks that they agree with this script's output).

    python benchmarks/tune_classical.py --out results/classical/tuning.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing
import time
from pathlib import Path

from nucseg import datasets
from nucseg.atomic import write_json
from nucseg.classical import describe, get_method
from nucseg.metrics import Evaluator
from nucseg.pipeline import provenance

# Stages per method: each is a dict of parameter -> candidate values, searched as a grid.
STAGES = {
    "otsu": [{"min_size": [10, 30, 60, 100]}],
    "watershed": [
        {"sigma": [1.0, 2.0], "h": [0.03, 0.06, 0.1]},
        {"min_size": [10, 30, 60, 100]},
    ],
    "fiji": [
        {
            "channel": ["hematoxylin", "grey"],
            "threshold": ["otsu", "li"],
            "sigma": [0.5, 1.0, 2.0],
        },
        {"h": [1.0, 2.0, 3.0], "min_size": [30, 60, 100, 150, 200, 300]},
    ],
}

_SAMPLES: list = []


def _init() -> None:
    _SAMPLES.extend(datasets.load("monuseg", split="train"))


def _score(job: tuple[str, dict]) -> dict:
    method, params = job
    func = get_method(method)
    evaluator = Evaluator()
    for sample in _SAMPLES:
        evaluator.process(sample.id, sample.labels, func(sample.image, **params))
    result = evaluator.evaluate()
    aji, pmap = result["aji"], result["paper_map"]
    return {"params": params, "aji": aji, "paper_map": pmap, "objective": (aji + pmap) / 2}


def tune(method: str, pool: multiprocessing.pool.Pool) -> dict:
    """Search the stages of ``method``; return every trial and the best parameters."""
    best = describe(method)
    trials = []
    for stage in STAGES[method]:
        grid = [
            dict(zip(stage, values, strict=True)) for values in itertools.product(*stage.values())
        ]
        scored = pool.map(_score, [(method, {**best, **combo}) for combo in grid])
        trials += scored
        best = max(scored, key=lambda t: t["objective"])["params"]
        logging.info("%s stage %s: best %s", method, list(stage), best)
    top = max(trials, key=lambda t: t["objective"])
    return {
        "best": top["params"],
        "best_aji": top["aji"],
        "best_paper_map": top["paper_map"],
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/classical/tuning.json"))
    parser.add_argument("--methods", nargs="+", default=list(STAGES))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    n_images = len(datasets.ids("monuseg", split="train"))
    record = {
        "objective": "mean over images of (AJI + paper mAP) / 2",
        "dataset": f"monuseg-nonbreast ({n_images} images)",
        "methods": {},
    }
    if args.out.exists():  # keep the other methods' earlier results
        record["methods"] = json.loads(args.out.read_text())["methods"]
    with multiprocessing.Pool(args.jobs, initializer=_init) as pool:
        for method in args.methods:
            start, origin = time.time(), provenance()
            result = tune(method, pool)
            result.update(seconds=round(time.time() - start, 1), provenance=origin)
            record["methods"][method] = result
            best = f"AJI {result['best_aji']:.4f} mAP {result['best_paper_map']:.4f}"
            print(f"{method}: {best} with {result['best']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record, overwrite=True, default=float)


if __name__ == "__main__":
    main()
