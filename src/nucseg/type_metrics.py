"""Scores of typed nuclei: detection F1, HoVer-Net's per-type F1 and multi-class PQ.

Every nucleus has a type, a positive integer (CoNSeP's: 1 other, 2 inflammatory, 3 epithelial,
4 spindle-shaped); a label image comes with a mapping ``label -> type`` for each of its labels.
The module sits beside :mod:`nucseg.metrics` (which it uses for the IoU tables of PQ) rather than
inside it, which holds the untyped scores.

Definitions, with their sources:

- **Detection** (Graham et al., "HoVer-Net", Medical Image Analysis 58, 2019, section 4.2;
  hover_net's ``compute_stats.run_nuclei_type_stat`` with ``pair_coordinates``): a true and a
  predicted nucleus are represented by their centroids (mean row and column of their pixels).
  Centroids are paired one-to-one by the Hungarian algorithm minimising the total Euclidean
  distance over *all* true and predicted centroids of the image, and a pair is kept only if its
  distance is <= ``radius`` (12 pixels at 40x, about 3 um, in HoVer-Net). Kept pairs are the
  detections TP_d; unpaired predictions FP_d, unpaired true nuclei FN_d;
  F1_d = 2 TP_d / (2 TP_d + FP_d + FN_d). Counts are pooled over all images of a dataset before
  any ratio is taken (as hover_net does).
- **Per-type F1** F_t (HoVer-Net's eq. 13, weights 2, 2, 1, 1): among the detected pairs whose true
  or predicted type is t, TP_t = both t, FP_t = predicted t but true another type, FN_t = true t
  but predicted another; FP_d,t and FN_d,t are the unpaired predicted and true nuclei of type t.
  F_t = 2 TP_t / (2 TP_t + 2 FP_t + 2 FN_t + FP_d,t + FN_d,t). The paper's formula also adds the
  true negatives TN_t to both sides; hover_net counts them among the pairs of type t in truth or
  prediction, where there are none, so TN_t = 0 here as there.
- **Per-type precision and recall** (as CellViT, Hörst et al., Medical Image Analysis 94, 2024,
  ``cell_type_detection_scores``, whose harmonic mean is F_t):
  P_t = TP_t / (TP_t + 2 FP_t + FP_d,t), R_t = TP_t / (TP_t + 2 FN_t + FN_d,t).
- **Type accuracy** among detections: the share of pairs whose types agree (hover_net's
  ``acc_type``).
- **mPQ+** (CoNIC challenge, Graham et al., "CoNIC challenge", Medical Image Analysis 92, 2024,
  the ``mpq+`` of its ``compute_stats.py``): for each type t, the true and the predicted nuclei
  of type t are matched at IoU > 0.5 (as :func:`nucseg.metrics.panoptic_quality`); TP, FP, FN
  and the matched IoUs are summed over all images, PQ_t = DQ_t * SQ_t from the sums, and mPQ+ is
  the mean of PQ_t over the types.
- **mPQ (PanNuke)** (Gamper et al., "PanNuke dataset extension, insights and baselines", 2020,
  its ``compute_stats.py``): PQ_t per image, a type whose true nuclei are absent from the image
  left out (NaN), the mean over the remaining types per image, then the mean over images that
  have at least one.

Empty cases: a ratio 0/0 is 1.0 when there is nothing to get wrong (no true and no predicted
nucleus of that type, or of any type for detection) and 0.0 otherwise, as in
:mod:`nucseg.metrics`. A type with no true and no predicted nucleus in the whole dataset is left
out of mPQ+ (it would score 1.0; CoNIC's code scores it 0.0 through its epsilon); with no type
left, mPQ+ is 1.0. PanNuke's mPQ of a dataset where no image has a true typed nucleus is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from nucseg._checks import check_labels, check_same_shape
from nucseg.metrics import _Contingency, _pq_counts, _pq_scores, _ratio, _relabel

#: HoVer-Net's pairing radius in pixels, at 40x (about 0.25 um per pixel).
HOVERNET_RADIUS = 12.0


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label values present in ``labels`` (increasing) and their centroids.

    Returns
    -------
    values : (N,) int64 array
    rc : (N, 2) float64 array
        Mean row and column of each object's pixels.
    """
    labels = check_labels(labels)
    index, n, values = _relabel(labels)
    flat = index.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    rows, cols = np.indices(labels.shape)
    r = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1:]
    c = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1:]
    rc = np.stack([r, c], axis=1) / np.maximum(area, 1)[:, None]
    return values.astype(np.int64), rc


def pair_centroids(
    true_rc: np.ndarray, pred_rc: np.ndarray, *, radius: float = HOVERNET_RADIUS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HoVer-Net's pairing: Hungarian on all Euclidean distances, pairs within ``radius`` kept.

    Returns
    -------
    pairs : (K, 2) intp array
        (true index, predicted index) of each kept pair.
    unpaired_true, unpaired_pred : intp arrays
        Indices of the true and predicted points left without a pair.
    """
    true_rc = np.asarray(true_rc, dtype=float).reshape(-1, 2)
    pred_rc = np.asarray(pred_rc, dtype=float).reshape(-1, 2)
    if len(true_rc) == 0 or len(pred_rc) == 0:
        a = b = np.zeros(0, dtype=np.intp)
    else:
        distance = cdist(true_rc, pred_rc)
        a, b = linear_sum_assignment(distance)
        keep = distance[a, b] <= radius
        a, b = a[keep].astype(np.intp), b[keep].astype(np.intp)
    return (
        np.stack([a, b], axis=1),
        np.setdiff1d(np.arange(len(true_rc)), a),
        np.setdiff1d(np.arange(len(pred_rc)), b),
    )


def object_types(labels: np.ndarray, types: Mapping[int, int], *, name: str) -> np.ndarray:
    """The type of each object of ``labels`` in increasing label order; every label needs one."""
    values = np.unique(labels)
    values = values[values > 0]
    missing = [int(v) for v in values if int(v) not in types]
    if missing:
        raise ValueError(f"{name}: labels {missing[:5]} have no type ({len(missing)} in all)")
    out = np.array([types[int(v)] for v in values], dtype=np.int64)
    if out.size and out.min() < 1:
        raise ValueError(f"{name}: types must be positive integers, found {out.min()}")
    return out


def _typed_labels(labels: np.ndarray, kinds: np.ndarray, t: int) -> np.ndarray:
    """``labels`` with every object whose type is not ``t`` set to background."""
    index, _, _ = _relabel(labels)
    keep = np.concatenate([[False], kinds == t])
    return np.where(keep[index], labels, 0)


def image_type_record(
    y_true: np.ndarray,
    true_types: Mapping[int, int],
    y_pred: np.ndarray,
    pred_types: Mapping[int, int],
    *,
    classes: Sequence[int],
    radius: float = HOVERNET_RADIUS,
) -> dict[str, Any]:
    """Everything the dataset scores need from one image pair (see :class:`TypeEvaluator`)."""
    y_true = check_labels(y_true, name="y_true")
    y_pred = check_labels(y_pred, name="y_pred")
    check_same_shape(y_true, y_pred, names=("y_true", "y_pred"))
    kind_t = object_types(y_true, true_types, name="y_true")
    kind_p = object_types(y_pred, pred_types, name="y_pred")
    _, rc_t = centroids(y_true)
    _, rc_p = centroids(y_pred)
    pairs, lone_t, lone_p = pair_centroids(rc_t, rc_p, radius=radius)
    pq = {}
    for t in classes:
        cont = _Contingency.of(_typed_labels(y_true, kind_t, t), _typed_labels(y_pred, kind_p, t))
        tp, iou_sum = _pq_counts(cont)
        pq[int(t)] = (tp, cont.n_pred - tp, cont.n_true - tp, iou_sum)
    return {
        "paired_true": kind_t[pairs[:, 0]],
        "paired_pred": kind_p[pairs[:, 1]],
        "unpaired_true": kind_t[lone_t],
        "unpaired_pred": kind_p[lone_p],
        "pq": pq,
        "true_present": {int(t): bool(np.any(kind_t == t)) for t in classes},
    }


def type_scores(
    paired_true: np.ndarray,
    paired_pred: np.ndarray,
    unpaired_true: np.ndarray,
    unpaired_pred: np.ndarray,
    t: int,
) -> dict[str, float]:
    """HoVer-Net's F_t with CellViT's P_t and R_t for type ``t`` (see the module docstring)."""
    tp = int(np.sum((paired_true == t) & (paired_pred == t)))
    fp_c = int(np.sum((paired_true != t) & (paired_pred == t)))
    fn_c = int(np.sum((paired_true == t) & (paired_pred != t)))
    fp_d = int(np.sum(unpaired_pred == t))
    fn_d = int(np.sum(unpaired_true == t))
    empty = tp + fp_c + fn_c + fp_d + fn_d == 0
    return {
        "precision": _ratio(tp, tp + 2 * fp_c + fp_d, both_empty=empty),
        "recall": _ratio(tp, tp + 2 * fn_c + fn_d, both_empty=empty),
        "f1": _ratio(2 * tp, 2 * tp + 2 * fp_c + 2 * fn_c + fp_d + fn_d, both_empty=empty),
        "tp": tp, "fp_class": fp_c, "fn_class": fn_c, "fp_det": fp_d, "fn_det": fn_d,
        "n_true": tp + fn_c + fn_d, "n_pred": tp + fp_c + fp_d,
    }  # fmt: skip


def detection_scores(
    paired_true: np.ndarray, paired_pred: np.ndarray, n_unpaired_true: int, n_unpaired_pred: int
) -> dict[str, float]:
    """Detection precision, recall and F1, and the type accuracy among the detections."""
    tp, fp, fn = len(paired_true), int(n_unpaired_pred), int(n_unpaired_true)
    empty = tp + fp + fn == 0
    agree = int(np.sum(paired_true == paired_pred))
    return {
        "precision": _ratio(tp, tp + fp, both_empty=empty),
        "recall": _ratio(tp, tp + fn, both_empty=empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty=empty),
        "type_accuracy": _ratio(agree, tp, both_empty=empty),
        "tp": tp, "fp": fp, "fn": fn,
    }  # fmt: skip


def confusion_matrix(
    paired_true: np.ndarray, paired_pred: np.ndarray, classes: Sequence[int]
) -> np.ndarray:
    """``(K, K)`` counts of detected pairs: row = true type, column = predicted type."""
    index = {int(c): i for i, c in enumerate(classes)}
    out = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for a, b in zip(paired_true.tolist(), paired_pred.tolist(), strict=True):
        if a in index and b in index:
            out[index[a], index[b]] += 1
    return out


def mpq_plus(pq_counts: Mapping[int, tuple[int, int, int, float]]) -> dict[str, Any]:
    """CoNIC's mPQ+ from each type's pooled (TP, FP, FN, matched IoU sum); see the docstring."""
    per_type = {}
    for t, (tp, fp, fn, iou_sum) in pq_counts.items():
        if tp + fp + fn:
            per_type[int(t)] = _pq_scores(tp, fp, fn, iou_sum, False)["pq"]
    value = float(np.mean(list(per_type.values()))) if per_type else 1.0
    return {"mpq_plus": value, "pq_plus_per_type": per_type}


def _pannuke_image_mpq(record: Mapping[str, Any]) -> float:
    """Mean PQ over the types present in the image's truth; NaN if there is none."""
    values = [
        _pq_scores(tp, fp, fn, iou, False)["pq"]
        for t, (tp, fp, fn, iou) in record["pq"].items()
        if record["true_present"][t]
    ]
    return float(np.mean(values)) if values else float("nan")


class TypeEvaluator:
    """Score typed nuclei image by image: ``reset()``, ``process(...)``, ``evaluate()``.

    Parameters
    ----------
    classes : mapping of int to str
        The scored types and their names, e.g. ``nucseg.datasets.labelled.CONSEP_TYPES``.
    radius : float, optional
        Pairing radius in pixels of the scored images (HoVer-Net: 12 at 40x).

    Examples
    --------
    >>> ev = TypeEvaluator({1: "a", 2: "b"})
    >>> ev.process("x", np.array([[1, 0, 2]]), {1: 1, 2: 2}, np.array([[1, 0, 2]]), {1: 1, 2: 1})
    >>> r = ev.evaluate()
    >>> r["detection"]["f1"], r["types"]["a"]["f1"], r["types"]["b"]["f1"]
    (1.0, 0.5, 0.0)
    """

    def __init__(self, classes: Mapping[int, str], *, radius: float = HOVERNET_RADIUS) -> None:
        if not classes:
            raise ValueError("classes must name at least one type")
        self.classes = {int(k): str(v) for k, v in classes.items()}
        self.radius = float(radius)
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self._records: dict[Any, dict[str, Any]] = {}

    def process(
        self,
        image_id: Any,
        y_true: np.ndarray,
        true_types: Mapping[int, int],
        y_pred: np.ndarray,
        pred_types: Mapping[int, int],
    ) -> None:
        """Pair and count one image; ``image_id`` must be new (else ``ValueError``)."""
        if image_id in self._records:
            raise ValueError(f"image id {image_id!r} was already processed; ids must be unique")
        self._records[image_id] = image_type_record(
            y_true, true_types, y_pred, pred_types, classes=list(self.classes), radius=self.radius
        )

    def evaluate(self) -> dict[str, Any]:
        """Dataset scores from counts pooled over the images.

        Returns
        -------
        dict
            ``detection`` (precision, recall, f1, type_accuracy, tp, fp, fn); ``types``: per
            type name the :func:`type_scores`; ``mpq_plus`` and ``pq_plus_per_type`` (by name);
            ``mpq_pannuke``; ``confusion`` (rows true, columns predicted, in ``class_names``
            order, detected pairs only); ``radius``; ``n_images``.
        """
        if not self._records:
            raise ValueError("no images processed; call process() before evaluate()")
        records = list(self._records.values())
        keys = ("paired_true", "paired_pred", "unpaired_true", "unpaired_pred")
        pt, pp, ut, up = (np.concatenate([r[k] for r in records]) for k in keys)
        pooled = {
            t: tuple(sum(r["pq"][t][i] for r in records) for i in range(4)) for t in self.classes
        }
        mpq = mpq_plus(pooled)
        per_image = [_pannuke_image_mpq(r) for r in records]
        scored = [v for v in per_image if not np.isnan(v)]
        return {
            "detection": detection_scores(pt, pp, len(ut), len(up)),
            "types": {n: type_scores(pt, pp, ut, up, t) for t, n in self.classes.items()},
            "mpq_plus": mpq["mpq_plus"],
            "pq_plus_per_type": {self.classes[t]: v for t, v in mpq["pq_plus_per_type"].items()},
            "mpq_pannuke": float(np.mean(scored)) if scored else None,
            "class_names": list(self.classes.values()),
            "confusion": confusion_matrix(pt, pp, list(self.classes)).tolist(),
            "radius": self.radius,
            "n_images": len(records),
        }
