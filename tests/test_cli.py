"""End-to-end tests of the ``nucseg`` command line on the bundled example and the real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nucseg import io
from nucseg.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "monuseg-breast-crop"
EXAMPLE_IMAGE = EXAMPLE / "images" / "TCGA-A7-A13E-crop.png"

#: Keys ``nucseg evaluate --json`` promises at the dataset level.
JSON_KEYS = {
    "aji",
    "paper_map",
    "dsb_map",
    "pq",
    "f1_50",
    "precision_50",
    "recall_50",
    "f1_70",
    "precision_70",
    "recall_70",
    "per_image",
}


def test_segment_writes_four_files_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(EXAMPLE_IMAGE), "--out", str(out), "--method", "fiji"]) == 0
    stem = EXAMPLE_IMAGE.stem
    names = {p.name for p in out.iterdir()}
    assert names == {
        f"{stem}_labels.tif",
        f"{stem}_overlay.png",
        f"{stem}_nuclei.csv",
        f"{stem}_nuclei.geojson",
    }
    labels = io.read_labels(out / f"{stem}_labels.tif")
    geojson = json.loads((out / f"{stem}_nuclei.geojson").read_text())
    csv_rows = (out / f"{stem}_nuclei.csv").read_text().splitlines()
    assert labels.max() == len(geojson["features"]) == len(csv_rows) - 1 > 20
    before = (out / f"{stem}_labels.tif").stat().st_mtime_ns

    assert main(["segment", str(EXAMPLE_IMAGE), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / f"{stem}_labels.tif").stat().st_mtime_ns == before
    assert main(["segment", str(EXAMPLE_IMAGE), "--out", str(out), "--overwrite"]) == 0
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_segment_errors_name_the_problem(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.png"), "--out", str(tmp_path)]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert main(["segment", str(EXAMPLE_IMAGE), "--out", str(tmp_path), "--method", "x"]) == 2
    assert "valid methods" in capsys.readouterr().err
    code = main(["segment", str(EXAMPLE_IMAGE), "--out", str(tmp_path), "--param", "bad=1"])
    assert code == 2 and "no parameter" in capsys.readouterr().err


def test_evaluate_folder_json_and_markdown(tmp_path, capsys):
    result_file, table_file = tmp_path / "r.json", tmp_path / "r.md"
    args = [
        "evaluate",
        "--dataset",
        str(EXAMPLE),
        "--method",
        "otsu",
        "--json",
        str(result_file),
        "--markdown",
        str(table_file),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(result_file.read_text())
    assert JSON_KEYS <= set(result)
    assert set(result["per_image"]) == {EXAMPLE_IMAGE.stem}
    assert result["aji"] == pytest.approx(result["per_image"][EXAMPLE_IMAGE.stem]["aji"])
    assert result["provenance"]["command"].startswith("nucseg") or result["provenance"]["command"]
    assert f"{result['aji']:.4f}" in printed and table_file.read_text().strip() in printed
    assert main(args) == 2  # exists now; needs --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_evaluate_real_dataset_matches_library(data_root, tmp_path):
    from nucseg import classical, datasets, metrics

    out = tmp_path / "tnbc.json"
    args = ["evaluate", "--dataset", "tnbc", "--method", "otsu", "--limit", "2", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    ids = datasets.ids("tnbc", split="all")[:2]
    assert sorted(result["per_image"]) == ids
    expected = np.mean(
        [
            metrics.aji(s.labels, classical.otsu(s.image))
            for s in map(lambda i: datasets.load_sample("tnbc", i), ids)
        ]
    )
    assert result["aji"] == pytest.approx(expected, abs=1e-12)


def test_datasets_verify_and_list(data_root, capsys):
    assert main(["datasets", "verify"]) == 0
    printed = capsys.readouterr().out
    assert "monuseg: 88 of 88 files ok" in printed and "tnbc: 100 of 100 files ok" in printed
    assert main(["datasets", "list"]) == 0
    assert "monuseg-breast" in capsys.readouterr().out


def test_compare_puts_paper_rows_beside_ours(tmp_path, capsys):
    record = {"method": "fiji", "dataset": "monuseg-breast", "aji": 0.5, "paper_map": 0.25}
    path = tmp_path / "fiji.json"
    path.write_text(json.dumps(record))
    assert main(["compare", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| fiji | nucseg | 0.5000 | 0.2500 |" in printed
    assert "| fiji | paper | 0.3396 | 0.2370 |" in printed


def test_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "nucseg.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("nucseg ")


def test_default_segmenter_is_the_bundled_model(monkeypatch):
    import argparse

    from nucseg import cli, pipeline

    args = argparse.Namespace(method=None, model=None, param=[])
    assert "default" in pipeline.bundled_models(), "no model bundled in src/nucseg/data/models"
    cli._segmenter(args)
    assert args.model == "default" and args.method is None
    monkeypatch.setattr(pipeline, "bundled_models", lambda: [])
    args = argparse.Namespace(method=None, model=None, param=[])
    cli._segmenter(args)
    assert args.method == "fiji" and args.model is None
