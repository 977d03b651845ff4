"""nucseg.measure against scikit-image, on random objects and on real MoNuSeg and TNBC labels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import data_root_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.color import rgb2hed
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

from nucseg import datasets
from nucseg.measure import MEASUREMENT_COLUMNS, hematoxylin, inner_boundaries, measure_nuclei


def _skimage_table(image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    props = regionprops_table(
        labels,
        intensity_image=rgb2hed(image)[..., 0],
        properties=("label", "area", "centroid", "perimeter", "eccentricity", "intensity_mean"),
    )
    return {
        "label": props["label"],
        "area": props["area"],
        "centroid_row": props["centroid-0"],
        "centroid_col": props["centroid-1"],
        "perimeter": props["perimeter"],
        "eccentricity": props["eccentricity"],
        "mean_hematoxylin": props["intensity_mean"],
    }


def _assert_same_table(ours: dict, reference: dict) -> None:
    assert tuple(ours) == MEASUREMENT_COLUMNS
    np.testing.assert_array_equal(ours["label"], reference["label"])
    np.testing.assert_array_equal(ours["area"], reference["area"])
    for column in ("centroid_row", "centroid_col", "perimeter", "eccentricity"):
        np.testing.assert_allclose(ours[column], reference[column], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours["mean_hematoxylin"], reference["mean_hematoxylin"], rtol=1e-5)


def _real_samples():
    root = data_root_or_skip()
    monuseg_id = datasets.ids("monuseg", split="test", root=root)[0]
    tnbc_id = datasets.ids("tnbc", root=root)[0]
    return [
        datasets.load_sample("monuseg", monuseg_id, root=root),
        datasets.load_sample("tnbc", tnbc_id, root=root),
    ]


def test_measurements_equal_regionprops_on_real_labels():
    for sample in _real_samples():
        image, labels = sample.image, sample.labels
        _assert_same_table(measure_nuclei(image, labels), _skimage_table(image, labels))
        # sparse ids, objects on the image edge
        shifted = np.where(labels > 0, labels * 7 + 3, 0).astype(np.int32)[:300, :300]
        _assert_same_table(
            measure_nuclei(image[:300, :300], shifted), _skimage_table(image[:300, :300], shifted)
        )


def test_boundaries_equal_find_boundaries_on_real_labels():
    for sample in _real_samples():
        expected = find_boundaries(sample.labels, mode="inner")
        np.testing.assert_array_equal(inner_boundaries(sample.labels), expected)


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4))
)
def test_boundaries_and_perimeters_equal_skimage_on_random_labels(labels):
    np.testing.assert_array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))
    image = np.random.default_rng(0).integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    if labels.any():
        _assert_same_table(measure_nuclei(image, labels), _skimage_table(image, labels))
    else:
        assert measure_nuclei(image, labels)["label"].size == 0


def test_hematoxylin_equals_rgb2hed_on_every_colour_level():
    levels = np.arange(256, dtype=np.uint8)
    image = np.stack(np.meshgrid(levels, levels[::-1], levels[::3], indexing="ij"), -1)
    image = image.reshape(256, -1, 3)
    np.testing.assert_allclose(hematoxylin(image), rgb2hed(image)[..., 0], rtol=1e-5, atol=1e-6)


def test_one_pixel_and_line_objects():
    labels = np.zeros((5, 6), np.int32)
    labels[2, 2] = 1
    labels[0, 1:6] = 2
    image = np.full((5, 6, 3), 128, np.uint8)
    table = measure_nuclei(image, labels)
    assert table["area"].tolist() == [1, 5]
    assert table["eccentricity"][0] == 0.0  # a single pixel: no second moment
    assert table["eccentricity"][1] == pytest.approx(1.0)
    _assert_same_table(table, _skimage_table(image, labels))
