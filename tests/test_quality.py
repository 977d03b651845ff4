"""Quality flags: black, white, noise and swapped-stain inputs never pass silently; real ones do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nucseg import quality
from nucseg.augment import _RGB_FROM_HED, restain
from nucseg.io import read_image, read_labels

EXAMPLE = Path(__file__).parents[1] / "examples" / "monuseg-breast-crop"


@pytest.fixture(scope="module")
def example():
    image = read_image(EXAMPLE / "images" / "TCGA-A7-A13E-crop.png")
    labels = read_labels(EXAMPLE / "labels" / "TCGA-A7-A13E-crop.png")
    return image, labels


@pytest.fixture(scope="module")
def segmenter():
    from nucseg.pipeline import make_segmenter

    return make_segmenter(model="default")


def _assess(segmenter, image):
    labels = segmenter(image)
    estimate = getattr(getattr(segmenter, "normaliser", None), "last_estimate", None)
    return labels, quality.assess(image, labels, stain_estimate=estimate)


def test_a_real_image_and_its_ground_truth_raise_no_warning(example):
    image, labels = example
    figures = quality.assess(image, labels)
    assert figures["warnings"] == []
    assert figures["stain_estimate"] == "accepted" and figures["stain_sparsity_ratio"] > 1


def test_the_bundled_model_on_the_example_raises_no_warning(example, segmenter):
    image, _ = example
    _, figures = _assess(segmenter, image)
    assert figures["warnings"] == [], figures


def test_an_all_black_image_is_not_one_nucleus_and_is_flagged(segmenter):
    image = np.zeros((384, 384, 3), np.uint8)
    labels, figures = _assess(segmenter, image)
    assert figures["largest_nucleus_fraction"] < 0.05
    assert any("no tissue" in w for w in figures["warnings"]), figures


def test_a_white_image_is_flagged(segmenter):
    labels, figures = _assess(segmenter, np.full((384, 384, 3), 255, np.uint8))
    assert any("no tissue" in w for w in figures["warnings"]), figures


def test_noise_is_flagged(segmenter):
    noise = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    _, figures = _assess(segmenter, noise)
    assert any("no spatial structure" in w for w in figures["warnings"]), figures


def test_swapped_stains_are_flagged(example):
    image, labels = example
    swapped = restain(image, stains=_RGB_FROM_HED[[1, 0, 2]])  # H and E exchanged
    figures = quality.assess(swapped, labels)
    # flagged as swapped, or (Ruifrok's E vector is far from every haematoxylin) rejected
    assert any("swapped" in w or "stain estimate rejected" in w for w in figures["warnings"])


def test_warn_logs_one_line_per_warning(caplog):
    with caplog.at_level("WARNING", logger="nucseg.quality"):
        quality.warn("x.png", {"warnings": ["a", "b"]})
    assert [r.getMessage() for r in caplog.records] == ["x.png: a", "x.png: b"]


@pytest.mark.slow
def test_training_range_is_that_of_the_training_images(data_root):
    from nucseg import datasets
    from nucseg.train import TrainConfig, split_ids

    config = TrainConfig.from_dict(
        json.loads((EXAMPLE.parents[1] / "configs" / "default.json").read_text())
    )
    ids, _ = split_ids(config)
    medians, fractions, areas, smooth = [], [], [], []
    for image_id in ids:
        sample = datasets.load_sample("monuseg", image_id)
        counts = np.bincount(sample.labels.ravel())[1:]
        counts = counts[counts > 0]
        medians.append(np.median(counts))
        fractions.append(float((sample.labels > 0).mean()))
        areas.append(counts)
        smooth.append(quality.smoothness(quality.thumbnail(sample.image)))
    r = quality.TRAINING_RANGE
    assert r["median_area_px_min"] == pytest.approx(min(medians), abs=0.5)
    assert r["median_area_px_max"] == pytest.approx(max(medians), abs=0.5)
    assert r["nuclei_fraction_max"] == pytest.approx(max(fractions), abs=0.005)
    assert r["area_px_p99"] == pytest.approx(np.percentile(np.concatenate(areas), 99), rel=0.01)
    assert r["smoothness_min"] == pytest.approx(min(smooth), abs=0.01)
