"""Reading pixels; writing label images, overlays, measurements and outlines.

Images are ``(H, W, 3) uint8`` RGB arrays and label images ``(H, W) int32`` arrays with
0 = background and objects 1..N (see :mod:`nucseg._checks`). Every writer goes through
:func:`atomic_write`: a file appears complete or not at all, and an existing file is replaced only
with ``overwrite=True``.

Outlines (:func:`export_geojson`) come from :mod:`nucseg.geometry`: valid polygons along pixel
edges in pixel-corner coordinates, QuPath's convention (the pixel at row r, column c is the unit
square from corner (x=c, y=r) to corner (x=c + 1, y=r + 1)), with measurements computed from
the polygons themselves.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
import tifffile
from numpy.typing import ArrayLike
from PIL import Image

from nucseg._checks import check_image, check_labels, check_same_shape
from nucseg.atomic import atomic_write  # noqa: F401  (every writer goes through it)
from nucseg.geometry import nucleus_polygons, polygon_measurements
from nucseg.measure import MEASUREMENT_COLUMNS, inner_boundaries, measure_nuclei  # noqa: F401

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

_TIFF_SUFFIXES = (".tif", ".tiff")
_INT32_MAX = int(np.iinfo(np.int32).max)
#: Namespace of the version-5 UUIDs that :func:`export_geojson` gives its features.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/nucseg/geojson")


# --- reading -------------------------------------------------------------------------------------


def read_image(path: PathLike) -> np.ndarray:
    """Read an RGB image file as an ``(H, W, 3) uint8`` array.

    TIFF files (``.tif``, ``.tiff``; any compression imagecodecs decodes, LZW included) are read
    with tifffile, everything else (PNG, JPEG, ...) with Pillow. An alpha channel is dropped and
    a palette image is expanded to RGB.

    Parameters
    ----------
    path : path-like
        Image file.

    Returns
    -------
    (H, W, 3) uint8 array
        RGB pixels.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the file cannot be decoded, is not RGB(A) (greyscale, two channels, ...) or is not
        8 bits per channel; the message names the file.
    """
    path = Path(path)
    array = _read_pixels(path, expand_palette=True)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # TIFF stored plane by plane (planar configuration 2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        kind = " (greyscale)" if array.ndim == 2 else ""
        raise ValueError(
            f"{path}: expected an RGB (H, W, 3) or RGBA (H, W, 4) image, got shape "
            f"{array.shape}{kind}"
        )
    if array.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected 8 bits per channel (uint8), got {array.dtype}; "
            "convert the image to 8-bit RGB first"
        )
    return np.ascontiguousarray(array[..., :3])


def read_labels(path: PathLike) -> np.ndarray:
    """Read an instance label image (TIFF or PNG) as an ``(H, W) int32`` array.

    Values are kept as stored (no relabelling): 0 = background, every other value one object.
    Boolean masks become labels 0/1; floating-point files are accepted when every value is a
    whole number.

    Parameters
    ----------
    path : path-like
        ``.tif``, ``.tiff`` or ``.png`` file holding one 2-D integer image.

    Returns
    -------
    (H, W) int32 array
        Instance labels.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the file is not TIFF/PNG, cannot be decoded, is not 2-D, holds negative or fractional
        values, or values above the int32 range; the message names the file.
    """
    path = Path(path)
    if path.suffix.lower() not in (*_TIFF_SUFFIXES, ".png"):
        raise ValueError(f"{path}: label images must be .tif, .tiff or .png (lossless)")
    array = _read_pixels(path, expand_palette=False)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.int32)
    elif np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
            raise ValueError(f"{path}: floating-point label image with non-integer values")
        array = array.astype(np.int64)
    array = check_labels(array, name=str(path))
    if array.size and int(array.max()) > _INT32_MAX:
        raise ValueError(f"{path}: label {int(array.max())} exceeds the int32 range")
    return array.astype(np.int32, copy=False)


def _read_pixels(path: Path, *, expand_palette: bool) -> np.ndarray:
    """Decode ``path`` into an array, naming the file in every error."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder, not an image file", str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    depth16 = False
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            array = np.asarray(tifffile.imread(path))
        else:
            array, depth16 = _read_pillow(path, expand_palette=expand_palette)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as err:  # decoders raise many types (OSError, SyntaxError, TiffFileError)
        raise ValueError(
            f"{path}: cannot read the file: {type(err).__name__}: {err} (damaged or truncated?)"
        ) from err
    if array.size == 0:  # tifffile returns an empty array for a TIFF cut after its header
        raise ValueError(f"{path}: cannot read the file: no pixels (damaged or truncated?)")
    if depth16:
        raise ValueError(f"{path}: 16 bits per channel; convert the image to 8-bit RGB first")
    return array


def _read_pillow(path: Path, *, expand_palette: bool) -> tuple[np.ndarray, bool]:
    """Pixels of a file Pillow reads, and whether it holds 16 bits per colour channel."""
    with Image.open(path) as image:
        # Pillow silently truncates 16-bit colour PNGs to 8 bits; refuse them instead.
        depth16 = image.mode in ("RGB", "RGBA") and any(
            ";16" in str(tile.args) for tile in image.tile
        )
        if expand_palette and image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode in ("CMYK", "YCbCr"):
            image = image.convert("RGB")
        return np.asarray(image), depth16


# --- writing -------------------------------------------------------------------------------------


def write_labels(path: PathLike, labels: np.ndarray, *, overwrite: bool = False) -> None:
    """Write a label image as a single-page int32 TIFF with deflate (zlib) compression.

    The file reads back with :func:`read_labels` and opens in QuPath and Fiji.

    Raises
    ------
    ValueError
        If ``labels`` is not a valid label image, a label exceeds the int32 range, or ``path``
        does not end in ``.tif``/``.tiff``.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    labels = check_labels(labels)
    if Path(path).suffix.lower() not in _TIFF_SUFFIXES:
        raise ValueError(f"{path}: write_labels writes TIFF; name the file .tif or .tiff")
    if labels.size and int(labels.max()) > _INT32_MAX:
        raise ValueError(f"label {int(labels.max())} exceeds the int32 range")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp, labels.astype(np.int32, copy=False), photometric="minisblack", compression="zlib"
        )


def write_png(path: PathLike, rgb: np.ndarray, *, overwrite: bool = False) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image as PNG.

    OpenCV's encoder with zlib's Huffman-only strategy: on an H&E overlay (photo-like content,
    where string matching finds little) it is about 3 times faster than zlib level 1 and the file
    is about 10 % smaller (1.75 MB against 1.93 MB for a 1000 x 1000 MoNuSeg overlay).
    """
    rgb = check_image(rgb, name="rgb")
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1], params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {rgb.shape} image as PNG")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(encoded.tobytes())


def write_csv(path: PathLike, table: Mapping[str, ArrayLike], *, overwrite: bool = False) -> None:
    """Write a table of equal-length columns as CSV with a header row.

    Integers are written exactly, floats with 8 significant digits (``nan`` for missing values).

    Parameters
    ----------
    path : path-like
        Output file.
    table : mapping of str to 1-D array-like
        Column name -> values, e.g. the output of :func:`measure_nuclei`.
    overwrite : bool, optional
        Replace an existing file.

    Raises
    ------
    ValueError
        If the columns differ in length or one is not 1-D.
    """
    columns = {str(name): np.asarray(values) for name, values in table.items()}
    shapes = {name: values.shape for name, values in columns.items()}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) > 1:
        raise ValueError(f"table columns must be 1-D and of equal length, got shapes {shapes}")
    cells = [_format_column(values) for values in columns.values()]
    with atomic_write(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(zip(*cells, strict=True))


def _format_column(values: np.ndarray) -> list[str]:
    if np.issubdtype(values.dtype, np.floating):
        return [f"{v:.8g}" for v in values.tolist()]
    return [str(v) for v in values.tolist()]


# --- drawing -------------------------------------------------------------------------------------


def overlay(
    image: np.ndarray, labels: np.ndarray, *, color: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """Draw the boundary of every object on a copy of ``image``.

    Boundary pixels are the object pixels next to another label or the background
    (:func:`nucseg.measure.inner_boundaries`, as ``find_boundaries(mode="inner")``).

    Returns
    -------
    (H, W, 3) uint8 array
        The image with boundary pixels set to ``color``.
    """
    image = check_image(image)
    labels = check_labels(labels)
    check_same_shape(image, labels, names=("image", "labels"))
    out = image.copy()
    out[inner_boundaries(labels)] = color
    return out


def error_overlay(
    image: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, *, alpha: float = 0.5
) -> np.ndarray:
    """Colour pixel-level agreement between two segmentations, as in the paper's Figure 3.

    Foreground in both is green (true positive), only in ``y_true`` red (false negative), only in
    ``y_pred`` blue (false positive); each colour is blended with the image with weight
    ``alpha``. Background in both keeps the image.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        RGB image.
    y_true, y_pred : (H, W) integer or bool arrays
        Label images or binary masks; any non-zero value is foreground.
    alpha : float, optional
        Weight of the colour, in [0, 1].

    Returns
    -------
    (H, W, 3) uint8 array
    """
    image = check_image(image)
    y_true, y_pred = _foreground(y_true, "y_true"), _foreground(y_pred, "y_pred")
    check_same_shape(image, y_true, names=("image", "y_true"))
    check_same_shape(image, y_pred, names=("image", "y_pred"))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = np.zeros(image.shape, dtype=np.float32)
    colours[y_true & y_pred] = (0, 255, 0)
    colours[y_true & ~y_pred] = (255, 0, 0)
    colours[~y_true & y_pred] = (0, 0, 255)
    weight = np.where(y_true | y_pred, np.float32(alpha), np.float32(0.0))[..., None]
    blended = (1 - weight) * image + weight * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _foreground(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool and mask.ndim == 2 else check_labels(mask, name=name) > 0


# --- outlines ------------------------------------------------------------------------------------


#: Columns of a measurement table that describe the geometry in another convention (pixel counts,
#: pixel-centre coordinates, scikit-image's perimeter): :func:`export_geojson` replaces them with
#: the polygon's own measurements.
_GEOMETRY_COLUMNS = frozenset({"area", "perimeter", "centroid_row", "centroid_col"})


def export_geojson(
    path: PathLike,
    labels: np.ndarray,
    *,
    measurements: Mapping[str, ArrayLike] | None = None,
    mpp: float | None = None,
    classification: str = "Nucleus",
    color: tuple[int, int, int] = (0, 255, 0),
    overwrite: bool = False,
    types: Mapping[int, tuple[str, tuple[int, int, int]]] | None = None,
) -> int:
    """Write every object as a QuPath detection in a GeoJSON FeatureCollection.

    Import into QuPath with File > Import objects from file (or drag and drop). Each geometry is
    a valid polygon from :func:`nucseg.geometry.nucleus_polygons`: pixel-corner coordinates,
    x = column and y = row from the top-left corner of the image (QuPath's convention); holes
    kept as interior rings; a ``MultiPolygon`` for an object in several pieces (pixels touching
    only at a corner count as separate pieces). Each feature gets a version-5 UUID ``id`` derived
    from the file name and the label (QuPath 0.4+ reads ids as UUIDs), so exporting again gives
    the same ids.

    Every feature's ``measurements`` hold ``label`` and the polygon's own area, perimeter and
    centroid (:func:`nucseg.geometry.polygon_measurements`: ``area_px2``, ``perimeter_px``,
    ``centroid_x_px``, ``centroid_y_px``, and with ``mpp`` also ``area_um2``, ``perimeter_um``,
    ``centroid_x_um``, ``centroid_y_um``), so they agree with the geometry QuPath draws.

    Parameters
    ----------
    path : path-like
        Output file, conventionally ``.geojson``.
    labels : (H, W) integer array
        Instance labels.
    measurements : mapping of str to 1-D array-like, optional
        Further columns with a ``label`` column, e.g. from :func:`measure_nuclei`; the row of
        each label is added to the feature's ``measurements`` (non-finite values are left out).
        Its ``area``, ``perimeter``, ``centroid_row`` and ``centroid_col`` columns are left out:
        the polygon's measurements replace them.
    mpp : float, optional
        Pixel size in micrometres per pixel; adds the measurements in um and um2.
    classification : str, optional
        Class name given to every object.
    color : tuple of int, optional
        RGB colour of the class.
    overwrite : bool, optional
        Replace an existing file.
    types : mapping of int to (str, RGB), optional
        Per label, the class name and colour that replace ``classification`` and ``color``
        (e.g. nucleus types, so that QuPath colours them on import).

    Returns
    -------
    int
        Number of features written.
    """
    labels = check_labels(labels)
    types = types or {}
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp}")
    rows = _rows_by_label(measurements) if measurements is not None else {}
    pairs = list(nucleus_polygons(labels))
    geometry_columns = polygon_measurements([polygon for _, polygon in pairs], mpp=mpp)
    name = Path(path).name
    shapes = np.asarray([polygon for _, polygon in pairs] + [None], dtype=object)[:-1]
    geometries = shapely.to_geojson(shapes).tolist()  # GEOS's writer: full precision, fast
    features = []
    for i, (label, _) in enumerate(pairs):
        values = {"label": label, **{k: float(v[i]) for k, v in geometry_columns.items()}}
        extra = rows.get(label, {})
        values.update({k: v for k, v in extra.items() if k not in _GEOMETRY_COLUMNS | {"label"}})
        head = {"type": "Feature", "id": str(uuid.uuid5(_UUID_NAMESPACE, f"{name}:{label}"))}
        properties = {
            "objectType": "detection",
            "classification": _classification(*types.get(label, (classification, color))),
            "measurements": values,
        }
        features.append(
            json.dumps(head, allow_nan=False)[:-1]
            + f', "geometry": {geometries[i]}, "properties": '
            + json.dumps(properties, allow_nan=False)
            + "}"
        )
    text = '{"type": "FeatureCollection", "features": [' + ", ".join(features) + "]}"
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text + "\n")
    return len(features)


def _classification(name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    """QuPath's ``classification`` of a GeoJSON feature: its name and RGB colour."""
    return {"name": name, "color": [int(c) for c in color]}


def _rows_by_label(table: Mapping[str, ArrayLike]) -> dict[int, dict[str, float]]:
    """Label -> {column: value} for the numeric columns of ``table``, finite values only."""
    columns = {str(k): np.asarray(v) for k, v in table.items()}
    if "label" not in columns:
        raise ValueError(f"measurements need a 'label' column, got columns {sorted(columns)}")
    numeric = {
        k: v.tolist()
        for k, v in columns.items()
        if np.issubdtype(v.dtype, np.number) and not np.issubdtype(v.dtype, np.complexfloating)
    }
    rows = {}
    for i, label in enumerate(columns["label"].tolist()):
        rows[int(label)] = {
            k: values[i] for k, values in numeric.items() if math.isfinite(values[i])
        }
    return rows
