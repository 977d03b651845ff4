"""Stain normalisation of H&E images: ``fit(target)`` once, then ``transform(image)`` many times.

Normalisers share the :class:`StainNormalizer` interface and sit in a registry filled by the
:func:`register` decorator; :func:`get_normalizer` builds one by name. The fitted parameters are
plain JSON (:meth:`StainNormalizer.to_dict`), so a normaliser fitted on the training data can be
saved beside a model and rebuilt with :meth:`StainNormalizer.from_dict`. Registered: ``macenko``,
``reinhard`` and ``vahadane`` (:class:`nucseg._vahadane.VahadaneNormalizer`).

Robustness: ``transform`` never raises on image content. A tile with too little tissue (white,
empty, black, one colour, a few pixels) cannot yield source statistics; it is returned unchanged
and a debug message is logged. ``fit`` raises ``ValueError`` on such a target instead. Outputs are
``uint8``, clipped, never NaN.

Tissue pixels follow Macenko et al.: optical density ``OD = -ln((I + 1) / Io)`` of at least
``beta`` in every channel, with ``Io = 240``. 240, not 255, is the transmitted light intensity of
the reference implementations (Macenko's MATLAB code, its Python port HEnorm_python, torchstain),
from which the default Macenko target comes; keeping it makes that target mean what it meant
there. With ``Io = 240`` and ``beta = 0.15`` a pixel is tissue when every channel is <= 205.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Self

import cv2
import numpy as np

from nucseg._checks import check_image

log = logging.getLogger(__name__)

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


class NotEnoughTissue(ValueError):
    """An image holds too little usable tissue to estimate stain statistics."""


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


class StainNormalizer:
    """Base class: subclasses implement the ``_estimate`` / ``_apply`` pair.

    ``_estimate(image)`` returns the statistics of an image as a dict of JSON-serialisable values
    or raises :class:`NotEnoughTissue`; ``fit`` stores them as the target. ``_apply(image,
    source)`` maps an image with statistics ``source`` onto the target.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.target: dict[str, Any] | None = self._default_target()

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

    def transform(self, image: np.ndarray) -> np.ndarray:
        """Return ``image`` with its staining mapped onto the target, as ``(H, W, 3) uint8``.

        An image with too little tissue to estimate its staining is returned unchanged (a copy).

        Raises
        ------
        RuntimeError
            If the normaliser has no target: it has no default and was not fitted.
        """
        image = check_image(image)
        if self.target is None:
            raise RuntimeError(
                f"the {self.name} stain normaliser has no target: call fit(target) first or "
                "rebuild a fitted one with StainNormalizer.from_dict"
            )
        try:
            source = self._estimate(image)
        except (NotEnoughTissue, np.linalg.LinAlgError) as err:
            log.debug("%s: image of shape %s returned unchanged: %s", self.name, image.shape, err)
            return image.copy()
        out = self._apply(image, source)
        if not np.all(np.isfinite(out)):  # cannot happen with a valid source; belt and braces
            log.debug("%s: non-finite output; image returned unchanged", self.name)
            return image.copy()
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

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


@register("macenko")
class MacenkoNormalizer(StainNormalizer):
    """Macenko et al. (ISBI 2009) stain normalisation.

    Stain vectors are the extreme angles (``alpha`` and ``100 - alpha`` percentiles) of tissue
    optical densities projected on the plane of their two principal eigenvectors; the vector with
    the larger red component is haematoxylin. Concentrations come from least squares; each stain's
    concentrations are scaled so that their 99th percentile matches the target's, then the image
    is rebuilt with the target stain vectors. Unfitted, the target is the reference
    (:data:`REFERENCE_STAIN_MATRIX`, :data:`REFERENCE_MAX_CONCENTRATIONS`).

    Unlike the reference code, the 99th percentile is taken over tissue pixels only (not every
    pixel), so that a tile mostly of background does not get its stains scaled up many-fold; on
    a tile covered with tissue the two agree.

    Parameters
    ----------
    io : float, optional
        Transmitted light intensity of ``OD = -ln((I + 1) / io)``.
    alpha : float, optional
        Percentile (in percent) of the angles that defines the extreme stain vectors.
    beta : float, optional
        Minimum optical density, in every channel, of a tissue pixel.
    min_tissue_pixels : int, optional
        Fewer tissue pixels than this and the image is not estimated (returned unchanged).
    """

    def __init__(
        self,
        *,
        io: float = IO,
        alpha: float = 1.0,
        beta: float = 0.15,
        min_tissue_pixels: int = 100,
    ) -> None:
        if not (io > 0 and 0 <= alpha < 50 and beta >= 0 and min_tissue_pixels >= 1):
            raise ValueError(
                "need io > 0, 0 <= alpha < 50, beta >= 0 and min_tissue_pixels >= 1; got "
                f"io={io}, alpha={alpha}, beta={beta}, min_tissue_pixels={min_tissue_pixels}"
            )
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)
        self.min_tissue_pixels = int(min_tissue_pixels)
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {
            "io": self.io,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_tissue_pixels": self.min_tissue_pixels,
        }

    def _default_target(self) -> dict[str, Any]:
        return _stain_target_defaults()

    def _check_target(self, target: dict[str, Any]) -> None:
        _check_stain_target(target)

    def _estimate(self, image: np.ndarray) -> dict[str, Any]:
        mask = _tissue_mask(image, self.io, self.beta).ravel()
        tissue = _channel_od(np.compress(mask, image.reshape(-1, 3), axis=0), self.io)
        if tissue.shape[1] < max(self.min_tissue_pixels, 3):
            raise NotEnoughTissue(
                f"{tissue.shape[1]} tissue pixels (optical density >= {self.beta} in every "
                f"channel), fewer than {self.min_tissue_pixels}"
            )
        stains = _macenko_stain_vectors(tissue, self.alpha)
        concentrations = _mix(np.linalg.pinv(stains), tissue)
        max_conc = np.percentile(concentrations, 99, axis=1)
        if not np.all(np.isfinite(max_conc)) or max_conc.min() <= 1e-3:
            raise NotEnoughTissue(f"99th-percentile stain concentrations {max_conc} are ~0")
        return {"stain_matrix": stains.tolist(), "max_concentrations": max_conc.tolist()}

    def _apply(self, image: np.ndarray, source: dict[str, Any]) -> np.ndarray:
        od = _channel_od(image.reshape(-1, 3), self.io)
        src_stains = np.asarray(source["stain_matrix"], dtype=np.float64)
        tgt_stains = np.asarray(self.target["stain_matrix"], dtype=np.float64)
        scale = np.asarray(self.target["max_concentrations"]) / np.asarray(
            source["max_concentrations"]
        )
        # OD -> concentrations -> rescaled -> target OD, folded into one 3x3 matrix.
        mapping = tgt_stains @ (scale[:, None] * np.linalg.pinv(src_stains))
        return _od_to_rgb(_mix(mapping, od), self.io, image.shape)


def _macenko_stain_vectors(tissue_od: np.ndarray, alpha: float) -> np.ndarray:
    """(3, 2) unit stain vectors (haematoxylin, eosin) of ``(3, N)`` tissue optical densities."""
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
    if stains[0, 0] < stains[0, 1]:  # haematoxylin absorbs more red than eosin: put it first
        stains = stains[:, ::-1]
    cosine = float(stains[:, 0] @ stains[:, 1])
    if cosine > np.cos(np.deg2rad(1.0)):
        raise NotEnoughTissue(
            f"the two stain vectors are less than 1 degree apart (cosine {cosine:.6f}): the "
            "tissue shows a single colour"
        )
    return np.ascontiguousarray(stains)


@register("reinhard")
class ReinhardNormalizer(StainNormalizer):
    """Reinhard et al. (IEEE CG&A 2001) colour transfer: match per-channel mean and std in LAB.

    Every pixel goes through the same affine map per LAB channel, which gives the image the mean
    and standard deviation of the target. Colours are CIELAB (D65, sRGB) rather than the paper's
    l-alpha-beta space, as in most histology implementations; LAB comes from OpenCV's float
    conversion, which agrees with :func:`skimage.color.rgb2lab` to within 0.5 units and is about
    20 times faster. There is no default target: fit first.

    By default the statistics are taken over tissue pixels only (see the module docstring), on
    the target and on each image alike, so that the share of white background in a tile does not
    change how its tissue is coloured, and a tile mostly of background keeps a light background;
    ``tissue_only=False`` takes every pixel, as in the paper. An image with fewer than
    ``min_tissue_pixels`` tissue pixels, or a channel without spread, is returned unchanged:
    matching its statistics would stretch the noise of a blank tile into false tissue contrast.

    Parameters
    ----------
    beta : float, optional
        Minimum optical density, in every channel, of a tissue pixel (``Io = 240``).
    min_tissue_pixels : int, optional
        Fewer tissue pixels than this and the image is not estimated (returned unchanged).
    tissue_only : bool, optional
        Statistics over tissue pixels (True) or over all pixels (False, as in the paper).
    """

    _MIN_STD = 1e-2

    def __init__(
        self, *, beta: float = 0.15, min_tissue_pixels: int = 100, tissue_only: bool = True
    ) -> None:
        if not (beta >= 0 and min_tissue_pixels >= 1):
            raise ValueError(
                f"need beta >= 0 and min_tissue_pixels >= 1; got beta={beta}, "
                f"min_tissue_pixels={min_tissue_pixels}"
            )
        self.beta = float(beta)
        self.min_tissue_pixels = int(min_tissue_pixels)
        self.tissue_only = bool(tissue_only)
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "min_tissue_pixels": self.min_tissue_pixels,
            "tissue_only": self.tissue_only,
        }

    def _check_target(self, target: dict[str, Any]) -> None:
        _check_array(target, "mean", (3,))
        _check_array(target, "std", (3,), positive=True)

    def _estimate(self, image: np.ndarray) -> dict[str, Any]:
        tissue = _tissue_mask(image, IO, self.beta)
        n_tissue = int(np.count_nonzero(tissue))
        if n_tissue < self.min_tissue_pixels:
            raise NotEnoughTissue(
                f"{n_tissue} tissue pixels (optical density >= {self.beta} in every channel), "
                f"fewer than {self.min_tissue_pixels}"
            )
        mask = tissue.astype(np.uint8) if self.tissue_only else None
        mean, std = (stat.ravel() for stat in cv2.meanStdDev(_rgb_to_lab(image), mask=mask))
        if std.min() < self._MIN_STD:
            raise NotEnoughTissue(f"a LAB channel has no spread (std {std.round(4).tolist()})")
        return {"mean": mean.tolist(), "std": std.tolist()}

    def _apply(self, image: np.ndarray, source: dict[str, Any]) -> np.ndarray:
        scale = np.asarray(self.target["std"]) / np.asarray(source["std"])
        shift = np.asarray(self.target["mean"]) - scale * np.asarray(source["mean"])
        lab = _rgb_to_lab(image) * scale.astype(np.float32) + shift.astype(np.float32)
        return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * np.float32(255.0)


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


from nucseg._vahadane import VahadaneNormalizer  # noqa: E402, F401  (registers "vahadane")
