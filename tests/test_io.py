"""Tests of nucseg.io: reading, atomic writing, overlays, measurements, outlines and GeoJSON."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
import tifffile
from helpers import data_file
from PIL import Image
from scipy import ndimage as ndi
from skimage import draw
from skimage.color import rgb2hed

from nucseg import io

# --- real data (helper to move to conftest.py) ---------------------------------------------------

# --- toy data ------------------------------------------------------------------------------------


def _rgb(rows: int = 6, cols: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)


def _random_labels(rng: np.random.Generator, shape=(40, 50), n=12, max_radius=6) -> np.ndarray:
    """Ellipses (convex) drawn in turn, later ones on top."""
    labels = np.zeros(shape, dtype=np.int32)
    for k in range(1, n + 1):
        rr, cc = draw.ellipse(
            rng.uniform(0, shape[0]),
            rng.uniform(0, shape[1]),
            rng.uniform(1, max_radius),
            rng.uniform(1, max_radius),
            shape=shape,
            rotation=rng.uniform(0, np.pi),
        )
        labels[rr, cc] = k
    return labels


def _rasterise(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre (row + 0.5, col + 0.5 in corner coordinates) lies inside a ring."""
    mask = np.zeros(shape, dtype=bool)
    for ring in rings:
        ring = np.asarray(ring, dtype=float)
        rr, cc = draw.polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=shape)
        mask[rr, cc] = True
    return mask


def _shoelace(ring) -> float:
    x, y = np.asarray(ring, dtype=float).T
    return 0.5 * abs(float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])))


# --- read_image ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_read_image_round_trips_rgb(tmp_path, suffix):
    rgb = _rgb()
    path = tmp_path / f"image{suffix}"
    if suffix == ".png":
        Image.fromarray(rgb).save(path)
    else:
        tifffile.imwrite(path, rgb, photometric="rgb", compression="lzw")
    out = io.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_image_drops_alpha(tmp_path, suffix):
    rgba = np.dstack([_rgb(), np.full((6, 7), 128, np.uint8)])
    path = tmp_path / f"rgba{suffix}"
    if suffix == ".png":
        Image.fromarray(rgba, mode="RGBA").save(path)
    else:
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(io.read_image(path), rgba[..., :3])


def test_read_image_planar_tiff_and_palette_png(tmp_path):
    rgb = _rgb()
    tifffile.imwrite(tmp_path / "planar.tif", rgb.transpose(2, 0, 1), photometric="rgb",
                     planarconfig="separate")  # fmt: skip
    np.testing.assert_array_equal(io.read_image(tmp_path / "planar.tif"), rgb)
    palette = Image.fromarray(rgb).quantize(colors=8)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "palette.png"), palette.convert("RGB"))


def test_read_image_jpeg(tmp_path):
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "image.jpg", quality=95)
    out = io.read_image(tmp_path / "image.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_read_image_greyscale_names_file_and_shape(tmp_path):
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "grey.png")
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((5, 4), np.uint8))
    for name in ("grey.png", "grey.tif"):
        with pytest.raises(ValueError, match=rf"{name}.*\(5, 4\).*greyscale"):
            io.read_image(tmp_path / name)


def test_read_image_two_channels_raises(tmp_path):
    tifffile.imwrite(tmp_path / "two.tif", np.zeros((5, 4, 2), np.uint8), photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
    with pytest.raises(ValueError, match=r"two\.tif.*\(5, 4, 2\)"):
        io.read_image(tmp_path / "two.tif")


def test_read_image_16_bit_raises(tmp_path):
    rgb16 = np.full((4, 5, 3), 1000, np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", rgb16, photometric="rgb")
    with pytest.raises(ValueError, match=r"deep\.tif.*uint16"):
        io.read_image(tmp_path / "deep.tif")
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), rgb16)  # Pillow would silently keep 8 of 16 bits
    with pytest.raises(ValueError, match=r"deep\.png.*16 bits"):
        io.read_image(tmp_path / "deep.png")


def test_read_image_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        io.read_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("name", ["broken.png", "broken.tif", "broken.jpg"])
def test_read_image_corrupt_file_names_it(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ValueError, match=rf"{name}: cannot read the file: \w+"):
        io.read_image(tmp_path / name)


def test_read_image_truncated_png_names_it(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png: cannot read the file"):
        io.read_image(tmp_path / "cut.png")


@pytest.mark.data
def test_read_image_monuseg_tiff():
    image = io.read_image(data_file("monuseg/images/TCGA-A7-A13E-01Z-00-DX1.tif"))
    assert image.shape == (1000, 1000, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(
        image, tifffile.imread(data_file("monuseg/images/TCGA-A7-A13E-01Z-00-DX1.tif"))[..., :3]
    )


@pytest.mark.data
def test_read_image_tnbc_rgba_png():
    path = data_file("tnbc/Slide_01/01_1.png")
    image = io.read_image(path)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")))


# --- read_labels / write_labels ------------------------------------------------------------------


def test_write_labels_round_trip_int32_deflate(tmp_path):
    labels = _random_labels(np.random.default_rng(1))
    labels[0, 0] = 70_000  # beyond uint16
    io.write_labels(tmp_path / "labels.tif", labels)
    out = io.read_labels(tmp_path / "labels.tif")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert len(tif.pages) == 1
        page = tif.pages[0]
        assert page.dtype == np.int32
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_read_labels_integer_tiffs(tmp_path, dtype):
    labels = _random_labels(np.random.default_rng(2)).astype(dtype)
    tifffile.imwrite(tmp_path / "l.tif", labels)
    out = io.read_labels(tmp_path / "l.tif")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)


def test_read_labels_png_uint16_and_uint8(tmp_path):
    labels = _random_labels(np.random.default_rng(3))
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "l16.png")
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "l8.png")
    for name in ("l16.png", "l8.png"):
        np.testing.assert_array_equal(io.read_labels(tmp_path / name), labels)


def test_read_labels_float_and_bool(tmp_path):
    labels = _random_labels(np.random.default_rng(4))
    tifffile.imwrite(tmp_path / "f.tif", labels.astype(np.float32))
    np.testing.assert_array_equal(io.read_labels(tmp_path / "f.tif"), labels)
    tifffile.imwrite(tmp_path / "frac.tif", labels.astype(np.float32) + 0.5)
    with pytest.raises(ValueError, match=r"frac\.tif.*non-integer"):
        io.read_labels(tmp_path / "frac.tif")
    tifffile.imwrite(tmp_path / "b.tif", labels > 0)
    np.testing.assert_array_equal(io.read_labels(tmp_path / "b.tif"), (labels > 0).astype(int))


def test_read_labels_errors_name_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", _rgb(), photometric="rgb")
    with pytest.raises(ValueError, match=r"rgb\.tif.*2-D.*\(6, 7, 3\)"):
        io.read_labels(tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "neg.tif", np.array([[0, -1]], np.int32))
    with pytest.raises(ValueError, match=r"neg\.tif.*>= 0"):
        io.read_labels(tmp_path / "neg.tif")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "l.jpg")
    with pytest.raises(ValueError, match=r"l\.jpg.*\.tif, \.tiff or \.png"):
        io.read_labels(tmp_path / "l.jpg")
    with pytest.raises(FileNotFoundError, match="absent.tif"):
        io.read_labels(tmp_path / "absent.tif")


def test_write_labels_refuses_non_tiff_name_and_bad_labels(tmp_path):
    with pytest.raises(ValueError, match=r"\.tif"):
        io.write_labels(tmp_path / "labels.png", np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        io.write_labels(tmp_path / "labels.tif", np.zeros((3, 3, 3), np.int32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.data
def test_read_labels_monuseg_png():
    labels = io.read_labels(data_file("monuseg/labels/TCGA-18-5592-01Z-00-DX1.png"))
    assert labels.shape == (1000, 1000) and labels.dtype == np.int32
    assert labels.max() == 480  # MANIFEST.tsv: 480 nuclei


# --- atomic_write --------------------------------------------------------------------------------


def test_atomic_write_success_leaves_only_the_target(tmp_path):
    target = tmp_path / "out.png"
    with io.atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".out.")
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_atomic_write_exception_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), io.atomic_write(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_exception_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_refuses_to_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match=r"out\.txt.*--overwrite.*overwrite=True"):
        with io.atomic_write(target):
            pass  # pragma: no cover
    with io.atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with io.atomic_write(tmp_path / "no" / "out.txt"):
            pass  # pragma: no cover


WRITERS = {
    "labels.tif": lambda p, **kw: io.write_labels(p, np.ones((4, 4), np.int32), **kw),
    "overlay.png": lambda p, **kw: io.write_png(p, _rgb(), **kw),
    "table.csv": lambda p, **kw: io.write_csv(p, {"label": [1, 2]}, **kw),
    "nuclei.geojson": lambda p, **kw: io.export_geojson(p, np.ones((4, 4), np.int32), **kw),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_writer_refuses_to_overwrite(tmp_path, name):
    path = tmp_path / name
    WRITERS[name](path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        WRITERS[name](path)
    assert path.read_bytes() == before
    WRITERS[name](path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_write_png_round_trip(tmp_path):
    rgb = _rgb(9, 11)
    io.write_png(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(io.read_image(tmp_path / "x.png"), rgb)


# --- overlays ------------------------------------------------------------------------------------


def test_overlay_draws_inner_boundaries_only():
    image = np.full((7, 7, 3), 100, np.uint8)
    labels = np.zeros((7, 7), np.int32)
    labels[2:5, 2:5] = 1  # 3x3 square: 8 boundary pixels around one interior pixel
    out = io.overlay(image, labels, color=(1, 2, 3))
    coloured = np.all(out == (1, 2, 3), axis=-1)
    expected = labels > 0
    expected[3, 3] = False
    np.testing.assert_array_equal(coloured, expected)
    np.testing.assert_array_equal(out[~coloured], image[~coloured])
    assert image[3, 3, 0] == 100  # input untouched


def test_error_overlay_colours_by_hand():
    image = np.full((1, 4, 3), 100, np.uint8)
    y_true = np.array([[1, 1, 0, 0]], np.int32)
    y_pred = np.array([[2, 0, 3, 0]], np.int32)
    out = io.error_overlay(image, y_true, y_pred, alpha=0.2)
    # 0.8 * 100 + 0.2 * 255 = 131; 0.8 * 100 + 0.2 * 0 = 80
    expected = [[[80, 131, 80], [131, 80, 80], [80, 80, 131], [100, 100, 100]]]
    np.testing.assert_array_equal(out, np.array(expected, np.uint8))
    bool_out = io.error_overlay(image, y_true > 0, y_pred > 0, alpha=0.2)
    np.testing.assert_array_equal(bool_out, out)
    with pytest.raises(ValueError, match="shape"):
        io.error_overlay(image, y_true, np.zeros((2, 4), np.int32))


# --- measurements --------------------------------------------------------------------------------


def test_measure_nuclei_rectangle_by_hand():
    image = np.full((8, 8, 3), 200, np.uint8)
    image[2:5, 1:5] = (90, 60, 150)  # purple nucleus on pink-ish background
    labels = np.zeros((8, 8), np.int32)
    labels[2:5, 1:5] = 5  # rows 2..4, columns 1..4: 3 x 4 pixels
    table = io.measure_nuclei(image, labels)
    assert tuple(table) == io.MEASUREMENT_COLUMNS
    assert table["label"].tolist() == [5]
    assert table["area"].tolist() == [12]
    assert table["centroid_row"][0] == pytest.approx(3.0)  # (2 + 3 + 4) / 3
    assert table["centroid_col"][0] == pytest.approx(2.5)  # (1 + 2 + 3 + 4) / 4
    # boundary through the 10 edge-pixel centres: 2 * (3 - 1) + 2 * (4 - 1)
    assert table["perimeter"][0] == pytest.approx(10.0)
    # second moments: var_rows = (3**2 - 1) / 12, var_cols = (4**2 - 1) / 12
    assert table["eccentricity"][0] == pytest.approx(np.sqrt(1 - (8 / 12) / (15 / 12)))
    hed = rgb2hed(np.array([[[90, 60, 150]]], np.uint8))[0, 0, 0]
    assert table["mean_hematoxylin"][0] == pytest.approx(hed)


def test_measure_nuclei_darker_nucleus_has_more_hematoxylin():
    image = np.full((10, 10, 3), 230, np.uint8)
    image[1:4, 1:4] = (70, 40, 140)
    image[6:9, 6:9] = (220, 150, 200)
    labels = np.zeros((10, 10), np.int32)
    labels[1:4, 1:4], labels[6:9, 6:9] = 1, 2
    h = io.measure_nuclei(image, labels)["mean_hematoxylin"]
    assert h[0] > h[1]


def test_measure_nuclei_empty_and_mismatched():
    table = io.measure_nuclei(_rgb(), np.zeros((6, 7), np.int32))
    assert tuple(table) == io.MEASUREMENT_COLUMNS and all(len(v) == 0 for v in table.values())
    with pytest.raises(ValueError, match="shape"):
        io.measure_nuclei(_rgb(), np.zeros((6, 8), np.int32))


def test_write_csv_round_trip(tmp_path):
    labels = _random_labels(np.random.default_rng(5))
    image = _rgb(*labels.shape)
    table = io.measure_nuclei(image, labels)
    io.write_csv(tmp_path / "t.csv", table)
    with open(tmp_path / "t.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(io.MEASUREMENT_COLUMNS)
    assert [int(r["label"]) for r in rows] == table["label"].tolist()
    assert [int(r["area"]) for r in rows] == table["area"].tolist()
    for name in ("centroid_row", "perimeter", "mean_hematoxylin"):
        np.testing.assert_allclose([float(r[name]) for r in rows], table[name], rtol=1e-7)


def test_write_csv_rejects_ragged_columns(tmp_path):
    with pytest.raises(ValueError, match="equal length"):
        io.write_csv(tmp_path / "t.csv", {"a": [1, 2], "b": [1.0]})
    assert list(tmp_path.iterdir()) == []


# --- outlines and GeoJSON ------------------------------------------------------------------------


def test_label_contours_square_corners_by_hand():
    labels = np.zeros((8, 9), np.int32)
    labels[2:5, 3:7] = 4  # pixel rows 2..4, columns 3..6
    (ring,) = io.label_contours(labels)[4]
    assert ring[0].tolist() == ring[-1].tolist()
    # corners: x (column) from 3 to 7, y (row) from 2 to 5
    assert {tuple(v) for v in ring.tolist()} == {(3, 2), (7, 2), (7, 5), (3, 5)}
    assert len(ring) == 5


def test_label_contours_single_pixel_and_image_border():
    labels = np.zeros((3, 4), np.int32)
    labels[0, 3] = 1  # top-right pixel
    (ring,) = io.label_contours(labels)[1]
    assert {tuple(v) for v in ring.tolist()} == {(3, 0), (4, 0), (4, 1), (3, 1)}


def test_label_contours_rings_are_pixel_edges_and_rasterise_back():
    rng = np.random.default_rng(6)
    for _ in range(20):
        mask = ndi.binary_opening(rng.random((30, 30)) < 0.6)
        labels, _ = ndi.label(mask, structure=np.ones((3, 3)))
        labels = labels.astype(np.int32)
        for label, rings in io.label_contours(labels).items():
            filled = ndi.binary_fill_holes(labels == label)
            for ring in rings:
                assert ring[0].tolist() == ring[-1].tolist()
                steps = np.diff(ring, axis=0)
                assert np.all((steps[:, 0] == 0) ^ (steps[:, 1] == 0))  # horizontal or vertical
            np.testing.assert_array_equal(_rasterise(rings, labels.shape), filled)
            assert sum(_shoelace(r) for r in rings) == filled.sum()


def test_label_contours_sparse_label_values():
    labels = np.zeros((4, 4), np.int64)
    labels[1, 1], labels[2, 3] = 2_000_000_000, 7
    rings = io.label_contours(labels)
    assert sorted(rings) == [7, 2_000_000_000]
    assert {tuple(v) for v in rings[2_000_000_000][0].tolist()} == {(1, 1), (2, 1), (2, 2), (1, 2)}


def test_label_contours_split_object_gives_pieces_largest_first():
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 2  # 4 pixels
    labels[5:9, 5:9] = 2  # 16 pixels
    rings = io.label_contours(labels)[2]
    assert [_shoelace(r) for r in rings] == [16.0, 4.0]


def test_export_geojson_qupath_layout(tmp_path):
    labels = _random_labels(np.random.default_rng(7))
    present = np.unique(labels[labels > 0])
    table = io.measure_nuclei(_rgb(*labels.shape), labels)
    n = io.export_geojson(tmp_path / "n.geojson", labels, measurements=table, color=(255, 0, 0))
    data = json.loads((tmp_path / "n.geojson").read_text())
    assert data["type"] == "FeatureCollection" and n == len(data["features"]) == len(present)
    ids = set()
    for feature, label in zip(data["features"], present, strict=True):
        assert feature["type"] == "Feature"
        ids.add(str(uuid.UUID(feature["id"])))
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "Nucleus", "color": [255, 0, 0]}
        assert props["measurements"]["label"] == label
        assert props["measurements"]["area"] == (labels == label).sum()
        geometry = feature["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        rings = [polygon[0] for polygon in polygons]
        assert all(ring[0] == ring[-1] and len(ring) >= 5 for ring in rings)
        filled = ndi.binary_fill_holes(labels == label)
        np.testing.assert_array_equal(_rasterise(rings, labels.shape), filled)
    assert len(ids) == n
    io.export_geojson(tmp_path / "n.geojson", labels, measurements=table, overwrite=True,
                      color=(255, 0, 0))  # fmt: skip
    again = json.loads((tmp_path / "n.geojson").read_text())
    assert [f["id"] for f in again["features"]] == [f["id"] for f in data["features"]]


def test_export_geojson_without_measurements_and_empty(tmp_path):
    labels = np.zeros((5, 5), np.int32)
    labels[1:3, 1:3] = 1
    io.export_geojson(tmp_path / "a.geojson", labels, classification="Tumor")
    (feature,) = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert "measurements" not in feature["properties"]
    assert feature["properties"]["classification"]["name"] == "Tumor"
    assert feature["geometry"]["type"] == "Polygon"
    assert io.export_geojson(tmp_path / "b.geojson", np.zeros((5, 5), np.int32)) == 0
    assert json.loads((tmp_path / "b.geojson").read_text())["features"] == []


def test_export_geojson_multipolygon_and_nan_measurement(tmp_path):
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 1
    labels[5:9, 5:9] = 1
    measurements = {"label": [1], "score": [float("nan")], "area": [20]}
    io.export_geojson(tmp_path / "m.geojson", labels, measurements=measurements)
    (feature,) = json.loads((tmp_path / "m.geojson").read_text())["features"]
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert len(feature["geometry"]["coordinates"]) == 2
    assert feature["properties"]["measurements"] == {"label": 1, "area": 20}
    with pytest.raises(ValueError, match="'label' column"):
        io.export_geojson(tmp_path / "x.geojson", labels, measurements={"area": [20]})


def test_export_geojson_500_nuclei(tmp_path):
    rng = np.random.default_rng(8)
    labels = np.zeros((1000, 1000), np.int32)
    centres = [(r, c) for r in range(22, 1000, 44) for c in range(22, 1000, 44)][:500]
    for k, (r, c) in enumerate(centres, start=1):
        rr, cc = draw.ellipse(r, c, rng.uniform(6, 15), rng.uniform(6, 15), shape=labels.shape,
                              rotation=rng.uniform(0, np.pi))  # fmt: skip
        labels[rr, cc] = k
    table = io.measure_nuclei(_rgb(1000, 1000), labels)
    assert io.export_geojson(tmp_path / "big.geojson", labels, measurements=table) == 500


# --- layering ------------------------------------------------------------------------------------


def test_numpy_layer_does_not_import_torch():
    code = "import sys, nucseg.io, nucseg.stain; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
