"""nucseg.scale: the one resampling rule of training, evaluation and slides."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg.scale import resize_image, resize_labels, scale_factor, scaled_shape, source_pixels


def test_scale_factor_rule():
    assert scale_factor(0.5, 0.25) == 2.0  # CPM-15's 20x tiles are enlarged x2
    assert scale_factor(0.25, 0.25) == 1.0
    assert scale_factor(0.252, 0.25) == 1.0  # within 1 %: not resampled
    assert scale_factor(0.26, 0.25) == pytest.approx(1.04)
    assert scale_factor(None, 0.25) == 1.0  # unknown resolution: taken as it is
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            scale_factor(bad, 0.25)


def test_labels_round_trip_through_an_exact_enlargement():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(13, 17)).astype(np.int32)
    big = resize_labels(labels, scaled_shape(labels.shape, 2.0))
    assert big.shape == (26, 34)
    # every enlarged pixel is its source pixel's id; shrinking back restores the labels exactly
    assert np.array_equal(big[::2, ::2], labels) and np.array_equal(big[1::2, 1::2], labels)
    assert np.array_equal(resize_labels(big, labels.shape), labels)
    assert set(np.unique(big)) <= set(np.unique(labels))


def test_resize_image_keeps_dtype_and_a_flat_image_flat():
    image = np.full((10, 12, 3), 77, np.uint8)
    for shape in ((20, 24), (5, 6), (10, 12)):
        out = resize_image(image, shape)
        assert out.shape == (*shape, 3) and out.dtype == np.uint8 and np.all(out == 77)


@pytest.mark.parametrize("factor", [2.0, 0.5, 1.6, 0.37, 1.0 / 0.3])
def test_each_resampled_label_pixel_takes_the_label_under_its_centre(factor):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 50, size=(31, 23)).astype(np.int32)
    shape = scaled_shape(labels.shape, factor)
    out = resize_labels(labels, shape, factor=factor)
    assert out.shape == shape
    for axis, n in enumerate(shape):
        centres = (np.arange(n) + 0.5) / factor  # output pixel centres in label pixels
        index = source_pixels(np.arange(n), factor)
        inside = (index <= centres) & (centres < index + 1)
        assert np.all(inside | (index >= labels.shape[axis]))  # past the edge: clipped below
    r = np.minimum(source_pixels(np.arange(shape[0]), factor), labels.shape[0] - 1)
    c = np.minimum(source_pixels(np.arange(shape[1]), factor), labels.shape[1] - 1)
    assert np.array_equal(out, labels[np.ix_(r, c)])
    if factor == 2.0:  # an exact factor: the same as the shapes' ratio
        assert np.array_equal(out, resize_labels(labels, shape))


def test_resize_image_averages_when_the_area_shrinks():
    # one row in four is bright: averaging greys every row, interpolation would miss them
    image = np.zeros((40, 40, 3), np.uint8)
    image[::4] = 200
    shorter_wider = resize_image(image, (10, 41))  # fewer pixels: area averaging
    assert np.all(np.abs(shorter_wider.astype(int) - 50) <= 1)
    taller = resize_image(image, (80, 80))  # more pixels: bilinear, the dark rows stay dark
    assert taller.max() == 200 and taller.min() == 0
