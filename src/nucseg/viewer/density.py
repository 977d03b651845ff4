"""The density map of a slide's nuclei: centroids counted in square cells, as a colour PNG."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["density_map"]

#: Most cells along the longest side, and the smallest cell (microns) when the mpp is known.
MAX_CELLS = 256
MIN_CELL_UM = 32.0


def density_map(nuclei: Any, shape: tuple[int, int], *, mpp: float | None) -> dict[str, Any]:
    """Nuclei per mm^2 (per cell without mpp) of a slide of ``shape`` = (rows, cols) level-0
    pixels, coloured with matplotlib's ``magma`` up to its 99th percentile; empty cells clear.

    Returns
    -------
    dict
        ``png`` (bytes), ``cell`` (level-0 pixels), ``rows``, ``cols``, ``scale_max`` (the value
        of the brightest colour) and ``unit``.
    """
    from matplotlib import colormaps
    from PIL import Image

    cell = max(shape) / MAX_CELLS
    if mpp is not None:
        cell = max(cell, MIN_CELL_UM / mpp)
    cell = max(float(np.ceil(cell)), 1.0)
    counts = nuclei.density(shape, cell=cell)
    values = counts.astype(float)
    unit = "nuclei per cell"
    if mpp is not None:
        values /= (cell * mpp / 1000) ** 2
        unit = "nuclei per mm²"
    positive = values[values > 0]
    top = float(np.percentile(positive, 99)) if positive.size else 1.0
    rgba = colormaps["magma"](np.clip(values / top, 0, 1), bytes=True)
    rgba[..., 3] = np.where(counts > 0, 210, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    rows, cols = counts.shape
    return {"png": buffer.getvalue(), "cell": cell, "rows": rows, "cols": cols,
            "scale_max": top, "unit": unit}  # fmt: skip
