"""Metric records -> plain-text and Markdown tables, with the paper's rows beside ours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nucseg import paper

#: Columns of the summary table: result key -> header (Table 2's columns, then PQ and DSB mAP).
SUMMARY_COLUMNS = {
    "aji": "AJI",
    "paper_map": "mAP",
    "f1_70": "F1(0.7)",
    "recall_70": "Recall(0.7)",
    "precision_70": "Precision(0.7)",
    "f1_50": "F1(0.5)",
    "recall_50": "Recall(0.5)",
    "precision_50": "Precision(0.5)",
    "pq": "PQ",
    "aji_plus": "AJI+",
    "dsb_map": "DSB mAP",
}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Format ``rows`` under ``header`` as a GitHub Markdown table (floats to 4 decimals).

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [["x", 0.5]]))
    | a | b |
    |---|---|
    | x | 0.5000 |
    """

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(result: Mapping[str, Any], *, name: str) -> str:
    """One-row Markdown table of the dataset-level scores of one evaluation result."""
    return markdown_table(
        ["Method", *SUMMARY_COLUMNS.values()],
        [[name, *(result.get(key) for key in SUMMARY_COLUMNS)]],
    )


def type_table(result: Mapping[str, Any]) -> str:
    """Markdown table of the typed scores (:mod:`nucseg.type_metrics`): detection, each type's
    precision, recall and F1 (HoVer-Net's), and the PQ+ of each type with their mean mPQ+."""
    types = result["types"]
    d = types["detection"]
    rows = [["detection", d["precision"], d["recall"], d["f1"], None, d["tp"] + d["fn"]]]
    for name, s in types["types"].items():
        pq = types["pq_plus_per_type"].get(name)
        rows.append([name, s["precision"], s["recall"], s["f1"], pq, s["n_true"]])
    rows.append(["mPQ+", None, None, None, types["mpq_plus"], None])
    return markdown_table(["Type", "Precision", "Recall", "F1", "PQ+", "true nuclei"], rows)


def per_image_table(result: Mapping[str, Any]) -> str:
    """Markdown table of each image's AJI, mAP, F1(0.5) and counts (as the paper's Table 3)."""
    rows = [
        [image_id, s["aji"], s["paper_map"], s["f1_50"], int(s["n_true"]), int(s["n_pred"])]
        for image_id, s in sorted(result["per_image"].items())
    ]
    return markdown_table(["Image", "AJI", "mAP", "F1(0.5)", "true nuclei", "predicted"], rows)


def comparison_table(
    results: Sequence[Mapping[str, Any]], *, dataset: str, paper_rows: Sequence[str] = ()
) -> str:
    """Markdown table of our results with the paper's Table 2 row under each method.

    Parameters
    ----------
    results : sequence of mapping
        Evaluation results as written by ``nucseg evaluate --json``; those of other datasets are
        ignored.
    dataset : str
        Evaluation dataset name, e.g. ``"monuseg-breast"``.
    paper_rows : sequence of str, optional
        Further rows of the paper's Table 2 to append by name (e.g. ``"GB U-Net"``).
    """
    columns = paper.TABLE2_COLUMNS
    header = ["Method", "Source", *(SUMMARY_COLUMNS[c] for c in columns)]
    rows = []
    for result in results:
        if result.get("dataset") != dataset:
            continue
        method = result["method"]
        rows.append([method, "nucseg", *(result.get(c) for c in columns)])
        published = paper.table2_row(dataset, method)
        if published is not None:
            rows.append([method, "paper", *(published[c] for c in columns)])
    for name in paper_rows:
        values = paper.TABLE2.get(dataset, {}).get(name)
        if values is None:
            raise KeyError(f"the paper's Table 2 has no row {name!r} for {dataset}")
        rows.append([name, "paper", *values])
    return markdown_table(header, rows)
