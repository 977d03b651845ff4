"""Joint augmentation of an H&E image, its instance labels, its weight map and other target maps.

Lagree et al. (2021) trained every U-Net on "randomly applied combinations of rotation,
distortion, skew, shear, and flip augmentations", passing the H&E images, annotations and
weighted maps through the pipeline together so that they "remained spatially aligned". This
module does the same with albumentations 2.0.8, and adds the colour and stain jitter that the
TNBC test set (wide variation in staining and scale) calls for.

Geometric operations, applied to every input with the same parameters:

- ``dihedral``: one of the 8 rotations by multiples of 90 degrees and flips (lossless).
- ``affine``: rotation by any angle, shear and isotropic scale jitter, fused in one resampling.
- ``perspective``: a random projective warp (the paper's "skew").
- ``grid``: grid distortion (the paper's "distortion"; the Augmentor library's random
  distortion is also a grid distortion).
- ``elastic``: elastic deformation; off by default, as it costs more than all other operations
  together (see ``benchmarks/bench_augment.py``).

Colour operations, applied to the image only: ``hed`` (stain jitter in haematoxylin-eosin-DAB
space, :func:`hed_jitter`), ``stain`` (a random stain matrix and concentrations: another lab's
palette, :func:`restain`), ``brightness_contrast``, ``hue_saturation``, ``blur``, ``downscale``
(a scan at lower magnification resampled back up) and ``jpeg`` (compression artefacts). ``stain``,
``downscale`` and ``jpeg`` are off by default; :meth:`AugmentConfig.strong_stain` turns them on
with the ranges of the stain stress benchmark (``benchmarks/bench_stain.py``).

Interpolation: the image and float maps are resampled bilinearly, the labels by nearest
neighbour, so the labels of an output are always a subset of the labels of the input (nuclei
can leave the tile, never appear or merge into new values). Borders are filled by reflection
(OpenCV's ``BORDER_REFLECT_101``) in every input, so reflected pixels stay aligned too. Two
consequences: a reflected nucleus keeps the label of its original, so one label can cover two
disconnected regions near the border (run :func:`skimage.measure.label` if that matters), and
labels are not relabelled to ``1..N``.

Weight maps: the paper transforms the precomputed weight map with the image and annotations, and
so does :class:`Augmenter` (bilinear, so it stays finite and non-negative). This is exact for
flips and 90-degree rotations and close for the other operations, which move the gaps between
nuclei but do not recompute their weights. A caller who wants exact weights can instead
recompute them from the transformed labels (``nucseg.targets.unet_weight_map``), at the cost of
that function per tile. Extra maps are resampled as scalar fields: maps whose values are
directions (HoVer-Net's ``hv_maps``) must be recomputed from the transformed labels instead.

Randomness comes from a :class:`numpy.random.Generator`: albumentations draws from it (and from a
:class:`random.Random` seeded from it) on every call, so a seed fixes every output. Pass ``rng``
per call (for example ``np.random.default_rng([seed, epoch, index])``) to make each sample
reproducible regardless of worker processes and call order.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np

from nucseg._checks import check_image, check_labels, check_same_shape


def _import_albumentations() -> Any:
    """Import albumentations without its update check and, if torch is not loaded, without torch.

    ``import albumentations`` asks PyPI for a newer release (seconds offline, and the advice to
    leave the pinned MIT version) unless ``NO_ALBUMENTATIONS_UPDATE`` is set, and imports its
    optional ``albumentations.pytorch`` submodule, which loads torch. This numpy layer needs
    neither: the submodule is hidden during the import only, so ``from albumentations.pytorch
    import ToTensorV2`` still works afterwards (only the ``A.ToTensorV2`` re-export is absent).
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    hide = "albumentations" not in sys.modules and "torch" not in sys.modules
    if hide:
        sys.modules["albumentations.pytorch"] = None  # makes that import raise ImportError
    try:
        import albumentations
    finally:
        if hide and sys.modules.get("albumentations.pytorch", 0) is None:
            del sys.modules["albumentations.pytorch"]
    return albumentations


A = _import_albumentations()

__all__ = [
    "COLOUR_OPS",
    "GEOMETRIC_OPS",
    "AugmentConfig",
    "Augmenter",
    "downscale",
    "hed_jitter",
    "jpeg",
    "random_stain_matrix",
    "restain",
]

GEOMETRIC_OPS = ("dihedral", "affine", "perspective", "grid", "elastic")
"""Names of the geometric operations, in the order they are applied."""

COLOUR_OPS = ("hed", "stain", "brightness_contrast", "hue_saturation", "blur", "downscale", "jpeg")
"""Names of the colour operations (image only), in the order they are applied."""

_BORDER = cv2.BORDER_REFLECT_101

#: Optical densities of haematoxylin, eosin and DAB (rows) in R, G, B (columns), from Ruifrok &
#: Johnston, "Quantification of histochemical staining by color deconvolution", Anal. Quant.
#: Cytol. Histol. 2001 (as ``skimage.color.rgb_from_hed``), normalised to unit length.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
#: Optical density ``-ln((I + 1) / 256)`` of each uint8 intensity ``I`` (0 for white, 255).
_OD_LUT = (-np.log((np.arange(256) + 1.0) / 256.0)).astype(np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and magnitudes of the augmentations (see the module docstring).

    Each operation ``op`` in :data:`GEOMETRIC_OPS` and :data:`COLOUR_OPS` is applied with
    probability ``p_<op>``; 0 disables it, and a config whose probabilities are all 0 is the
    identity. :meth:`only` keeps the named operations (at probability 1) and turns off the rest.

    Parameters
    ----------
    p_dihedral
        Probability of a random rotation by a multiple of 90 degrees and/or flip, drawn
        uniformly from the 8 symmetries of the square (identity included). Non-square inputs
        get only horizontal and vertical flips.
    p_affine, rotate_limit, shear_limit, scale_range
        Probability of one affine warp whose rotation angle is uniform in ``[-rotate_limit,
        rotate_limit]`` degrees (180 = any angle), whose row and column shear angles are uniform
        in ``[-shear_limit, shear_limit]`` degrees, and whose isotropic scale is uniform in
        ``[scale_range[0], 1]`` or ``[1, scale_range[1]]`` with equal chance (so zooming in and
        out are equally likely). A zero limit or ``(1, 1)`` turns that component off.
    p_perspective, perspective_scale
        Probability of a projective warp moving each corner by a normal offset whose standard
        deviation, as a fraction of the image size, is uniform in ``perspective_scale``.
    p_grid, grid_steps, grid_limit
        Probability of a grid distortion over ``grid_steps`` x ``grid_steps`` cells whose sizes
        change by a factor in ``[1 - grid_limit, 1 + grid_limit]``.
    p_elastic, elastic_alpha, elastic_sigma
        Probability of an elastic deformation: a random displacement field smoothed by a
        Gaussian of ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` (the defaults move
        pixels by about 1 pixel RMS, 8 at most, on a 256 x 256 tile).
    p_hed, hed_scale, hed_shift
        Probability of stain jitter: each of the haematoxylin, eosin and DAB concentrations (in
        optical density units) is multiplied by a factor uniform in ``[1 - hed_scale, 1 +
        hed_scale]`` and shifted by an amount uniform in ``[-hed_shift, hed_shift]``.
    p_brightness_contrast, brightness_limit, contrast_limit
        Probability of brightness and contrast changes by fractions up to these limits.
    p_hue_saturation, hue_shift_limit, saturation_shift_limit
        Probability of hue and saturation shifts in OpenCV's uint8 HSV units (hue 0-179, so one
        unit is 2 degrees; saturation 0-255).
    p_blur, blur_sigma
        Probability of a Gaussian blur with standard deviation uniform in ``blur_sigma`` pixels.
    p_stain, stain_angle, stain_scale
        Probability of a re-staining (:func:`random_stain_matrix`, :func:`restain`): the
        haematoxylin and eosin vectors each turned by an angle uniform in ``[0, stain_angle]``
        degrees in a random direction, and each stain's concentration multiplied by a factor
        uniform in ``stain_scale``.
    p_downscale, downscale_range
        Probability of downsampling by a factor uniform in ``downscale_range`` (area averaging)
        and upsampling back (bilinear): a 20x scan (factor 0.5) resampled to 40x.
    p_jpeg, jpeg_quality
        Probability of a JPEG round trip at a quality uniform in ``jpeg_quality``.
    """

    p_dihedral: float = 1.0
    p_affine: float = 0.75
    rotate_limit: float = 180.0
    shear_limit: float = 8.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    p_perspective: float = 0.25
    perspective_scale: tuple[float, float] = (0.02, 0.05)
    p_grid: float = 0.25
    grid_steps: int = 5
    grid_limit: float = 0.2
    p_elastic: float = 0.0
    elastic_alpha: float = 50.0
    elastic_sigma: float = 10.0
    p_hed: float = 0.5
    hed_scale: float = 0.2
    hed_shift: float = 0.03
    p_brightness_contrast: float = 0.5
    brightness_limit: float = 0.1
    contrast_limit: float = 0.15
    p_hue_saturation: float = 0.3
    hue_shift_limit: float = 5.0
    saturation_shift_limit: float = 15.0
    p_blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    p_stain: float = 0.0
    stain_angle: float = 15.0
    stain_scale: tuple[float, float] = (0.5, 1.5)
    p_downscale: float = 0.0
    downscale_range: tuple[float, float] = (0.5, 0.9)
    p_jpeg: float = 0.0
    jpeg_quality: tuple[float, float] = (30.0, 90.0)

    def __post_init__(self) -> None:
        for name in (
            "scale_range",
            "perspective_scale",
            "blur_sigma",
            "stain_scale",
            "downscale_range",
            "jpeg_quality",
        ):
            value = getattr(self, name)
            if len(value) != 2:
                raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))  # JSON lists
        for op in GEOMETRIC_OPS + COLOUR_OPS:
            p = getattr(self, f"p_{op}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{op} must be a probability in [0, 1], got {p}")
        _check_range("scale_range", self.scale_range, low=1e-3, around=1.0)
        _check_range("perspective_scale", self.perspective_scale, low=0.0)
        _check_range("blur_sigma", self.blur_sigma, low=0.0)
        _check_range("stain_scale", self.stain_scale, low=1e-3)
        _check_range("downscale_range", self.downscale_range, low=0.1)
        _check_range("jpeg_quality", self.jpeg_quality, low=1.0)
        if self.downscale_range[1] > 1.0 or self.jpeg_quality[1] > 100.0:
            raise ValueError("downscale_range must lie in [0.1, 1], jpeg_quality in [1, 100]")
        if not 0.0 <= self.stain_angle <= 60.0:
            raise ValueError(f"stain_angle must be in [0, 60] degrees, got {self.stain_angle}")
        if not 0.0 <= self.rotate_limit <= 180.0:
            raise ValueError(f"rotate_limit must be in [0, 180] degrees, got {self.rotate_limit}")
        if not 0.0 <= self.shear_limit < 45.0:
            raise ValueError(f"shear_limit must be in [0, 45) degrees, got {self.shear_limit}")
        if self.grid_steps < 1 or not 0.0 <= self.grid_limit < 1.0:
            raise ValueError(
                "grid_steps must be >= 1 and grid_limit in [0, 1), got "
                f"{self.grid_steps} and {self.grid_limit}"
            )
        for name in (
            "elastic_alpha",
            "elastic_sigma",
            "hed_scale",
            "hed_shift",
            "brightness_limit",
            "contrast_limit",
            "hue_shift_limit",
            "saturation_shift_limit",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.elastic_sigma == 0 or self.hed_scale >= 1 or self.contrast_limit >= 1:
            raise ValueError("elastic_sigma must be > 0, hed_scale and contrast_limit < 1")

    @classmethod
    def paper(cls) -> AugmentConfig:
        """The paper's set: rotation, distortion, skew, shear and flips; no colour, no scale."""
        return replace(
            cls().only(),
            p_dihedral=1.0,
            p_affine=0.75,
            p_perspective=0.25,
            p_grid=0.25,
            scale_range=(1.0, 1.0),
        )

    @classmethod
    def strong_stain(cls) -> AugmentConfig:
        """The default geometry with strong colour augmentation, for stain-invariant training.

        Every tile is re-stained with probability 0.8 (stain vectors turned by up to 20 degrees,
        concentrations 0.5-1.5x), with stronger brightness, contrast, hue and saturation jitter,
        blur, a 20x-like resampling and JPEG compression: the kinds of shift of the stain stress
        benchmark (``benchmarks/bench_stain.py``), drawn at random.
        """
        return replace(
            cls(),
            p_hed=0.3,
            p_stain=0.8,
            stain_angle=20.0,
            stain_scale=(0.5, 1.5),
            p_brightness_contrast=0.6,
            brightness_limit=0.15,
            contrast_limit=0.4,
            p_hue_saturation=0.5,
            hue_shift_limit=10.0,
            saturation_shift_limit=40.0,
            p_blur=0.2,
            blur_sigma=(0.3, 1.5),
            p_downscale=0.2,
            downscale_range=(0.5, 0.9),
            p_jpeg=0.3,
            jpeg_quality=(30.0, 90.0),
        )

    def only(self, *ops: str) -> AugmentConfig:
        """This config with the named operations at probability 1 and all others off.

        Raises
        ------
        KeyError
            If a name is not in :data:`GEOMETRIC_OPS` or :data:`COLOUR_OPS`.
        """
        valid = GEOMETRIC_OPS + COLOUR_OPS
        unknown = [op for op in ops if op not in valid]
        if unknown:
            raise KeyError(f"unknown augmentation(s) {unknown}; valid names: {list(valid)}")
        return replace(self, **{f"p_{op}": float(op in ops) for op in valid})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict; ``AugmentConfig(**d)`` rebuilds the config."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_range(
    name: str, value: tuple[float, float], *, low: float, around: float | None = None
) -> None:
    """Raise ``ValueError`` unless ``low <= value[0] <= value[1]``, ``around`` in between."""
    inside = around is None or value[0] <= around <= value[1]
    if not (low <= value[0] <= value[1] and inside):
        where = "" if around is None else f" <= {around} <= high"
        raise ValueError(f"{name} must satisfy {low} <= low <= high{where}, got {value}")


def hed_jitter(image: np.ndarray, *, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scale and shift the haematoxylin, eosin and DAB concentrations of an RGB image.

    Colour deconvolution (Ruifrok & Johnston 2001) in optical density ``OD = -ln((I + 1) /
    256)``: the concentrations ``c = OD @ inv(M)`` of the stain matrix ``M`` become ``c * scale
    + shift``, and the image is rebuilt from them. Being linear in OD, this is one 3 x 3 matrix
    and offset per pixel, as in the "HED" augmentation of Tellez et al., Med. Image Anal. 2019.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        RGB image.
    scale, shift : (3,) arrays
        Factors and offsets (optical density units) for haematoxylin, eosin and DAB.

    Returns
    -------
    (H, W, 3) uint8 array
        The jittered image; ``scale=(1, 1, 1), shift=(0, 0, 0)`` returns the input values.

    Examples
    --------
    >>> image = np.full((2, 2, 3), (200, 120, 180), dtype=np.uint8)
    >>> bool((hed_jitter(image, scale=np.ones(3), shift=np.zeros(3)) == image).all())
    True
    >>> hed_jitter(image, scale=np.array([1.5, 1, 1]), shift=np.zeros(3))[0, 0].tolist()
    [188, 112, 175]
    """
    check_image(image)
    scale = np.asarray(scale, dtype=np.float64).reshape(3)
    shift = np.asarray(shift, dtype=np.float64).reshape(3)
    matrix = _HED_FROM_RGB @ np.diag(scale) @ _RGB_FROM_HED  # OD row vector -> jittered OD
    affine = np.hstack([matrix.T, (shift @ _RGB_FROM_HED)[:, None]]).astype(np.float32)
    return _od_image_to_rgb(cv2.transform(_OD_LUT[image], affine))


def random_stain_matrix(
    rng: np.random.Generator, *, max_angle: float, base: np.ndarray | None = None
) -> np.ndarray:
    """A random (3, 3) stain matrix near ``base``: the H and E rows turned by up to ``max_angle``.

    Each of the haematoxylin and eosin optical-density vectors (rows) is rotated by an angle
    uniform in ``[0, max_angle]`` degrees towards a random direction perpendicular to it; the
    result is clipped to non-negative optical densities and renormalised. The DAB row is kept.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    max_angle : float
        Largest rotation, in degrees.
    base : (3, 3) array, optional
        Unit stain vectors (rows: H, E, DAB; columns: R, G, B); Ruifrok & Johnston's if omitted.

    Returns
    -------
    (3, 3) float64 array
        Rows of unit length.
    """
    base = _RGB_FROM_HED if base is None else np.asarray(base, dtype=np.float64)
    out = base.copy()
    for row in (0, 1):
        vector = base[row]
        direction = rng.normal(size=3)
        direction -= direction @ vector * vector
        direction /= max(np.linalg.norm(direction), 1e-12)
        angle = np.deg2rad(rng.uniform(0.0, max_angle))
        turned = np.cos(angle) * vector + np.sin(angle) * direction
        turned = np.clip(turned, 1e-3, None)
        out[row] = turned / np.linalg.norm(turned)
    return out


def restain(
    image: np.ndarray,
    *,
    stains: np.ndarray,
    scale: np.ndarray | None = None,
    source: np.ndarray | None = None,
) -> np.ndarray:
    """Re-stain an RGB image: deconvolve with ``source`` stains, recompose with ``stains``.

    Optical densities ``OD = -ln((I + 1) / 256)`` are unmixed into concentrations with the
    ``source`` stain matrix (Ruifrok & Johnston's H, E, DAB if omitted), multiplied by ``scale``
    and mixed again with ``stains``: one 3 x 3 matrix per pixel in optical density, so the cost
    is that of :func:`hed_jitter`, of which this is the generalisation.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        RGB image.
    stains : (3, 3) array
        Target stain vectors (rows: H, E, DAB; columns: R, G, B optical densities).
    scale : (3,) array, optional
        Concentration factors for H, E and DAB (ones if omitted).
    source : (3, 3) array, optional
        Stain vectors the image is unmixed with.

    Returns
    -------
    (H, W, 3) uint8 array

    Examples
    --------
    >>> image = np.full((2, 2, 3), (200, 120, 180), dtype=np.uint8)
    >>> bool((restain(image, stains=_RGB_FROM_HED) == image).all())
    True
    """
    check_image(image)
    source = _RGB_FROM_HED if source is None else np.asarray(source, dtype=np.float64)
    stains = np.asarray(stains, dtype=np.float64).reshape(3, 3)
    scale = np.ones(3) if scale is None else np.asarray(scale, dtype=np.float64).reshape(3)
    matrix = np.linalg.inv(source) @ np.diag(scale) @ stains  # OD row vector -> new OD
    affine = np.hstack([matrix.T, np.zeros((3, 1))]).astype(np.float32)
    return _od_image_to_rgb(cv2.transform(_OD_LUT[image], affine))


def _od_image_to_rgb(od: np.ndarray) -> np.ndarray:
    """uint8 RGB of ``(H, W, 3)`` optical densities ``-ln((I + 1) / 256)``."""
    rgb = cv2.exp(-od)
    rgb *= 256.0
    rgb -= 0.5  # +0.5 for rounding, -1 for the +1 of the OD
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return rgb.astype(np.uint8)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """Downsample by ``factor`` (area averaging) and upsample back to the same size (bilinear)."""
    rows, cols = image.shape[:2]
    small = cv2.resize(
        image,
        (max(1, round(cols * factor)), max(1, round(rows * factor))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip of an RGB image at ``quality`` (1-100), 4:2:0 as most scanners."""
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


class Augmenter:
    """Random joint augmentation of an image, its labels, weight map and extra target maps.

    Parameters
    ----------
    config : AugmentConfig, optional
        Probabilities and magnitudes; the defaults of :class:`AugmentConfig` if omitted.
    seed : int, optional
        Seed of the generator used when a call gets no ``rng``.
    rng : numpy.random.Generator, optional
        That generator itself (give ``seed`` or ``rng``, not both; neither means fresh entropy).

    Notes
    -----
    An instance is not thread-safe (albumentations keeps the random state of the current call on
    its transforms); use one per thread or process. A forked worker copies the generator, so
    give each worker its own seed or pass ``rng`` per call.

    Examples
    --------
    >>> aug = Augmenter(AugmentConfig(), seed=0)
    >>> image = np.zeros((64, 64, 3), np.uint8)
    >>> labels = np.zeros((64, 64), np.int32)
    >>> labels[20:30, 20:30] = 7
    >>> out = aug(image, labels, weight_map=np.ones((64, 64), np.float32))
    >>> sorted(out), out["labels"].dtype.name, set(np.unique(out["labels"])) <= {0, 7}
    (['extra', 'image', 'labels', 'weight_map'], 'int32', True)
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if seed is not None and rng is not None:
            raise ValueError("give seed or rng, not both")
        self.config = AugmentConfig() if config is None else config
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._geometric = {
            square: A.Compose(
                _geometric_transforms(self.config, square=square),
                additional_targets={"maps": "image"},
            )
            for square in (True, False)
        }
        self._colour = A.Compose(_colour_transforms(self.config))

    def __repr__(self) -> str:
        return f"Augmenter({self.config!r})"

    def __call__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        weight_map: np.ndarray | None = None,
        extra: dict[str, np.ndarray] | None = None,
        *,
        rng: np.random.Generator | int | None = None,
    ) -> dict[str, Any]:
        """Augment one sample.

        Parameters
        ----------
        image : (H, W, 3) uint8 array
            RGB image.
        labels : (H, W) integer array
            Instance labels, 0 = background.
        weight_map : (H, W) float array, optional
            Per-pixel loss weights.
        extra : dict of str to (H, W) or (H, W, C) float arrays, optional
            Other target maps, resampled like the weight map (see the module docstring).
        rng : numpy.random.Generator or int, optional
            Generator or seed for this call; the instance's generator if omitted.

        Returns
        -------
        dict
            ``image`` (H, W, 3) uint8, ``labels`` (H, W) int32 (a subset of the input labels),
            ``weight_map`` (H, W) float32 or None, and ``extra`` (a dict, same keys and shapes,
            float32). New arrays: the inputs are never modified or returned.
        """
        inputs = (image, labels, weight_map, *(extra or {}).values())
        image, labels, maps, layout = _validated(image, labels, weight_map, extra)
        generator = self.rng if rng is None else np.random.default_rng(rng)
        py_random = random.Random(int(generator.integers(2**63)))
        geometric = self._geometric[labels.shape[0] == labels.shape[1]]
        geometric.set_random_state(generator, py_random)
        data = {"image": image, "mask": labels} | ({"maps": maps} if maps is not None else {})
        data = geometric(**data)
        image, labels = data["image"], data["mask"]

        if generator.random() < self.config.p_hed:
            scale = generator.uniform(1 - self.config.hed_scale, 1 + self.config.hed_scale, 3)
            shift = generator.uniform(-self.config.hed_shift, self.config.hed_shift, 3)
            image = hed_jitter(image, scale=scale, shift=shift)
        c = self.config
        if c.p_stain > 0 and generator.random() < c.p_stain:
            stains = random_stain_matrix(generator, max_angle=c.stain_angle)
            scale = np.append(generator.uniform(*c.stain_scale, 2), 1.0)
            image = restain(image, stains=stains, scale=scale)
        self._colour.set_random_state(generator, py_random)
        image = self._colour(image=image)["image"]
        if c.p_downscale > 0 and generator.random() < c.p_downscale:
            image = downscale(image, generator.uniform(*c.downscale_range))
        if c.p_jpeg > 0 and generator.random() < c.p_jpeg:
            image = jpeg(image, round(generator.uniform(*c.jpeg_quality)))

        out = {"image": image, "labels": labels, "weight_map": None, "extra": {}}
        if maps is not None:
            maps = data["maps"].reshape(*labels.shape, -1)
            for name, (start, stop, shape) in layout.items():
                target = maps[..., start:stop].reshape(*labels.shape, *shape)
                if name is None:
                    out["weight_map"] = target
                else:
                    out["extra"][name] = target
        return _fresh(out, originals=inputs)


def _geometric_transforms(config: AugmentConfig, *, square: bool) -> list[Any]:
    """The albumentations transforms of the geometric operations, in :data:`GEOMETRIC_OPS` order."""
    c = config
    if square:
        dihedral = [A.SquareSymmetry(p=c.p_dihedral)]
    else:  # a transpose would change the shape; flips give half of the 8 symmetries
        dihedral = [A.Sequential([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], p=c.p_dihedral)]
    return dihedral + [
        A.Affine(
            rotate=(-c.rotate_limit, c.rotate_limit),
            shear=(-c.shear_limit, c.shear_limit),
            scale=c.scale_range,
            keep_ratio=True,
            balanced_scale=True,
            border_mode=_BORDER,
            p=c.p_affine,
        ),
        A.Perspective(
            scale=c.perspective_scale, keep_size=True, border_mode=_BORDER, p=c.p_perspective
        ),
        A.GridDistortion(
            num_steps=c.grid_steps, distort_limit=c.grid_limit, border_mode=_BORDER, p=c.p_grid
        ),
        A.ElasticTransform(
            alpha=c.elastic_alpha,
            sigma=c.elastic_sigma,
            approximate=True,
            border_mode=_BORDER,
            p=c.p_elastic,
        ),
    ]


def _colour_transforms(config: AugmentConfig) -> list[Any]:
    """The albumentations colour transforms (stain jitter is done by :func:`hed_jitter`)."""
    c = config
    return [
        A.RandomBrightnessContrast(
            brightness_limit=c.brightness_limit,
            contrast_limit=c.contrast_limit,
            p=c.p_brightness_contrast,
        ),
        A.HueSaturationValue(
            hue_shift_limit=c.hue_shift_limit,
            sat_shift_limit=c.saturation_shift_limit,
            val_shift_limit=0,
            p=c.p_hue_saturation,
        ),
        A.GaussianBlur(blur_limit=0, sigma_limit=c.blur_sigma, p=c.p_blur),
    ]


def _validated(image, labels, weight_map, extra):
    """Check the inputs; return the image, int32 labels, float maps stacked in channels, layout.

    The layout maps each map's name (None for the weight map) to its channel range and its
    trailing shape, to unstack the transformed maps.
    """
    image = np.ascontiguousarray(check_image(image))
    labels = check_labels(labels)
    check_same_shape(image, labels, names=("image", "labels"))
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise ValueError(f"labels: values must fit in int32, found {labels.max()}")
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    named = ([(None, weight_map)] if weight_map is not None else []) + list((extra or {}).items())
    layout, columns, start = {}, [], 0
    for name, array in named:
        what = "weight_map" if name is None else f"extra[{name!r}]"
        array = np.asarray(array)
        if array.ndim not in (2, 3) or array.shape[:2] != labels.shape:
            raise ValueError(
                f"{what}: expected shape {labels.shape} or {labels.shape} + (C,), got {array.shape}"
            )
        if name is None and array.ndim != 2:
            raise ValueError(f"weight_map: expected shape {labels.shape}, got {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{what}: expected a real-valued array, got dtype {array.dtype}")
        channels = array.reshape(*labels.shape, -1).astype(np.float32, copy=False)
        layout[name] = (start, start + channels.shape[2], array.shape[2:])
        columns.append(channels)
        start += channels.shape[2]
    maps = None
    if columns:
        maps = np.ascontiguousarray(columns[0] if len(columns) == 1 else np.concatenate(columns, 2))
    return image, labels, maps, layout


def _fresh(out: dict[str, Any], *, originals: tuple) -> dict[str, Any]:
    """Make the arrays of ``out`` contiguous and copy any that shares memory with an input."""

    def own(array: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(array)
        if any(o is not None and np.shares_memory(array, o) for o in originals):
            array = array.copy()
        return array

    out["image"], out["labels"] = own(out["image"]), own(out["labels"])
    if out["weight_map"] is not None:
        out["weight_map"] = own(out["weight_map"])
    out["extra"] = {name: own(array) for name, array in out["extra"].items()}
    return out
