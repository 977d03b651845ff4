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

from typing import Any

import cv2
import numpy as np

from nucseg._stain_base import (  # noqa: F401  (re-exported: the public names live here)
    IO,
    REFERENCE_MAX_CONCENTRATIONS,
    REFERENCE_STAIN_MATRIX,
    NotEnoughTissue,
    StainEstimateWarning,
    StainNormalizer,
    _channel_od,
    _check_array,
    _check_stain_target,
    _macenko_stain_vectors,
    _mix,
    _od_to_rgb,
    _rgb_to_lab,
    _stain_target_defaults,
    _tissue_mask,
    assign_stains,
    get_normalizer,
    implausible_stains,
    list_normalizers,
    read_normaliser,
    register,
    stain_matrix_fallback,
    tissue_mask,
)
from nucseg._vahadane import VahadaneNormalizer  # noqa: F401  (registers "vahadane")


@register("macenko")
class MacenkoNormalizer(StainNormalizer):
    """Macenko et al. (ISBI 2009) stain normalisation.

    Stain vectors are the extreme angles (``alpha`` and ``100 - alpha`` percentiles) of tissue
    optical densities projected on the plane of their two principal eigenvectors; they are
    assigned to haematoxylin and eosin by the target's vectors (:func:`assign_stains`), not by
    the reference code's "larger red component" rule, which swaps palettes far from TCGA's. An
    implausible estimate (:func:`implausible_stains`) falls back to the target's stain vectors
    with a :class:`StainEstimateWarning`. Concentrations come from least squares; each stain's
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
        reference = np.asarray(self.target["stain_matrix"], dtype=np.float64)
        stains = _macenko_stain_vectors(tissue, self.alpha, reference)
        concentrations = _mix(np.linalg.pinv(stains), tissue)
        max_conc = np.percentile(concentrations, 99, axis=1)
        if not np.all(np.isfinite(max_conc)) or max_conc.min() <= 1e-3:
            raise NotEnoughTissue(f"99th-percentile stain concentrations {max_conc} are ~0")
        return {"stain_matrix": stains.tolist(), "max_concentrations": max_conc.tolist()}

    def _implausible(self, source: dict[str, Any]) -> str | None:
        return implausible_stains(source["stain_matrix"], self.target["stain_matrix"])

    def _fallback(self, image: np.ndarray) -> dict[str, Any] | None:
        return stain_matrix_fallback(image, self.target, io=self.io, beta=self.beta)

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
