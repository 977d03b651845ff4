"""Nucleus types from a network's per-pixel type probabilities: one vote per instance (numpy only).

A model with a type head outputs ``type_channels`` logits per pixel after its class and distance
channels; :mod:`nucseg.infer` turns them into probabilities with a softmax. Channel 0 is
"background / no type"; channels 1.. are the types, CoNSeP's four as in HoVer-Net (Graham et al.
2019): 1 other, 2 inflammatory, 3 epithelial, 4 spindle-shaped.

Each nucleus gets one type, as HoVer-Net's NC branch is read: the type probabilities are averaged
over the nucleus's pixels, the background channel is left out and the rest renormalised to sum 1
(the nucleus is a nucleus: the segmentation decided that), and the type is the most probable one.
HoVer-Net itself takes the majority of the pixels' arg-max types; the mean of probabilities is
its soft form and also gives each nucleus a probability per type.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Type names by channel (channel 0, background, has none), lower case as in the outputs.
TYPE_NAMES: tuple[str, ...] = ("other", "inflammatory", "epithelial", "spindle")

#: RGB colour of each type for viewers and QuPath's ``classification`` (QuPath's own colours for
#: its "Tumor", "Immune cells" and "Stroma" classes for the three that correspond).
TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "other": (255, 200, 0),
    "inflammatory": (160, 90, 160),
    "epithelial": (200, 0, 0),
    "spindle": (150, 200, 150),
}


def type_names(type_channels: int) -> tuple[str, ...]:
    """Names of the types of a head with ``type_channels`` channels (background included)."""
    if type_channels - 1 != len(TYPE_NAMES):
        raise ValueError(
            f"a type head has {len(TYPE_NAMES) + 1} channels (background and "
            f"{', '.join(TYPE_NAMES)}), got {type_channels}"
        )
    return TYPE_NAMES


def prob_column(name: str) -> str:
    """The output column holding a nucleus's probability of type ``name``."""
    return f"type_prob_{name}"


@dataclasses.dataclass(frozen=True)
class NucleusTypes:
    """The voted type of each nucleus of a label image.

    Attributes
    ----------
    labels : (N,) int64 array
        Label values, increasing.
    probs : (N, K) float32 array
        Probability of each of the K types (background left out; rows sum to 1).
    names : tuple of str
        The K type names, in channel order.
    """

    labels: np.ndarray
    probs: np.ndarray
    names: tuple[str, ...]

    @property
    def index(self) -> np.ndarray:
        """``(N,)`` index of each nucleus's type in :attr:`names` (the arg-max)."""
        return np.argmax(self.probs, axis=1) if len(self.probs) else np.zeros(0, np.intp)

    def columns(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Output columns for the nuclei ``labels`` (each must be one of :attr:`labels`):
        ``type`` (name) and ``type_prob_<name>`` per type."""
        labels = np.asarray(labels, dtype=np.int64)
        rows = np.searchsorted(self.labels, labels)
        if labels.size and (rows.max() >= self.labels.size or np.any(self.labels[rows] != labels)):
            raise KeyError("some labels have no voted type")
        out = {"type": np.asarray(self.names, dtype=object)[self.index[rows]]}
        for k, name in enumerate(self.names):
            out[prob_column(name)] = self.probs[rows, k].astype(np.float32)
        return out


def vote_types(labels: np.ndarray, type_probs: np.ndarray) -> NucleusTypes:
    """One type per nucleus: mean type probabilities over its pixels, background left out.

    Parameters
    ----------
    labels : (H, W) integer array
        Instance labels, 0 = background.
    type_probs : (H, W, C) float array
        Per-pixel probabilities of the type head (channel 0 background), e.g. a softmax.

    Returns
    -------
    NucleusTypes
        For each label present, the mean of channels 1..C-1 over its pixels, renormalised to
        sum 1 (uniform where they sum to 0).

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2]])
    >>> probs = np.zeros((1, 4, 5), np.float32)
    >>> probs[0, 0, 1] = probs[0, 1, 3] = probs[0, 3, 2] = 1.0
    >>> probs[0, 2, 0] = 1.0  # background pixel: no vote
    >>> t = vote_types(labels, probs)
    >>> t.labels.tolist(), [t.names[i] for i in t.index], t.probs[0].tolist()
    ([1, 2], ['other', 'inflammatory'], [0.5, 0.0, 0.5, 0.0])
    """
    labels = np.asarray(labels)
    type_probs = np.asarray(type_probs)
    if type_probs.ndim != 3 or type_probs.shape[:2] != labels.shape:
        raise ValueError(
            f"type_probs must be (rows, cols, channels) over the labels' {labels.shape} pixels, "
            f"got {type_probs.shape}"
        )
    names = type_names(type_probs.shape[2])
    rows, cols = np.nonzero(labels)  # only the nuclei's pixels vote: gather just those
    flat = labels[rows, cols].astype(np.intp)
    votes = type_probs[rows, cols, 1:]
    top = int(flat.max(initial=0))
    present = np.flatnonzero(np.bincount(flat, minlength=top + 1)[1:]) + 1
    sums = np.stack(
        [
            np.bincount(flat, weights=votes[:, k], minlength=top + 1)[present]
            for k in range(votes.shape[1])
        ],
        axis=1,
    ).reshape(present.size, len(names))
    total = sums.sum(axis=1, keepdims=True)
    probs = np.where(total > 0, sums / np.where(total > 0, total, 1), 1.0 / len(names))
    return NucleusTypes(present.astype(np.int64), probs.astype(np.float32), names)


#: Side of the square cells, in um, over which the tumour region is found (see :func:`densities`).
TUMOUR_CELL_UM = 100.0
#: A cell is tumour region when it holds at least this many epithelial nuclei ...
TUMOUR_MIN_EPITHELIAL = 10
#: ... and epithelial nuclei are at least this share of its nuclei.
TUMOUR_MIN_SHARE = 0.5


def densities(
    kinds: np.ndarray,
    x_um: np.ndarray,
    y_um: np.ndarray,
    *,
    tissue_mm2: float,
    names: tuple[str, ...] = TYPE_NAMES,
) -> dict:
    """Counts and densities per type for a slide's report.

    The tumour region is defined simply: the slide is cut into square cells of
    :data:`TUMOUR_CELL_UM` um (0.01 mm2); a cell belongs to it when at least
    :data:`TUMOUR_MIN_EPITHELIAL` of its nuclei are epithelial and they are at least
    :data:`TUMOUR_MIN_SHARE` of its nuclei (a gland or a tumour nest, not a scattered cell). Its
    area is the number of such cells times 0.01 mm2 (glass inside a cell counts).

    Parameters
    ----------
    kinds : (N,) array of str
        Each nucleus's type name.
    x_um, y_um : (N,) float arrays
        Centroids in um.
    tissue_mm2 : float
        Tissue area of the slide.

    Returns
    -------
    dict
        ``counts`` and ``per_mm2_tissue`` by name (densities None without tissue);
        ``tumour_region``: its ``definition``, ``area_mm2``, ``nuclei`` by name inside it and
        ``inflammatory_per_mm2`` (None when the region is empty).
    """
    kinds = np.asarray(kinds).astype(str)
    counts = {n: int(np.count_nonzero(kinds == n)) for n in names}
    per_mm2 = {n: (c / tissue_mm2 if tissue_mm2 > 0 else None) for n, c in counts.items()}
    cell = np.stack([np.floor_divide(y_um, TUMOUR_CELL_UM), np.floor_divide(x_um, TUMOUR_CELL_UM)])
    cells, which = np.unique(cell.astype(np.int64), axis=1, return_inverse=True)
    which = which.ravel()
    total = np.bincount(which, minlength=cells.shape[1])
    epi = np.bincount(which, weights=kinds == "epithelial", minlength=cells.shape[1])
    tumour = (epi >= TUMOUR_MIN_EPITHELIAL) & (epi >= TUMOUR_MIN_SHARE * np.maximum(total, 1))
    inside = tumour[which] if which.size else np.zeros(0, bool)
    area = float(np.count_nonzero(tumour)) * (TUMOUR_CELL_UM / 1000.0) ** 2
    region = {n: int(np.count_nonzero(inside & (kinds == n))) for n in names}
    return {
        "counts": counts,
        "per_mm2_tissue": per_mm2,
        "tumour_region": {
            "definition": (
                f"{TUMOUR_CELL_UM:g} um square cells with >= {TUMOUR_MIN_EPITHELIAL} epithelial "
                f"nuclei making >= {TUMOUR_MIN_SHARE:.0%} of the cell's nuclei"
            ),
            "area_mm2": area,
            "nuclei": region,
            "inflammatory_per_mm2": region.get("inflammatory", 0) / area if area > 0 else None,
        },
    }
