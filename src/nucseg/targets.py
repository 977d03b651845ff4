"""Training targets computed from instance label images.

Every function takes an ``(H, W)`` integer label image (0 = background, nuclei 1..N; values need
not be consecutive) and returns a map of the same rows and columns:

- :func:`unet_weight_map`: the per-pixel loss weights of Ronneberger et al. 2015, eq. 2.
- :func:`boundary_map` and :func:`three_class_target`: inner nucleus boundaries, and the
  background / interior / boundary target of three-class U-Nets.
- :func:`distance_map`: distance to the nucleus border (Naylor et al. 2019's DIST target).
- :func:`hv_maps`: row and column offsets to the nucleus centroid (Graham et al. 2019, HoVer-Net).

The image border is never a nucleus border: a nucleus cut by the image edge is assumed to go on
beyond it. A label image without nuclei gives the background value everywhere.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from nucseg._checks import check_labels

__all__ = [
    "WEIGHT_TOLERANCE",
    "boundary_map",
    "distance_map",
    "hv_maps",
    "three_class_target",
    "unet_weight_map",
    "weight_map_radius",
]

WEIGHT_TOLERANCE = 1e-4
"""Largest error of :func:`unet_weight_map`'s border term caused by its local windows."""


def _objects(labels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, tuple[slice, slice]]]]:
    """Return labels in a type ``find_objects`` takes, and ``(value, bounding box)`` per nucleus."""
    if labels.size and labels.max() > labels.size:  # sparse, huge values: relabel 1..N first
        _, inverse = np.unique(labels, return_inverse=True)
        labels = inverse.reshape(labels.shape).astype(np.intp) + (labels.min() > 0)
    elif labels.dtype not in (np.int32, np.int64):
        labels = labels.astype(np.intp)
    boxes = ndi.find_objects(labels) if labels.size else []
    return labels, [(value, box) for value, box in enumerate(boxes, 1) if box is not None]


def _grow(box: tuple[slice, slice], margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The bounding box ``box`` grown by ``margin`` pixels on each side, clipped to ``shape``."""
    return tuple(
        slice(max(sl.start - margin, 0), min(sl.stop + margin, length))
        for sl, length in zip(box, shape, strict=True)
    )


def weight_map_radius(*, w0: float, sigma: float, tolerance: float = WEIGHT_TOLERANCE) -> int:
    """Distance beyond which :func:`unet_weight_map` ignores a nucleus.

    A background pixel has ``d1 >= 1``, so if its second-nearest nucleus is farther than ``R``
    the border term is below ``w0 * exp(-(1 + R)**2 / (2 sigma**2))``; the smallest such ``R``
    that makes this at most ``tolerance`` is returned (0 when ``w0 <= tolerance``).

    Examples
    --------
    >>> weight_map_radius(w0=10.0, sigma=5.0)
    23
    """
    if w0 <= tolerance:
        return 0
    return max(0, math.ceil(sigma * math.sqrt(2 * math.log(w0 / tolerance))) - 1)


def unet_weight_map(
    labels: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """Per-pixel loss weights of the U-Net paper (Ronneberger et al. 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, where ``d1`` and ``d2``
    are the Euclidean distances from pixel ``x`` to the nearest pixel of the nearest and of the
    second-nearest nucleus (1 for a pixel next to a nucleus). As in the paper, where the term
    makes the network learn the thin background gaps between touching cells, and as in the
    widely used implementation of Guerrero-Pena et al. (``unetwmap``), the border term is added
    on background pixels only; nucleus pixels get ``w_c`` alone.

    Class balance (the paper leaves ``w_c`` unspecified): following ``unetwmap``, each class
    (background, nucleus) gets the inverse of its pixel count, scaled so that the rarer class
    weighs 1, i.e. ``w_c(x) = min(n_background, n_nucleus) / n_class(x)``. Without class balance,
    or when a class is absent, ``w_c = 1``.

    Distances are computed exactly inside a window around each nucleus, its bounding box grown by
    :func:`weight_map_radius` (23 pixels for ``w0=10, sigma=5``); the border term is exact
    wherever it is at least :data:`WEIGHT_TOLERANCE` (1e-4) and off by less than that elsewhere.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.
    w0 : float, optional
        Peak of the border term, >= 0.
    sigma : float, optional
        Width of the border term in pixels, > 0.
    class_balance : bool, optional
        Use the class-balancing ``w_c`` above instead of 1.

    Returns
    -------
    (H, W) float32 array
        Weights, all > 0.

    Examples
    --------
    >>> labels = np.array([[1, 0, 2, 2]])
    >>> w = unet_weight_map(labels, w0=10.0, sigma=5.0)  # w_c: 1 / 3 nucleus, 1 background
    >>> print(np.round(w, 3))  # the gap pixel: 1 + 10 * exp(-(1 + 1)**2 / 50)
    [[ 0.333 10.231  0.333  0.333]]
    """
    labels = check_labels(labels)
    if not w0 >= 0:
        raise ValueError(f"w0 must be >= 0, got {w0!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    foreground = labels > 0
    weights = _class_weights(foreground) if class_balance else np.ones(labels.shape, np.float32)
    d1, d2 = _two_nearest(labels, radius=weight_map_radius(w0=w0, sigma=sigma))
    background = ~foreground & np.isfinite(d2)
    border = np.exp(-((d1[background] + d2[background]) ** 2) / (2 * sigma**2))
    weights[background] += np.float32(w0) * border
    return weights


def _class_weights(foreground: np.ndarray) -> np.ndarray:
    """``min(n_background, n_nucleus) / n_class`` per pixel (1 where a class is absent)."""
    n_nucleus = int(np.count_nonzero(foreground))
    n_background = foreground.size - n_nucleus
    if n_nucleus == 0 or n_background == 0:
        return np.ones(foreground.shape, dtype=np.float32)
    rare = min(n_nucleus, n_background)
    table = np.array([rare / n_background, rare / n_nucleus], dtype=np.float32)
    return table[foreground.astype(np.intp)]


def _two_nearest(labels: np.ndarray, *, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest nucleus, ``inf`` beyond ``radius``."""
    d1 = np.full(labels.shape, np.inf, dtype=np.float32)
    d2 = np.full(labels.shape, np.inf, dtype=np.float32)
    labels, objects = _objects(labels)
    if len(objects) < 2:
        return d1, d2
    for value, box in objects:
        window = _grow(box, radius, labels.shape)
        distance = ndi.distance_transform_edt(labels[window] != value).astype(np.float32)
        near1, near2 = d1[window], d2[window]  # views: updated in place
        np.minimum(near2, np.maximum(near1, distance), out=near2)
        np.minimum(near1, distance, out=near1)
    return d1, d2


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_map(labels: np.ndarray, *, width: int = 2) -> np.ndarray:
    """Inner boundaries of the nuclei, including the borders between touching nuclei.

    A nucleus pixel is a boundary pixel when some pixel within Euclidean distance ``width`` has a
    different label (background or another nucleus); ``width=1`` gives the 4-connected inner
    outline. Pixels outside the image do not count, so the image edge is not a boundary.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.
    width : int, optional
        Thickness of the boundary band in pixels, >= 1.

    Returns
    -------
    (H, W) bool array
        True on boundary pixels (always inside a nucleus).

    Examples
    --------
    >>> labels = np.array([[1, 1, 1, 2, 2, 0]])
    >>> boundary_map(labels, width=1).astype(int)
    array([[0, 0, 1, 1, 1, 0]])
    """
    labels = check_labels(labels)
    if int(width) != width or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=bool)
    footprint = _disk(int(width))
    highest = ndi.grey_dilation(labels, footprint=footprint, mode="nearest")
    lowest = ndi.grey_erosion(labels, footprint=footprint, mode="nearest")
    return (labels > 0) & ((highest != labels) | (lowest != labels))


def three_class_target(labels: np.ndarray, *, boundary_width: int = 2) -> np.ndarray:
    """Background / interior / boundary target for three-class segmentation networks.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.
    boundary_width : int, optional
        ``width`` of :func:`boundary_map`, >= 1.

    Returns
    -------
    (H, W) uint8 array
        0 = background, 1 = nucleus interior, 2 = nucleus boundary. Interior and boundary
        partition the nuclei, and the interiors of touching nuclei are not 8-connected.

    Examples
    --------
    >>> three_class_target(np.array([[1, 1, 1, 1, 2, 2, 0]]), boundary_width=1)
    array([[1, 1, 1, 2, 2, 2, 0]], dtype=uint8)
    """
    labels = check_labels(labels)
    target = (labels > 0).astype(np.uint8)
    target[boundary_map(labels, width=boundary_width)] = 2
    return target


def distance_map(labels: np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """Euclidean distance from each nucleus pixel to the nearest pixel outside its nucleus.

    The outside is the background or another nucleus (the image edge only counts for a nucleus
    that fills the whole image). A pixel next to the border has distance 1.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.
    normalise : bool, optional
        Divide the distances of each nucleus by their maximum, so each nucleus peaks at 1.

    Returns
    -------
    (H, W) float32 array
        0 on the background; in ``(0, 1]`` on nuclei when ``normalise``, in pixels otherwise.

    Examples
    --------
    >>> distance_map(np.array([[1, 1, 1, 1, 1, 0, 2]]), normalise=False)
    array([[5., 4., 3., 2., 1., 0., 1.]], dtype=float32)
    >>> distance_map(np.array([[1, 1, 1, 1, 1, 0, 2]]))
    array([[1. , 0.8, 0.6, 0.4, 0.2, 0. , 1. ]], dtype=float32)
    """
    labels = check_labels(labels)
    result = np.zeros(labels.shape, dtype=np.float32)
    labels, objects = _objects(labels)
    for value, box in objects:
        window = _grow(box, 1, labels.shape)
        mask = labels[window] == value
        if mask.all():  # nothing else in sight: measure to the image edge
            distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        else:
            distance = ndi.distance_transform_edt(mask)
        inside = distance[mask]
        if normalise:
            inside = inside / inside.max()
        result[window][mask] = inside
    return result


def _signed_unit(offsets: np.ndarray) -> np.ndarray:
    """Scale negative offsets by their most negative value and positive ones by their maximum."""
    scaled = np.zeros_like(offsets)
    negative, positive = offsets < 0, offsets > 0
    if negative.any():
        scaled[negative] = offsets[negative] / -offsets[negative].min()
    if positive.any():
        scaled[positive] = offsets[positive] / offsets[positive].max()
    return scaled


def hv_maps(labels: np.ndarray) -> np.ndarray:
    """Offsets of each nucleus pixel from its nucleus centroid, scaled to ``[-1, 1]`` per nucleus.

    The targets of HoVer-Net (Graham et al. 2019): within each nucleus, negative offsets are
    divided by the largest negative offset and positive ones by the largest positive offset, so
    that each nucleus spans ``[-1, 1]`` along each axis. Unlike HoVer-Net, which rounds the
    centroid to a pixel and stacks (horizontal, vertical), the centroid is not rounded and the
    row offset comes first.

    Parameters
    ----------
    labels : (H, W) int array
        Instance labels, 0 = background.

    Returns
    -------
    (H, W, 2) float32 array
        Channel 0: row offset (negative above the centroid, positive below). Channel 1: column
        offset (negative left of the centroid, positive right of it). 0 on the background.

    Examples
    --------
    >>> maps = hv_maps(np.array([[0, 1, 1, 1, 1, 1]]))
    >>> maps[..., 1]  # columns 1..5, centroid column 3: offsets -2..2
    array([[ 0. , -1. , -0.5,  0. ,  0.5,  1. ]], dtype=float32)
    >>> maps[..., 0]  # a single row: no row offsets
    array([[0., 0., 0., 0., 0., 0.]], dtype=float32)
    """
    labels = check_labels(labels)
    result = np.zeros(labels.shape + (2,), dtype=np.float32)
    labels, objects = _objects(labels)
    for value, box in objects:
        rows, cols = np.nonzero(labels[box] == value)
        for channel, coords in enumerate((rows, cols)):
            offsets = coords - coords.mean()
            result[box][rows, cols, channel] = _signed_unit(offsets)
    return result
