"""The leave-one-source-out table of docs/generalisation.md, from the evaluation files.

Each row's figures are written by ``nucseg evaluate`` on every image of the held-out source
(the protocol of docs/generalisation.md, committed before training):

    nucseg evaluate --dataset consep-train \\
        --json results/generalisation/loso/default_consep-train.json
    nucseg evaluate --dataset consep-train --model runs/loso-consep \\
        --json results/generalisation/loso/loso-consep_consep-train.json

and this script gathers them (nothing is scored here):

    python benchmarks/loso_table.py

Writes ``results/generalisation/loso/table.json`` and ``table.md``. A row whose run has not
been trained or scored yet says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from nucseg.atomic import write_json
from nucseg.io import atomic_write
from nucseg.provenance import provenance

FOLDER = Path("results/generalisation/loso")
# held-out source -> (its run, the dataset scored: every image of the source)
ROWS = {
    "MoNuSeg non-breast": ("loso-monuseg", "monuseg-nonbreast"),
    "CoNSeP (train tiles)": ("loso-consep", "consep-train"),
    "CPM-15": ("loso-cpm15", "cpm15"),
    "DSB-2018 stained": ("loso-dsb", "dsb2018-he"),
}


def _figure(path: Path) -> dict | None:
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    weights = {
        folder: files.get("model.safetensors")
        for folder, files in record["provenance"].get("models", {}).items()
    }
    return {
        "file": str(path),
        "aji": record["aji"],
        "images": record["n_images"],
        "commit": record["provenance"]["commit"],
        "weights_sha256": weights,
    }


def main() -> None:
    rows = []
    for source, (run, dataset) in ROWS.items():
        rows.append(
            {
                "held_out": source,
                "dataset": dataset,
                "run": f"runs/{run}",
                "default": _figure(FOLDER / f"default_{dataset}.json"),
                "held_out_run": _figure(FOLDER / f"{run}_{dataset}.json"),
            }
        )
    write_json(FOLDER / "table.json", {"rows": rows, "provenance": provenance()}, overwrite=True)
    lines = [
        "| held-out source (every image) | images | stain-soup (the default of the protocol) |"
        " trained without it |",
        "|---|---|---|---|",
    ]
    for row in rows:
        default, held = row["default"], row["held_out_run"]
        images = (default or held or {}).get("images", "")
        lines.append(
            f"| {row['held_out']} | {images} | "
            + (f"{default['aji']:.4f}" if default else "not scored")
            + " | "
            + (f"{held['aji']:.4f}" if held else "not trained yet")
            + " |"
        )
    with atomic_write(FOLDER / "table.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
