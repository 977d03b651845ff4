"""The paper's transcribed numbers are self-consistent; report tables show them beside ours."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from nucseg import paper, report

NUMPY_LAYER = ["_checks", "classical", "io", "metrics", "paper", "report", "stain", "datasets"]


def test_table3_per_image_ajis_average_to_table2():
    # The paper's dataset AJI is the mean over images of the per-image AJI (Table 3 -> Table 2a).
    per_image = np.array(list(paper.TABLE3.values()))
    for column, name in enumerate(paper.TABLE3_COLUMNS):
        published = paper.TABLE2["monuseg-breast"][name][0]
        assert per_image[:, column].mean() == pytest.approx(published, abs=0.003), name


def test_table2_row_lookup():
    assert paper.table2_row("monuseg-breast", "fiji")["aji"] == 0.3396
    assert paper.table2_row("tnbc", "fiji") is None  # Table 2b has no classical rows
    assert paper.table2_row("tnbc", "gb-unet")["paper_map"] == 0.3772


def test_comparison_table_skips_other_datasets():
    results = [{"method": "otsu", "dataset": "tnbc", "aji": 0.1},
               {"method": "otsu", "dataset": "monuseg-breast", "aji": 0.2}]  # fmt: skip
    text = report.comparison_table(results, dataset="tnbc")
    assert "0.1000" in text and "0.2000" not in text and "paper" not in text


def test_numpy_layer_never_imports_torch():
    src = Path(__file__).resolve().parents[1] / "src" / "nucseg"
    files = [
        p
        for name in NUMPY_LAYER
        for p in (
            [src / f"{name}.py"] if (src / f"{name}.py").exists() else (src / name).glob("*.py")
        )
    ]
    assert len(files) >= len(NUMPY_LAYER)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "torch" for n in names), path


def test_comparison_table_appends_named_paper_rows():
    results = [{"method": "model:default", "dataset": "tnbc", "aji": 0.6}]
    text = report.comparison_table(results, dataset="tnbc", paper_rows=["GB U-Net"])
    assert "| GB U-Net | paper | 0.5403 | 0.3772 |" in text
    with pytest.raises(KeyError, match="no row"):
        report.comparison_table(results, dataset="tnbc", paper_rows=["Fiji"])
