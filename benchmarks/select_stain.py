"""Apply the stain-robustness selection rule (docs/training.md) to results/stain/*.json.

    python benchmarks/select_stain.py            # prints the decision, writes selection.json

The rule, committed before the candidates were trained: eligible are the candidates whose
worst-variant ratio is >= 0.85, mean ratio >= 0.93 and unperturbed validation AJI no more than
0.01 below ``base32``'s (and, checked since the fifth round, whose own validation images are
the benchmark's: see results/stain/withdrawn/); among them the highest mean AJI over all
variants wins, a tie within 0.002 going to a model without stain normalisation. ``old-default``
(one of its members trained on the validation images) and classical methods are reported, never
chosen. Only validation figures are read: the test sets play no part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nucseg.io import atomic_write
from nucseg.provenance import provenance

RESULTS = Path("results/stain")
CANDIDATES = (
    "base32",
    "stain-nonorm",
    "stain-norm",
    "stain-nonorm-long",
    "stain-norm-long",
    "stain-normafter-long",  # third round (docs/training.md)
    "stain-soup",  # fourth round
    "stain-norm-xl",  # fifth round
    "stain-normafter-xl",
    "stain-soup-xl",
)


def main() -> None:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    records.pop("selection", None)
    if "base32" not in records:
        raise SystemExit("results/stain/base32.json is missing: run bench_stain.py for it first")
    floor = records["base32"]["summary"]["unperturbed_aji"] - 0.01
    rows = {}
    for name in CANDIDATES:
        if name not in records:
            continue
        s = records[name]["summary"]
        folder = Path(records[name]["model"])
        normalised = (folder / "normaliser.json").is_file()
        tuned_on = json.loads((folder / "thresholds.json").read_text()).get("validation_images")
        checks = {
            # the model was tuned on the benchmark's images, so held them out (nucseg train
            # refuses a fine-tune whose start trained on its validation images)
            "held_out": sorted(tuned_on or []) == sorted(records[name]["validation_images"]),
            "worst_ratio>=0.85": s["worst_ratio"] >= 0.85,
            "mean_ratio>=0.93": s["mean_ratio"] >= 0.93,
            f"unperturbed>={floor:.4f}": s["unperturbed_aji"] >= floor,
        }
        rows[name] = {
            "eligible": all(checks.values()),
            "checks": checks,
            "normalised": normalised,
            **{k: s[k] for k in ("unperturbed_aji", "mean_aji", "mean_ratio", "worst_ratio")},
            "worst_variant": s["worst_variant"],
        }
    eligible = [n for n, r in rows.items() if r["eligible"]]
    if eligible:
        best = max(rows[n]["mean_aji"] for n in eligible)
        tied = [n for n in eligible if rows[n]["mean_aji"] >= best - 0.002]
        unnormalised = [n for n in tied if not rows[n]["normalised"]]
        chosen = max(unnormalised or tied, key=lambda n: rows[n]["mean_aji"])
        decision = f"{chosen}: eligible, highest mean AJI over the variants"
    else:
        chosen = max(rows, key=lambda n: rows[n]["worst_ratio"])
        decision = f"none eligible; best found (highest worst-variant ratio): {chosen}"
    for name, row in rows.items():
        flags = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in row["checks"].items())
        print(
            f"{name:18s} unperturbed {row['unperturbed_aji']:.4f} mean {row['mean_aji']:.4f} "
            f"mean ratio {row['mean_ratio']:.3f} worst {row['worst_ratio']:.3f} "
            f"({row['worst_variant']}): {flags}"
        )
    print("decision:", decision)
    record = {
        "rule": "docs/training.md, 'Stain robustness: the candidates and the rule'",
        "candidates": rows,
        "eligible": eligible,
        "chosen": chosen if eligible else None,
        "decision": decision,
        "provenance": provenance(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    with atomic_write(RESULTS / "selection.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
