"""Tests for nucseg.tiling: the grid covers the image, and tiling then stitching round-trips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucseg import tiling
from nucseg.tiling import (
    MapStitcher,
    blend_window,
    extract_tiles,
    pad_to,
    stitch_maps,
    tile_grid,
)

TILES = st.sampled_from([32, 64, 256])
OVERLAPS = st.sampled_from([0.0, 0.1, 0.5])


def _origins(grid, axis):
    return sorted({slices[axis].start for slices in grid})


@settings(max_examples=60, deadline=None)
@given(
    tile=TILES,
    overlap=OVERLAPS,
    extra_rows=st.integers(0, 500),
    extra_cols=st.integers(0, 500),
)
def test_grid_covers_every_pixel_with_the_stated_stride(tile, overlap, extra_rows, extra_cols):
    shape = (tile + extra_rows, tile + extra_cols)
    grid = tile_grid(shape, tile=tile, overlap=overlap)
    stride = round(tile * (1 - overlap))
    coverage = np.zeros(shape, dtype=int)
    for rows, cols in grid:
        assert 0 <= rows.start and rows.stop <= shape[0]
        assert 0 <= cols.start and cols.stop <= shape[1]
        assert (rows.stop - rows.start, cols.stop - cols.start) == (tile, tile)
        coverage[rows, cols] += 1
    assert coverage.min() >= 1
    for axis, length in enumerate(shape):
        origins = _origins(grid, axis)
        assert origins[0] == 0 and origins[-1] == length - tile
        steps = np.diff(origins)
        assert np.all(steps[:-1] == stride)  # regular stride ...
        assert np.all((steps[-1:] >= 1) & (steps[-1:] <= stride))  # ... then flush with the end
    assert len(grid) == len(_origins(grid, 0)) * len(_origins(grid, 1))


@settings(max_examples=60, deadline=None)
@given(
    tile=st.integers(8, 64),
    min_overlap=st.integers(0, 7),
    extra_rows=st.integers(0, 300),
    extra_cols=st.integers(0, 300),
)
def test_spread_grid_covers_with_the_least_overlap_and_fewest_tiles(
    tile, min_overlap, extra_rows, extra_cols
):
    rows, cols = tile + extra_rows, tile + extra_cols
    grid = tiling.spread_grid((rows, cols), tile=tile, min_overlap=min_overlap)
    covered = np.zeros((rows, cols), dtype=int)
    for r, c in grid:
        assert (r.stop - r.start, c.stop - c.start) == (tile, tile)
        covered[r, c] += 1
    assert covered.min() >= 1
    for axis, length in ((0, rows), (1, cols)):
        starts = sorted({s[axis].start for s in grid})
        assert starts[0] == 0 and starts[-1] == length - tile
        gaps = np.diff(starts)
        assert (gaps <= tile - min_overlap).all()  # neighbours share at least min_overlap
        assert gaps.size == 0 or gaps.max() - gaps.min() <= 1  # spread evenly
        # one tile fewer could not keep that overlap
        assert len(starts) == 1 or (len(starts) - 2) * (tile - min_overlap) + tile < length


def test_grid_by_hand():
    # 600 rows, tile 256, overlap 0.5 -> stride 128: origins 0, 128, 256, then 344 flush
    grid = tile_grid((600, 256, 3), tile=256, overlap=0.5)
    assert [rows.start for rows, _ in grid] == [0, 128, 256, 344]
    assert all(cols == slice(0, 256) for _, cols in grid)
    # overlap 0.1 -> stride round(230.4) = 230: origins 0, 230, then 344
    assert _origins(tile_grid((600, 600), tile=256, overlap=0.1), 0) == [0, 230, 344]
    assert tile_grid((256, 256), tile=256) == [(slice(0, 256), slice(0, 256))]


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((100, 300), {"tile": 256}, "pad_to"),
        ((300, 300), {"tile": 256, "overlap": 1.0}, r"\[0, 1\)"),
        ((300, 300), {"tile": 256, "overlap": -0.1}, r"\[0, 1\)"),
        ((300, 300), {"tile": 0}, "positive integer"),
        ((300,), {"tile": 256}, "rows, columns"),
    ],
)
def test_grid_rejects_bad_input(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tile_grid(shape, **kwargs)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 700),
    cols=st.integers(1, 700),
    tile=TILES,
    overlap=OVERLAPS,
    channels=st.sampled_from([None, 1, 3]),
    window=st.sampled_from(["hann", "uniform"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_tile_then_stitch_gives_back_the_input(rows, cols, tile, overlap, channels, window, seed):
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    array = np.random.default_rng(seed).random(shape, dtype=np.float32)
    padded, crop = pad_to(array, (tile, tile))
    grid = tile_grid(padded.shape, tile=tile, overlap=overlap)
    tiles = extract_tiles(padded, grid)
    assert tiles.shape == (len(grid), tile, tile) + shape[2:]
    stitched = stitch_maps(tiles, grid, padded.shape, window=window)
    assert stitched.dtype == np.float32 and stitched.shape == padded.shape
    np.testing.assert_allclose(stitched[crop], array, rtol=1e-5, atol=1e-6)


def test_stitching_streams_tiles_from_a_generator():
    rng = np.random.default_rng(0)
    array = rng.random((300, 270, 2)).astype(np.float32)
    grid = tile_grid(array.shape, tile=64, overlap=0.5)
    stitched = stitch_maps((array[slices] for slices in grid), grid, array.shape)
    np.testing.assert_allclose(stitched, array, rtol=1e-5, atol=1e-6)


def test_in_place_result_is_the_same_average_and_empties_the_stitcher():
    rng = np.random.default_rng(1)
    array = rng.random((300, 270, 8)).astype(np.float32)
    grid = tile_grid(array.shape, tile=64, overlap=0.25)
    factors = rng.random(len(grid)).astype(np.float32)  # tiles that disagree where they overlap
    stitchers = [MapStitcher(array.shape), MapStitcher(array.shape)]
    for stitcher in stitchers:
        for slices, factor in zip(grid, factors, strict=True):
            stitcher.add(array[slices] * factor, slices)
    copied = stitchers[0].result()
    in_place = stitchers[1].result(in_place=True)
    np.testing.assert_array_equal(in_place, copied)  # bit for bit
    with pytest.raises(ValueError, match="no tile was added"):
        stitchers[1].result()


def test_hann_blending_weights_tiles_by_the_window():
    # two 4 x 4 tiles of a 4 x 6 map, overlapping on columns 2 and 3
    grid = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(2, 6))]
    tiles = np.stack([np.zeros((4, 4)), np.ones((4, 4))])
    stitched = stitch_maps(tiles, grid, (4, 6), window="hann")
    hann = np.sin(np.pi * np.arange(1, 5) / 5) ** 2  # column weights inside a tile
    # column 2: tile 0 at its column 2, tile 1 at its column 0
    expected = hann[0] / (hann[2] + hann[0])
    np.testing.assert_allclose(stitched[:, 2], expected, rtol=1e-6)
    np.testing.assert_allclose(stitched[:, :2], 0)
    np.testing.assert_allclose(stitched[:, 4:], 1)
    np.testing.assert_allclose(stitch_maps(tiles, grid, (4, 6), window="uniform")[:, 2:4], 0.5)


def test_stitch_errors_say_what_is_wrong():
    grid = tile_grid((8, 8), tile=4, overlap=0.0)
    tiles = np.zeros((len(grid), 4, 4))
    with pytest.raises(ValueError, match="more tiles"):
        stitch_maps(np.zeros((5, 4, 4)), grid, (8, 8))
    with pytest.raises(ValueError, match="more positions"):
        stitch_maps(tiles[:3], grid, (8, 8))
    with pytest.raises(ValueError, match="covered by no tile"):
        stitch_maps(tiles[:3], grid[:3], (8, 8))
    with pytest.raises(ValueError, match="not a step-1 window inside"):
        stitch_maps(tiles[:1], [(slice(6, 10), slice(0, 4))], (8, 8))
    with pytest.raises(ValueError, match="selects"):
        stitch_maps(np.zeros((1, 3, 3)), grid[:1], (8, 8))
    with pytest.raises(ValueError, match="valid kinds"):
        stitch_maps(tiles, grid, (8, 8), window="gauss")
    with pytest.raises(ValueError, match="positive"):
        MapStitcher((8, 8), window=np.zeros((4, 4)))
    stitcher = MapStitcher((8, 8))
    stitcher.add(np.zeros((4, 4, 2)), grid[0])
    with pytest.raises(ValueError, match="trailing shape"):
        stitcher.add(np.zeros((4, 4, 3)), grid[1])
    with pytest.raises(ValueError, match="no tile"):
        MapStitcher((8, 8)).result()


def test_explicit_window_array_is_used():
    grid = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(1, 3))]
    window = np.array([[1.0, 3.0], [1.0, 3.0]])
    tiles = np.stack([np.zeros((2, 2)), np.ones((2, 2))])
    stitched = stitch_maps(tiles, grid, (2, 3), window=window)
    # column 1: tile 0 weight 3 (value 0), tile 1 weight 1 (value 1) -> 1 / 4
    np.testing.assert_allclose(stitched, [[0, 0.25, 1], [0, 0.25, 1]])


@pytest.mark.parametrize("tile", [1, 2, 7, 64, 256])
@pytest.mark.parametrize("kind", ["hann", "uniform"])
def test_blend_window_is_positive_symmetric_and_peaks_inside(tile, kind):
    window = blend_window(tile, kind=kind)
    assert window.shape == (tile, tile) and window.dtype == np.float32
    assert window.min() >= 1e-3 and window.max() <= 1
    np.testing.assert_array_equal(window, window.T)
    np.testing.assert_array_equal(window, window[::-1, ::-1])
    if kind == "hann" and tile > 2:
        assert window[tile // 2, tile // 2] > window[0, tile // 2] >= window[0, 0]


def test_blend_window_floor_and_errors():
    assert blend_window(256, eps=0.05).min() == pytest.approx(0.05)
    assert blend_window((3, 5)).shape == (3, 5)
    with pytest.raises(ValueError, match="valid kinds"):
        blend_window(8, kind="triangle")
    with pytest.raises(ValueError, match="eps"):
        blend_window(8, eps=0)


def test_pad_to_centres_and_crops_back():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for mode in tiling.PAD_MODES:
        padded, crop = pad_to(image, (7, 4), mode=mode)
        assert padded.shape == (7, 4, 3) and padded.dtype == np.uint8
        assert crop == (slice(2, 4), slice(0, 3))  # deficits 5 -> (2, 3) and 1 -> (0, 1)
        np.testing.assert_array_equal(padded[crop], image)
    same, crop = pad_to(image, (2, 3))
    assert same is image and crop == (slice(0, 2), slice(0, 3))
    one, crop = pad_to(np.array([[5]]), (3, 3))  # a single pixel reflects onto itself
    np.testing.assert_array_equal(one, np.full((3, 3), 5))
    with pytest.raises(ValueError, match="valid modes"):
        pad_to(image, (8, 8), mode="wrap")


def test_extract_tiles_rejects_mixed_or_outside_tiles():
    array = np.zeros((8, 8))
    with pytest.raises(ValueError, match="same size"):
        extract_tiles(array, [(slice(0, 4), slice(0, 4)), (slice(0, 2), slice(0, 2))])
    with pytest.raises(ValueError, match="inside"):
        extract_tiles(array, [(slice(6, 10), slice(0, 4))])
    with pytest.raises(ValueError, match="no tiles"):
        extract_tiles(array, [])


def test_numpy_layer_does_not_import_torch():
    code = "import sys, nucseg.tiling, nucseg.targets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((700, 900), 256, 0.5), ((1000, 1000), 256, 0.25), ((64, 64), 64, 0)],
)
def test_a_stitcher_that_knows_its_grid_gives_the_same_maps(shape, tile, overlap):
    from nucseg.tiling import MapStitcher, spread_grid

    rng = np.random.default_rng(0)
    for grid in (tile_grid(shape, tile=tile, overlap=overlap),
                 spread_grid(shape, tile=tile, min_overlap=round(overlap * tile))):  # fmt: skip
        maps = [rng.random((tile, tile, 3), dtype=np.float32) for _ in grid]
        plain, known = MapStitcher(shape), MapStitcher(shape, grid=grid)
        for m, s in zip(maps, grid, strict=True):
            plain.add(m, s)
            known.add(m, s)
        assert known._cores  # some tiles copied their own pixels rather than blending them
        np.testing.assert_allclose(known.result(), plain.result(), rtol=1e-6, atol=1e-7)
