"""Cut images into overlapping square tiles and blend per-tile maps back into one image.

Prediction runs a network on fixed-size tiles and averages the overlapping outputs (Lagree et al.
2021 predict on 256 x 256 tiles with 50 % overlap and train on tiles with 10 % overlap). The
pieces, in the order a predictor uses them::

    padded, crop = pad_to(image, (tile, tile))           # only changes images smaller than a tile
    grid = tile_grid(padded.shape, tile=tile, overlap=0.5)
    tiles = extract_tiles(padded, grid)                  # (n, tile, tile, 3)
    maps = stitch_maps(predict(tiles), grid, padded.shape)[crop]

Tiles are addressed by ``(row_slice, column_slice)`` pairs, so ``array[slices]`` is one tile.
Stitching is an exact weighted average: stitching tiles cut from an array gives back that array,
whatever the image size and the overlap. :class:`MapStitcher` accumulates tiles one at a time
(into one ``(H, W, ...)`` sum and one ``(H, W)`` weight array) so a predictor can stream batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "MapStitcher",
    "blend_window",
    "extract_tiles",
    "pad_to",
    "spread_grid",
    "stitch_maps",
    "tile_grid",
]

Slices = tuple[slice, slice]

WINDOWS = ("hann", "uniform")
PAD_MODES = ("reflect", "symmetric", "edge", "constant")


def _axis_origins(length: int, tile: int, stride: int) -> list[int]:
    """Origins of tiles of size ``tile`` covering ``range(length)``, the last one flush."""
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] != length - tile:
        origins.append(length - tile)
    return origins


def tile_grid(shape: Sequence[int], *, tile: int = 256, overlap: float = 0.5) -> list[Slices]:
    """Square tiles that cover an image exactly, overlapping by a fraction of the tile.

    Tile origins along each axis are ``0, stride, 2 * stride, ...`` with
    ``stride = round(tile * (1 - overlap))``; when the last tile would not end on the border, one
    more tile is added flush with it (so it overlaps its neighbour by more than ``overlap``). No
    padding is needed, but every dimension must be at least ``tile``: pad smaller images first
    with :func:`pad_to`.

    Parameters
    ----------
    shape : sequence of int
        ``(rows, columns)`` of the image, or any longer shape such as ``image.shape`` (only the
        first two entries are used).
    tile : int, optional
        Side of the square tiles, in pixels.
    overlap : float, optional
        Fraction of a tile shared by neighbouring tiles, in ``[0, 1)``; 0.1 for training and 0.5
        for prediction in Lagree et al. 2021.

    Returns
    -------
    list of (slice, slice)
        One ``(row_slice, column_slice)`` pair per tile, in row-major order; each selects a
        ``(tile, tile)`` window inside the image.

    Raises
    ------
    ValueError
        If ``tile`` is not positive, ``overlap`` is outside ``[0, 1)``, or the image is smaller
        than a tile.

    Examples
    --------
    >>> grid = tile_grid((5, 4), tile=4, overlap=0.5)
    >>> [(rows.start, cols.start) for rows, cols in grid]
    [(0, 0), (1, 0)]
    >>> grid[1]
    (slice(1, 5, None), slice(0, 4, None))
    """
    rows, cols = _shape2(shape)
    stride = _stride(tile, overlap)
    _check_fits(rows, cols, tile)
    row_origins = _axis_origins(rows, tile, stride)
    col_origins = _axis_origins(cols, tile, stride)
    return [(slice(r, r + tile), slice(c, c + tile)) for r in row_origins for c in col_origins]


def spread_grid(shape: Sequence[int], *, tile: int = 256, min_overlap: int = 8) -> list[Slices]:
    """The fewest square tiles that cover an image with at least ``min_overlap`` pixels shared by
    neighbours, spread evenly.

    Along an axis of length ``L`` there are ``n = ceil((L - min_overlap) / (tile - min_overlap))``
    tiles (one when ``L == tile``) whose origins ``round(i * (L - tile) / (n - 1))`` share the
    spare length evenly: a 1000-pixel side takes four 256-pixel tiles with at least 8 pixels of
    overlap (8 each), where :func:`tile_grid` at 25 % takes five. Every dimension must be at least
    ``tile`` (pad first with :func:`pad_to`).

    Examples
    --------
    >>> [cols.start for _, cols in spread_grid((256, 1000), tile=256, min_overlap=8)]
    [0, 248, 496, 744]
    >>> [cols.start for _, cols in spread_grid((256, 1000), tile=256, min_overlap=16)]
    [0, 186, 372, 558, 744]
    """
    rows, cols = _shape2(shape)
    if int(tile) != tile or tile < 1 or not 0 <= min_overlap < tile:
        raise ValueError(
            f"need a positive tile and 0 <= min_overlap < tile, got {tile} and {min_overlap}"
        )
    _check_fits(rows, cols, tile)

    def origins(length: int) -> list[int]:
        if length == tile:
            return [0]
        n = -(-(length - min_overlap) // (tile - min_overlap))
        return [round(i * (length - tile) / (n - 1)) for i in range(n)]

    return [(slice(r, r + tile), slice(c, c + tile)) for r in origins(rows) for c in origins(cols)]


def _check_fits(rows: int, cols: int, tile: int) -> None:
    if rows < tile or cols < tile:
        raise ValueError(
            f"image of shape {(rows, cols)} is smaller than the tile ({tile} x {tile}); "
            "pad it first with nucseg.tiling.pad_to(image, (tile, tile))"
        )


def _shape2(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"shape must hold (rows, columns), got {tuple(shape)}")
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must have at least one row and one column, got {tuple(shape)}")
    return rows, cols


def _stride(tile: int, overlap: float) -> int:
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return max(1, round(tile * (1 - overlap)))


def pad_to(
    image: np.ndarray, min_shape: Sequence[int], *, mode: str = "reflect"
) -> tuple[np.ndarray, Slices]:
    """Pad an array so that it has at least ``min_shape`` rows and columns.

    The deficit of each axis is split between its two sides (the extra pixel, if odd, goes after),
    so the image stays centred in its padding; axes already long enough are left alone.

    Parameters
    ----------
    image : (H, W, ...) array
        Image, label image or map; only the first two axes are padded.
    min_shape : (int, int)
        Smallest ``(rows, columns)`` wanted, typically ``(tile, tile)``.
    mode : {"reflect", "symmetric", "edge", "constant"}, optional
        How the new pixels are filled (as :func:`numpy.pad`; "constant" fills with 0). "reflect"
        repeats the reflection when the padding is longer than the image.

    Returns
    -------
    padded : (max(H, min_rows), max(W, min_cols), ...) array
        Same dtype as ``image``; ``image`` itself when no padding is needed.
    crop : (slice, slice)
        ``padded[crop]`` is the original image.

    Examples
    --------
    >>> padded, crop = pad_to(np.array([[1, 2, 3]]), (3, 2))
    >>> padded
    array([[1, 2, 3],
           [1, 2, 3],
           [1, 2, 3]])
    >>> crop
    (slice(1, 2, None), slice(0, 3, None))
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions, got shape {image.shape}")
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; valid modes: {list(PAD_MODES)}")
    min_rows, min_cols = _shape2(min_shape)
    widths = []
    for length, wanted in zip(image.shape[:2], (min_rows, min_cols), strict=True):
        deficit = max(0, wanted - length)
        widths.append((deficit // 2, deficit - deficit // 2))
    crop = tuple(
        slice(before, before + length)
        for (before, _), length in zip(widths, image.shape[:2], strict=True)
    )
    if not any(before or after for before, after in widths):
        return image, crop
    if mode == "reflect" and min(image.shape[:2]) == 1:
        mode = "edge"  # a one-pixel axis reflects onto itself
    widths += [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode=mode), crop


def extract_tiles(array: np.ndarray, grid: Sequence[Slices]) -> np.ndarray:
    """Stack the tiles of ``array`` selected by ``grid``.

    Parameters
    ----------
    array : (H, W, ...) array
        Image, label image or map.
    grid : sequence of (slice, slice)
        Tile positions, as from :func:`tile_grid`; all tiles must have the same size.

    Returns
    -------
    (n, tile, tile, ...) array
        Copies of the tiles, same dtype as ``array``, in the order of ``grid``.

    Examples
    --------
    >>> image = np.arange(12).reshape(3, 4)
    >>> extract_tiles(image, tile_grid(image.shape, tile=3, overlap=0.0))
    array([[[ 0,  1,  2],
            [ 4,  5,  6],
            [ 8,  9, 10]],
    <BLANKLINE>
           [[ 1,  2,  3],
            [ 5,  6,  7],
            [ 9, 10, 11]]])
    """
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"array must have at least 2 dimensions, got shape {array.shape}")
    if len(grid) == 0:
        raise ValueError("grid holds no tiles")
    sizes = {_check_slices(slices, array.shape[:2]) for slices in grid}
    if len(sizes) != 1:
        raise ValueError(f"all tiles must have the same size, got sizes {sorted(sizes)}")
    return np.stack([array[slices] for slices in grid])


def _check_slices(slices: Slices, shape: tuple[int, ...]) -> tuple[int, int]:
    """Return the (rows, cols) size of a tile, or raise if it is not inside ``shape``."""
    size = []
    for sl, length in zip(slices, shape[:2], strict=True):
        start, stop = sl.start or 0, sl.stop
        if sl.step not in (None, 1) or stop is None or not 0 <= start < stop <= length:
            raise ValueError(
                f"tile {slices} is not a step-1 window inside an image of shape {shape[:2]}"
            )
        size.append(stop - start)
    return size[0], size[1]


def blend_window(
    tile: int | tuple[int, int], *, kind: str = "hann", eps: float = 1e-3
) -> np.ndarray:
    """Weights for blending overlapping tiles: high in the middle of a tile, low at its edges.

    Network outputs are least reliable near tile edges, where the receptive field runs out of
    image; weighting each tile by a smooth window before averaging hides the seams.

    Parameters
    ----------
    tile : int or (int, int)
        Side of the square tile, or its ``(rows, columns)``.
    kind : {"hann", "uniform"}, optional
        "hann": outer product of two Hann windows ``sin(pi * (i + 1) / (n + 1)) ** 2``, i.e. the
        Hann window of length ``n + 2`` without its two zero end points. "uniform": all ones (a
        plain average).
    eps : float, optional
        Floor of the weights, > 0, so that pixels on the image border (seen only by tile edges)
        keep a positive weight.

    Returns
    -------
    (rows, cols) float32 array
        Weights in ``[eps, 1]``.

    Examples
    --------
    >>> blend_window(3)
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]], dtype=float32)
    """
    rows, cols = (tile, tile) if np.isscalar(tile) else tuple(tile)
    rows, cols = _shape2((rows, cols))
    if not eps > 0:
        raise ValueError(f"eps must be > 0 so every pixel keeps some weight, got {eps!r}")
    if kind == "uniform":
        return np.ones((rows, cols), dtype=np.float32)
    if kind != "hann":
        raise ValueError(f"unknown window kind {kind!r}; valid kinds: {list(WINDOWS)}")
    window = np.outer(_hann(rows), _hann(cols))
    return np.maximum(window, eps).astype(np.float32)


def _hann(n: int) -> np.ndarray:
    return np.sin(np.pi * np.arange(1, n + 1) / (n + 1)) ** 2


class MapStitcher:
    """Accumulate weighted tile maps into one image-sized map, one tile at a time.

    Holds one ``(H, W, ...)`` float32 sum and one ``(H, W)`` float32 weight array, allocated at the
    first :meth:`add` (from the tile's trailing shape), so memory does not grow with the number of
    tiles.

    Parameters
    ----------
    shape : sequence of int
        ``(rows, columns)`` of the output (extra entries are ignored).
    window : {"hann", "uniform"} or (tile, tile) array, optional
        Weight of each tile pixel: a :func:`blend_window` kind, or the weights themselves (all
        > 0).
    grid : sequence of (slice, slice), optional
        Every tile that will be added (as from :func:`tile_grid`). The pixels of a tile that no
        other tile covers then take its values by a copy, and only the bands shared with other
        tiles are weighted and summed: the same maps (to float32 rounding: x * w / w against x)
        for a fraction of the work (at 8 pixels of overlap on 256-pixel tiles, a ninth of the
        pixels are blended). A tile outside ``grid`` is blended whole, as without ``grid``;
        it must not cover another tile's exclusive pixels.

    Examples
    --------
    >>> stitcher = MapStitcher((2, 3), window="uniform")
    >>> stitcher.add(np.ones((2, 2)), (slice(0, 2), slice(0, 2)))
    >>> stitcher.add(np.zeros((2, 2)), (slice(0, 2), slice(1, 3)))
    >>> stitcher.result()
    array([[1. , 0.5, 0. ],
           [1. , 0.5, 0. ]], dtype=float32)
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        window: str | np.ndarray = "hann",
        grid: Sequence[Slices] | None = None,
    ) -> None:
        self.shape = _shape2(shape)
        if isinstance(window, str):
            if window not in WINDOWS:
                raise ValueError(f"unknown window kind {window!r}; valid kinds: {list(WINDOWS)}")
        else:
            window = np.asarray(window, dtype=np.float32)
            if window.ndim != 2 or not np.all(window > 0):
                raise ValueError(
                    f"window must be a 2-D array of positive weights, got shape {window.shape}"
                    f" and minimum {window.min() if window.size else None}"
                )
        self._window = window
        self._sum: np.ndarray | None = None
        self._weight: np.ndarray | None = None
        self._cores = {} if grid is None else _exclusive_cores(grid, self.shape)

    def _window_for(self, size: tuple[int, int]) -> np.ndarray:
        if isinstance(self._window, str):
            self._window = blend_window(size, kind=self._window)
        if self._window.shape != size:
            raise ValueError(f"window has shape {self._window.shape} but the tile is {size}")
        return self._window

    def add(self, tile_map: np.ndarray, slices: Slices) -> None:
        """Add one tile map covering ``slices`` of the output.

        Parameters
        ----------
        tile_map : (tile, tile, ...) array
            Values for the pixels ``slices`` selects; every tile must have the same trailing
            shape (channels).
        slices : (slice, slice)
            Where the tile lies in the output, as from :func:`tile_grid`.
        """
        tile_map = np.asarray(tile_map)
        size = _check_slices(slices, self.shape)
        if tile_map.shape[:2] != size:
            raise ValueError(f"tile map has shape {tile_map.shape} but {slices} selects {size}")
        if self._sum is None:
            self._sum = np.zeros(self.shape + tile_map.shape[2:], dtype=np.float32)
            self._weight = np.zeros(self.shape, dtype=np.float32)
        elif tile_map.shape[2:] != self._sum.shape[2:]:
            raise ValueError(
                f"tile map has trailing shape {tile_map.shape[2:]}, earlier tiles had "
                f"{self._sum.shape[2:]}"
            )
        window = self._window_for(size)
        core = self._cores.get(_key(slices))
        if core is None:
            self._blend(tile_map, window, slices, (slice(0, size[0]), slice(0, size[1])))
            return
        # Pixels no other tile covers take the tile's values as they are (the weighted average
        # of one value); only the bands that other tiles overlap are blended.
        (r0, r1), (c0, c1) = core
        rows, cols = slices
        out = (slice(rows.start + r0, rows.start + r1), slice(cols.start + c0, cols.start + c1))
        self._sum[out] = tile_map[r0:r1, c0:c1]
        self._weight[out] = 1.0
        full, middle = slice(0, size[1]), slice(r0, r1)
        bands = ((slice(0, r0), full), (slice(r1, size[0]), full),
                 (middle, slice(0, c0)), (middle, slice(c1, size[1])))  # fmt: skip
        for band in bands:
            if band[0].stop > band[0].start and band[1].stop > band[1].start:
                self._blend(tile_map, window, slices, band)

    def _blend(
        self, tile_map: np.ndarray, window: np.ndarray, slices: Slices, band: Slices
    ) -> None:
        """Add the part ``band`` (tile coordinates) of a tile at ``slices``, window-weighted."""
        rows, cols = slices
        out = (slice(rows.start + band[0].start, rows.start + band[0].stop),
               slice(cols.start + band[1].start, cols.start + band[1].stop))  # fmt: skip
        weights = window[band]
        self._sum[out] += tile_map[band] * weights.reshape(
            weights.shape + (1,) * (tile_map.ndim - 2)
        )
        self._weight[out] += weights

    def result(self, *, in_place: bool = False) -> np.ndarray:
        """Return the weighted average of the tiles added so far.

        Parameters
        ----------
        in_place : bool, optional
            Divide the sum where it lies and hand it over (the same values, without a second
            image-sized array: on a slide chunk of 4336 x 4336 pixels and 8 channels, 574 MB
            less at the peak); the stitcher is then empty, as if new.

        Returns
        -------
        (H, W, ...) float32 array
            The output map, with the trailing shape of the tiles.

        Raises
        ------
        ValueError
            If no tile was added or some pixels are covered by no tile.
        """
        if self._sum is None:
            raise ValueError("no tile was added")
        uncovered = int(np.count_nonzero(self._weight == 0))
        if uncovered:
            raise ValueError(f"{uncovered} pixels are covered by no tile; add tiles covering all")
        weight = self._weight.reshape(self.shape + (1,) * (self._sum.ndim - 2))
        if not in_place:
            return self._sum / weight
        out = self._sum
        out /= weight
        self._sum = self._weight = None
        return out


def _key(slices: Slices) -> tuple[int, int, int, int]:
    rows, cols = slices
    return (rows.start, rows.stop, cols.start, cols.stop)


def _exclusive_cores(
    grid: Sequence[Slices], shape: tuple[int, int]
) -> dict[tuple[int, int, int, int], tuple[tuple[int, int], tuple[int, int]]]:
    """Per tile of ``grid``, the rectangle (tile coordinates) of the pixels no other tile covers,
    where those pixels form one rectangle; tiles whose exclusive pixels do not (or that have
    none) are left out and blended whole."""
    cover = np.zeros(shape, dtype=np.uint16)
    for rows, cols in grid:
        cover[rows, cols] += 1
    cores = {}
    for slices in grid:
        alone = cover[slices] == 1
        n = int(np.count_nonzero(alone))
        if not n:
            continue
        r = np.flatnonzero(alone.any(axis=1))
        c = np.flatnonzero(alone.any(axis=0))
        r0, r1, c0, c1 = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
        if (r1 - r0) * (c1 - c0) == n:  # a full rectangle
            cores[_key(slices)] = ((r0, r1), (c0, c1))
    return cores


def stitch_maps(
    tiles: Iterable[np.ndarray],
    grid: Iterable[Slices],
    shape: Sequence[int],
    *,
    window: str | np.ndarray = "hann",
) -> np.ndarray:
    """Blend overlapping tile maps into one map by a window-weighted average.

    Parameters
    ----------
    tiles : (n, tile, tile, ...) array or iterable of (tile, tile, ...) arrays
        Per-tile maps (probabilities, distances, ...), in the order of ``grid``; an iterable
        (such as a generator over predicted batches) is consumed one tile at a time.
    grid : iterable of (slice, slice)
        Where each tile lies, as from :func:`tile_grid`; must hold as many entries as ``tiles``.
    shape : sequence of int
        ``(rows, columns)`` of the output, e.g. ``image.shape``.
    window : {"hann", "uniform"} or (tile, tile) array, optional
        Per-pixel weight of each tile (see :func:`blend_window`).

    Returns
    -------
    (H, W, ...) float32 array
        ``(H, W, C)`` for tiles of shape ``(tile, tile, C)``, ``(H, W)`` for ``(tile, tile)``.
        Where all tiles agree the result equals them, so stitching the tiles cut from an array
        gives back that array.

    Raises
    ------
    ValueError
        If ``tiles`` and ``grid`` differ in length, a tile does not match its slices, or some
        pixel is covered by no tile.

    Examples
    --------
    >>> image = np.arange(15, dtype=np.float32).reshape(3, 5)
    >>> grid = tile_grid(image.shape, tile=3, overlap=0.5)
    >>> np.allclose(stitch_maps(extract_tiles(image, grid), grid, image.shape), image)
    True
    """
    stitcher = MapStitcher(shape, window=window)
    positions = iter(grid)
    count = 0
    for tile_map in tiles:
        slices = next(positions, None)
        if slices is None:
            raise ValueError(f"got more tiles than the {count} positions in grid")
        stitcher.add(tile_map, slices)
        count += 1
    if next(positions, None) is not None:
        raise ValueError(f"grid holds more positions than the {count} tiles given")
    return stitcher.result()
