"""Tests of post-processing: probability maps -> instance labels, and threshold tuning."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import data_root_or_skip
from scipy import ndimage as ndi
from skimage import draw, filters, segmentation

from nucseg import metrics, postprocess
from nucseg.objects import remove_small
from nucseg.postprocess import (
    distance_watershed,
    marker_watershed,
    paper_rule,
    to_instances,
    tune_paper_threshold,
    tune_watershed,
)

# --- builders of ideal maps ----------------------------------------------------------------------


def two_touching_discs(shape=(40, 60)) -> np.ndarray:
    """Labels of two discs of radius 10, centres 16 columns apart, split along the middle column."""
    labels = np.zeros(shape, dtype=np.int32)
    for n, col in enumerate((22, 38), start=1):
        rr, cc = draw.disk((20, col), 10, shape=shape)
        labels[rr, cc] = np.where(labels[rr, cc] == 0, n, labels[rr, cc])
    labels[(labels == 1) & (np.arange(shape[1]) >= 30)] = 2  # the overlap goes to the nearer centre
    return labels


def one_hot_probs(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 map: background, interior, boundary (a ring inside each nucleus)."""
    boundary = segmentation.find_boundaries(labels, mode="inner") & (labels > 0)
    interior = (labels > 0) & ~boundary
    return np.stack([labels == 0, interior, boundary], axis=-1).astype(np.float32)


def normalised_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to each nucleus' border divided by its maximum: 1 at the centre."""
    distance = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        edt = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        distance[box][inside] = edt[inside] / edt.max()
    return distance


def blurred(probs: np.ndarray, *, sigma: float, noise: float, seed: int = 0) -> np.ndarray:
    """Each channel blurred, Gaussian noise added, renormalised to sum 1 like a softmax."""
    rng = np.random.default_rng(seed)
    channels = [filters.gaussian(probs[..., k], sigma=sigma) for k in range(probs.shape[-1])]
    noisy = np.clip(np.stack(channels, axis=-1) + rng.normal(0, noise, probs.shape), 1e-3, None)
    return (noisy / noisy.sum(axis=-1, keepdims=True)).astype(np.float32)


def assert_contract(labels: np.ndarray, shape: tuple[int, int]) -> None:
    assert labels.shape == shape and labels.dtype == np.int32
    assert set(np.unique(labels)) - {0} == set(range(1, labels.max() + 1))  # 1..N, consecutive


# Example input of every registered method: registering a method without one fails a test.
EXAMPLES = {
    "paper": lambda labels: 1 - one_hot_probs(labels)[..., 0],
    "watershed": one_hot_probs,
    "distance": lambda labels: ((labels > 0).astype(np.float32), normalised_distance(labels)),
}


# --- the three rules on toy maps -----------------------------------------------------------------


def test_touching_discs_paper_merges_watershed_separates():
    labels = two_touching_discs()
    probs = one_hot_probs(labels)
    merged = paper_rule(1 - probs[..., 0])
    assert merged.max() == 1  # the paper's rule has no way to split touching nuclei
    split = marker_watershed(probs)
    assert_contract(split, labels.shape)
    assert split.max() == 2
    np.testing.assert_array_equal(split > 0, probs[..., 1] + probs[..., 2] > 0.5)
    assert metrics.aji(labels, split) > 0.95


def test_touching_discs_distance_separates():
    labels = two_touching_discs()
    fg, distance = EXAMPLES["distance"](labels)
    result = distance_watershed(fg, distance)
    assert result.max() == 2 and metrics.aji(labels, result) > 0.95
    assert paper_rule(fg).max() == 1


def test_paper_rule_fills_holes_and_drops_small_objects():
    prob = np.zeros((30, 30), dtype=np.float32)
    rr, cc = draw.disk((12, 12), 8)
    prob[rr, cc] = 0.9
    prob[10:13, 10:13] = 0.1  # a 9-pixel hole
    prob[26:28, 26:28] = 0.9  # a 4-pixel speck
    disc_area = len(rr)
    filled = paper_rule(prob, min_size=5)
    assert filled.max() == 1 and (filled > 0).sum() == disc_area
    with_hole = paper_rule(prob, min_size=5, fill_holes=False)
    assert (with_hole > 0).sum() == disc_area - 9
    kept = paper_rule(prob, min_size=4)
    assert kept.max() == 2 and kept[27, 27] == 2  # raster order: the disc is found first


def test_paper_rule_threshold_is_strict_and_components_8_connected():
    prob = np.array([[0.5, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]], dtype=np.float32)
    result = paper_rule(prob, min_size=1)
    np.testing.assert_array_equal(result, [[0, 0, 0], [0, 1, 0], [0, 0, 1]])  # diagonal: one


def test_marker_watershed_fills_holes_and_drops_small_nuclei():
    labels = np.zeros((40, 40), dtype=np.int32)
    rr, cc = draw.disk((15, 15), 9)
    labels[rr, cc] = 1
    labels[35:38, 35:38] = 2  # 9 pixels
    probs = one_hot_probs(labels)
    probs[14:17, 14:17] = (1.0, 0.0, 0.0)  # a 9-pixel hole of background in the nucleus
    result = marker_watershed(probs, min_marker_size=1, min_size=10)
    assert result.max() == 1 and (result > 0).sum() == len(rr)
    assert marker_watershed(probs, min_marker_size=1, min_size=9).max() == 2


def test_gap_enclosed_by_several_nuclei_is_not_filled():
    # Nuclei 1 and 2 close a ring around a 1-pixel gap; nucleus 3 has a hole of its own.
    labels = np.array(
        [
            [1, 1, 1, 0, 3, 3, 3],
            [1, 0, 2, 0, 3, 0, 3],
            [2, 2, 2, 0, 3, 3, 3],
        ],
        dtype=np.int32,
    )
    expected = labels.copy()
    expected[1, 5] = 3
    np.testing.assert_array_equal(postprocess._fill_holes_per_object(labels), expected)
    no_holes = np.array([[1, 0, 2]], dtype=np.int32)
    assert postprocess._fill_holes_per_object(no_holes) is no_holes


def test_unmarked_regions_kept_or_dropped():
    labels = np.zeros((40, 40), dtype=np.int32)
    rr, cc = draw.disk((12, 12), 8)
    labels[rr, cc] = 1
    probs = one_hot_probs(labels)
    probs[25:32, 25:32] = (0.2, 0.3, 0.5)  # 49 pixels of foreground, no confident interior
    probs[2:4, 30:33] = (0.2, 0.3, 0.5)  # 6 pixels, likewise
    kept = marker_watershed(probs, min_size=30)
    assert kept.max() == 2 and (kept == 2).sum() == 49  # the 6-pixel region is too small
    assert marker_watershed(probs, min_size=30, keep_unmarked=False).max() == 1
    assert marker_watershed(probs, min_size=5).max() == 3


def test_watershed_markers_are_4_connected():
    # Two interior squares meeting at one corner: 4-connectivity keeps them two markers.
    probs = np.zeros((12, 12, 3), dtype=np.float32)
    probs[..., 0] = 1
    probs[1:6, 1:6] = probs[6:11, 6:11] = (0.0, 1.0, 0.0)
    assert marker_watershed(probs, min_marker_size=1, min_size=1).max() == 2


def test_distance_markers_one_per_dome_despite_tied_peaks():
    # One elongated nucleus whose distance ridge has two top pixels at exactly 1.0 and a saddle
    # of 0.9 between them: h-maxima pixels are two, the dome (hence the nucleus) is one.
    distance = np.zeros((7, 11), dtype=np.float32)
    distance[1:6, 1:10] = 0.3
    distance[3, 2:9] = [0.6, 1.0, 0.9, 0.9, 0.9, 1.0, 0.6]
    fg = (distance > 0).astype(np.float32)
    assert distance_watershed(fg, distance, h=0.3, min_size=1).max() == 1
    assert distance_watershed(fg, distance, h=0.05, min_size=1).max() == 2  # the saddle is 0.1


# --- registry and input checks ------------------------------------------------------------------


def test_every_method_has_an_example():
    assert set(EXAMPLES) == set(postprocess.METHODS)


@pytest.mark.parametrize("name", sorted(postprocess.METHODS))
def test_to_instances_dispatches(name):
    labels = two_touching_discs()
    maps = EXAMPLES[name](labels)
    result = to_instances(maps, method=name, min_size=10)
    assert_contract(result, labels.shape)
    func = postprocess.get_method(name)
    direct = func(*maps, min_size=10) if isinstance(maps, tuple) else func(maps, min_size=10)
    np.testing.assert_array_equal(result, direct)


def test_unknown_method_lists_valid_names():
    with pytest.raises(KeyError, match="distance, paper, watershed"):
        to_instances(np.zeros((4, 4), dtype=np.float32), method="nope")


def _constant_maps(name: str, value: float, shape=(20, 30)):
    if name == "paper":
        return np.full(shape, value, dtype=np.float32)
    if name == "watershed":
        return np.full((*shape, 3), value, dtype=np.float32)
    return np.full(shape, value, dtype=np.float32), np.full(shape, value, dtype=np.float32)


@pytest.mark.parametrize("name", sorted(postprocess.METHODS))
def test_all_background_gives_no_nuclei(name):
    result = to_instances(_constant_maps(name, 0.0), method=name)
    assert_contract(result, (20, 30))
    assert result.max() == 0


@pytest.mark.parametrize("name", sorted(postprocess.METHODS))
def test_all_foreground_gives_one_nucleus(name):
    result = to_instances(_constant_maps(name, 1.0), method=name)
    assert_contract(result, (20, 30))
    assert result.max() == 1 and (result == 1).all()


@pytest.mark.parametrize("name", sorted(postprocess.METHODS))
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1)])
def test_empty_and_one_pixel_maps(name, shape):
    result = to_instances(_constant_maps(name, 0.0, shape), method=name, min_size=1)
    assert result.shape == shape and result.dtype == np.int32 and not result.any()


def test_all_interior_softmax_gives_one_nucleus():
    probs = np.zeros((20, 30, 3), dtype=np.float32)
    probs[..., 1] = 1.0
    assert (marker_watershed(probs) == 1).all()


def test_distance_without_markers_keeps_the_foreground():
    fg = np.ones((20, 30), dtype=np.float32)
    result = distance_watershed(fg, np.zeros_like(fg))
    assert (result == 1).all()
    assert distance_watershed(fg, np.zeros_like(fg), keep_unmarked=False).max() == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((5, 5), dtype=np.uint8), "float"),
        (np.zeros((5, 5, 3), dtype=np.float32), r"\(H, W\)"),
        (np.full((5, 5), np.nan, dtype=np.float32), "finite"),
        (np.full((5, 5), 3.0, dtype=np.float32), r"\[0, 1\]"),
    ],
)
def test_paper_rule_rejects_bad_maps(bad, message):
    with pytest.raises(ValueError, match=message):
        paper_rule(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((5, 5), dtype=np.float32), r"\(H, W, 3\)"),
        (np.zeros((5, 5, 2), dtype=np.float32), r"\(H, W, 3\)"),
        (np.zeros((5, 5, 3), dtype=np.int64), "float"),
        (np.full((5, 5, 3), np.inf, dtype=np.float64), "finite"),
        (np.full((5, 5, 3), -1.0, dtype=np.float32), r"\[0, 1\]"),
    ],
)
def test_marker_watershed_rejects_bad_maps(bad, message):
    with pytest.raises(ValueError, match=message):
        marker_watershed(bad)


def test_distance_watershed_rejects_bad_input():
    fg = np.zeros((5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="same pixels"):
        distance_watershed(fg, np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        distance_watershed(fg, np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="h must be"):
        distance_watershed(fg, fg, h=0)
    # A regressed distance may leave [0, 1]: allowed, negative values count as 0.
    distance = np.full((5, 5), 1.5, dtype=np.float32)
    distance[0] = -0.5
    result = distance_watershed(fg + 1, distance, min_size=1)
    assert (result == 1).all()  # the negative row is foreground reached from the marker


def test_fill_holes_equals_scipy():
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((int(rng.integers(1, 25)), int(rng.integers(1, 25)))) < rng.random()
        np.testing.assert_array_equal(postprocess._fill_holes(mask), ndi.binary_fill_holes(mask))


def test_importing_postprocess_does_not_import_torch():
    code = "import sys, nucseg.postprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- tuning -------------------------------------------------------------------------------------


def _graded_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of 12 discs and a foreground probability where one threshold, 0.8, is clearly best.

    Each nucleus (radius 6) has probability 0.82 and a halo to radius 10 at 0.73, so below 0.73
    every prediction is too large (IoU 36 / 100 < 0.5); false-positive blobs sit at 0.77; above
    0.82 nothing is left. Thresholds 0.75, 0.8, 0.85 give precision 12 / 16, 1 and 0.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros((128, 128), dtype=np.int32)
    prob = rng.uniform(0.0, 0.2, labels.shape).astype(np.float32)
    centres = [(r, c) for r in range(16, 128, 32) for c in range(16, 128, 40)]
    for n, (r, c) in enumerate(centres, start=1):
        prob[draw.disk((r, c), 10, shape=labels.shape)] = 0.73
        rr, cc = draw.disk((r, c), 6, shape=labels.shape)
        prob[rr, cc] = 0.82
        labels[rr, cc] = n
    for r, c in [(32, 36), (64, 76), (96, 116), (0, 60)]:  # between the nuclei
        prob[draw.disk((r, c), 4, shape=labels.shape)] = 0.77
    return prob, labels


def test_tune_paper_threshold_finds_the_best_threshold():
    scenes = [_graded_scene(seed) for seed in range(2)]
    probs, labels = zip(*scenes, strict=True)
    best, table = tune_paper_threshold(probs, labels, min_size=10)
    assert best == 0.8
    assert [row["threshold"] for row in table] == list(postprocess.DEFAULT_THRESHOLDS)
    rows = {row["threshold"]: row for row in table}
    assert rows[0.8]["precision"] == 1.0 and rows[0.8]["recall"] == 1.0
    assert rows[0.75]["precision"] == pytest.approx(12 / 16)
    assert rows[0.7]["precision"] == 0.0 and rows[0.85]["n_pred"] == 0
    json.dumps(table)  # serialisable as is
    for objective in ("f1", "aji"):
        assert tune_paper_threshold(probs, labels, min_size=10, objective=objective)[0] == 0.8


def test_precision_objective_can_prefer_few_confident_nuclei():
    # 12 nuclei: 3 sure (0.95), 9 less sure (0.7), plus one false positive at 0.7. Precision is
    # highest at 0.7 or above, where 3 nuclei remain; AJI and F1 prefer keeping all 12.
    _, labels = _graded_scene(0)
    prob = np.where(labels > 0, 0.7, 0.05).astype(np.float32)
    prob[np.isin(labels, [1, 2, 3])] = 0.95
    prob[draw.disk((32, 36), 4)] = 0.7
    precise, table = tune_paper_threshold([prob], [labels], min_size=10)
    assert precise == 0.7 and table[8]["n_pred"] == 3
    assert tune_paper_threshold([prob], [labels], min_size=10, objective="aji")[0] == 0.3
    assert tune_paper_threshold([prob], [labels], min_size=10, objective="f1")[0] == 0.3


def test_tune_paper_threshold_iou_outside_the_paper_grid():
    prob, labels = _graded_scene(0)
    best, table = tune_paper_threshold([prob], [labels], iou=0.33, candidates=[0.5, 0.8])
    # At IoU 0.33 the halo-sized predictions (IoU 0.36) match too; the false positives stay.
    assert best == 0.8 and table[0]["recall"] == 1.0 and table[0]["precision"] < 1.0


def test_tune_paper_threshold_rejects_bad_arguments():
    prob, labels = _graded_scene(0)
    with pytest.raises(ValueError, match="objective"):
        tune_paper_threshold([prob], [labels], objective="recall")
    with pytest.raises(ValueError, match="as many maps"):
        tune_paper_threshold([prob, prob], [labels])
    with pytest.raises(ValueError, match="same pixels"):
        tune_paper_threshold([prob[:10]], [labels])
    with pytest.raises(ValueError, match="candidates"):
        tune_paper_threshold([prob], [labels], candidates=[])


def test_tune_watershed_grid():
    labels = two_touching_discs()
    probs = one_hot_probs(labels) * np.float32(0.9) + np.float32(0.1 / 3)  # interior 0.93
    grid = {"interior_threshold": np.array([0.5, 0.95]), "min_size": [10, 30]}
    best, table = tune_watershed([probs], [labels], grid=grid)
    assert best == {"interior_threshold": 0.5, "min_size": 10}  # first of the tied combinations
    assert len(table) == 4 and type(table[0]["params"]["interior_threshold"]) is float
    rows = {tuple(r["params"].values()): r for r in table}
    assert rows[(0.95, 10)]["aji"] < 0.6  # no marker: the unmarked pair is kept as one nucleus
    json.dumps(table)
    fg, distance = EXAMPLES["distance"](labels)
    best, _ = tune_watershed([(fg, distance)], [labels], grid={"h": [0.3, 2.0]}, method="distance")
    assert best == {"h": 0.3}
    with pytest.raises(ValueError, match="non-empty"):
        tune_watershed([probs], [labels], grid={"min_size": []})
    with pytest.raises(KeyError, match="valid"):
        tune_watershed([probs], [labels], grid={"min_size": [1]}, method="nope")


# --- real MoNuSeg labels ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monuseg_labels() -> np.ndarray:
    from nucseg import datasets

    root = data_root_or_skip()
    return datasets.load_sample("monuseg", "TCGA-A7-A13E-01Z-00-DX1", root=root).labels


@pytest.mark.data
def test_ideal_three_class_map_of_real_labels(monuseg_labels):
    probs = one_hot_probs(monuseg_labels)
    result = marker_watershed(probs)
    assert_contract(result, monuseg_labels.shape)
    scores = metrics.evaluate_image(monuseg_labels, result)
    assert scores["aji"] > 0.9 and scores["f1_50"] > 0.95
    merged = metrics.evaluate_image(monuseg_labels, paper_rule(1 - probs[..., 0]))
    assert merged["aji"] < scores["aji"]  # touching nuclei merge without the boundary class


@pytest.mark.data
def test_blurred_noisy_three_class_map_of_real_labels(monuseg_labels):
    probs = blurred(one_hot_probs(monuseg_labels), sigma=2.0, noise=0.2)
    result = marker_watershed(probs)
    assert metrics.aji(monuseg_labels, result) > 0.7


@pytest.mark.data
def test_ideal_distance_map_of_real_labels(monuseg_labels):
    fg, distance = EXAMPLES["distance"](monuseg_labels)
    result = distance_watershed(fg, distance)
    scores = metrics.evaluate_image(monuseg_labels, result)
    assert scores["aji"] > 0.95 and scores["f1_50"] > 0.95


def test_rule_inputs_take_the_right_channels():
    from nucseg.postprocess import rule_inputs

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(5, 6)).astype(np.float32)
    maps = np.concatenate([probs, rng.random((5, 6, 1), dtype=np.float32)], axis=-1)
    np.testing.assert_array_equal(rule_inputs(maps, num_classes=3, method="watershed"), probs)
    foreground, distance = rule_inputs(maps, num_classes=3, method="distance")
    np.testing.assert_allclose(foreground, probs[..., 1] + probs[..., 2], atol=1e-6)
    np.testing.assert_array_equal(distance, maps[..., 3])
    two = np.stack([1 - maps[..., 3], maps[..., 3]], axis=-1)
    np.testing.assert_array_equal(rule_inputs(two, num_classes=2, method="paper"), maps[..., 3])
    with pytest.raises(ValueError, match="needs a distance channel"):
        rule_inputs(probs, num_classes=3, method="distance")
    with pytest.raises(ValueError, match="needs 3 classes"):
        rule_inputs(two, num_classes=2, method="watershed")
    with pytest.raises(KeyError, match="valid"):
        rule_inputs(probs, num_classes=3, method="stardist")


def _flood_inputs(labels, sigma, noise, *, interior_threshold):
    """``_flood``'s elevation source, markers and mask from blurred maps of real labels, as
    :func:`marker_watershed` builds them (markers of at least 10 pixels, foreground 0.5)."""
    probs = blurred(one_hot_probs(labels), sigma=sigma, noise=noise)
    interior = probs[..., 1]
    markers, _ = ndi.label(interior > interior_threshold, structure=postprocess._CROSS)
    markers = remove_small(markers, min_size=10)
    mask = (interior + probs[..., 2] > 0.5) | (markers > 0)
    return interior, markers, mask


@pytest.mark.data
@pytest.mark.parametrize("sigma, noise", [(1.0, 0.05), (2.5, 0.15)])
def test_flooding_only_shared_regions_equals_flooding_everything(monuseg_labels, sigma, noise):
    """The watershed is run only on mask regions holding two or more markers; the labels equal
    those of one watershed over the whole mask, on blurred maps of a real MoNuSeg image."""
    interior, markers, mask = _flood_inputs(monuseg_labels, sigma, noise, interior_threshold=0.5)
    full = segmentation.watershed(-interior, markers, mask=mask, connectivity=1)
    regions, n = ndi.label(mask, structure=postprocess._CROSS)
    owners = np.unique(
        regions[markers > 0].astype(np.int64) * (markers.max() + 1) + markers[markers > 0]
    )
    assert np.bincount(owners // (markers.max() + 1)).max() > 1, "no region holds two markers"
    expected = remove_small(postprocess._fill_holes_per_object(full), min_size=0)
    got = postprocess._flood(-interior, markers, mask, 0.0, False, 0)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.data
@pytest.mark.parametrize("sigma, noise, min_size", [(1.0, 0.05, 10), (2.5, 0.3, 30), (2.5, 0.3, 0)])
def test_unmarked_regions_are_numbered_as_separately_labelled(
    monuseg_labels, sigma, noise, min_size
):
    """The mask's regions without a marker get the labels of labelling ``mask & (labels == 0)``
    on its own, dropping those under ``min_size`` pixels and numbering the rest after the
    markers (the formulation before they shared the markers' lookup table)."""
    interior, markers, mask = _flood_inputs(monuseg_labels, sigma, noise, interior_threshold=0.7)
    flooded = segmentation.watershed(-interior, markers, mask=mask, connectivity=1)
    unmarked, _ = ndi.label(mask & (flooded == 0), structure=postprocess._CROSS)
    unmarked = remove_small(unmarked, min_size=min_size)
    assert unmarked.max() > 0, "no unmarked region"
    before = np.where(unmarked > 0, unmarked + flooded.max(), flooded)
    expected = remove_small(postprocess._fill_holes_per_object(before), min_size=min_size)
    got = postprocess._flood(-interior, markers, mask, 0.0, True, min_size)
    np.testing.assert_array_equal(got, expected)
