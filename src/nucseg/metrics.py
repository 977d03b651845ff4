"""Instance-segmentation metrics for nuclei: AJI, AJI+, PQ, matching counts and three "mAP"s.

Every score is computed from one sparse contingency table per image pair: the number of pixels
labelled ``i`` in ``y_true`` and ``j`` in ``y_pred`` for the pairs (i, j) of objects that overlap,
and nothing for the others, so memory grows with the pixels, not with n_true x n_pred (a dense
table of 20,000 x 20,000 nuclei would need gigabytes). Object areas come from one
:func:`numpy.bincount` per image and every overlapping pair's IoU follows; a pair that does not
overlap has IoU 0 and can never be matched or paired. One-to-one assignments (AJI+ and the
matching at IoU <= 0.5) are solved separately on each connected group of overlapping objects,
which gives the same optimum as one assignment over the whole image.

Label images are ``(H, W)`` non-negative integer arrays, 0 = background; the label values need not
be consecutive (they are relabelled internally, keeping their order).

Several tools give different things the same name; each function here names and cites its exact
definition. Empty images: when both images are empty every score is 1.0 (a perfect result); when
exactly one is empty every score is 0.0. In general a ratio 0/0 counts as 1.0 only when both images
are empty and as 0.0 otherwise (e.g. precision with no predictions but some true objects is 0.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nucseg._checks import check_labels, check_same_shape

#: The ten IoU thresholds 0.50, 0.55, ..., 0.95 of the paper's mAP, the DSB 2018 score and COCO.
PAPER_IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

# Recall points of COCO's interpolated average precision (pycocotools: np.linspace(0, 1, 101)).
_COCO_RECALLS = np.linspace(0.0, 1.0, 101)


def aji(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Aggregated Jaccard Index as distributed by MoNuSeg (Kumar et al. 2017).

    Definition: Kumar et al., "A dataset and a technique for generalized nuclear segmentation for
    computational pathology", IEEE TMI 36(7):1550-1560, 2017, and the MATLAB code the MoNuSeg
    organisers distributed on 2018-07-17; identical to hover_net's ``get_fast_aji`` (Graham et al.
    2019, ``metrics/stats_utils.py``). For each true nucleus ``G_i`` the predicted nucleus ``S_j``
    of maximal IoU is chosen (several true nuclei may choose the same prediction);
    ``C += |G_i & S_j|`` and ``U += |G_i | S_j|``. A true nucleus that overlaps no prediction
    adds ``|G_i|`` to ``U``. Finally every prediction never chosen adds its area to ``U``.
    ``AJI = C / U``.

    Exact IoU ties go to the lowest predicted label, as the MATLAB loop (``if nJI > JI``) does;
    hover_net divides by ``union + 1e-6``, which sends an exact tie to the larger union instead.
    An earlier MoNuSeg script (``aggregated_jaccard_index.m``) differs in two ways that hover_net's
    ``get_aji`` docstring calls a bug: a true nucleus overlapping nothing is paired with predicted
    label 1 regardless, and a chosen prediction is erased so no later nucleus can choose it. We
    follow the 2018 code and hover_net: such a nucleus is unpaired and adds only its own area.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    float
        AJI in [0, 1]; 1.0 if both images are empty, 0.0 if exactly one is.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2]])
    >>> p = np.array([[1, 0, 0, 2]])
    >>> aji(t, p)  # C = 1 + 1, U = 2 + 1
    0.6666666666666666
    """
    cont = _Contingency.of(y_true, y_pred)
    inter, union = _aji_sums(cont)
    return _ratio(inter, union, both_empty=cont.both_empty)


def aji_plus(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """AJI+: the aggregated Jaccard index with a one-to-one pairing (Graham et al. 2019).

    Definition: Graham et al., "HoVer-Net: simultaneous segmentation and classification of nuclei in
    multi-tissue histology images", Med. Image Anal. 58, 2019, and hover_net's
    ``get_fast_aji_plus``. True and predicted nuclei are paired one-to-one by
    :func:`scipy.optimize.linear_sum_assignment` maximising the total IoU; pairs with IoU 0 are
    dropped. Paired intersections sum to ``C`` and paired unions to ``U``; the area of every
    unpaired true or predicted nucleus is added to ``U``. ``AJI+ = C / U``. The pairing is
    solved on each group of nuclei connected by overlaps (the same total IoU as one solve over
    the image); where several pairings of a group reach the same total IoU, the one the solver
    returns for the group's IoU matrix in label order is used.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    float
        AJI+ in [0, 1]; 1.0 if both images are empty, 0.0 if exactly one is.
    """
    cont = _Contingency.of(y_true, y_pred)
    inter, union = _aji_plus_sums(cont)
    return _ratio(inter, union, both_empty=cont.both_empty)


@dataclass(frozen=True)
class Matching:
    """Counts and scores of a one-to-one matching at one IoU threshold (see :func:`matching`).

    ``dsb`` is TP / (TP + FP + FN), the per-threshold score of the Data Science Bowl 2018 that
    cellpose and stardist call "average precision" or "accuracy".
    """

    thresh: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    dsb: float
    mean_matched_iou: float
    sum_matched_iou: float


def matching(
    y_true: np.ndarray, y_pred: np.ndarray, *, thresh: float | Sequence[float] = 0.5
) -> Matching | tuple[Matching, ...]:
    """Match true and predicted objects one-to-one at IoU >= ``thresh`` and count the result.

    Definition: stardist's ``stardist.matching.matching`` (Schmidt et al., MICCAI 2018). A true and
    a predicted object may be matched when their IoU >= ``thresh``. Above 0.5 an object overlaps at
    most one other with IoU > 0.5, so the matches are the qualifying pairs themselves. At or below
    0.5 the Hungarian algorithm finds the largest number of matches and, among those, the largest
    total IoU of the matches (stardist adds the IoU of non-qualifying pairs to its tie-breaker; the
    counts are the same). TP = matches, FP = n_pred - TP, FN = n_true - TP; precision = TP/(TP+FP),
    recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), dsb = TP/(TP+FP+FN).

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.
    thresh : float or sequence of float, optional
        IoU threshold(s) in (0, 1]; a sequence is answered from one contingency table.

    Returns
    -------
    Matching or tuple of Matching
        One per threshold. Both images empty: all ratios 1.0; otherwise a ratio 0/0 is 0.0 (e.g.
        precision without predictions, ``mean_matched_iou`` without matches).
    """
    cont = _Contingency.of(y_true, y_pred)
    if np.ndim(thresh) == 0:
        return _matching(cont, _check_thresh(thresh))
    return tuple(_matching(cont, _check_thresh(t)) for t in thresh)


def panoptic_quality(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Panoptic quality PQ = DQ * SQ for one class of objects (Kirillov et al. 2019).

    Definition: Kirillov et al., "Panoptic segmentation", CVPR 2019, eq. 1; as hover_net's
    ``get_fast_pq``. True and predicted objects match when their IoU > 0.5 (strictly; such matches
    are unique). DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matches, PQ = DQ * SQ.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    dict
        ``{"pq", "dq", "sq"}``; all 1.0 if both images are empty; all 0.0 if there is no match
        otherwise (SQ of no match is taken as 0.0).
    """
    cont = _Contingency.of(y_true, y_pred)
    tp, iou_sum = _pq_counts(cont)
    return _pq_scores(tp, cont.n_pred - tp, cont.n_true - tp, iou_sum, cont.both_empty)


def paper_map(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The "mAP" of Lagree et al. 2021: mean precision TP/(TP+FP) over IoU 0.50:0.05:0.95.

    Definition: Lagree et al., "A review and comparison of breast tumor cell nuclei segmentation
    performances using deep convolutional neural networks", Sci Rep 11:8025, 2021, "Evaluation
    metrics": "average precision over multiple IoU thresholds ... ten IoU thresholds starting at 0.5
    and increasing linearly by 0.05 to 0.95". The paper gives no formula; its Table 2 fixes the
    reading. For GB U-Net it reports precision 0.7997 at IoU 0.5 and 0.4669 at 0.7 with mAP 0.3909:
    a precision curve falling from 0.80 at 0.5 through 0.47 at 0.7 to about 0 at 0.95 averages to
    about 0.39. The mean of TP/(TP+FP+FN) would be far lower (0.52 at 0.5 and 0.25 at 0.7, from
    F1(0.5) = 0.6862 and F1(0.7) = 0.4007), and so would the mean of F1 (F1 is 0.86 of precision at
    both thresholds, giving about 0.33). Mask R-CNN fits the same reading: mAP 0.3884 with
    P(0.5) = 0.7859 and P(0.7) = 0.4773. The matching at each threshold is :func:`matching`'s;
    the thresholds are :data:`PAPER_IOU_THRESHOLDS`.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    float
        In [0, 1]; 1.0 if both images are empty, 0.0 if exactly one is (precision without
        predictions counts as 0.0).
    """
    cont = _Contingency.of(y_true, y_pred)
    return float(np.mean([_matching(cont, t).precision for t in PAPER_IOU_THRESHOLDS]))


def dsb_map(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over IoU 0.50:0.05:0.95 of TP/(TP+FP+FN), the Data Science Bowl 2018 score.

    Definition: the 2018 Data Science Bowl (Caicedo et al., "Nucleus segmentation across imaging
    experiments: the 2018 Data Science Bowl", Nat. Methods 16, 2019), which calls it "mean average
    precision", as do cellpose and stardist ("accuracy"). Matching as in :func:`matching`, at the
    thresholds :data:`PAPER_IOU_THRESHOLDS`.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    float
        In [0, 1]; 1.0 if both images are empty, 0.0 if exactly one is.
    """
    cont = _Contingency.of(y_true, y_pred)
    return float(np.mean([_matching(cont, t).dsb for t in PAPER_IOU_THRESHOLDS]))


def coco_map(
    y_true: np.ndarray, y_pred: np.ndarray, scores: Mapping[int, float] | np.ndarray
) -> float:
    """COCO mask mAP@[0.50:0.05:0.95] of one image (Lin et al. 2014); see :func:`coco_map_dataset`.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.
    scores : mapping or 1-D array
        Confidence of each predicted object: ``scores[label]`` for every label in ``y_pred``.

    Returns
    -------
    float
        In [0, 1]; 1.0 if both images are empty, 0.0 if exactly one is.
    """
    return coco_map_dataset([(y_true, y_pred, scores)])


def coco_map_dataset(
    samples: Iterable[tuple[np.ndarray, np.ndarray, Mapping[int, float] | np.ndarray]],
) -> float:
    """COCO mask mAP@[0.50:0.05:0.95] with detections pooled over images (Lin et al. 2014).

    Definition: Lin et al., "Microsoft COCO: common objects in context", ECCV 2014, as computed by
    pycocotools' ``COCOeval`` (``evaluateImg`` and ``accumulate``) for a single class. At each
    threshold ``t`` of :data:`PAPER_IOU_THRESHOLDS`, each image's predictions are taken in
    descending score order and each is matched to the still unmatched true object of highest
    IoU >= ``t`` (ties to the higher true label, as in pycocotools' loop; at IoU >= 0.5 a tie
    needs a prediction that is exactly two equal true objects, so it never changes the result).
    All images' predictions are
    then ranked by score (ties: earlier image, then lower label); precision is made monotone and
    read at the 101 recalls 0, 0.01, ..., 1 (0 beyond the highest recall reached) and averaged; the
    ten APs are averaged. Unlike pycocotools' default there is no limit of 100 detections per image.

    Parameters
    ----------
    samples : iterable of (y_true, y_pred, scores)
        Label images as in :func:`coco_map` and the scores of the predicted labels.

    Returns
    -------
    float
        In [0, 1]; 1.0 if no image has a true or predicted object, 0.0 if only one side has any.
    """
    n_true = n_pred = 0
    image_scores, image_hits = [], []
    for y_true, y_pred, scores in samples:
        cont = _Contingency.of(y_true, y_pred)
        s = _score_vector(scores, cont.pred_values)
        order = np.argsort(-s, kind="mergesort")
        image_scores.append(s[order])
        image_hits.append(np.stack([_coco_hits(cont, order, t) for t in PAPER_IOU_THRESHOLDS]))
        n_true, n_pred = n_true + cont.n_true, n_pred + cont.n_pred
    if n_true == 0 or n_pred == 0:
        return 1.0 if n_true == n_pred else 0.0
    ranked = np.argsort(-np.concatenate(image_scores), kind="mergesort")
    hits = np.concatenate(image_hits, axis=1)[:, ranked]
    return float(np.mean([_coco_ap(h, n_true) for h in hits]))


def evaluate_image(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every score of one image pair from one contingency table.

    Parameters
    ----------
    y_true, y_pred : (H, W) integer ndarray
        True and predicted label images, 0 = background.

    Returns
    -------
    dict
        Scores, as defined by the functions of this module and with their empty-image cases:
        ``aji``, ``aji_plus``, ``paper_map``, ``dsb_map``, ``pq``, ``dq``, ``sq``, and for each
        threshold XX in 50, 55, ..., 95 ``precision_XX``, ``recall_XX``, ``f1_XX``. Counts, whose
        sums over images give pooled scores: ``n_true``, ``n_pred``, ``aji_inter``, ``aji_union``,
        ``aji_plus_inter``, ``aji_plus_union``, ``tp_XX``, ``fp_XX``, ``fn_XX``, ``pq_tp``,
        ``pq_fp``, ``pq_fn``, ``pq_iou_sum``.
    """
    cont = _Contingency.of(y_true, y_pred)
    aji_inter, aji_union = _aji_sums(cont)
    plus_inter, plus_union = _aji_plus_sums(cont)
    pq_tp, pq_iou_sum = _pq_counts(cont)
    counts: dict[str, float] = {
        "n_true": cont.n_true,
        "n_pred": cont.n_pred,
        "aji_inter": aji_inter,
        "aji_union": aji_union,
        "aji_plus_inter": plus_inter,
        "aji_plus_union": plus_union,
        "pq_tp": pq_tp,
        "pq_fp": cont.n_pred - pq_tp,
        "pq_fn": cont.n_true - pq_tp,
        "pq_iou_sum": pq_iou_sum,
    }
    for t in PAPER_IOU_THRESHOLDS:
        m = _matching(cont, t)
        counts.update({f"tp_{_pct(t)}": m.tp, f"fp_{_pct(t)}": m.fp, f"fn_{_pct(t)}": m.fn})
    return {**_scores_from_counts(counts), **counts}


class Evaluator:
    """Score a dataset image by image: ``reset()``, ``process(id, y_true, y_pred)``, ``evaluate()``.

    The dataset score is the mean over images of each per-image score, as the paper's Table 2
    averages the per-image AJIs of its Table 3. Pooled variants (``pooled_`` prefix) compute each
    score once from the counts summed over images: AJI and AJI+ from summed intersections and
    unions, precision / recall / F1 from summed TP, FP, FN, ``paper_map`` and ``dsb_map`` from the
    pooled per-threshold scores, PQ from summed matches and IoUs.

    Examples
    --------
    >>> ev = Evaluator()
    >>> ev.process("a", np.array([[1, 0]]), np.array([[1, 0]]))
    >>> ev.evaluate()["aji"]
    1.0
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self._per_image: dict[Any, dict[str, float]] = {}

    def process(self, image_id: Any, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Score one image pair; ``image_id`` must be new (else ``ValueError``)."""
        if image_id in self._per_image:
            raise ValueError(f"image id {image_id!r} was already processed; ids must be unique")
        self._per_image[image_id] = evaluate_image(y_true, y_pred)

    def evaluate(self) -> dict[str, Any]:
        """Dataset scores.

        Returns
        -------
        dict
            Every score key of :func:`evaluate_image` averaged over images; the same keys prefixed
            ``pooled_`` computed from summed counts; ``n_images``; ``n_true`` and ``n_pred``
            summed over images; ``per_image``: ``{image_id: evaluate_image(...)}``.
        """
        if not self._per_image:
            raise ValueError("no images processed; call process() before evaluate()")
        records = list(self._per_image.values())
        result: dict[str, Any] = {}
        for key in _scores_from_counts(records[0]):
            result[key] = float(np.mean([r[key] for r in records]))
        count_keys = [k for k in records[0] if k not in result]
        totals = {k: sum(r[k] for r in records) for k in count_keys}
        result.update({f"pooled_{k}": v for k, v in _scores_from_counts(totals).items()})
        result["n_images"] = len(records)
        result["n_true"], result["n_pred"] = totals["n_true"], totals["n_pred"]
        result["per_image"] = dict(self._per_image)
        return result


# --- internals ----------------------------------------------------------------------------------


class _Contingency:
    """Pixel counts of the overlapping (true label, predicted label) pairs of one image pair.

    Objects are numbered 0..n_true-1 and 0..n_pred-1 in label order. ``rows``, ``cols``,
    ``inter``, ``union`` and ``iou`` describe the pairs with at least one common pixel, sorted by
    (row, column); every other pair has intersection and IoU 0.
    """

    def __init__(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        inter: np.ndarray,
        area_true: np.ndarray,
        area_pred: np.ndarray,
        pred_values: np.ndarray,
    ) -> None:
        self.n_true, self.n_pred = area_true.size, area_pred.size
        self.rows, self.cols, self.inter = rows, cols, inter
        self.area_true, self.area_pred = area_true, area_pred
        self.union = area_true[rows] + area_pred[cols] - inter
        self.iou = inter / self.union  # unions are >= 1: every object has a pixel
        self.pred_values = pred_values  # original label of each predicted object
        self.both_empty = self.n_true == 0 and self.n_pred == 0

    @classmethod
    def of(cls, y_true: np.ndarray, y_pred: np.ndarray) -> _Contingency:
        """Validate two label images and count the pixels of their overlapping pairs."""
        y_true = check_labels(y_true, name="y_true")
        y_pred = check_labels(y_pred, name="y_pred")
        check_same_shape(y_true, y_pred, names=("y_true", "y_pred"))
        t, n_true, _ = _relabel(y_true)
        area_true = np.bincount(t.ravel(), minlength=n_true + 1)[1:]
        p, n_pred, pred_values = _relabel(y_pred)
        area_pred = np.bincount(p.ravel(), minlength=n_pred + 1)[1:]
        both = (t > 0) & (p > 0)
        code = t[both].astype(np.int64)
        code -= 1
        code *= n_pred
        code += p[both]
        code -= 1  # (row, column) of each overlapping pixel as row * n_pred + column
        del t, p, both
        if n_true * n_pred <= max(code.size, 1 << 16):  # small table: one bincount
            counts = np.bincount(code, minlength=n_true * n_pred)
            keys = np.flatnonzero(counts)
            inter = counts[keys]
        else:  # only the pairs present: memory proportional to the overlapping pixels
            keys, inter = np.unique(code, return_counts=True)
        rows, cols = np.divmod(keys, max(n_pred, 1))
        return cls(rows, cols, inter.astype(np.int64), area_true, area_pred, pred_values)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Map labels to 0..n keeping their order; return (indices, n, original value of 1..n)."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 16):  # lookup table from one bincount: a few ms per 1e6 px
        if flat.dtype.itemsize >= np.dtype(np.intp).itemsize and flat.dtype.kind == "u":
            flat = flat.astype(np.intp)  # bincount refuses uint64; the values fit
        present = np.bincount(flat, minlength=1) > 0
        present[0] = False
        lut = np.cumsum(present, dtype=np.intp)
        return lut[flat].reshape(labels.shape), int(lut[-1]), np.flatnonzero(present)
    values, inverse = np.unique(flat, return_inverse=True)  # sparse huge labels
    inverse = inverse.reshape(labels.shape).astype(np.intp)
    if values[0] == 0:
        return inverse, values.size - 1, values[1:]
    return inverse + 1, values.size, values


def _ratio(num: float, den: float, *, both_empty: bool) -> float:
    """``num / den``; 0/0 is 1.0 when both images are empty, else 0.0."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num / den)


def _check_thresh(thresh: float) -> float:
    thresh = float(thresh)
    if not 0.0 < thresh <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {thresh}")
    return thresh


def _pct(t: float) -> str:
    return f"{round(100 * t):02d}"


def _aji_sums(cont: _Contingency) -> tuple[int, int]:
    """(C, U) of the MoNuSeg AJI."""
    if cont.n_true == 0:
        return 0, int(cont.area_pred.sum())
    if cont.n_pred == 0:
        return 0, int(cont.area_true.sum())
    # Best pair of each true object: highest IoU, then lowest predicted label.
    order = np.lexsort((cont.cols, -cont.iou, cont.rows))
    first = order[np.diff(cont.rows[order], prepend=-1) != 0]
    used = np.zeros(cont.n_pred, dtype=bool)
    used[cont.cols[first]] = True
    paired = np.zeros(cont.n_true, dtype=bool)
    paired[cont.rows[first]] = True
    inter = cont.inter[first].sum()
    union = cont.union[first].sum()
    union += cont.area_true[~paired].sum() + cont.area_pred[~used].sum()
    return int(inter), int(union)


def _aji_plus_sums(cont: _Contingency) -> tuple[int, int]:
    """(C, U) of AJI+ (one-to-one pairing maximising total IoU)."""
    chosen = _max_weight_pairs(cont.rows, cont.cols, cont.iou, scale_by_group=False)
    rows, cols = cont.rows[chosen], cont.cols[chosen]
    inter = cont.inter[chosen].sum()
    union = cont.union[chosen].sum() + cont.area_true.sum() + cont.area_pred.sum()
    union -= cont.area_true[rows].sum() + cont.area_pred[cols].sum()
    return int(inter), int(union)


def _max_weight_pairs(
    rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, *, scale_by_group: bool
) -> np.ndarray:
    """Indices, in increasing order, of a one-to-one set of pairs of maximal total weight.

    The pairs (``rows[k]``, ``cols[k]``) with ``weight[k] > 0`` form a bipartite graph; each
    connected group is solved with :func:`scipy.optimize.linear_sum_assignment` on its dense
    weight matrix (absent pairs weigh 0 and are never returned), a group of one pair directly.
    With ``scale_by_group``, the weights ``w`` become ``1 + w / (2 * min(group shape))``: the
    largest number of pairs first, then the largest total ``w`` (which sums to at most 1/2).
    """
    if rows.size == 0:
        return np.zeros(0, dtype=np.intp)
    row_ids, r = np.unique(rows, return_inverse=True)
    col_ids, c = np.unique(cols, return_inverse=True)
    n = row_ids.size + col_ids.size
    graph = coo_matrix((np.ones(rows.size), (r, c + row_ids.size)), shape=(n, n))
    _, group_of_node = connected_components(graph, directed=False)
    group = group_of_node[r]
    size = np.bincount(group)[group]
    chosen = [np.flatnonzero(size == 1)]
    many = np.flatnonzero(size > 1)
    many = many[np.argsort(group[many], kind="stable")]
    for pairs in np.split(many, np.flatnonzero(np.diff(group[many])) + 1) if many.size else []:
        gr, gi = np.unique(r[pairs], return_inverse=True)
        gc, gj = np.unique(c[pairs], return_inverse=True)
        w = weight[pairs]
        if scale_by_group:
            w = 1.0 + w / (2 * min(gr.size, gc.size))
        matrix = np.zeros((gr.size, gc.size))
        matrix[gi, gj] = w
        index = np.full((gr.size, gc.size), -1, dtype=np.intp)
        index[gi, gj] = pairs
        a, b = linear_sum_assignment(matrix, maximize=True)
        picked = index[a, b]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _match_pairs(cont: _Contingency, thresh: float) -> np.ndarray:
    """Indices of the pairs of a one-to-one matching with IoU >= thresh (see :func:`matching`)."""
    ok = np.flatnonzero(cont.iou >= thresh)
    if thresh > 0.5:  # IoU > 0.5 pairs are unique
        return ok
    # One more match outweighs any IoU total: the tie-breaker sums to at most 1/2.
    chosen = _max_weight_pairs(cont.rows[ok], cont.cols[ok], cont.iou[ok], scale_by_group=True)
    return ok[chosen]


def _matching(cont: _Contingency, thresh: float) -> Matching:
    pairs = _match_pairs(cont, thresh)
    tp = int(pairs.size)
    fp, fn = cont.n_pred - tp, cont.n_true - tp
    iou_sum = float(cont.iou[pairs].sum())
    empty = cont.both_empty
    return Matching(
        thresh=thresh, n_true=cont.n_true, n_pred=cont.n_pred, tp=tp, fp=fp, fn=fn,
        precision=_ratio(tp, tp + fp, both_empty=empty),
        recall=_ratio(tp, tp + fn, both_empty=empty),
        f1=_ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty),
        dsb=_ratio(tp, tp + fp + fn, both_empty=empty),
        mean_matched_iou=_ratio(iou_sum, tp, both_empty=empty),
        sum_matched_iou=iou_sum,
    )  # fmt: skip


def _pq_counts(cont: _Contingency) -> tuple[int, float]:
    """(TP, sum of matched IoU) of matches with IoU > 0.5."""
    matched = cont.iou[cont.iou > 0.5]  # row-major order, as a dense table's
    return int(matched.size), float(matched.sum())


def _pq_scores(tp: int, fp: int, fn: int, iou_sum: float, both_empty: bool) -> dict[str, float]:
    dq = _ratio(tp, tp + fp / 2 + fn / 2, both_empty=both_empty)
    sq = _ratio(iou_sum, tp, both_empty=both_empty)
    return {"pq": dq * sq, "dq": dq, "sq": sq}


def _scores_from_counts(c: Mapping[str, float]) -> dict[str, float]:
    """The score keys of :func:`evaluate_image` from its count keys (of one image or summed)."""
    empty = c["n_true"] == 0 and c["n_pred"] == 0
    per_thresh, precision, dsb = {}, [], []
    for t in PAPER_IOU_THRESHOLDS:
        tp, fp, fn = (c[f"{k}_{_pct(t)}"] for k in ("tp", "fp", "fn"))
        precision.append(_ratio(tp, tp + fp, both_empty=empty))
        dsb.append(_ratio(tp, tp + fp + fn, both_empty=empty))
        per_thresh[f"precision_{_pct(t)}"] = precision[-1]
        per_thresh[f"recall_{_pct(t)}"] = _ratio(tp, tp + fn, both_empty=empty)
        per_thresh[f"f1_{_pct(t)}"] = _ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty)
    return {
        "aji": _ratio(c["aji_inter"], c["aji_union"], both_empty=empty),
        "aji_plus": _ratio(c["aji_plus_inter"], c["aji_plus_union"], both_empty=empty),
        "paper_map": float(np.mean(precision)),
        "dsb_map": float(np.mean(dsb)),
        **_pq_scores(c["pq_tp"], c["pq_fp"], c["pq_fn"], c["pq_iou_sum"], empty),
        **per_thresh,
    }


def _score_vector(scores: Mapping[int, float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Scores of the predicted labels ``values``, checked to be present and finite."""
    if isinstance(scores, Mapping):
        missing = [int(v) for v in values if int(v) not in scores]
        if missing:
            raise ValueError(f"scores has no entry for predicted labels {missing[:10]}")
        s = np.array([float(scores[int(v)]) for v in values], dtype=np.float64)
    else:
        table = np.asarray(scores, dtype=np.float64)
        if table.ndim != 1:
            raise ValueError(f"scores must be a mapping or a 1-D array, got shape {table.shape}")
        if values.size and table.size <= values[-1]:
            raise ValueError(
                f"scores has {table.size} entries but the highest predicted label is {values[-1]}"
            )
        s = table[values]
    if not np.all(np.isfinite(s)):
        raise ValueError("scores of predicted objects must be finite")
    return s


def _coco_hits(cont: _Contingency, order: np.ndarray, thresh: float) -> np.ndarray:
    """Whether each prediction, in ``order``, is a true positive under COCO's greedy matching."""
    ok = np.flatnonzero(cont.iou >= thresh)
    hit = np.zeros(cont.n_pred, dtype=bool)
    if thresh > 0.5:  # unique candidates: greedy order cannot matter
        hit[cont.cols[ok]] = True
        return hit[order]
    ok = ok[np.argsort(cont.cols[ok], kind="stable")]  # by prediction, then true label
    start = np.searchsorted(cont.cols[ok], np.arange(cont.n_pred + 1))
    hits = np.zeros(order.size, dtype=bool)
    taken = np.zeros(cont.n_true, dtype=bool)
    for rank, j in enumerate(order):
        cand = ok[start[j] : start[j + 1]]
        cand = cand[~taken[cont.rows[cand]]]
        if cand.size:
            iou = cont.iou[cand]
            best = cont.rows[cand[np.flatnonzero(iou == iou.max())[-1]]]
            taken[best] = hits[rank] = True
    return hits


def _coco_ap(hits: np.ndarray, n_true: int) -> float:
    """pycocotools' 101-point interpolated AP of ranked detections (``hits`` in score order)."""
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / n_true
    precision = np.maximum.accumulate((tp / (tp + fp))[::-1])[::-1]
    at = np.searchsorted(recall, _COCO_RECALLS, side="left")
    reached = at < hits.size
    q = np.zeros(_COCO_RECALLS.size)
    q[reached] = precision[at[reached]]
    return float(q.mean())
