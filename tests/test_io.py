"""Tests of nucseg.io: reading, atomic writing, overlays, measurements, outlines and GeoJSON."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
import shapely
import shapely.geometry
import tifffile
from helpers import data_file
from PIL import Image
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


def test_measure_nuclei_without_perimeter_leaves_only_that_column_out():
    labels = _random_labels(np.random.default_rng(7))
    image = _rgb(*labels.shape)
    full = io.measure_nuclei(image, labels)
    short = io.measure_nuclei(image, labels, perimeter=False)
    assert list(short) == [c for c in io.MEASUREMENT_COLUMNS if c != "perimeter"]
    for column, values in short.items():
        assert np.array_equal(values, full[column]), column


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


def test_export_geojson_qupath_layout(tmp_path):
    labels = _random_labels(np.random.default_rng(7))
    present = np.unique(labels[labels > 0])
    table = io.measure_nuclei(_rgb(*labels.shape), labels)
    n = io.export_geojson(tmp_path / "n.geojson", labels, measurements=table, color=(255, 0, 0))
    data = json.loads((tmp_path / "n.geojson").read_text())
    assert data["type"] == "FeatureCollection" and n == len(data["features"]) == len(present)
    ids = set()
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    for i, (feature, label) in enumerate(zip(data["features"], present, strict=True)):
        assert feature["type"] == "Feature"
        ids.add(str(uuid.UUID(feature["id"])))
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "Nucleus", "color": [255, 0, 0]}
        values = props["measurements"]
        assert values["label"] == label
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid
        mask = labels == label
        np.testing.assert_array_equal(shapely.contains_xy(geometry, cols + 0.5, rows + 0.5), mask)
        # measurements agree with the polygon: area with holes excluded, centroid in its frame
        assert values["area_px2"] == geometry.area == mask.sum()
        assert values["perimeter_px"] == pytest.approx(geometry.length)
        assert values["centroid_x_px"] == pytest.approx(table["centroid_col"][i] + 0.5)
        assert values["centroid_y_px"] == pytest.approx(table["centroid_row"][i] + 0.5)
        assert values["eccentricity"] == table["eccentricity"][i]
        assert not {"area", "perimeter", "centroid_row", "centroid_col"} & set(values)
        assert "area_um2" not in values
    assert len(ids) == n
    io.export_geojson(tmp_path / "n.geojson", labels, measurements=table, overwrite=True,
                      color=(255, 0, 0))  # fmt: skip
    again = json.loads((tmp_path / "n.geojson").read_text())
    assert [f["id"] for f in again["features"]] == [f["id"] for f in data["features"]]


def test_export_geojson_physical_units_and_bad_mpp(tmp_path):
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 2:6] = 5  # 8 pixels, perimeter 12, centroid (x 4, y 2)
    io.export_geojson(tmp_path / "u.geojson", labels, mpp=0.25)
    (feature,) = json.loads((tmp_path / "u.geojson").read_text())["features"]
    values = feature["properties"]["measurements"]
    assert values == {
        "label": 5, "area_px2": 8.0, "perimeter_px": 12.0, "centroid_x_px": 4.0,
        "centroid_y_px": 2.0, "area_um2": 0.5, "perimeter_um": 3.0, "centroid_x_um": 1.0,
        "centroid_y_um": 0.5,
    }  # fmt: skip
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="mpp"):
            io.export_geojson(tmp_path / "bad.geojson", labels, mpp=bad)
    assert not (tmp_path / "bad.geojson").exists()


def test_export_geojson_without_measurements_and_empty(tmp_path):
    labels = np.zeros((5, 5), np.int32)
    labels[1:3, 1:3] = 1
    io.export_geojson(tmp_path / "a.geojson", labels, classification="Tumor")
    (feature,) = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert set(feature["properties"]["measurements"]) == {
        "label", "area_px2", "perimeter_px", "centroid_x_px", "centroid_y_px"
    }  # fmt: skip
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
    assert feature["properties"]["measurements"]["area_px2"] == 20
    assert "score" not in feature["properties"]["measurements"]
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
