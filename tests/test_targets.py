"""Tests for nucseg.targets: hand-worked toys, invariants and a slow exact weight-map reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import draw

from nucseg import targets
from nucseg.targets import (
    WEIGHT_TOLERANCE,
    boundary_map,
    distance_map,
    hv_maps,
    three_class_target,
    unet_weight_map,
)

ALL_TARGETS = [unet_weight_map, boundary_map, three_class_target, distance_map, hv_maps]


@pytest.fixture(scope="module")
def real_labels(data_root):
    from nucseg.datasets import load_sample

    return load_sample("monuseg", "TCGA-A7-A13E-01Z-00-DX1").labels


def slow_weight_map(labels, *, w0=10.0, sigma=5.0):
    """Ronneberger eq. 2 with a full-image distance transform per nucleus (the reference)."""
    foreground = labels > 0
    n_nucleus = foreground.sum()
    n_background = foreground.size - n_nucleus
    rare = min(n_nucleus, n_background)
    weights = np.where(foreground, rare / n_nucleus, rare / n_background)
    values = np.unique(labels[foreground])
    distances = np.sort([ndi.distance_transform_edt(labels != v) for v in values], axis=0)
    term = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    return weights + np.where(foreground, 0.0, term), np.where(foreground, 0.0, term)


def random_discs(shape, count, *, seed, radii=(3, 12)):
    """Non-overlapping (possibly touching) discs, labelled 1..count (fewer if space runs out)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    n = 0
    for _ in range(50 * count):
        centre = rng.integers(0, shape)
        rr, cc = draw.disk(tuple(centre), rng.integers(*radii), shape=shape)
        if n < count and not labels[rr, cc].any():
            n += 1
            labels[rr, cc] = n
    return labels


def two_squares(gap):
    """Two 10 x 10 squares in a 30 x 80 image, ``gap`` background columns apart."""
    labels = np.zeros((30, 80), dtype=np.int32)
    labels[10:20, 5:15] = 1
    labels[10:20, 15 + gap : 25 + gap] = 2
    return labels


# --- unet_weight_map ---------------------------------------------------------------------------


def test_weight_map_by_hand_on_two_squares_two_pixels_apart():
    labels = two_squares(gap=2)  # square 1: columns 5..14, gap: 15..16, square 2: 17..26
    w = unet_weight_map(labels, w0=10.0, sigma=5.0)
    assert w.dtype == np.float32 and w.shape == labels.shape
    # 200 nucleus pixels, 2400 - 200 = 2200 background: the rarer class (nuclei) weighs 1
    w_background, w_nucleus = 200 / 2200, 1.0
    # gap column 15: 1 pixel from square 1, 2 from square 2 (and mirrored for column 16)
    gap = w_background + 10 * math.exp(-((1 + 2) ** 2) / (2 * 5**2))
    np.testing.assert_allclose(w[10:20, 15:17], gap, rtol=1e-6)
    # row 8, column 15: nearest pixels (10, 14) at sqrt(5) and (10, 17) at sqrt(8)
    above = w_background + 10 * math.exp(-((5**0.5 + 8**0.5) ** 2) / 50)
    assert w[8, 15] == pytest.approx(above, rel=1e-6)
    np.testing.assert_allclose(w[labels > 0], w_nucleus)
    # column 79 is 52 pixels from square 2 and 64 from square 1: the border term vanishes
    np.testing.assert_allclose(w[:, 70:], w_background)


def test_weight_map_one_pixel_gap_gives_d1_plus_d2_equal_two():
    w = unet_weight_map(two_squares(gap=1), class_balance=False)
    np.testing.assert_allclose(w[10:20, 15], 1 + 10 * math.exp(-((1 + 1) ** 2) / 50), rtol=1e-6)
    assert w[0, 79] == 1.0


def test_weight_map_without_pairs_is_the_class_weight():
    assert np.all(unet_weight_map(np.zeros((5, 6), dtype=np.int32)) == 1)
    one = np.zeros((4, 4), dtype=np.int32)
    one[1:3, 1:3] = 7  # 4 nucleus pixels, 12 background
    np.testing.assert_allclose(unet_weight_map(one), np.where(one > 0, 1, 4 / 12))
    assert np.all(unet_weight_map(np.ones((3, 3), dtype=np.int32)) == 1)
    assert unet_weight_map(np.zeros((0, 0), dtype=np.int32)).shape == (0, 0)


def test_weight_map_radius_bounds_the_truncation_error():
    for w0, sigma in [(10.0, 5.0), (5.0, 2.0), (10.0, 8.0)]:
        radius = targets.weight_map_radius(w0=w0, sigma=sigma)
        assert w0 * math.exp(-((1 + radius) ** 2) / (2 * sigma**2)) <= WEIGHT_TOLERANCE
        assert w0 * math.exp(-(radius**2) / (2 * sigma**2)) > WEIGHT_TOLERANCE  # smallest
    assert targets.weight_map_radius(w0=0.0, sigma=5.0) == 0


def assert_matches_reference(labels, *, w0=10.0, sigma=5.0):
    expected, term = slow_weight_map(labels, w0=w0, sigma=sigma)
    got = unet_weight_map(labels, w0=w0, sigma=sigma)
    # everywhere within the documented tolerance (plus float32 rounding) ...
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=WEIGHT_TOLERANCE)
    # ... and exact (to float32) where the border term is not truncated
    exact = term >= WEIGHT_TOLERANCE
    assert exact.any()
    np.testing.assert_allclose(got[exact], expected[exact], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_weight_map_matches_slow_reference_on_random_discs(seed):
    # sparse discs on a large canvas, so the window truncation is hit
    assert_matches_reference(random_discs((160, 200), 25, seed=seed), w0=10.0, sigma=5.0)
    assert_matches_reference(random_discs((160, 200), 25, seed=seed), w0=5.0, sigma=3.0)


@pytest.mark.data
def test_weight_map_matches_slow_reference_on_a_monuseg_crop(real_labels):
    crop = real_labels[300:556, 400:656]
    assert len(np.unique(crop)) > 20
    assert_matches_reference(crop)


@pytest.mark.parametrize(("kwargs", "message"), [({"w0": -1.0}, "w0"), ({"sigma": 0.0}, "sigma")])
def test_weight_map_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        unet_weight_map(two_squares(gap=1), **kwargs)


# --- boundary_map and three_class_target -------------------------------------------------------


def test_boundary_band_by_hand():
    labels = np.zeros((11, 11), dtype=np.int32)
    labels[2:9, 2:9] = 1  # a 7 x 7 square
    band2 = boundary_map(labels, width=2)
    assert band2.dtype == bool
    inner = np.zeros_like(band2)
    inner[4:7, 4:7] = True  # pixels more than 2 from the outside: the central 3 x 3
    np.testing.assert_array_equal(band2, (labels > 0) & ~inner)
    band1 = boundary_map(labels, width=1)  # the one-pixel outline: 7 * 7 - 5 * 5 = 24 pixels
    assert band1.sum() == 24 and not band1[3:8, 3:8].any()


def test_image_edge_is_not_a_boundary():
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[:, :3] = 1  # nucleus along the left edge, touching top and bottom too
    band = boundary_map(labels, width=1)
    np.testing.assert_array_equal(np.nonzero(band.any(axis=0))[0], [2])
    assert band[:, 2].all()


def test_touching_nuclei_are_separated_by_the_boundary():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[5:15, 3:15] = 1
    labels[5:15, 15:27] = 2  # shares column border 14 | 15 with nucleus 1
    target = three_class_target(labels, boundary_width=1)
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target[5:15, 14:16], 2)  # both sides of the shared border
    interiors, n = ndi.label(target == 1, structure=np.ones((3, 3)))
    assert n == 2


@pytest.mark.data
@pytest.mark.parametrize("width", [1, 2, 3])
def test_three_class_target_partitions_real_nuclei(real_labels, width):
    target = three_class_target(real_labels, boundary_width=width)
    np.testing.assert_array_equal(target > 0, real_labels > 0)
    np.testing.assert_array_equal(target == 2, boundary_map(real_labels, width=width))
    # no 8-connected interior region spans two nuclei
    interiors, n = ndi.label(target == 1, structure=np.ones((3, 3)))
    owners = ndi.labeled_comprehension(
        real_labels, interiors, np.arange(1, n + 1), lambda v: len(np.unique(v)), int, 0
    )
    assert np.all(owners == 1)


def test_boundary_rejects_bad_width():
    with pytest.raises(ValueError, match="integer >= 1"):
        boundary_map(np.zeros((3, 3), dtype=np.int32), width=0)


# --- distance_map and hv_maps ------------------------------------------------------------------


def test_distance_map_by_hand():
    labels = np.zeros((7, 8), dtype=np.int32)
    labels[1:6, 1:6] = 3  # 5 x 5 square: distance 3 at its centre, 1 on its outline
    labels[1:6, 6] = 4  # a touching one-pixel-wide column
    raw = distance_map(labels, normalise=False)
    assert raw[3, 3] == 3 and raw[1, 3] == 1 and raw[3, 5] == 1 and raw[2, 2] == 2
    np.testing.assert_array_equal(raw[1:6, 6], 1)
    norm = distance_map(labels)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm[labels == 3], raw[labels == 3] / 3)


def test_distance_map_fills_the_image():
    np.testing.assert_array_equal(
        distance_map(np.ones((3, 3), dtype=np.int32), normalise=False),
        [[1, 1, 1], [1, 2, 1], [1, 1, 1]],
    )


@pytest.mark.data
def test_distance_map_peaks_at_one_in_every_real_nucleus(real_labels):
    dist = distance_map(real_labels)
    assert np.all(dist[real_labels == 0] == 0)
    assert np.all(dist[real_labels > 0] > 0)
    values = np.unique(real_labels[real_labels > 0])
    np.testing.assert_allclose(ndi.maximum(dist, real_labels, values), 1)


def test_hv_maps_by_hand():
    labels = np.zeros((5, 7), dtype=np.int32)
    labels[1:4, 1:6] = 1  # 3 x 5 rectangle: centroid (2, 3)
    maps = hv_maps(labels)
    assert maps.shape == (5, 7, 2) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[1:4, 1, 0], [-1, 0, 1])  # rows above the centroid: < 0
    np.testing.assert_allclose(maps[2, 1:6, 1], [-1, -0.5, 0, 0.5, 1])  # left of it: < 0
    np.testing.assert_array_equal(maps[labels == 0], 0)


def test_hv_maps_scale_each_sign_separately():
    labels = np.zeros((3, 4), dtype=np.int32)
    labels[0, 0:3] = 5
    labels[1, 0] = 5  # an L: pixels (0,0) (0,1) (0,2) (1,0), centroid (0.25, 0.75)
    maps = hv_maps(labels)
    # row offsets -0.25 (x3) and 0.75: each sign scaled by its extreme
    np.testing.assert_allclose(maps[0, 0:3, 0], -1)
    assert maps[1, 0, 0] == 1
    # column offsets -0.75, 0.25, 1.25 on row 0 and -0.75 on row 1
    np.testing.assert_allclose(maps[0, 0:3, 1], [-1, 0.2, 1], rtol=1e-6)
    assert maps[1, 0, 1] == -1


@pytest.mark.data
def test_hv_maps_span_minus_one_to_one_in_real_nuclei(real_labels):
    maps = hv_maps(real_labels)
    assert np.abs(maps).max() == 1
    for value, box in enumerate(ndi.find_objects(real_labels), 1):
        if box is None:
            continue
        inside = real_labels[box] == value
        for channel, coords in enumerate(np.nonzero(inside)):
            values = maps[box][..., channel][inside]
            if np.ptp(coords) > 0:  # spans two rows (columns) or more: both signs occur
                assert values.min() == -1 and values.max() == 1
            else:
                assert np.all(values == 0)


# --- shared contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", ALL_TARGETS)
def test_empty_labels_give_the_background_value(func):
    out = func(np.zeros((6, 5), dtype=np.int32))
    assert out.shape[:2] == (6, 5)
    expected = 1 if func is unet_weight_map else 0
    assert np.all(out == expected)


@pytest.mark.parametrize("func", ALL_TARGETS)
def test_label_values_need_not_be_consecutive(func):
    labels = random_discs((60, 70), 12, seed=3)
    sparse = np.where(labels > 0, labels * 1000 + 7, 0).astype(np.int64)
    sparse[labels == labels.max()] = 2_000_000_000  # forces relabelling
    np.testing.assert_array_equal(func(sparse), func(labels))


@pytest.mark.parametrize("func", ALL_TARGETS)
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((4, 4), dtype=float), "integer"),
        (np.zeros((4, 4, 3), dtype=np.int32), "2-D"),
        (-np.ones((4, 4), dtype=np.int32), ">= 0"),
    ],
)
def test_bad_labels_are_rejected(func, labels, message):
    with pytest.raises(ValueError, match=message):
        func(labels)
