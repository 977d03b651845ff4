"""Nucleus types: the per-instance vote, the Predictor's type channels, and the type columns of
every output (segment CSV and GeoJSON, slide Parquet, GeoJSON, report.json and slides.csv)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from helpers import typed_model_folder

from nucseg import datasets
from nucseg.infer import Predictor
from nucseg.nucleus_types import TYPE_COLOURS, TYPE_NAMES, densities, vote_types

PROBS = [f"type_prob_{n}" for n in TYPE_NAMES]


@pytest.fixture(scope="module")
def typed_folder(tmp_path_factory):
    return typed_model_folder(tmp_path_factory.mktemp("typed") / "model")


@pytest.fixture(scope="module")
def crop(data_root):
    return datasets.load_sample("consep", "consep_train_01", root=data_root).image[:256, :256]


def test_vote_hand_worked_and_invariants():
    labels = np.array([[1, 1, 2, 0], [3, 3, 3, 0]])
    probs = np.zeros((2, 4, 5), np.float32)
    probs[0, 0] = [0.5, 0.5, 0.0, 0.0, 0.0]  # label 1: other 0.5 (bg left out)
    probs[0, 1] = [0.0, 0.0, 0.0, 1.0, 0.0]  # label 1: epithelial 1.0
    # label 1: means over 2 px: other 0.25, epithelial 0.5 -> renormalised 1/3, 2/3: epithelial
    probs[0, 2] = [1.0, 0.0, 0.0, 0.0, 0.0]  # label 2: background only -> uniform 1/4 each
    probs[1, :3] = [0.0, 0.2, 0.8, 0.0, 0.0]  # label 3: inflammatory 0.8
    t = vote_types(labels, probs)
    assert t.labels.tolist() == [1, 2, 3]
    np.testing.assert_allclose(t.probs[0], [1 / 3, 0, 2 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(t.probs[1], [0.25] * 4)
    np.testing.assert_allclose(t.probs.sum(1), 1.0, atol=1e-6)
    cols = t.columns(np.array([3, 1]))
    assert cols["type"].tolist() == ["inflammatory", "epithelial"]
    assert cols["type_prob_inflammatory"].tolist() == pytest.approx([0.8, 0.0])
    with pytest.raises(KeyError):
        t.columns(np.array([4]))
    with pytest.raises(ValueError, match="type head has 5 channels"):
        vote_types(labels, probs[..., :4])
    # relabelling the nuclei moves their votes with them
    moved = vote_types(np.where(labels > 0, 10 - labels, 0), probs)
    np.testing.assert_allclose(moved.probs[::-1], t.probs)


def test_predictor_reads_type_channels_and_keeps_them_from_the_rules(typed_folder, crop):
    predictor = Predictor.load(typed_folder)
    assert predictor.type_channels == 5
    maps = predictor.predict_maps(crop)
    assert maps.shape == (256, 256, 8)
    np.testing.assert_allclose(maps[..., :3].sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(maps[..., 3:].sum(-1), 1.0, atol=1e-4)  # softmax of the types
    labels = predictor.maps_to_labels(maps)
    assert labels.max() > 0  # the fixture's thresholds give nuclei to vote on
    untyped = Predictor(
        predictor.model, num_classes=3, postprocess_params=predictor.postprocess_params
    )
    np.testing.assert_array_equal(untyped.maps_to_labels(maps[..., :3]), labels)
    types = predictor.maps_to_types(maps, labels)
    assert types.labels.tolist() == sorted(set(np.unique(labels)) - {0})


def _segment(folder, image, out, tmp_path):
    from nucseg.cli import main
    from nucseg.io import write_png

    write_png(tmp_path / "tile.png", image)
    args = ["segment", str(tmp_path / "tile.png"), "--model", str(folder), "--out", str(out)]
    assert main([*args, "--mpp", "0.25"]) == 0
    with open(out / "tile_nuclei.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((out / "tile_nuclei.geojson").read_text())["features"]


def test_segment_outputs_carry_types(typed_folder, crop, tmp_path):
    rows, features = _segment(typed_folder, crop, tmp_path / "out", tmp_path)
    assert rows and all(r["type"] in TYPE_NAMES for r in rows)
    from nucseg.pipeline import make_segmenter, segment_files

    (record,) = segment_files([tmp_path / "tile.png"], make_segmenter(model=str(typed_folder)),
                              tmp_path / "again", progress=False)  # fmt: skip
    assert record["types"] == {n: sum(r["type"] == n for r in rows) for n in TYPE_NAMES}
    for r in rows:
        assert sum(float(r[c]) for c in PROBS) == pytest.approx(1.0, abs=1e-5)
        assert max(PROBS, key=lambda c: float(r[c])) == f"type_prob_{r['type']}"
    by_label = {int(r["label"]): r["type"] for r in rows}
    assert len(features) == len(rows)
    for f in features:
        kind = by_label[f["properties"]["measurements"]["label"]]
        assert f["properties"]["classification"] == {
            "name": kind,
            "color": list(TYPE_COLOURS[kind]),
        }
        assert set(PROBS) <= set(f["properties"]["measurements"])


def test_untyped_model_outputs_have_no_type(tmp_path, crop):
    from helpers import typed_model_folder as make

    folder = make(tmp_path / "plain", type_channels=0)
    rows, features = _segment(folder, crop, tmp_path / "out", tmp_path)
    assert rows and "type" not in rows[0] and not any(c in rows[0] for c in PROBS)
    assert {f["properties"]["classification"]["name"] for f in features} == {"Nucleus"}


def test_slide_outputs_and_report_carry_types(typed_folder, crop, tmp_path):
    from nucseg.cli import main
    from nucseg.slide.synthetic import write_slide

    image = np.concatenate([crop, crop[:, ::-1]], axis=1)  # 256 x 512
    path = write_slide(tmp_path / "s.tif", image.shape[:2], image, mpp=0.25, compression="zlib")
    out = tmp_path / "out"
    args = ["slide", str(path), "--model", str(typed_folder), "--out", str(out), "--no-progress"]
    assert main([*args, "--chunk", "256"]) == 0
    folder = out / "s"
    table = pd.read_parquet(folder / "nuclei.parquet")
    assert len(table) > 0 and set(table["type"]) <= set(TYPE_NAMES)
    np.testing.assert_allclose(table[PROBS].sum(axis=1), 1.0, atol=1e-5)
    report = json.loads((folder / "report.json").read_text())
    counts = report["types"]["counts"]
    assert sum(counts.values()) == report["nuclei"] == len(table)
    assert counts == {n: int((table["type"] == n).sum()) for n in TYPE_NAMES}
    for n in TYPE_NAMES:
        assert report["types"]["per_mm2_tissue"][n] == pytest.approx(
            counts[n] / report["tissue_mm2"]
        )
    features = json.loads((folder / "nuclei.geojson").read_text())["features"]
    names = [f["properties"]["classification"]["name"] for f in features]
    assert names == table["type"].tolist()
    with open(out / "slides.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["n_inflammatory"]) == counts["inflammatory"]
    cohort = pd.read_parquet(out / "cohort.parquet")
    assert cohort["type"].tolist() == table["type"].tolist()
    # the Dask path (one local worker) gives the same typed nuclei, report and slides.csv row
    dask_args = [*args[:5], str(tmp_path / "dask"), *args[6:], "--chunk", "256", "--workers", "1"]
    assert main(dask_args) == 0
    order = ["centroid_y", "centroid_x"]
    dask_table = pd.read_parquet(tmp_path / "dask" / "s" / "nuclei.parquet")
    pd.testing.assert_frame_equal(
        dask_table.sort_values(order).reset_index(drop=True),
        table.sort_values(order).reset_index(drop=True),
    )
    dask_report = json.loads((tmp_path / "dask" / "s" / "report.json").read_text())
    assert dask_report["distributed"] and dask_report["types"] == report["types"]
    with open(tmp_path / "dask" / "slides.csv") as fh:
        (dask_row,) = list(csv.DictReader(fh))
    assert {k: dask_row[k] for k in row if k.startswith("n_")} == {
        k: row[k] for k in row if k.startswith("n_")
    }


def test_densities_and_tumour_region_hand_worked():
    # cell (0, 0) of 100 um: 12 epithelial + 3 inflammatory -> tumour (>= 10 epi, >= 50 %);
    # cell (0, 1): 10 epithelial + 11 spindle -> not (47.6 %); cell (1, 0): 2 inflammatory.
    kinds = ["epithelial"] * 12 + ["inflammatory"] * 3 + ["epithelial"] * 10 + ["spindle"] * 11
    kinds += ["inflammatory"] * 2
    x = [50.0] * 15 + [150.0] * 21 + [10.0] * 2
    y = [50.0] * 15 + [50.0] * 21 + [120.0] * 2
    d = densities(np.array(kinds), np.array(x), np.array(y), tissue_mm2=0.04)
    assert d["counts"] == {"other": 0, "inflammatory": 5, "epithelial": 22, "spindle": 11}
    assert d["per_mm2_tissue"]["inflammatory"] == pytest.approx(5 / 0.04)
    region = d["tumour_region"]
    assert region["area_mm2"] == pytest.approx(0.01)
    assert region["nuclei"]["inflammatory"] == 3 and region["nuclei"]["epithelial"] == 12
    assert region["inflammatory_per_mm2"] == pytest.approx(300.0)
    empty = densities(np.array([], str), np.array([]), np.array([]), tissue_mm2=0.0)
    assert empty["tumour_region"]["inflammatory_per_mm2"] is None
    assert empty["per_mm2_tissue"]["other"] is None


def test_evaluate_reports_type_scores_when_the_model_types(typed_folder, data_root):
    from nucseg.datasets import Sample
    from nucseg.datasets.labelled import CONSEP_TYPES
    from nucseg.pipeline import evaluate, make_segmenter, segment_typed
    from nucseg.type_metrics import TypeEvaluator

    full = datasets.load_sample("consep", "consep_train_01", root=data_root)
    labels = full.labels[:256, :256]
    kinds = {k: v for k, v in full.types.items() if k in set(np.unique(labels))}
    sample = Sample("crop", full.image[:256, :256], labels, "colorectal", "consep", 0.25, kinds)
    segmenter = make_segmenter(model=str(typed_folder))
    result = evaluate(segmenter, [sample], progress=False)
    # the same scores as the evaluator fed directly with the segmenter's voted types
    prediction, types = segment_typed(segmenter, sample.image)
    direct = TypeEvaluator(CONSEP_TYPES)
    voted = dict(zip(types.labels, types.index + 1, strict=True))
    direct.process("crop", labels, kinds, prediction, voted)
    assert result["types"] == direct.evaluate()
    assert result["types"]["detection"]["tp"] + result["types"]["detection"]["fn"] == len(kinds)
    json.dumps(result["types"])  # JSON-ready
    from nucseg.report import type_table

    table = type_table(result)
    d = result["types"]["detection"]
    assert f"| detection | {d['precision']:.4f} | {d['recall']:.4f} | {d['f1']:.4f} |" in table
    untyped = Sample("crop", sample.image, labels, "colorectal", "consep", 0.25, None)
    assert "types" not in evaluate(segmenter, [untyped], progress=False)


def test_score_types_script_on_training_tiles(typed_folder, data_root, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "score_types.py"
    spec = importlib.util.spec_from_file_location("score_types", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [str(typed_folder), "--dataset", "consep-train", "--limit", "1", "--crop", "192",
            "--out-dir", str(tmp_path), "--name", "tiny"]  # fmt: skip
    assert module.main(args) == 0
    record = json.loads((tmp_path / "tiny.json").read_text())
    assert record["images"] == ["consep_train_01"] and record["crop"] == 192
    (hashes,) = record["provenance"]["models"].values()  # keyed without machine paths
    assert hashes["model.safetensors"]
    confusion = np.array(record["types"]["confusion"])
    assert confusion.sum() == record["types"]["detection"]["tp"]
    assert (tmp_path / "tiny_confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert module.main(args) == 2  # nothing overwritten without --overwrite
    assert "exists; give --overwrite" in capsys.readouterr().err


def test_chunk_without_tissue_gives_typed_empty_result(typed_folder):
    from nucseg.slide.engine import ChunkSegmenter, segment_typed

    segmenter = ChunkSegmenter(Predictor.load(typed_folder), None)
    glass = np.full((64, 80, 3), 245, np.uint8)
    labels, types = segment_typed(segmenter, glass)
    assert labels.shape == (64, 80) and labels.max() == 0
    assert types.names == TYPE_NAMES and types.labels.size == 0 and types.probs.shape == (0, 4)
    assert set(types.columns(np.zeros(0, np.int64))) == {"type", *PROBS}
