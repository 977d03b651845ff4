"""Tests of nucseg.geometry: valid pixel-edge polygons and the measurements taken from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.affinity
import shapely.geometry
from helpers import data_file
from skimage import draw

from nucseg import io
from nucseg.classical import fiji
from nucseg.geometry import nucleus_polygons, polygon_measurements

EXAMPLE = Path(__file__).parents[1] / "examples" / "monuseg-breast-crop"
MONUSEG_BREAST = (
    "TCGA-A7-A13E-01Z-00-DX1",
    "TCGA-A7-A13F-01Z-00-DX1",
    "TCGA-AC-A2FO-01A-01-TS1",
    "TCGA-AO-A0J2-01A-01-BSA",
    "TCGA-AR-A1AK-01Z-00-DX1",
    "TCGA-AR-A1AS-01Z-00-DX1",
    "TCGA-E2-A14V-01Z-00-DX1",
    "TCGA-E2-A1B5-01Z-00-DX1",
)


def _rasterise(geometry, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre (column + 0.5, row + 0.5) lies inside the geometry."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return shapely.contains_xy(geometry, cols + 0.5, rows + 0.5)


def _assert_exact(labels: np.ndarray) -> int:
    """Every polygon is valid, has the pixel count as area and rasterises back to its label."""
    polygons = dict(nucleus_polygons(labels))
    present = np.unique(labels[labels > 0])
    assert sorted(polygons) == present.tolist()
    for label, polygon in polygons.items():
        mask = labels == label
        assert polygon.is_valid, (label, shapely.is_valid_reason(polygon))
        assert polygon.area == mask.sum()
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert polygon.bounds == (c0, r0, c1, r1)  # nothing outside the label's bounding box
        box = _rasterise(shapely.affinity.translate(polygon, -c0, -r0), (r1 - r0, c1 - c0))
        np.testing.assert_array_equal(box, mask[r0:r1, c0:c1])
    return len(polygons)


def _assert_written_polygons_valid(labels: np.ndarray, path: Path) -> None:
    """Every polygon of the GeoJSON written for ``labels`` is valid; its area is the pixel count."""
    io.export_geojson(path, labels, mpp=0.25)
    features = json.loads(path.read_text())["features"]
    geometries = np.array([shapely.geometry.shape(f["geometry"]) for f in features], dtype=object)
    assert shapely.is_valid(geometries).all()
    counts = np.bincount(labels.ravel())
    values = [f["properties"]["measurements"] for f in features]
    assert [v["label"] for v in values] == (np.flatnonzero(counts[1:]) + 1).tolist()
    np.testing.assert_array_equal(shapely.area(geometries), counts[[v["label"] for v in values]])
    np.testing.assert_array_equal([v["area_px2"] for v in values], shapely.area(geometries))


# --- toy cases worked out by hand ----------------------------------------------------------------


def test_rectangle_corners_by_hand():
    labels = np.zeros((8, 9), np.int32)
    labels[2:5, 3:7] = 4  # pixel rows 2..4, columns 3..6
    ((label, polygon),) = nucleus_polygons(labels)
    assert label == 4 and polygon.geom_type == "Polygon"
    # corners: x (column) from 3 to 7, y (row) from 2 to 5, no collinear vertices
    coords = shapely.get_coordinates(polygon.exterior)
    assert len(coords) == 5
    assert {tuple(v) for v in coords.tolist()} == {(3, 2), (7, 2), (7, 5), (3, 5)}


def test_single_pixel_at_the_image_border():
    labels = np.zeros((3, 4), np.int32)
    labels[0, 3] = 1  # top-right pixel
    ((_, polygon),) = nucleus_polygons(labels)
    assert polygon.equals(shapely.box(3, 0, 4, 1))


def test_checkerboard_pixels_touching_at_corners_give_valid_pieces():
    board = (np.indices((6, 7)).sum(axis=0) % 2).astype(np.int32)  # 21 isolated pixels
    ((_, polygon),) = nucleus_polygons(board)
    assert polygon.is_valid and polygon.geom_type == "MultiPolygon"
    assert len(polygon.geoms) == 21 and polygon.area == 21
    np.testing.assert_array_equal(_rasterise(polygon, board.shape), board == 1)
    ((_, largest),) = nucleus_polygons(board, largest_piece=True)
    assert largest.geom_type == "Polygon" and largest.area == 1
    two = board * 1 + (1 - board) * 2  # two labels, each a checkerboard
    assert _assert_exact(two.astype(np.int32)) == 2


def test_holes_are_interiors_also_when_they_touch_at_a_corner():
    labels = np.ones((7, 7), np.int32)
    labels[2, 2] = 0  # a hole
    labels[3, 3] = 0  # a second hole, touching the first at a corner
    labels[5, 6] = 0  # a notch at the border: no hole
    ((_, polygon),) = nucleus_polygons(labels)
    assert polygon.is_valid and polygon.area == 49 - 3
    assert sum(len(part.interiors) for part in getattr(polygon, "geoms", [polygon])) >= 1
    np.testing.assert_array_equal(_rasterise(polygon, labels.shape), labels == 1)


def test_piece_inside_a_hole_of_the_same_label():
    labels = np.zeros((9, 9), np.int32)
    labels[1:8, 1:8] = 3
    labels[2:7, 2:7] = 0
    labels[4, 4] = 3  # an island in the hole
    ((_, polygon),) = nucleus_polygons(labels)
    assert polygon.geom_type == "MultiPolygon" and polygon.area == 24 + 1
    assert _assert_exact(labels) == 1


def test_random_labels_are_exact():
    rng = np.random.default_rng(3)
    for _ in range(40):  # noisy labels: corners, holes, islands, sparse values
        labels = (rng.random((16, 18)) < rng.uniform(0.3, 0.8)) * rng.integers(1, 4, (16, 18))
        _assert_exact(labels.astype(np.int32))


def test_sparse_label_values():
    labels = np.zeros((4, 4), np.int64)
    labels[1, 1], labels[2, 3] = 2_000_000_000, 7
    polygons = dict(nucleus_polygons(labels))
    assert sorted(polygons) == [7, 2_000_000_000]
    assert polygons[2_000_000_000].equals(shapely.box(1, 1, 2, 2))


def test_empty_labels_give_nothing():
    assert list(nucleus_polygons(np.zeros((5, 5), np.int32))) == []
    assert list(nucleus_polygons(np.zeros((0, 0), np.int32))) == []


def test_offset_and_scale_move_every_vertex_exactly():
    rng = np.random.default_rng(4)
    labels = (rng.random((20, 20)) < 0.5) * rng.integers(1, 5, (20, 20))
    base = dict(nucleus_polygons(labels))
    moved = dict(nucleus_polygons(labels, offset=(1000, 250), scale=4))
    assert sorted(moved) == sorted(base)
    for label, polygon in base.items():
        expected = shapely.get_coordinates(polygon) * 4 + (250, 1000)  # x = column, y = row
        np.testing.assert_array_equal(shapely.get_coordinates(moved[label]), expected)
        assert moved[label].is_valid and moved[label].area == polygon.area * 16
    # a chunk cut out of a bigger image gives the big image's polygons with its offset
    chunk = labels[5:17, 3:15]
    for label, polygon in nucleus_polygons(chunk, offset=(5, 3)):
        assert polygon.area == np.count_nonzero(chunk == label)
        rows, cols = np.nonzero(chunk == label)
        assert shapely.contains_xy(polygon, cols + 3.5, rows + 5.5).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        list(nucleus_polygons(np.ones((2, 2), np.int32), scale=0))
    with pytest.raises(ValueError, match="integer"):
        list(nucleus_polygons(np.ones((2, 2), np.float32)))
    with pytest.raises(ValueError, match="mpp"):
        polygon_measurements([shapely.box(0, 0, 1, 1)], mpp=-1)


# --- measurements --------------------------------------------------------------------------------


def test_measurements_of_a_ring_by_hand():
    labels = np.zeros((6, 6), np.int32)
    labels[1:5, 1:5] = 1
    labels[2:4, 2:4] = 0  # a 2x2 hole: 12 pixels, outer edge 16, hole edge 8
    columns = polygon_measurements([p for _, p in nucleus_polygons(labels)], mpp=0.5)
    assert columns["area_px2"].tolist() == [12.0]
    assert columns["perimeter_px"].tolist() == [24.0]
    assert columns["centroid_x_px"].tolist() == columns["centroid_y_px"].tolist() == [3.0]
    assert columns["area_um2"].tolist() == [3.0] and columns["perimeter_um"].tolist() == [12.0]
    assert columns["centroid_x_um"].tolist() == [1.5]


def test_centroid_is_the_mean_pixel_centre():
    rng = np.random.default_rng(5)
    labels = np.zeros((60, 80), np.int32)
    for k in range(1, 15):
        rr, cc = draw.ellipse(*rng.uniform(0, 60, 1), *rng.uniform(0, 80, 1), *rng.uniform(2, 9, 2),
                              shape=labels.shape, rotation=rng.uniform(0, np.pi))  # fmt: skip
        labels[rr, cc] = k
    pairs = list(nucleus_polygons(labels))
    columns = polygon_measurements([p for _, p in pairs])
    assert set(columns) == {"area_px2", "perimeter_px", "centroid_x_px", "centroid_y_px"}
    table = io.measure_nuclei(np.zeros((*labels.shape, 3), np.uint8), labels)
    assert table["label"].tolist() == [k for k, _ in pairs]
    np.testing.assert_allclose(columns["centroid_x_px"], table["centroid_col"] + 0.5, atol=1e-9)
    np.testing.assert_allclose(columns["centroid_y_px"], table["centroid_row"] + 0.5, atol=1e-9)
    np.testing.assert_array_equal(columns["area_px2"], table["area"])


def test_measurements_of_nothing():
    columns = polygon_measurements([], mpp=0.25)
    assert all(v.shape == (0,) for v in columns.values()) and len(columns) == 8


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image_id", MONUSEG_BREAST)
def test_monuseg_breast_ground_truth_polygons_are_valid(image_id, tmp_path):
    from nucseg import datasets

    data_file(f"monuseg/images/{image_id}.tif")
    _, _, labels = datasets.load_sample("monuseg", image_id)
    _assert_written_polygons_valid(labels, tmp_path / "gt.geojson")


def test_bundled_example_polygons_are_valid(tmp_path):
    labels = io.read_labels(EXAMPLE / "labels" / "TCGA-A7-A13E-crop.png")
    assert _assert_exact(labels) > 50
    _assert_written_polygons_valid(labels, tmp_path / "gt.geojson")
    predicted = fiji(io.read_image(EXAMPLE / "images" / "TCGA-A7-A13E-crop.png"))
    assert _assert_exact(predicted) > 50
    _assert_written_polygons_valid(predicted, tmp_path / "fiji.geojson")


def test_geometry_does_not_import_torch():
    code = "import sys, nucseg.geometry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
