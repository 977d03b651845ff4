"""Vahadane et al. stain normalisation: sparse non-negative factorisation of optical densities.

Registered in :mod:`nucseg.stain` as ``"vahadane"``; import it from there. Kept in its own module
because its solver (below) is longer than the other normalisers.

A. Vahadane et al., "Structure-preserving color normalization and sparse stain separation for
histological images", IEEE Trans. Med. Imaging 35(8), 2016. The reference code (and StainTools,
TIAToolbox) learns the stain matrix with SPAMS' dictionary learning and the concentrations with
SPAMS' positive lasso. SPAMS is not installable everywhere (no wheels for recent Pythons), so
both steps are written here for the case that matters, two stains:

- concentrations: ``min_h 0.5 ||od - W h||^2 + lambda ||h||_1`` with ``h >= 0``, solved exactly
  per pixel: the minimum is one of four candidates (both stains, either alone, none), each in
  closed form, and the best feasible one is kept; vectorised over all pixels;
- stain matrix: alternating minimisation on a fixed subsample of tissue pixels, starting from
  Macenko's estimate: the concentration step above, then one pass of SPAMS' projected block
  coordinate descent over the columns of ``W`` (non-negative, norm at most 1: ``modeD=0``,
  ``posD=True``; Mairal et al., JMLR 11, 2010, algorithm 2) on the full batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nucseg._stain_base import (
    IO,
    NotEnoughTissue,
    StainNormalizer,
    _channel_od,
    _check_stain_target,
    _macenko_stain_vectors,
    _mix,
    _od_to_rgb,
    _rgb_to_lab,
    _stain_target_defaults,
    assign_stains,
    implausible_stains,
    register,
    stain_matrix_fallback,
)


def positive_lasso_2(od: np.ndarray, stains: np.ndarray, lam: float) -> np.ndarray:
    """Exact ``argmin_{h >= 0} 0.5 ||od - stains @ h||^2 + lam * sum(h)`` for every pixel.

    Parameters
    ----------
    od : (3, N) float array
        Optical densities, one column per pixel.
    stains : (3, 2) float array
        Stain matrix of full column rank.
    lam : float
        L1 weight, >= 0.

    Returns
    -------
    (2, N) float32 array
        Concentrations.
    """
    gram = stains.T @ stains
    b = _mix(stains.T, od).astype(np.float64) - lam  # linear term with the L1 weight folded in
    g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
    det = g11 * g22 - g12 * g12
    # both stains present: gram @ h = b
    both = np.stack([(g22 * b[0] - g12 * b[1]) / det, (g11 * b[1] - g12 * b[0]) / det])
    # one stain alone
    only1 = np.maximum(b[0] / g11, 0.0)
    only2 = np.maximum(b[1] / g22, 0.0)

    def objective(h1, h2):  # 0.5 h'Gh - b'h (the constant 0.5 ||od||^2 left out)
        return 0.5 * (g11 * h1 * h1 + 2 * g12 * h1 * h2 + g22 * h2 * h2) - b[0] * h1 - b[1] * h2

    candidates = np.stack(
        [
            np.where((both > 0).all(axis=0), objective(both[0], both[1]), np.inf),
            objective(only1, 0.0),
            objective(0.0, only2),
            np.zeros(od.shape[1]),
        ]
    )
    choice = np.argmin(candidates, axis=0)
    h = np.zeros((2, od.shape[1]), dtype=np.float64)
    h[:, choice == 0] = both[:, choice == 0]
    h[0, choice == 1] = only1[choice == 1]
    h[1, choice == 2] = only2[choice == 2]
    return h.astype(np.float32)


def vahadane_stain_vectors(
    tissue_od: np.ndarray,
    *,
    lam: float,
    iterations: int,
    alpha: float = 1.0,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """(3, 2) unit stain vectors (haematoxylin, eosin) by sparse non-negative factorisation.

    Assigned to haematoxylin and eosin by ``reference``'s columns (:func:`assign_stains`);
    without one, the vector absorbing more red comes first.
    """
    stains = _macenko_stain_vectors(tissue_od, alpha, reference)  # a good, deterministic start
    od = tissue_od.astype(np.float64)
    for _ in range(iterations):
        h = positive_lasso_2(tissue_od, stains, lam).astype(np.float64)
        a, b = h @ h.T, od @ h.T
        for j in range(2):  # block coordinate descent on the columns (Mairal et al. 2010, alg. 2)
            if a[j, j] <= 1e-12:  # a stain no pixel uses: leave it
                continue
            u = np.maximum((b[:, j] - stains @ a[:, j]) / a[j, j] + stains[:, j], 0.0)
            stains[:, j] = u / max(np.linalg.norm(u), 1.0)
    norms = np.linalg.norm(stains, axis=0)
    if not np.all(np.isfinite(stains)) or norms.min() < 1e-6:
        raise NotEnoughTissue("a stain vector vanished")
    stains = stains / norms
    stains = assign_stains(stains, reference, tissue_od)
    cosine = float(stains[:, 0] @ stains[:, 1])
    if cosine > np.cos(np.deg2rad(1.0)):
        raise NotEnoughTissue(f"the two stain vectors merged (cosine {cosine:.6f})")
    return np.ascontiguousarray(stains)


@register("vahadane")
class VahadaneNormalizer(StainNormalizer):
    """Vahadane et al. (IEEE TMI 2016) structure-preserving stain normalisation.

    The stain matrix is a sparse non-negative factorisation of the tissue optical densities
    (L1 weight ``lambda_stains``, on at most ``max_pixels`` tissue pixels drawn with a fixed
    seed); concentrations are the positive lasso (``lambda_concentrations``) of every pixel on
    it. Each stain's concentrations are scaled so that their 99th percentile over tissue matches
    the target's, and the image is rebuilt with the target stain matrix, as in Macenko's
    method. Unfitted, the target is Macenko's reference H&E. The white point and the handling of
    tiles without tissue are those of :mod:`nucseg.stain`.

    Parameters
    ----------
    lambda_stains : float, optional
        Sparsity weight when learning the stain matrix (StainTools: 0.1).
    lambda_concentrations : float, optional
        Sparsity weight of the concentrations (StainTools: 0.01).
    iterations : int, optional
        Alternating updates of the stain matrix.
    max_pixels : int, optional
        Tissue pixels sampled to learn the stain matrix.
    max_lightness : float, optional
        Tissue pixels are those darker than this CIELAB lightness (0-100); 80 as StainTools.
        Looser than Macenko's tissue test, so pale eosin-stained stroma informs the eosin vector.
    min_tissue_pixels : int, optional
        Fewer tissue pixels than this and the image is not estimated (returned unchanged).
    """

    def __init__(
        self,
        *,
        lambda_stains: float = 0.1,
        lambda_concentrations: float = 0.01,
        iterations: int = 30,
        max_pixels: int = 20000,
        max_lightness: float = 80.0,
        min_tissue_pixels: int = 100,
    ) -> None:
        if not (
            lambda_stains >= 0
            and lambda_concentrations >= 0
            and iterations >= 0
            and max_pixels >= 3
            and 0 < max_lightness <= 100
            and min_tissue_pixels >= 1
        ):
            raise ValueError(
                "need lambdas >= 0, iterations >= 0, max_pixels >= 3, 0 < max_lightness <= 100 and "
                f"min_tissue_pixels >= 1; got lambda_stains={lambda_stains}, "
                f"lambda_concentrations={lambda_concentrations}, iterations={iterations}, "
                f"max_pixels={max_pixels}, max_lightness={max_lightness}, "
                f"min_tissue_pixels={min_tissue_pixels}"
            )
        self.lambda_stains = float(lambda_stains)
        self.lambda_concentrations = float(lambda_concentrations)
        self.iterations = int(iterations)
        self.max_pixels = int(max_pixels)
        self.max_lightness = float(max_lightness)
        self.min_tissue_pixels = int(min_tissue_pixels)
        super().__init__()

    def _params(self) -> dict[str, Any]:
        return {
            "lambda_stains": self.lambda_stains,
            "lambda_concentrations": self.lambda_concentrations,
            "iterations": self.iterations,
            "max_pixels": self.max_pixels,
            "max_lightness": self.max_lightness,
            "min_tissue_pixels": self.min_tissue_pixels,
        }

    def _default_target(self) -> dict[str, Any]:
        return _stain_target_defaults()

    def _check_target(self, target: dict[str, Any]) -> None:
        _check_stain_target(target)

    def _estimate(self, image: np.ndarray) -> dict[str, Any]:
        if image.size == 0:
            raise NotEnoughTissue("the image is empty")
        mask = (_rgb_to_lab(image)[..., 0] < self.max_lightness).ravel()
        tissue = _channel_od(np.compress(mask, image.reshape(-1, 3), axis=0), IO)
        if tissue.shape[1] < max(self.min_tissue_pixels, 3):
            raise NotEnoughTissue(
                f"{tissue.shape[1]} tissue pixels (CIELAB lightness < {self.max_lightness}), "
                f"fewer than {self.min_tissue_pixels}"
            )
        sample = tissue
        if tissue.shape[1] > self.max_pixels:
            rng = np.random.default_rng(0)
            picked = np.sort(rng.choice(tissue.shape[1], self.max_pixels, replace=False))
            sample = np.ascontiguousarray(tissue[:, picked])
        stains = vahadane_stain_vectors(
            sample,
            lam=self.lambda_stains,
            iterations=self.iterations,
            reference=np.asarray(self.target["stain_matrix"], dtype=np.float64),
        )
        concentrations = positive_lasso_2(tissue, stains, self.lambda_concentrations)
        max_conc = np.percentile(concentrations, 99, axis=1)
        if not np.all(np.isfinite(max_conc)) or max_conc.min() <= 1e-3:
            raise NotEnoughTissue(f"99th-percentile stain concentrations {max_conc} are ~0")
        return {"stain_matrix": stains.tolist(), "max_concentrations": max_conc.tolist()}

    def _implausible(self, source: dict[str, Any]) -> str | None:
        return implausible_stains(source["stain_matrix"], self.target["stain_matrix"])

    def _fallback(self, image: np.ndarray) -> dict[str, Any] | None:
        return stain_matrix_fallback(image, self.target, io=IO, beta=0.15)

    def _apply(self, image: np.ndarray, source: dict[str, Any]) -> np.ndarray:
        od = _channel_od(image.reshape(-1, 3), IO)
        src_stains = np.asarray(source["stain_matrix"], dtype=np.float64)
        tgt_stains = np.asarray(self.target["stain_matrix"], dtype=np.float64)
        scale = np.asarray(self.target["max_concentrations"]) / np.asarray(
            source["max_concentrations"]
        )
        concentrations = positive_lasso_2(od, src_stains, self.lambda_concentrations)
        return _od_to_rgb(_mix(tgt_stains * scale[None, :], concentrations), IO, image.shape)
