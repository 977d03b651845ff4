"""Tables and figures of a ``nucseg reproduce`` run folder, rewritten from its score files.

:func:`write_report` reads ``<out>/scores/<method>_<dataset>.json`` (written by
:class:`nucseg.reproduce.Reproduction`) and writes:

- ``table2a.{md,csv}`` (MoNuSeg breast) and ``table2b.{md,csv}`` (TNBC): the paper's columns, our
  value with the paper's beside it, training time and hardware;
- ``table3.{md,csv}``: per-image AJI on the 8 MoNuSeg breast images, every method;
- ``figure2.{png,svg}``: precision (the paper's per-threshold "AP") against the ten IoU thresholds,
  one line per method, one panel per test set;
- ``figure3.png``: the lowest- and highest-AJI MoNuSeg breast images of the best method, true
  positive pixels green, false negative red, false positive blue.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nucseg import paper
from nucseg.io import atomic_write

#: The classical baselines (drawn dashed in figure 2).
CLASSICAL = ("otsu", "watershed", "fiji")
#: Every method, in the paper's order: the rows of the tables.
METHODS = tuple(paper.METHOD_KEYS.values())
#: Test set -> its Table 2 file.
DATASET_TABLES = {"monuseg-breast": "table2a", "tnbc": "table2b"}


def _load_scores(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    scores = {}
    for path in sorted((out / "scores").glob("*.json")):
        record = json.loads(path.read_text())
        scores[record["method"], record["dataset"]] = record
    return scores


def _atomic_text(path: Path, text: str) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(text)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds else "-"


def write_report(out: str | Path, predictions: str | Path | None = None) -> list[Path]:
    """Rewrite every table and figure of ``out`` from its score files; returns the paths.

    ``predictions`` holds ``<method>/<image id>.npz`` label images of MoNuSeg breast (default
    ``<out>/models/predictions``); each method's lowest- and highest-AJI ones are copied to
    ``<out>/predictions``, from which figure 3 is drawn (not redrawn if the best method's are
    missing).
    """
    from nucseg.report import markdown_table

    out = Path(out)
    scores = _load_scores(out)
    written = []
    names = {key: name for name, key in paper.METHOD_KEYS.items()}
    columns = paper.TABLE2_COLUMNS
    for dataset, table in DATASET_TABLES.items():
        rows, csv_rows = [], []
        for method in METHODS:
            record = scores.get((method, dataset))
            if record is None:
                continue
            theirs = paper.table2_row(dataset, method) or {}
            cells = [f"{record[c]:.4f}" + (f" ({theirs[c]:.4f})" if c in theirs else "")
                     for c in columns]  # fmt: skip
            rows.append([names[method], *cells, _minutes(record.get("train_seconds", 0.0)),
                         record.get("hardware", "")])  # fmt: skip
            csv_rows.append({"method": names[method],
                             **{c: record[c] for c in columns},
                             **{f"paper_{c}": theirs.get(c, "") for c in columns},
                             "train_seconds": record.get("train_seconds", 0.0),
                             "hardware": record.get("hardware", ""),
                             "n_images": record["n_images"]})  # fmt: skip
        if not rows:
            continue
        header = ["Method", "AJI", "mAP", "F1@0.7", "R@0.7", "P@0.7", "F1@0.5", "R@0.5", "P@0.5",
                  "training", "hardware"]  # fmt: skip
        intro = f"Ours (the paper's in brackets) on {dataset}, {csv_rows[0]['n_images']} images."
        text = intro + "\n\n" + markdown_table(header, rows)
        _atomic_text(out / f"{table}.md", text + "\n")
        with atomic_write(out / f"{table}.csv", overwrite=True) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(csv_rows[0]))
                writer.writeheader()
                writer.writerows(csv_rows)
        written += [out / f"{table}.md", out / f"{table}.csv"]
    written += _table3(out, scores, names)
    written += _figure2(out, scores, names)
    predictions = Path(predictions) if predictions is not None else out / "models" / "predictions"
    _keep_figure3_images(out, scores, predictions)
    written += _figure3(out, scores, names, out / "predictions")
    return written


def _ends(record: dict[str, Any]) -> list[str]:
    """The lowest- and highest-AJI image ids of a score record (one id if they coincide)."""
    per_image = record["per_image"]
    ranked = sorted(per_image, key=lambda i: per_image[i]["aji"])
    return list(dict.fromkeys((ranked[0], ranked[-1])))


def _keep_figure3_images(out: Path, scores: dict, predictions_root: Path) -> None:
    """Copy each method's two figure-3 candidates from ``predictions_root`` to ``out/predictions``.

    The models folder (and its predictions) stays out of git and is gone on a fresh machine; the
    lowest- and highest-AJI MoNuSeg breast labels of every method (about 40 kB each) are kept in
    the run folder, so figure 3 can be redrawn whichever method ends best. A rescored method's
    kept labels are replaced by its new predictions, and those of images that are no longer its
    lowest or highest are removed.
    """
    for (method, dataset), record in scores.items():
        if dataset != "monuseg-breast":
            continue
        ends = _ends(record)
        kept = out / "predictions" / method
        for image_id in ends:
            source = predictions_root / method / f"{image_id}.npz"
            target = kept / f"{image_id}.npz"
            if source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(target, overwrite=True) as tmp:
                    shutil.copyfile(source, tmp)
        for stale in kept.glob("*.npz"):
            if stale.stem not in ends:
                stale.unlink()


def _table3(out: Path, scores: dict, names: dict) -> list[Path]:
    from nucseg.report import markdown_table

    methods = [m for m in METHODS if (m, "monuseg-breast") in scores]
    if not methods:
        return []
    ids = sorted(scores[methods[0], "monuseg-breast"]["per_image"])
    header = ["Image", *[names[m] for m in methods]]
    rows = [[i, *[f"{scores[m, 'monuseg-breast']['per_image'][i]['aji']:.3f}" for m in methods]]
            for i in ids]  # fmt: skip
    _atomic_text(out / "table3.md", "Per-image AJI on MoNuSeg breast.\n\n"
                 + markdown_table(header, rows) + "\n")  # fmt: skip
    with atomic_write(out / "table3.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *methods])
        for i in ids:
            writer.writerow([i, *[scores[m, "monuseg-breast"]["per_image"][i]["aji"]
                                  for m in methods]])  # fmt: skip
    return [out / "table3.md", out / "table3.csv"]


def _figure2(out: Path, scores: dict, names: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nucseg.metrics import PAPER_IOU_THRESHOLDS

    datasets = [d for d in DATASET_TABLES if any(key[1] == d for key in scores)]
    if not datasets:
        return []
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for index, method in enumerate(METHODS):
            record = scores.get((method, dataset))
            if record is None:
                continue
            values = [record[f"precision_{round(t * 100)}"] for t in PAPER_IOU_THRESHOLDS]
            style = "--" if method in CLASSICAL else "-"
            ax.plot(PAPER_IOU_THRESHOLDS, values, style, marker="o", markersize=3,
                    color=plt.cm.tab20(index % 20), label=names[method])  # fmt: skip
        ax.set_title(dataset)
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("AP (precision TP / (TP + FP))")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    paths = [out / "figure2.png", out / "figure2.svg"]
    for path in paths:
        with atomic_write(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return paths


def _figure3(out: Path, scores: dict, names: dict, predictions_root: Path) -> list[Path]:
    """Lowest- and highest-AJI MoNuSeg breast images of the best method, error-coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = [m for m in METHODS if (m, "monuseg-breast") in scores]
    if not candidates:
        return []
    best = max(candidates, key=lambda m: scores[m, "monuseg-breast"]["aji"])
    predictions = predictions_root / best
    record = scores[best, "monuseg-breast"]
    per_image = record["per_image"]
    ends = _ends(record)
    chosen = [i for i in ends if (predictions / f"{i}.npz").is_file()]
    if not chosen:
        return []
    from nucseg import datasets
    from nucseg.io import error_overlay

    fig, axes = plt.subplots(1, len(chosen), figsize=(6 * len(chosen), 6.3), squeeze=False)
    for ax, image_id in zip(axes[0], chosen, strict=True):
        sample = datasets.load_sample("monuseg", image_id)
        labels = np.load(predictions / f"{image_id}.npz")["labels"]
        crop = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))  # a crop_eval run
        ax.imshow(error_overlay(sample.image[crop], sample.labels[crop], labels))
        ax.set_title(f"{image_id}\n{names[best]}: AJI {per_image[image_id]['aji']:.3f}", fontsize=9)
        ax.axis("off")
    fig.text(0.5, 0.01, "pixels: green true positive, red false negative, blue false positive",
             ha="center", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / "figure3.png"
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [path]
