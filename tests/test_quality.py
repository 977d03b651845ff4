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


#: Images nearest the swap detector's threshold in results/stain/swap_detector.json (TNBC 09_1:
#: 0.028, the lowest of the 257; the DSB-2018 and CoNSeP lowest) and the slide matrix's field.
SWAP_CASES = (
    ("tnbc", "09_1"),
    ("dsb2018-he", "92f31f591929a30e4309ab75185c96ff4314ce0a7ead2ed2c2171897ad1da0c7"),
    ("consep", "consep_train_04"),
    ("monuseg", "TCGA-18-5592-01Z-00-DX1"),
)


@pytest.mark.data
@pytest.mark.parametrize(("name", "image_id"), SWAP_CASES, ids=[c[0] for c in SWAP_CASES])
def test_swap_score_tells_real_images_from_their_red_blue_swaps(data_root, name, image_id):
    from nucseg import datasets

    image = datasets.load_sample(name, image_id, root=data_root).image
    genuine = quality.swap_score(image)
    swapped = quality.swap_score(np.ascontiguousarray(image[..., ::-1]))
    assert genuine > 0 > swapped
    assert swapped == pytest.approx(-genuine, rel=1e-6)  # the swap changes the sign, exactly
    assert quality.swapped_stains(None, genuine) is None


def test_swap_score_of_grey_or_blank_images_decides_nothing():
    grey = np.repeat(np.linspace(40, 200, 256 * 256).reshape(256, 256, 1), 3, axis=2)
    assert quality.swap_score(grey.astype(np.uint8)) == 0
    assert quality.swap_score(np.full((256, 256, 3), 255, np.uint8)) is None


@pytest.mark.data
def test_the_slide_matrix_field_swapped_is_flagged(data_root):
    """Row 27 of the slide matrix: TCGA-18-5592 with red and blue swapped (its sparsity ratio
    is 2.2: only the swap score flags the field itself)."""
    from nucseg import datasets
    from nucseg.stain import read_normaliser

    image = datasets.load_sample("monuseg", "TCGA-18-5592-01Z-00-DX1", root=data_root).image
    swapped = np.ascontiguousarray(image[..., ::-1])
    figures = quality.assess(swapped, np.zeros(swapped.shape[:2], np.int32))
    assert figures["stain_sparsity_ratio"] > quality.SWAPPED_SPARSITY_RATIO
    assert [w for w in figures["warnings"] if "red and blue exchanged?" in w]
    # the swap score warns but does not decide the remedy (it also fires on genuine
    # brown-purple palettes, where not normalising costs the model accuracy)
    normaliser = read_normaliser("src/nucseg/data/models/stain-soup")
    assert quality.stain_remedy(swapped, normaliser.estimate(swapped, warn=False)) is None
    assert quality.stain_remedy(image, normaliser.estimate(image, warn=False)) is None


def test_a_slide_chunk_names_the_slides_stain_decision(data_root):
    """A chunk's quality figures word a swap by what the slide's stain fit decided: the remedy
    when one was taken, never "the model does not normalise stains" for a model that does."""
    from nucseg import datasets
    from nucseg.slide.chunkio import chunk_quality

    image = datasets.load_sample("monuseg", "TCGA-18-5592-01Z-00-DX1", root=data_root).image
    swapped = np.ascontiguousarray(image[..., ::-1])
    labels = np.zeros(swapped.shape[:2], np.int32)
    remedied = chunk_quality(swapped, labels, mpp=0.25, stain={"accepted": True, "remedy": "R"})
    normalised = chunk_quality(swapped, labels, mpp=0.25, stain={"accepted": True})
    bare = chunk_quality(swapped, labels, mpp=0.25)
    line = [w for w in remedied["warnings"] if w.startswith("stains look swapped")]
    assert line and line[0].endswith("; remedy: R")
    assert remedied["stain_remedy"] == "R"
    assert not any("does not normalise" in w for w in remedied["warnings"] + normalised["warnings"])
    assert any("does not normalise" in w for w in bare["warnings"])


def test_the_slide_summary_repeats_no_stain_flag_its_stain_decision_acted_on(caplog):
    from types import SimpleNamespace

    from nucseg.slide.run import _quality_summary

    swapped = "stains look swapped: the haematoxylin-like stain is spread like eosin (ratio 0.3)"
    acted = {"warnings": [swapped + "; remedy: not normalised"], "stain_remedy": "not normalised"}
    left = {"warnings": [swapped + "; nuclei may be missed"], "stain_remedy": None}
    small = {"warnings": ["little or no tissue (1.0% of pixels look stained)"],
             "stain_remedy": "not normalised"}  # fmt: skip
    with caplog.at_level("WARNING", logger="nucseg.slide.run"):
        summary = _quality_summary([SimpleNamespace(name="a", quality=acted)], "s")
    assert summary["chunks_flagged"] == 1 and caplog.records == []
    for figures in (left, small):
        caplog.clear()
        with caplog.at_level("WARNING", logger="nucseg.slide.run"):
            _quality_summary([SimpleNamespace(name="a", quality=figures)], "s")
        assert len(caplog.records) == 1 and "1 of 1 tissue chunks" in caplog.text
