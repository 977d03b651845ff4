"""Cheap sanity figures of a segmentation, so that a failure is never silent.

A network segments whatever it is given: an all-black image, noise, or a slide whose stains the
normaliser swapped all come back as nuclei. :func:`assess` measures, per image (or per slide
chunk), a few figures that cost a fraction of the segmentation and compares them with the range
of the training images (the 36 non-breast MoNuSeg images; :data:`TRAINING_RANGE`, checked against
the data by ``tests/test_quality.py``):

- ``stain_estimate``: whether a Macenko estimate of the image's stains is plausible
  (``accepted``), was rejected (the reason), or found too little tissue;
- ``stain_sparsity_ratio`` and ``stain_swap_score``: whether the stains look swapped, H and E
  (:func:`stain_check`) or the red and blue channels (:func:`swap_score`);
- ``tissue_fraction``: pixels that look like stained tissue (neither near-white nor near-black);
- ``smoothness``: correlation of horizontally neighbouring grey values (of the <= 512-pixel
  thumbnail the image-level figures are measured on); a microscope image is smooth (training
  images >= ``smoothness_min``), noise is not;
- ``nuclei_fraction``: the share of the image covered by nuclei; ``largest_nucleus_fraction``;
- ``median_area_px``: the median nucleus area, against the training images' per-image medians.

Every figure out of range adds one line to ``warnings``; :func:`warn` logs them, one per line,
prefixed with the image's name. Numpy only.
"""

from __future__ import annotations

import hashlib
import logging
import warnings as _warnings
from typing import Any

import cv2
import numpy as np

from nucseg._checks import check_image, check_labels, check_same_shape

log = logging.getLogger(__name__)

__all__ = [
    "MAX_NUCLEUS_AREA_PX", "TRAINING_RANGE", "assess", "drop_oversized", "scale_check", "warn"
]  # fmt: skip

#: Figures of the 36 non-breast MoNuSeg training images (the paper's training split), at 40x,
#: and the margins allowed around them. ``tests/test_quality.py`` recomputes the figures.
TRAINING_RANGE: dict[str, float] = {
    "median_area_px_min": 93.0,  # the smallest per-image median nucleus area, pixels
    "median_area_px_max": 834.5,  # the largest
    "nuclei_fraction_max": 0.40,  # the largest share of an image covered by nuclei
    "smoothness_min": 0.855,  # the lowest neighbour correlation of grey values (thumbnails)
    "area_px_p99": 1515.0,  # the 99th percentile of nucleus areas over all images
}

#: No nucleus is this large at 40x (20 times the training images' 99th-percentile area, about
#: 1,900 um2 at 0.25 um/px): a region this size is background the network took for a nucleus,
#: as an all-black image becomes one region covering it. :func:`drop_oversized` removes them.
MAX_NUCLEUS_AREA_PX = 30000


def drop_oversized(labels: np.ndarray, *, max_area: int = MAX_NUCLEUS_AREA_PX) -> np.ndarray:
    """``labels`` without the instances larger than ``max_area`` pixels (set to 0).

    The others keep their values. Returns the input itself when nothing is dropped.

    Examples
    --------
    >>> labels = np.zeros((4, 4), np.int32); labels[:3, :3] = 2; labels[3, 3] = 5
    >>> drop_oversized(labels, max_area=4).tolist()[3]
    [0, 0, 0, 5]
    """
    if labels.size <= max_area:
        return labels
    areas = np.bincount(labels.ravel())
    big = np.flatnonzero(areas > max_area)
    big = big[big > 0]
    if not big.size:
        return labels
    out = labels.copy()
    out[np.isin(labels, big)] = 0
    return out


#: How far outside the training range a figure may go before it is flagged.
MARGINS = {"median_area": 2.0, "nuclei_fraction": 1.5, "smoothness": 0.5}

#: The median nucleus area is judged only over at least this many nuclei (TNBC images with a
#: dozen fragments gave false alarms at 10).
MIN_NUCLEI_FOR_SIZES = 30

#: Below this many tissue pixels (as a fraction) an image is "little or no tissue".
MIN_TISSUE_FRACTION = 0.05


def thumbnail(image: np.ndarray, *, size: int = 512) -> np.ndarray:
    """``image`` shrunk (area averaging) so that its longer side is at most ``size`` pixels.

    The image-level figures are measured on it: a 1000 x 1000 image costs 4 times less, a slide
    chunk 16 times less.
    """
    scale = size / max(image.shape[:2])
    if scale >= 1:
        return image
    shape = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, shape, interpolation=cv2.INTER_AREA)


def tissue_fraction(image: np.ndarray) -> float:
    """Share of pixels that look like stained tissue: not near-white, not near-black, coloured.

    A pixel is tissue when its brightest channel is below 220 (not background glass), its
    darkest channel above 10 (not black) and its saturation at least 0.05.
    """
    image = check_image(image)
    brightest = image.max(axis=2)
    darkest = image.min(axis=2)
    saturation = (brightest.astype(np.float32) - darkest) / np.maximum(brightest, 1)
    tissue = (brightest < 220) & (darkest > 10) & (saturation >= 0.05)
    return float(np.count_nonzero(tissue)) / max(tissue.size, 1)


def smoothness(image: np.ndarray) -> float:
    """Correlation of horizontally neighbouring grey values (1: smooth; about 0: noise)."""
    grey = cv2.cvtColor(check_image(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    if grey.shape[1] < 2:
        return 1.0
    left, right = grey[:, :-1].ravel(), grey[:, 1:].ravel()
    left, right = left - left.mean(), right - right.mean()
    denominator = float(np.sqrt((left * left).sum() * (right * right).sum()))
    if denominator == 0:
        return 1.0  # a constant image: smooth, and flagged by the tissue test instead
    return float((left * right).sum() / denominator)


#: A haematoxylin estimate whose concentrations are less sparse than eosin's by this factor is
#: flagged as swapped. On the 94 MoNuSeg and TNBC images the ratio is at least 1.05.
SWAPPED_SPARSITY_RATIO = 0.9


def stain_check(image: np.ndarray) -> tuple[str, float | None]:
    """Macenko estimate of an image (a thumbnail: :func:`thumbnail`): status, H/E sparsity ratio.

    The ratio compares the 99th-percentile-to-median concentration ratio of haematoxylin with
    eosin's: nuclei make haematoxylin the sparser stain, so a ratio below
    :data:`SWAPPED_SPARSITY_RATIO` means the stain called haematoxylin covers the stroma.
    """
    from nucseg._stain_base import _channel_od, _tissue_mask, stain_sparsity
    from nucseg.stain import MacenkoNormalizer

    small = thumbnail(image)
    normaliser = MacenkoNormalizer()
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        estimate = normaliser.estimate(small)
    reason = estimate.get("reason") or ""
    if not estimate["accepted"]:
        return (f"no tissue ({reason})" if reason.startswith("too little") else
                f"rejected ({reason})"), None  # fmt: skip
    mask = _tissue_mask(small, normaliser.io, normaliser.beta).ravel()
    tissue = _channel_od(np.compress(mask, small.reshape(-1, 3), axis=0), normaliser.io)
    sparsity = stain_sparsity(np.asarray(estimate["stain_matrix"]), tissue)
    return "accepted", float(sparsity[0] / max(sparsity[1], 1e-6))


#: The R/B swap detector (:func:`swap_score`): its two cues' scales (the median absolute value
#: of each over the 257 genuine images of MoNuSeg, TNBC, CoNSeP, CPM-15 and DSB-2018 stained)
#: and the weight of the first. Measured by ``benchmarks/swap_detector.py``
#: (results/stain/swap_detector.json), which also records the margins.
SWAP_SCALES = (0.0159, 0.155)
SWAP_WEIGHT = 0.46


def _swap_cues(image: np.ndarray) -> tuple[float, float] | None:
    """The two cues of :func:`swap_score` on the image shrunk to at most 512 x 512 pixels' area
    (None: fewer than 500 tissue pixels)."""
    from nucseg._stain_base import IO, _channel_od, _tissue_mask

    scale = np.sqrt(512 * 512 / max(image.shape[0] * image.shape[1], 1))
    small = thumbnail(image, size=round(max(image.shape[:2]) * scale)) if scale < 1 else image
    mask = _tissue_mask(small, IO, 0.15)
    if np.count_nonzero(mask) < 500:
        return None
    od = _channel_od(small.reshape(-1, 3), IO).reshape(3, *small.shape[:2])
    total = od.sum(axis=0)
    chroma = (od[0] - od[2]) / np.maximum(total, 1e-6)
    # nuclei: dark blobs (a top-hat of the optical density), against their surroundings' colour
    blobs = total - cv2.morphologyEx(
        total, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    )
    nuclei = mask & (blobs >= np.percentile(blobs[mask], 95))
    weight = total * mask
    around = cv2.blur(chroma * weight, (31, 31)) / np.maximum(cv2.blur(weight, (31, 31)), 1e-6)
    contrast = float(np.median((chroma - around)[nuclei]))
    low, high = np.percentile(chroma[mask], [5, 95])
    return contrast, float(low + high)


def swap_score(image: np.ndarray) -> float | None:
    """Whether an image's red and blue channels look exchanged: > 0 like H&E, < 0 swapped.

    Haematoxylin absorbs red more than blue (nuclei look blue-purple), eosin blue more than red
    (stroma looks pink). Per tissue pixel, ``(OD_R - OD_B) / (OD_R + OD_G + OD_B)`` (optical
    densities) is therefore higher in nuclei than around them, and over the tissue its range
    (5th plus 95th percentile) leans to the red-absorbing side. The score is the weighted sum of
    those two cues (the first measured on the darkest 5 % of small dark blobs, 9-pixel top-hat,
    against the optical-density-weighted mean of a 31-pixel box), each divided by its scale
    (:data:`SWAP_SCALES`, :data:`SWAP_WEIGHT`). Exchanging red and blue changes the sign of the
    score exactly, so 0 is the threshold. Neither cue alone separates the 257 genuine images
    from their swapped copies (lymphocytes on glass have no surroundings; a violet haematoxylin
    leans to blue); the sum does, with a small margin: ``benchmarks/swap_detector.py``.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        RGB, as scanned; shrunk to at most 512 x 512 pixels' area here.

    Returns
    -------
    float or None
        The score; None when the image holds fewer than 500 tissue pixels.
    """
    cues = _swap_cues(check_image(image))
    if cues is None:
        return None
    (contrast, lean), (s1, s2) = cues, SWAP_SCALES
    return float(SWAP_WEIGHT * contrast / s1 + (1 - SWAP_WEIGHT) * lean / s2)


def swapped_stains(sparsity_ratio: float | None, swap: float | None) -> str | None:
    """Why the stains look swapped (the H/E sparsity check or the R/B swap score), or None."""
    found = []
    if sparsity_ratio is not None and sparsity_ratio < SWAPPED_SPARSITY_RATIO:
        found.append(
            f"the haematoxylin-like stain is spread like eosin (sparsity ratio "
            f"{sparsity_ratio:.2f} < {SWAPPED_SPARSITY_RATIO})"
        )
    if swap is not None and swap < 0:
        found.append(
            f"nuclei look red, stroma blue (red and blue exchanged? swap score {swap:.2f} < 0)"
        )
    return "; ".join(found) or None


#: The last image's stain figures: (key, figures), replaced as a whole (one assignment).
_LAST_STAIN: tuple[Any, Any] = (None, None)


def stain_figures(image: np.ndarray) -> tuple[str, float | None, float | None]:
    """:func:`stain_check` (status, sparsity ratio) and :func:`swap_score` of ``image``.

    Computed once per distinct image: :func:`stain_remedy` and :func:`assess` of the same pixels
    (``segment`` of an image of at most 512 pixels, whose stain windows are the image itself)
    share one Macenko estimate. The image's bytes are the key (a hash: about 1 ms a megapixel).
    """
    global _LAST_STAIN
    image = np.ascontiguousarray(image)
    key = (image.shape, hashlib.blake2b(image.data, digest_size=16).digest())
    last_key, figures = _LAST_STAIN
    if last_key != key:
        figures = (*stain_check(image), swap_score(image))
        _LAST_STAIN = (key, figures)
    return figures


#: What a model's stain normaliser does with an image. ``"auto"``: normalise unless the image is
#: flagged (the normaliser's estimate is implausible, or the stains look swapped, so that
#: normalising would map eosin onto haematoxylin), in which case the image reaches the network
#: as it was scanned and the outputs say so; ``"always"``: normalise every image (the former
#: behaviour); ``"never"``: no normalisation.
STAIN_POLICIES = ("auto", "always", "never")


def stain_remedy(
    image: np.ndarray, source: dict[str, Any] | None, *, policy: str = "auto"
) -> str | None:
    """Why ``image`` should not be normalised with the estimate ``source``; None to normalise.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        The image (or a mosaic of a slide's tissue windows) as scanned.
    source : dict or None
        :meth:`nucseg.stain.StainNormalizer.estimate` of it (None: nothing to normalise with).
    policy : {"auto", "always", "never"}
        See :data:`STAIN_POLICIES`.

    Returns
    -------
    str or None
        The remedy taken, one line for reports (e.g. ``"stains look swapped (sparsity ratio
        0.61 < 0.9): not normalised, segmented as scanned"``), or None.
    """
    if policy not in STAIN_POLICIES:
        raise ValueError(f"stain policy must be one of {', '.join(STAIN_POLICIES)}, got {policy!r}")
    if source is None or policy == "always" or source.get("identity"):
        return None
    if policy == "never":
        return "normalisation off (stain policy 'never')"
    reason = source.get("reason") or ""
    if not source.get("accepted", True):
        flag = f"the normaliser's stain estimate is implausible ({reason})"
    else:  # the checks of assess(), but for the red/blue swap score (a warning only)
        # The swap score also fires on genuine palettes whose haematoxylin leans brown-purple
        # or grey (bench_stain.py's h-brownpurple-1.0, offpalette-grey-mauve: not normalising
        # them cost the bundled model up to 0.04 AJI), so it never decides the remedy.
        status, ratio, _swap = stain_figures(image)
        swapped = swapped_stains(ratio, None)
        if status.startswith("rejected"):
            flag = f"stain estimate {status}"
        elif swapped:
            flag = f"stains look swapped: {swapped}"
        else:
            return None
    return f"{flag}: not normalised, segmented as scanned"


def assess(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    stain_estimate: dict[str, Any] | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Sanity figures of one segmented image and the warnings they raise.

    Parameters
    ----------
    image : (H, W, 3) uint8 array
        The image as given (before any stain normalisation).
    labels : (H, W) integer array
        Its instance labels.
    stain_estimate : dict, optional
        What the model's normaliser decided (``StainNormalizer.last_estimate``). A Macenko
        estimate of the thumbnail is made here in any case (:func:`stain_check`).
    mpp : float, optional
        Microns per pixel, to report the median area in um2 as well.

    Returns
    -------
    dict
        The figures (JSON-ready) and ``warnings``, a list of one-line strings (empty if none).
    """
    image = check_image(image)
    labels = check_labels(labels)
    check_same_shape(image, labels, names=("image", "labels"))
    areas = np.bincount(labels.ravel())[1:] if labels.size else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    pixels = max(labels.size, 1)
    small = thumbnail(image)
    status, sparsity_ratio, swap = stain_figures(image)
    if stain_estimate is not None and not stain_estimate.get("accepted", True):
        status = f"rejected by the model's normaliser ({stain_estimate.get('reason')})"
    remedy = None if stain_estimate is None else stain_estimate.get("remedy")
    figures: dict[str, Any] = {
        "stain_estimate": status,
        "stain_remedy": remedy,
        "stain_sparsity_ratio": None if sparsity_ratio is None else round(sparsity_ratio, 3),
        "stain_swap_score": None if swap is None else round(swap, 3),
        "tissue_fraction": round(tissue_fraction(small), 4),
        "smoothness": round(smoothness(small), 4),
        "n_nuclei": int(areas.size),
        "nuclei_fraction": round(float(areas.sum()) / pixels, 4),
        "largest_nucleus_fraction": round(float(areas.max(initial=0)) / pixels, 6),
        "median_area_px": float(np.median(areas)) if areas.size else None,
    }
    if mpp is not None and areas.size:
        figures["median_area_um2"] = round(figures["median_area_px"] * mpp * mpp, 3)
    r, m = TRAINING_RANGE, MARGINS
    found = []
    done = f"; remedy: {remedy}" if remedy else ""
    if figures["stain_estimate"].startswith("rejected"):
        found.append(f"stain estimate {figures['stain_estimate']}: colours unlike H&E{done}")
    swapped = swapped_stains(sparsity_ratio, figures["stain_swap_score"])
    if swapped:
        effect = (
            done
            if remedy
            else "; nuclei may be missed and stroma segmented"
            if stain_estimate is not None
            else " (the model does not normalise stains: nothing was mapped by them)"
        )
        found.append(f"stains look swapped: {swapped}{effect}")
    if figures["tissue_fraction"] < MIN_TISSUE_FRACTION:
        found.append(
            f"little or no tissue ({100 * figures['tissue_fraction']:.1f}% of pixels look stained)"
        )
    if figures["smoothness"] < r["smoothness_min"] * m["smoothness"]:
        found.append(
            f"no spatial structure (neighbour correlation {figures['smoothness']:.2f}; training "
            f"images >= {r['smoothness_min']:.2f}): noise, or not a microscope image?"
        )
    if figures["nuclei_fraction"] > r["nuclei_fraction_max"] * m["nuclei_fraction"]:
        found.append(
            f"nuclei cover {100 * figures['nuclei_fraction']:.0f}% of the image (training images: "
            f"at most {100 * r['nuclei_fraction_max']:.0f}%)"
        )
    if areas.size and areas.max() > 20 * r["area_px_p99"]:
        found.append(
            f"a nucleus of {int(areas.max())} pixels, 20 times the training images' 99th "
            f"percentile ({r['area_px_p99']:.0f}): wrong scale or not nuclei?"
        )
    median = figures["median_area_px"]
    low, high = (
        r["median_area_px_min"] / m["median_area"],
        r["median_area_px_max"] * m["median_area"],
    )
    if median is not None and areas.size >= MIN_NUCLEI_FOR_SIZES and not low <= median <= high:
        found.append(
            f"median nucleus area {median:.0f} px, outside {low:.0f}-{high:.0f} (training images "
            f"at 40x, ~0.25 um/px: {r['median_area_px_min']:.0f}-{r['median_area_px_max']:.0f}): "
            "wrong magnification?"
        )
    if not areas.size and figures["tissue_fraction"] >= 0.25:
        found.append("no nuclei found in an image that looks like tissue")
    figures["warnings"] = found
    return figures


#: Plausible median nucleus area of a whole slide, um2 (nuclei of about 3.5 to 9 um across).
#: Per 1000-pixel field, the annotated medians of the public sets span 4.4-59 um2 (MoNuSeg
#: 5.8-46.7, 10th percentile 7.6; CoNSeP 4.4-31.7, 10th percentile 9.5; CPM-15 19-59, at their
#: stated mpp); a slide mixes many fields, so its median lies nearer the middle. A scan whose mpp
#: is wrong by 2x has its areas wrong by about 4x: with the bundled model, four MoNuSeg fields
#: (the issue's test slide) give 25.8 um2 at the right 0.25 um/px, 6.6 um2 with 20x pixels
#: labelled 0.25 and 68.8 um2 with 40x pixels labelled 0.5; one field of large nuclei
#: (TCGA-18-5592) gives 9.4 um2 with 20x pixels labelled 0.25. A slide of mostly small nuclei (a
#: lymph node) can be flagged at the right scale, and one of unusually large nuclei missed at a
#: wrong one: the flag is a warning with a suggestion, never an error.
SLIDE_MEDIAN_AREA_UM2 = (10.0, 60.0)

#: The median area the suggested mpp aims at (um2): about the middle of the public sets' medians.
TYPICAL_MEDIAN_AREA_UM2 = 25.0

#: The slide-level scale check needs at least this many nuclei.
MIN_NUCLEI_FOR_SCALE = 200


def scale_check(areas_um2: np.ndarray, *, mpp: float) -> dict[str, Any] | None:
    """Compare a slide's median nucleus area with :data:`SLIDE_MEDIAN_AREA_UM2`.

    Parameters
    ----------
    areas_um2 : 1-D array
        Area of every nucleus of the slide, um2 (at the slide's stated ``mpp``).
    mpp : float
        The microns per pixel the areas were measured with.

    Returns
    -------
    dict or None
        None if there are fewer than :data:`MIN_NUCLEI_FOR_SCALE` nuclei. Else
        ``median_area_um2``, ``expected_um2``, ``suggested_mpp`` (the mpp at which the median
        would be :data:`TYPICAL_MEDIAN_AREA_UM2`; None when in range) and ``warning`` (a line,
        None when in range).

    Examples
    --------
    >>> scale_check(np.full(300, 6.6), mpp=0.25)["suggested_mpp"]
    0.49
    >>> scale_check(np.full(300, 25.0), mpp=0.25)["warning"] is None
    True
    """
    areas = np.asarray(areas_um2, dtype=np.float64)
    if areas.size < MIN_NUCLEI_FOR_SCALE:
        return None
    median = float(np.median(areas))
    low, high = SLIDE_MEDIAN_AREA_UM2
    result = {"median_area_um2": round(median, 2), "expected_um2": [low, high],
              "suggested_mpp": None, "warning": None}  # fmt: skip
    if low <= median <= high:
        return result
    suggested = float(f"{mpp * np.sqrt(TYPICAL_MEDIAN_AREA_UM2 / max(median, 1e-6)):.2g}")
    result["suggested_mpp"] = suggested
    result["warning"] = (
        f"median nucleus area {median:.1f} um2 at {mpp:g} um/px, outside the {low:g}-{high:g} "
        f"um2 of H&E nuclei: wrong magnification? the nuclei would be typical at about "
        f"{suggested:g} um/px (40x is about 0.25, 20x 0.5); rerun with --mpp {suggested:g} if "
        "the file's scale is wrong"
    )
    return result


def warn(name: str, figures: dict[str, Any]) -> None:
    """Log each warning of :func:`assess` on one line, prefixed with ``name``."""
    for line in figures.get("warnings", []):
        log.warning("%s: %s", name, line)
