"""Shared layer of the stain normalisers: registry, base class, optical-density helpers.

Import the normalisers from :mod:`nucseg.stain`; this module exists so that the Macenko,
Reinhard and Vahadane normalisers (:mod:`nucseg.stain`, :mod:`nucseg._vahadane`) depend on one
lower module instead of on each other.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import cv2
import numpy as np

from nucseg._checks import check_image

log = logging.getLogger("nucseg.stain")  # the public module's name

_REGISTRY: dict[str, type[StainNormalizer]] = {}

#: Transmitted light intensity of the optical density ``-ln((I + 1) / Io)`` (see module docstring).
IO = 240.0

#: Reference H&E stain matrix (columns: haematoxylin, eosin; rows: OD in R, G, B) and maximum
#: concentrations, the defaults of the reference Macenko implementations (M. Macenko et al., "A
#: method for normalizing histology slides for quantitative analysis", ISBI 2009; MATLAB code by
#: M. Veta, github.com/mitkovetta/staining-normalization; Python port github.com/schaugf/
#: HEnorm_python; also torchstain and TIAToolbox).
REFERENCE_STAIN_MATRIX = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
REFERENCE_MAX_CONCENTRATIONS = (1.9705, 1.0308)


#: Unit H and E optical-density vectors an estimate is compared with (besides the fitted target's):
#: Macenko's reference and Ruifrok & Johnston's (as ``skimage.color.rgb_from_hed``).
KNOWN_HAEMATOXYLIN = ((0.5626, 0.7201, 0.4062), (0.6500, 0.7040, 0.2860))
KNOWN_EOSIN = ((0.2159, 0.8012, 0.5581), (0.0722, 0.9902, 0.1196))

#: Plausibility of an estimated stain matrix (degrees). On the 44 MoNuSeg and 50 TNBC images the
#: Macenko estimates lie within 12.7 degrees of a known haematoxylin vector and 26.4 of a known
#: eosin vector, and their two vectors at least 15.3 degrees apart.
MAX_HAEMATOXYLIN_ANGLE = 30.0
MAX_EOSIN_ANGLE = 40.0
MIN_STAIN_SEPARATION = 5.0


class NotEnoughTissue(ValueError):
    """An image holds too little usable tissue to estimate stain statistics."""


class StainEstimateWarning(UserWarning):
    """An image's stain estimate was implausible and the target's stain vectors were used."""


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between two vectors."""
    cosine = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


#: Below this difference (degrees) between the two pairings' angle sums, :func:`assign_stains`
#: does not trust the angles and asks which stain is the sparser one.
ASSIGNMENT_MARGIN = 10.0
#: ... and the sparser stain is haematoxylin only if it is this many times sparser; otherwise the
#: reference code's rule (the vector absorbing more red) decides, as for a tile of one stain.
SPARSITY_CONTRAST = 1.5


def stain_sparsity(stains: np.ndarray, tissue_od: np.ndarray) -> np.ndarray:
    """Each stain's 99th-percentile to median concentration ratio over ``(3, N)`` tissue ODs.

    Haematoxylin, which stains nuclei, is the sparser stain of H&E (the larger ratio).
    """
    concentrations = np.maximum(_mix(np.linalg.pinv(stains), tissue_od), 0)
    high, middle = np.percentile(concentrations, [99, 50], axis=1)
    return high / np.maximum(middle, 1e-3)


def assign_stains(
    stains: np.ndarray, reference: np.ndarray | None, tissue_od: np.ndarray | None = None
) -> np.ndarray:
    """Order two estimated stain vectors as (haematoxylin, eosin).

    Estimators find two directions without knowing which stain each is. The reference code's
    fixed rule ("haematoxylin absorbs more red") swaps the stains of palettes far from TCGA's,
    such as a brownish-purple haematoxylin with a lavender eosin, and the network then segments
    the stroma. Here the pairing with the smaller sum of angles to the reference's haematoxylin
    and eosin columns is kept when the two pairings differ by at least
    :data:`ASSIGNMENT_MARGIN` degrees. When they are closer (both vectors turned far from the
    reference, where angles cannot tell), the structure decides: haematoxylin, which stains
    nuclei, is the sparser stain, with the larger ratio of 99th-percentile to median
    concentration over tissue, if it is at least :data:`SPARSITY_CONTRAST` times sparser. When
    neither test is clear (a tile showing one stain only), the vector absorbing more red is
    haematoxylin, as in the reference code. On the MoNuSeg and TNBC images the sparsity ratio
    is larger for haematoxylin on every image.

    Parameters
    ----------
    stains : (3, 2) array
        Unit stain vectors in columns.
    reference : (3, 2) array or None
        The target's stain vectors; None: the red rule alone decides.
    tissue_od : (3, N) array, optional
        Tissue optical densities, for the sparsity test; without them the angles decide.

    Returns
    -------
    (3, 2) array
        ``stains`` or its columns swapped.

    Examples
    --------
    >>> reference = np.array(REFERENCE_STAIN_MATRIX)
    >>> bool((assign_stains(reference[:, ::-1], reference) == reference).all())
    True
    """
    stains = np.asarray(stains, dtype=np.float64)
    red_rule = bool(stains[0, 0] < stains[0, 1])  # swap unless H absorbs more red
    if reference is None:
        return np.ascontiguousarray(stains[:, ::-1] if red_rule else stains)
    reference = np.asarray(reference, dtype=np.float64)
    kept = _angle(stains[:, 0], reference[:, 0]) + _angle(stains[:, 1], reference[:, 1])
    swapped = _angle(stains[:, 1], reference[:, 0]) + _angle(stains[:, 0], reference[:, 1])
    swap = swapped < kept
    if abs(kept - swapped) < ASSIGNMENT_MARGIN and tissue_od is not None and tissue_od.size:
        sparsity = stain_sparsity(stains, tissue_od)
        if max(sparsity) >= SPARSITY_CONTRAST * min(sparsity):
            swap = bool(sparsity[1] > sparsity[0])
        else:  # neither angles nor structure can tell (e.g. one stain only): the red rule
            swap = red_rule
    return np.ascontiguousarray(stains[:, ::-1] if swap else stains)


def implausible_stains(stains: np.ndarray, target: np.ndarray | None = None) -> str | None:
    """Why a (haematoxylin, eosin) stain matrix is not believable, or None if it is.

    Rejected: a negative optical density, two vectors closer than
    :data:`MIN_STAIN_SEPARATION`, or a vector farther than :data:`MAX_HAEMATOXYLIN_ANGLE` /
    :data:`MAX_EOSIN_ANGLE` from every known vector of its stain (:data:`KNOWN_HAEMATOXYLIN`,
    :data:`KNOWN_EOSIN` and the target's).
    """
    stains = np.asarray(stains, dtype=np.float64)
    if stains.min() < -0.05:
        return f"a stain vector has negative optical density ({stains.min():.2f})"
    separation = _angle(stains[:, 0], stains[:, 1])
    if separation < MIN_STAIN_SEPARATION:
        return f"the two stain vectors are {separation:.1f} degrees apart"
    for column, name, known, limit in (
        (0, "haematoxylin", KNOWN_HAEMATOXYLIN, MAX_HAEMATOXYLIN_ANGLE),
        (1, "eosin", KNOWN_EOSIN, MAX_EOSIN_ANGLE),
    ):
        candidates = [np.array(v) for v in known]
        if target is not None:
            candidates.append(np.asarray(target, dtype=np.float64)[:, column])
        nearest = min(_angle(stains[:, column], v) for v in candidates)
        if nearest > limit:
            return f"the {name} vector is {nearest:.0f} degrees from every known {name} vector"
    return None


def register(name: str) -> Callable[[type[StainNormalizer]], type[StainNormalizer]]:
    """Class decorator: make a :class:`StainNormalizer` subclass available as ``name``."""

    def decorator(cls: type[StainNormalizer]) -> type[StainNormalizer]:
        if name in _REGISTRY:
            raise ValueError(f"a stain normaliser named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_normalizers() -> list[str]:
    """Names of the registered normalisers, sorted."""
    return sorted(_REGISTRY)


def get_normalizer(name: str, **params: Any) -> StainNormalizer:
    """Build the normaliser registered as ``name`` with keyword ``params``.

    Raises
    ------
    KeyError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stain normaliser {name!r}; valid: {list_normalizers()}") from None
    return cls(**params)


def tissue_mask(image: np.ndarray, *, io: float = IO, beta: float = 0.15) -> np.ndarray:
    """Pixels whose optical density ``-ln((I + 1) / io)`` is at least ``beta`` in every channel.

    Returns
    -------
    (H, W) bool array
    """
    image = check_image(image)
    return _tissue_mask(image, io, beta)


def _tissue_mask(image: np.ndarray, io: float, beta: float) -> np.ndarray:
    # OD >= beta  <=>  I <= io * exp(-beta) - 1, so test the brightest channel in uint8.
    brightest = np.floor(io * np.exp(-beta) - 1.0 + 1e-9)
    if brightest < 0:
        return np.zeros(image.shape[:-1], dtype=bool)
    channels = image[..., 0], image[..., 1], image[..., 2]
    return np.maximum(np.maximum(channels[0], channels[1]), channels[2]) <= min(brightest, 255)


def _channel_od(pixels: np.ndarray, io: float) -> np.ndarray:
    """Optical densities of ``(N, 3)`` uint8 pixels as a ``(3, N)`` float32 array.

    Channels first, so that every per-channel operation below runs on contiguous rows.
    """
    table = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / io)).astype(np.float32)
    return table[pixels.T]


def _mix(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix @ rows`` for a small ``(J, K)`` matrix and ``(K, N)`` rows, row by row.

    Element-wise on contiguous rows: faster and steadier than BLAS for K = 3, N in millions.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    out = np.empty((matrix.shape[0], rows.shape[1]), dtype=rows.dtype)
    for j, weights in enumerate(matrix):
        out[j] = rows[0] * rows.dtype.type(weights[0])
        for k in range(1, len(weights)):
            out[j] += rows[k] * rows.dtype.type(weights[k])
    return out


def _stain_target_defaults() -> dict[str, Any]:
    """The reference H&E target of the stain-matrix normalisers (Macenko, Vahadane)."""
    return {
        "stain_matrix": [list(row) for row in REFERENCE_STAIN_MATRIX],
        "max_concentrations": list(REFERENCE_MAX_CONCENTRATIONS),
    }


def _check_stain_target(target: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``target`` is a stain matrix and two max concentrations."""
    _check_array(target, "stain_matrix", (3, 2))
    _check_array(target, "max_concentrations", (2,), positive=True)


def _od_to_rgb(od: np.ndarray, io: float, shape: tuple[int, ...]) -> np.ndarray:
    """``(3, N)`` optical densities (overwritten) -> ``shape`` intensities, clipped at 255."""
    np.maximum(od, np.float32(np.log(io / 255.0)), out=od)
    np.exp(-od, out=od)
    od *= np.float32(io)
    return od.T.reshape(shape)


def stain_matrix_fallback(
    image: np.ndarray, target: dict[str, Any], *, io: float, beta: float
) -> dict[str, Any] | None:
    """Statistics of ``image`` under the target's own stain vectors (None: too little tissue).

    The fallback of an implausible estimate: the image is taken to be stained like the target,
    and only its concentrations are measured (99th percentile over tissue), so that its
    intensity is still normalised.
    """
    stains = np.asarray(target["stain_matrix"], dtype=np.float64)
    mask = _tissue_mask(image, io, beta).ravel()
    tissue = _channel_od(np.compress(mask, image.reshape(-1, 3), axis=0), io)
    if tissue.shape[1] < 3:
        return None
    max_conc = np.percentile(_mix(np.linalg.pinv(stains), tissue), 99, axis=1)
    if not np.all(np.isfinite(max_conc)) or max_conc.min() <= 1e-3:
        return None
    return {"stain_matrix": stains.tolist(), "max_concentrations": max_conc.tolist()}


class StainNormalizer:
    """Base class: subclasses implement the ``_estimate`` / ``_apply`` pair.

    ``_estimate(image)`` returns the statistics of an image as a dict of JSON-serialisable values
    or raises :class:`NotEnoughTissue`; ``fit`` stores them as the target. ``_apply(image,
    source)`` maps an image with statistics ``source`` onto the target.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.target: dict[str, Any] | None = self._default_target()
        self.last_estimate: dict[str, Any] | None = None

    # -- subclass hooks --
    def _default_target(self) -> dict[str, Any] | None:
        return None

    def _params(self) -> dict[str, Any]:
        return {}

    def _estimate(self, image: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(self, image: np.ndarray, source: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def _check_target(self, target: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless ``target`` is usable (called by :meth:`from_dict`)."""

    # -- public interface --
    def fit(self, target: np.ndarray) -> Self:
        """Estimate the target statistics from ``target``, an ``(H, W, 3) uint8`` RGB image.

        Raises
        ------
        ValueError
            If ``target`` is not an RGB uint8 image or holds too little tissue.
        """
        target = check_image(target, name="target")
        try:
            self.target = self._estimate(target)
        except (NotEnoughTissue, np.linalg.LinAlgError) as err:
            raise ValueError(
                f"cannot fit the {self.name} stain normaliser: {err}; fit on an image with more "
                "stained tissue"
            ) from err
        return self

    def _implausible(self, source: dict[str, Any]) -> str | None:
        """Why ``source`` statistics are not believable (None: they are); a subclass hook."""
        return None

    def _fallback(self, image: np.ndarray) -> dict[str, Any] | None:
        """Statistics to use when the estimate is implausible (None: leave the image as it is)."""
        return None

    def _require_target(self) -> None:
        if self.target is None:
            raise RuntimeError(
                f"the {self.name} stain normaliser has no target: call fit(target) first or "
                "rebuild a fitted one with StainNormalizer.from_dict"
            )

    def estimate(self, image: np.ndarray, *, warn: bool = True) -> dict[str, Any]:
        """The stain statistics of ``image``, checked, with a fallback: never raises on content.

        Returns a dict of the statistics :meth:`apply` takes, plus ``accepted`` (the image's own
        estimate is used) and ``reason`` (why not; None if accepted). An image with too little
        tissue gets ``{"accepted": False, "identity": True, ...}`` (left unchanged, as a blank
        tile should be). An estimate that is implausible (for the stain-matrix normalisers: see
        :func:`implausible_stains`) is replaced by the normaliser's fallback, the target's own
        stain vectors, with a :class:`StainEstimateWarning`. Fit once and apply to many images
        (the chunks of a slide) with ``apply(chunk, estimate(overview))``. ``warn=False``
        falls back without the warning (the result's ``reason`` still says why), for callers
        that normalise many small tiles and expect rejections (training).

        Raises
        ------
        RuntimeError
            If the normaliser has no target.
        """
        image = check_image(image)
        self._require_target()
        try:
            source = self._estimate(image)
        except (NotEnoughTissue, np.linalg.LinAlgError) as err:
            log.debug("%s: image of shape %s returned unchanged: %s", self.name, image.shape, err)
            return {"accepted": False, "identity": True, "reason": f"too little tissue: {err}"}
        reason = self._implausible(source)
        if reason is None:
            return {**source, "accepted": True, "reason": None}
        fallback = self._fallback(image)
        what = "the target's stain vectors" if fallback is not None else "the image unchanged"
        if warn:
            warnings.warn(
                f"{self.name} stain estimate rejected ({reason}); using {what}",
                StainEstimateWarning,
                stacklevel=2,
            )
        if fallback is None:
            return {"accepted": False, "identity": True, "reason": reason}
        return {**fallback, "accepted": False, "reason": reason}

    def apply(self, image: np.ndarray, source: dict[str, Any]) -> np.ndarray:
        """Map ``image`` onto the target with given statistics (:meth:`estimate`'s output)."""
        image = check_image(image)
        self._require_target()
        if source.get("identity"):
            return image.copy()
        out = self._apply(image, source)
        if not np.all(np.isfinite(out)):  # cannot happen with a valid source; belt and braces
            log.debug("%s: non-finite output; image returned unchanged", self.name)
            return image.copy()
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def colour_table(self, source: dict[str, Any]) -> np.ndarray:
        """:meth:`apply` with statistics ``source`` for every 24-bit colour, as a table.

        Every normaliser maps each pixel by its colour alone once the statistics are fixed, so
        a slide normalised with one set of statistics can be mapped through this table
        (:func:`apply_colour_table`) with the same result as :meth:`apply`, about five times
        faster. The table is ``(2**24,) uint32`` (64 MB), each entry the output's RGB bytes
        and a zero byte, so that a pixel is mapped by one gather. Built in blocks of a million
        colours (about 1.5 s).
        """
        table = np.zeros((1 << 24, 4), dtype=np.uint8)
        block = 1 << 20
        for start in range(0, 1 << 24, block):
            codes = np.arange(start, start + block, dtype=np.uint32)
            colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1)
            table[start : start + block, :3] = self.apply(
                colours.astype(np.uint8).reshape(1024, 1024, 3), source
            ).reshape(-1, 3)
        return table.view(np.uint32).ravel()

    def transform(self, image: np.ndarray) -> np.ndarray:
        """Return ``image`` with its staining mapped onto the target, as ``(H, W, 3) uint8``.

        ``apply(image, estimate(image))``: an image with too little tissue is returned unchanged
        (a copy), an implausible estimate falls back with a warning. What happened to the last
        image is in :attr:`last_estimate` (``accepted``, ``reason``), for quality reports.

        Raises
        ------
        RuntimeError
            If the normaliser has no target: it has no default and was not fitted.
        """
        source = self.estimate(image)
        self.last_estimate = {"accepted": source["accepted"], "reason": source["reason"]}
        return self.apply(image, source)

    def to_dict(self) -> dict[str, Any]:
        """Name, parameters and target statistics, all JSON-serialisable."""
        return {"name": self.name, "params": self._params(), "target": copy.deepcopy(self.target)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StainNormalizer:
        """Rebuild a normaliser from :meth:`to_dict` output.

        Raises
        ------
        KeyError
            If the name is not registered.
        TypeError
            If called on a subclass that does not match the stored name.
        ValueError
            If the stored target is malformed.
        """
        normalizer = get_normalizer(state["name"], **state.get("params", {}))
        if not isinstance(normalizer, cls):
            raise TypeError(f"state describes {state['name']!r}, not a {cls.__name__}")
        target = state.get("target")
        if target is not None:
            target = dict(target)
            normalizer._check_target(target)
        normalizer.target = target
        return normalizer

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"


def _macenko_stain_vectors(
    tissue_od: np.ndarray, alpha: float, reference: np.ndarray | None = None
) -> np.ndarray:
    """(3, 2) unit stain vectors (haematoxylin, eosin) of ``(3, N)`` tissue optical densities.

    The two extreme directions are assigned to haematoxylin and eosin by ``reference``'s
    columns (:func:`assign_stains`); without one, the vector absorbing more red comes first.
    """
    centred = tissue_od - tissue_od.mean(axis=1, dtype=np.float64)[:, None].astype(np.float32)
    covariance = (centred @ centred.T).astype(np.float64) / max(tissue_od.shape[1] - 1, 1)
    _, eigenvectors = np.linalg.eigh(covariance)
    plane = eigenvectors[:, [1, 2]]  # second and first principal directions
    if plane[:, 1].sum() < 0:  # point the principal direction towards positive density
        plane[:, 1] *= -1
    projected = _mix(plane.T, tissue_od)
    angles = np.arctan2(projected[1], projected[0])
    low, high = np.percentile(angles, [alpha, 100.0 - alpha])
    stains = plane @ np.array([[np.cos(low), np.cos(high)], [np.sin(low), np.sin(high)]])
    stains *= np.where(stains.sum(axis=0) < 0, -1.0, 1.0)
    norms = np.linalg.norm(stains, axis=0)
    if not np.all(np.isfinite(stains)) or norms.min() < 1e-6:
        raise NotEnoughTissue("no stain direction could be estimated")
    stains /= norms
    stains = assign_stains(stains, reference, tissue_od)
    cosine = float(stains[:, 0] @ stains[:, 1])
    if cosine > np.cos(np.deg2rad(1.0)):
        raise NotEnoughTissue(
            f"the two stain vectors are less than 1 degree apart (cosine {cosine:.6f}): the "
            "tissue shows a single colour"
        )
    return np.ascontiguousarray(stains)


def _rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of an RGB uint8 image, float32: L in [0, 100], a and b about [-128, 127]."""
    return cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def _check_array(
    target: dict[str, Any], key: str, shape: tuple[int, ...], *, positive: bool = False
) -> None:
    """Raise ``ValueError`` unless ``target[key]`` is a finite array of ``shape`` (> 0 if asked)."""
    try:
        value = np.asarray(target[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"target needs a numeric {key!r} of shape {shape}: {err!r}") from err
    if value.shape != shape or not np.all(np.isfinite(value)) or (positive and value.min() <= 0):
        kind = "positive finite" if positive else "finite"
        raise ValueError(f"target {key!r} must be {kind} with shape {shape}, got {value.tolist()}")


def apply_colour_table(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``image`` mapped through a :meth:`StainNormalizer.colour_table`: ``(H, W, 3) uint8`` (a
    view of a 4-channel array, not contiguous)."""
    code = image[..., 0].astype(np.uint32) << 16
    code |= image[..., 1].astype(np.uint32) << 8
    code |= image[..., 2]
    return table[code].view(np.uint8).reshape(image.shape[:2] + (4,))[..., :3]


def read_normaliser(folder: str | os.PathLike) -> StainNormalizer | None:
    """The stain normaliser a model folder was trained with (its ``normaliser.json``, written by
    :meth:`StainNormalizer.to_dict`), or None when the folder has none."""
    path = Path(folder) / "normaliser.json"
    if not path.is_file():
        return None
    return StainNormalizer.from_dict(json.loads(path.read_text()))
