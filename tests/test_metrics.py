"""Tests of nucseg.metrics.

Hand-worked toy cases; perfect scores for y vs y; invariance to relabelling; agreement with slow,
literal reference implementations written here (AJI, AJI+, matching, COCO mAP) on random and real
label images; the empty cases; the Evaluator.
"""

from __future__ import annotations

import functools
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import data_file
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from nucseg.metrics import (
    PAPER_IOU_THRESHOLDS,
    Evaluator,
    Matching,
    aji,
    aji_plus,
    coco_map,
    coco_map_dataset,
    dsb_map,
    evaluate_image,
    matching,
    panoptic_quality,
    paper_map,
)

ROOT = Path(__file__).resolve().parents[1]
REAL_A, REAL_B = "TCGA-18-5592-01Z-00-DX1", "TCGA-38-6178-01Z-00-DX1"


@functools.cache
def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    labels = np.asarray(Image.open(path)).astype(np.int32)
    labels.flags.writeable = False
    return labels


def real_labels(name: str = REAL_A) -> np.ndarray:
    """A real MoNuSeg instance-label image (uint16 PNG, read as int32)."""
    return _read_png(data_file(f"monuseg/labels/{name}.png"))


# --- slow reference implementations: one boolean mask at a time --------------------------------


def _ids(labels):
    return [int(v) for v in np.unique(labels) if v != 0]


def ref_aji(y_true, y_pred):
    """Literal transcription of the MoNuSeg AJI MATLAB code distributed on 2018-07-17."""
    true_ids, pred_ids = _ids(y_true), _ids(y_pred)
    if not true_ids and not pred_ids:
        return 1.0
    uses = dict.fromkeys(pred_ids, 0)
    correct = union = 0
    for i in true_ids:
        gt = y_true == i
        overlapping = [int(j) for j in np.unique(y_pred[gt]) if j != 0]
        if not overlapping:  # a false negative: its pixels join the union
            union += np.count_nonzero(gt)
            continue
        best_ji = 0.0
        for j in overlapping:  # ascending labels, strict ">": ties go to the lowest label
            matched = y_pred == j
            ji = np.count_nonzero(gt & matched) / np.count_nonzero(gt | matched)
            if ji > best_ji:
                best, best_ji = j, ji
        matched = y_pred == best
        correct += np.count_nonzero(gt & matched)
        union += np.count_nonzero(gt | matched)
        uses[best] += 1
    for j, n in uses.items():
        if n == 0:
            union += np.count_nonzero(y_pred == j)
    return correct / union


def ref_tables(y_true, y_pred):
    """Intersections, unions and IoUs of every (true, predicted) pair, in label order."""
    true_ids, pred_ids = _ids(y_true), _ids(y_pred)
    shape = (len(true_ids), len(pred_ids))
    inter, union, iou = np.zeros(shape, int), np.zeros(shape, int), np.zeros(shape)
    for a, i in enumerate(true_ids):
        gt = y_true == i
        for j in np.unique(y_pred[gt]):
            if j == 0:
                continue
            b = pred_ids.index(int(j))
            matched = y_pred == j
            inter[a, b] = np.count_nonzero(gt & matched)
            union[a, b] = np.count_nonzero(gt | matched)
            iou[a, b] = inter[a, b] / union[a, b]
    return true_ids, pred_ids, inter, union, iou


def ref_aji_plus(y_true, y_pred):
    """hover_net's get_fast_aji_plus, with masks and exact IoUs."""
    true_ids, pred_ids, inter, union, iou = ref_tables(y_true, y_pred)
    if not true_ids and not pred_ids:
        return 1.0
    rows, cols = linear_sum_assignment(-iou)
    pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0]
    correct = sum(inter[r, c] for r, c in pairs)
    total = sum(union[r, c] for r, c in pairs)
    paired_t, paired_p = {r for r, _ in pairs}, {c for _, c in pairs}
    total += sum(np.count_nonzero(y_true == i) for a, i in enumerate(true_ids) if a not in paired_t)
    total += sum(np.count_nonzero(y_pred == j) for b, j in enumerate(pred_ids) if b not in paired_p)
    return correct / total


def ref_best_matching(iou, thresh):
    """Exhaustive search: (most pairs with IoU >= thresh, then largest IoU sum). Small inputs."""
    edges = [np.flatnonzero(row >= thresh) for row in iou]
    best = (0, 0.0)

    def search(i, used, count, total):
        nonlocal best
        if i == len(edges):
            if count > best[0] or (count == best[0] and total > best[1] + 1e-12):
                best = (count, total)
            return
        search(i + 1, used, count, total)
        for j in edges[i]:
            if j not in used:
                search(i + 1, used | {j}, count + 1, total + iou[i, j])

    search(0, frozenset(), 0, 0.0)
    return best


def ref_max_matches(iou, thresh):
    """Largest number of one-to-one pairs with IoU >= thresh (Kuhn's augmenting paths)."""
    owner = {}

    def augment(i, seen):
        for j in np.flatnonzero(iou[i] >= thresh):
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(iou.shape[0]))


def ref_coco_map(samples):
    """Transcription of pycocotools' evaluateImg + accumulate for one class, no maxDets."""
    recall_points = np.linspace(0.0, 1.0, 101)
    aps = []
    for t in PAPER_IOU_THRESHOLDS:
        all_scores, all_hits, n_gt, n_dt = [], [], 0, 0
        for y_true, y_pred, scores in samples:
            true_ids, pred_ids, _, _, iou = ref_tables(y_true, y_pred)
            s = np.array([scores[j] for j in pred_ids], dtype=float)
            gt_matched = [False] * len(true_ids)
            for d in np.argsort(-s, kind="mergesort"):
                best_iou, m = min(t, 1 - 1e-10), -1
                for g in range(len(true_ids)):
                    if gt_matched[g] or iou[g, d] < best_iou:
                        continue
                    best_iou, m = iou[g, d], g
                if m > -1:
                    gt_matched[m] = True
                all_scores.append(s[d])
                all_hits.append(m > -1)
            n_gt, n_dt = n_gt + len(true_ids), n_dt + len(pred_ids)
        if n_gt == 0 or n_dt == 0:
            aps.append(1.0 if n_gt == n_dt else 0.0)
            continue
        hits = np.array(all_hits)[np.argsort(-np.array(all_scores), kind="mergesort")]
        tp, fp = np.cumsum(hits).astype(float), np.cumsum(~hits).astype(float)
        rc, pr = tp / n_gt, list(tp / (fp + tp + np.spacing(1)))
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        q = [0.0] * len(recall_points)
        for ri, pi in enumerate(np.searchsorted(rc, recall_points, side="left")):
            if pi < len(pr):
                q[ri] = pr[pi]
        aps.append(np.mean(q))
    return float(np.mean(aps))


# --- label-image generators ----------------------------------------------------------------------


def random_blobs(rng, shape=(48, 48), n=10, size=12):
    """Overlapping random discs and rectangles with random non-consecutive label values."""
    labels = np.zeros(shape, dtype=np.int32)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for value in rng.choice(np.arange(1, 10 * n), size=n, replace=False):
        r0, c0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        if rng.random() < 0.5:
            mask = (rows - r0) ** 2 + (cols - c0) ** 2 <= rng.uniform(1, size / 2) ** 2
        else:
            h, w = rng.integers(1, size, size=2)
            mask = (rows >= r0) & (rows < r0 + h) & (cols >= c0) & (cols < c0 + w)
        labels[mask] = value
    return labels


def relabel_randomly(labels, rng):
    """Permute the label values and spread them out (non-consecutive)."""
    ids = np.array(_ids(labels), dtype=np.int64)
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lut[ids] = rng.permutation(ids.size) * 7 + 3
    return lut[labels]


def perturb(labels, kind, rng):
    """A plausible prediction made from true labels: eroded, dilated, shifted, merged, ..."""
    n = int(labels.max())
    if kind == "eroded":  # remove every object's outer pixel ring
        edge = ndi.grey_erosion(labels, size=3) != ndi.grey_dilation(labels, size=3)
        return np.where(edge, 0, labels)
    if kind == "dilated":  # grow into the background by 2 px
        return np.where(labels == 0, ndi.grey_dilation(labels, size=5), labels)
    if kind == "shifted":
        return np.roll(labels, (3, -2), axis=(0, 1))
    lut = np.arange(n + 1)
    chosen = rng.choice(np.arange(2, n + 1), size=n // 5, replace=False)
    if kind == "merged":  # a fifth of the labels join the previous label
        lut[chosen] = chosen - 1
        return lut[labels]
    if kind == "dropped":
        lut[chosen] = 0
        return lut[labels]
    assert kind == "mixed"
    out = perturb(perturb(perturb(labels, "shifted", rng), "dilated", rng), "merged", rng)
    out = np.where(out % 3 == 0, perturb(out, "eroded", rng), out)
    fps = random_blobs(rng, shape=labels.shape, n=15)
    return relabel_randomly(np.where((out == 0) & (fps > 0), fps + n, out), rng)


def crop(labels, r0=0, c0=0, size=400):
    return labels[r0 : r0 + size, c0 : c0 + size]


@st.composite
def noise_pairs(draw, max_side=9, max_label=5):
    """Same-shape pairs of small label images of random pixels: fragmented objects, many ties."""
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    elements = st.integers(0, max_label)
    return tuple(draw(hnp.arrays(np.int32, shape, elements=elements)) for _ in range(2))


@st.composite
def rect_pairs(draw, side=16, max_objects=6):
    """Same-shape pairs of label images painted with overlapping rectangles."""
    pair = []
    for _ in range(2):
        labels = np.zeros((side, side), dtype=np.int32)
        for value in range(1, draw(st.integers(0, max_objects)) + 1):
            r, c = draw(st.integers(0, side - 1)), draw(st.integers(0, side - 1))
            h, w = draw(st.integers(1, side // 2)), draw(st.integers(1, side // 2))
            labels[r : r + h, c : c + w] = value
        pair.append(labels)
    return tuple(pair)


label_pairs = st.one_of(noise_pairs(), rect_pairs())
seeds = st.integers(0, 2**32 - 1)


# --- hand-worked toy cases -----------------------------------------------------------------------

# True: G1 = 2x3 block (area 6), G2 = 2x2 block (area 4), G3 = one pixel (area 1).
# Predicted: S1 = 2x2 block inside G1 (area 4), S2 = exactly G2, S3 = 2 pixels on background.
TOY_TRUE = np.array(
    [[1, 1, 1, 0, 0, 0],
     [1, 1, 1, 0, 2, 2],
     [0, 0, 0, 0, 2, 2],
     [0, 3, 0, 0, 0, 0]]
)  # fmt: skip
TOY_PRED = np.array(
    [[1, 1, 0, 0, 0, 0],
     [1, 1, 0, 0, 2, 2],
     [0, 0, 0, 0, 2, 2],
     [0, 0, 0, 0, 3, 3]]
)  # fmt: skip
# One prediction covers two true nuclei (an under-segmentation).
MERGE_TRUE = np.array([[1, 1, 2, 2]])
MERGE_PRED = np.array([[5, 5, 5, 0]])


def test_toy_aji_and_aji_plus():
    # G1-S1: inter 4, union 6 (IoU 2/3); G2-S2: inter 4, union 4; G3 overlaps nothing -> +1 to U;
    # S3 is never chosen -> +2 to U.  C = 4 + 4 = 8, U = 6 + 4 + 1 + 2 = 13.
    assert aji(TOY_TRUE, TOY_PRED) == pytest.approx(8 / 13, abs=1e-15)
    # The pairs are already one-to-one, so AJI+ is the same.
    assert aji_plus(TOY_TRUE, TOY_PRED) == pytest.approx(8 / 13, abs=1e-15)


def test_toy_merge_aji_reuses_a_prediction_and_aji_plus_does_not():
    # S5 (area 3) vs G1 (area 2): inter 2, union 3; vs G2 (area 2): inter 1, union 4.
    # AJI: both choose S5: C = 2 + 1 = 3, U = 3 + 4 = 7.
    assert aji(MERGE_TRUE, MERGE_PRED) == pytest.approx(3 / 7, abs=1e-15)
    # AJI+: S5 pairs with G1 only (IoU 2/3 > 1/4); G2 unpaired adds 2: C = 2, U = 3 + 2 = 5.
    assert aji_plus(MERGE_TRUE, MERGE_PRED) == pytest.approx(2 / 5, abs=1e-15)
    # Matching at 0.5: G1-S5 (2/3); TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/(2+0+1) = 2/3.
    m = matching(MERGE_TRUE, MERGE_PRED, thresh=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert (m.precision, m.recall, m.f1) == pytest.approx((1, 1 / 2, 2 / 3))
    # PQ: DQ = 1 / (1 + 0/2 + 1/2) = 2/3, SQ = 2/3, PQ = 4/9.
    assert panoptic_quality(MERGE_TRUE, MERGE_PRED) == pytest.approx(
        {"pq": 4 / 9, "dq": 2 / 3, "sq": 2 / 3}
    )


def test_toy_aji_exact_ties_go_to_the_lowest_predicted_label():
    # G (label 1) = columns 0-5 (area 6). Prediction "a": columns 0-1 (inter 2, union 6, IoU 1/3).
    # Prediction "b": columns 2-4 and 6-8 (inter 3, union 9, IoU 1/3): an exact tie.
    y_true = np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0]])
    a_low = np.array([[1, 1, 2, 2, 2, 0, 2, 2, 2]])  # "a" has the lower label
    b_low = np.array([[2, 2, 1, 1, 1, 0, 1, 1, 1]])  # "b" has the lower label
    # "a" chosen: C = 2, U = 6 + unused "b" (6) = 12.  "b" chosen: C = 3, U = 9 + "a" (2) = 11.
    assert aji(y_true, a_low) == pytest.approx(2 / 12, abs=1e-15)
    assert aji(y_true, b_low) == pytest.approx(3 / 11, abs=1e-15)
    assert aji(y_true, a_low) == ref_aji(y_true, a_low)
    assert aji(y_true, b_low) == ref_aji(y_true, b_low)


def test_toy_matching_f1_and_pq():
    # IoUs: G1-S1 2/3, G2-S2 1; G3 and S3 overlap nothing.
    # At 0.5: TP 2, FP 1 (S3), FN 1 (G3): P = R = 2/3, F1 = 4 / (4 + 1 + 1) = 2/3.
    m50, m70 = matching(TOY_TRUE, TOY_PRED, thresh=(0.5, 0.7))
    assert (m50.tp, m50.fp, m50.fn, m50.n_true, m50.n_pred) == (2, 1, 1, 3, 3)
    assert (m50.precision, m50.recall, m50.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert m50.dsb == pytest.approx(2 / (2 + 1 + 1))
    assert m50.sum_matched_iou == pytest.approx(2 / 3 + 1)
    assert m50.mean_matched_iou == pytest.approx((2 / 3 + 1) / 2)
    # At 0.7 only G2-S2: TP 1, FP 2, FN 2: P = R = F1 = 1/3, dsb = 1/5.
    assert (m70.tp, m70.fp, m70.fn) == (1, 2, 2)
    assert (m70.precision, m70.recall, m70.f1, m70.dsb) == pytest.approx((1 / 3,) * 3 + (1 / 5,))
    # PQ: TP 2, FP 1, FN 1: DQ = 2 / (2 + 1/2 + 1/2) = 2/3, SQ = (2/3 + 1) / 2 = 5/6, PQ = 5/9.
    pq = panoptic_quality(TOY_TRUE, TOY_PRED)
    assert pq == pytest.approx({"pq": 5 / 9, "dq": 2 / 3, "sq": 5 / 6})


def test_toy_paper_map_and_dsb_map():
    # Thresholds 0.50-0.65 (4): TP 2, FP 1, FN 1 -> precision 2/3, dsb 2/4.
    # Thresholds 0.70-0.95 (6): TP 1, FP 2, FN 2 -> precision 1/3, dsb 1/5.
    assert paper_map(TOY_TRUE, TOY_PRED) == pytest.approx((4 * 2 / 3 + 6 * 1 / 3) / 10)  # 7/15
    assert dsb_map(TOY_TRUE, TOY_PRED) == pytest.approx((4 * 2 / 4 + 6 * 1 / 5) / 10)  # 0.32


def test_toy_hungarian_matching_below_one_half():
    # One row of 14 pixels. True A = 0-9 (area 10), B = 10-12 (area 3).
    # Predicted Y (label 2) = 0-3 (area 4), X (label 1) = 4-11 (area 8).
    y_true = np.array([[1] * 10 + [2] * 3 + [0]])
    y_pred = np.array([[2] * 4 + [1] * 8 + [0] * 2])
    # IoU A-X = 6/12 = 0.5, A-Y = 4/10 = 0.4, B-X = 2/9, B-Y = 0.
    # At 0.2 the greedy choice A-X leaves B unmatched; the optimum is A-Y + B-X: 2 matches.
    m = matching(y_true, y_pred, thresh=0.2)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.sum_matched_iou == pytest.approx(0.4 + 2 / 9)
    # At 0.3 only A can match; of A-X (0.5) and A-Y (0.4) the larger IoU wins.
    m = matching(y_true, y_pred, thresh=0.3)
    assert (m.tp, m.sum_matched_iou) == (1, pytest.approx(0.5))
    # IoU >= 0.5 matches A-X exactly at 0.5, but PQ needs IoU > 0.5: no match.
    assert matching(y_true, y_pred, thresh=0.5).tp == 1
    assert panoptic_quality(y_true, y_pred) == {"pq": 0.0, "dq": 0.0, "sq": 0.0}


def test_toy_coco_map():
    # Scores S1 0.9, S2 0.8, S3 0.7; 3 true objects.
    # t <= 0.65: ranked TP, TP, FP -> recall 1/3, 2/3, 2/3; monotone precision 1, 1, 2/3:
    #   recall points 0.00..0.66 (67 of 101) read precision 1 -> AP 67/101.
    # t >= 0.70: S1 misses -> FP, TP, FP -> recall 0, 1/3, 1/3; precision 0, 1/2, 1/3 made
    #   monotone 1/2, 1/2, 1/3: points 0.00..0.33 (34) read 1/2 -> AP 17/101.
    expected = (4 * 67 / 101 + 6 * 17 / 101) / 10
    assert coco_map(TOY_TRUE, TOY_PRED, {1: 0.9, 2: 0.8, 3: 0.7}) == pytest.approx(expected)
    # Scores S2 0.9, S3 0.8, S1 0.7.
    # t <= 0.65: TP, FP, TP -> recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3:
    #   34 points read 1, 33 points (0.34..0.66) read 2/3 -> AP (34 + 22)/101.
    # t >= 0.70: TP, FP, FP -> recall 1/3 throughout; 34 points read 1 -> AP 34/101.
    expected = (4 * 56 / 101 + 6 * 34 / 101) / 10
    scores = np.array([0.0, 0.7, 0.9, 0.8])  # an array indexed by label works too
    assert coco_map(TOY_TRUE, TOY_PRED, scores) == pytest.approx(expected)


# --- perfect predictions -------------------------------------------------------------------------


def score_keys(result):
    """The keys of an evaluate_image result that hold scores (not counts)."""
    counts = ("n_", "tp_", "fp_", "fn_", "pq_")
    return [k for k in result if not k.startswith(counts) and not k.endswith(("inter", "union"))]


def assert_perfect(labels, rng):
    result = evaluate_image(labels, labels)
    assert len(score_keys(result)) == 37
    for key in score_keys(result):
        assert result[key] == 1.0, key
    assert result["aji_inter"] == result["aji_union"] == np.count_nonzero(labels)
    for fn in (aji, aji_plus, paper_map, dsb_map):
        assert fn(labels, labels) == 1.0
    assert set(panoptic_quality(labels, labels).values()) == {1.0}
    for m in matching(labels, labels, thresh=(0.1, 0.5, 0.7, 1.0)):
        assert (m.precision, m.recall, m.f1, m.dsb, m.mean_matched_iou) == (1.0,) * 5
    scores = rng.random(int(labels.max()) + 1)
    assert coco_map(labels, labels, scores) == pytest.approx(1.0, abs=1e-12)


@given(label_pairs, seeds)
@settings(max_examples=60, deadline=None)
def test_identical_images_score_perfectly(pair, seed):
    assert_perfect(pair[0], np.random.default_rng(seed))


@pytest.mark.data
def test_identical_real_image_scores_perfectly():
    assert_perfect(real_labels(), np.random.default_rng(0))


# --- invariance to relabelling -------------------------------------------------------------------


@given(label_pairs, st.sampled_from([(1, 0, np.int32), (3, 11, np.uint16), (10**12, 5, np.int64)]))
@settings(max_examples=60, deadline=None)
def test_order_preserving_relabelling_changes_nothing(pair, spread):
    scale, offset, dtype = spread
    y_true, y_pred = pair
    moved = [np.where(y > 0, y.astype(np.int64) * scale + offset, 0).astype(dtype) for y in pair]
    assert evaluate_image(*moved) == evaluate_image(y_true, y_pred)
    assert aji_plus(*moved) == aji_plus(y_true, y_pred)


@given(label_pairs, seeds)
@settings(max_examples=80, deadline=None)
def test_permuting_labels_changes_no_count_based_score(pair, seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = pair
    t2, p2 = relabel_randomly(y_true, rng), relabel_randomly(y_pred, rng)
    before, after = evaluate_image(y_true, y_pred), evaluate_image(t2, p2)
    tie_dependent = {
        "aji",
        "aji_inter",
        "aji_union",
        "aji_plus",
        "aji_plus_inter",
        "aji_plus_union",
    }
    for key in before.keys() - tie_dependent:
        assert after[key] == pytest.approx(before[key], rel=1e-12, abs=1e-12), key
    # AJI: each true nucleus chooses independently, so permuting true labels changes nothing ...
    assert aji(t2, y_pred) == aji(y_true, y_pred)
    # ... and predicted labels matter only through exact IoU ties (ties -> lowest label).
    _, _, _, _, iou = ref_tables(y_true, y_pred)
    tied = any(np.count_nonzero(row == row.max()) > 1 for row in iou if row.size and row.max() > 0)
    if not tied:
        assert aji(t2, p2) == aji(y_true, y_pred)
    assert aji(t2, p2) == ref_aji(t2, p2)


# --- agreement with the slow references ----------------------------------------------------------


def _tied(iou: np.ndarray) -> bool:
    """Whether a row or a column holds two equal positive IoUs: then several pairings can reach
    the same total IoU, and AJI+ depends on which one the solver returns (see its docstring)."""
    for lines in (iou, iou.T):
        for line in lines:
            positive = line[line > 0]
            if positive.size != np.unique(positive).size:
                return True
    return False


def _several_optima(iou: np.ndarray) -> bool:
    """Whether another pairing reaches the best total IoU too (without a tie in any row or
    column: a + d = b + c; hypothesis found one at seed 31406). AJI+ then depends on which
    pairing the solver returns, as with :func:`_tied`."""
    rows, cols = linear_sum_assignment(-iou)
    best = float(iou[rows, cols].sum())
    for r, c in zip(rows, cols, strict=True):
        if iou[r, c] <= 0:
            continue
        other = iou.copy()
        other[r, c] = -1.0  # this pair forbidden
        r2, c2 = linear_sum_assignment(-other)
        if abs(float(other[r2, c2].sum()) - best) < 1e-9:
            return True
    return False


def assert_agrees_with_references(y_true, y_pred, *, exhaustive=False):
    assert aji(y_true, y_pred) == pytest.approx(ref_aji(y_true, y_pred), abs=1e-9)
    _, _, _, _, iou = ref_tables(y_true, y_pred)
    if not _tied(iou) and not _several_optima(iou):  # one prediction on two nuclei, same IoU
        assert aji_plus(y_true, y_pred) == pytest.approx(ref_aji_plus(y_true, y_pred), abs=1e-9)
    assert 0.0 <= aji_plus(y_true, y_pred) <= 1.0
    for thresh in (0.3, 0.5, 0.7) if exhaustive else (0.5, 0.7):
        m = matching(y_true, y_pred, thresh=thresh)
        if thresh > 0.5:  # pairs above one half are unique: count them directly
            ok = iou >= thresh
            assert ok.sum(axis=0).max(initial=0) <= 1 and ok.sum(axis=1).max(initial=0) <= 1
            assert (m.tp, m.sum_matched_iou) == (ok.sum(), pytest.approx(iou[ok].sum()))
        elif exhaustive:
            tp, total = ref_best_matching(iou, thresh)
            assert (m.tp, m.sum_matched_iou) == (tp, pytest.approx(total, abs=1e-12))
        else:
            assert m.tp == ref_max_matches(iou, thresh)
        assert (m.fp, m.fn) == (m.n_pred - m.tp, m.n_true - m.tp)


@given(label_pairs)
@settings(max_examples=300, deadline=None)
def test_agrees_with_references_on_small_random_images(pair):
    assert_agrees_with_references(*pair, exhaustive=True)


@given(seeds)
@example(seed=31406)  # two pairings with the same total IoU and no tie in a row or column
@settings(max_examples=60, deadline=None)
def test_agrees_with_references_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    y_true = random_blobs(rng, n=int(rng.integers(1, 25)))
    y_pred = random_blobs(rng, n=int(rng.integers(1, 25)))
    assert_agrees_with_references(y_true, y_pred)
    assert_agrees_with_references(y_true, perturb(y_true, "mixed", rng))


@pytest.mark.data
@pytest.mark.parametrize("kind", ["eroded", "dilated", "shifted", "merged", "dropped", "mixed"])
def test_agrees_with_references_on_real_labels_vs_perturbed(kind):
    y_true = real_labels()  # the whole 1000 x 1000 image, 480 nuclei
    y_pred = perturb(y_true, kind, np.random.default_rng(1))
    assert_agrees_with_references(y_true, y_pred)
    assert aji(y_true, y_pred) < 1.0


@pytest.mark.data
def test_agrees_with_references_on_two_different_real_crops():
    a, b = real_labels(REAL_A), real_labels(REAL_B)
    assert_agrees_with_references(crop(a), crop(b, 500, 500))
    assert_agrees_with_references(crop(a, 100, 600), crop(a, 110, 590))  # overlapping windows


@given(seeds)
@settings(max_examples=50, deadline=None)
def test_coco_map_agrees_with_reference(seed):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(int(rng.integers(1, 4))):
        y_true = random_blobs(rng, shape=(32, 32), n=int(rng.integers(0, 10)))
        y_pred = perturb(y_true, "mixed", rng) if y_true.any() else random_blobs(rng, n=3)
        y_pred = y_pred[:32, :32]
        scores = rng.choice([0.2, 0.5, 0.9], size=int(y_pred.max()) + 1)  # with ties
        samples.append((y_true, y_pred, dict(enumerate(scores))))
    assert coco_map_dataset(samples) == pytest.approx(ref_coco_map(samples), abs=1e-12)
    assert coco_map(*samples[0]) == pytest.approx(ref_coco_map(samples[:1]), abs=1e-12)


@given(label_pairs)
@settings(max_examples=60, deadline=None)
def test_evaluate_image_agrees_with_the_single_metrics(pair):
    result = evaluate_image(*pair)
    assert result["aji"] == aji(*pair)
    assert result["aji_plus"] == aji_plus(*pair)
    assert result["paper_map"] == paper_map(*pair)
    assert result["dsb_map"] == dsb_map(*pair)
    assert {k: result[k] for k in ("pq", "dq", "sq")} == panoptic_quality(*pair)
    for m in matching(*pair, thresh=PAPER_IOU_THRESHOLDS):
        xx = f"{round(100 * m.thresh):02d}"
        assert (result[f"tp_{xx}"], result[f"fp_{xx}"], result[f"fn_{xx}"]) == (m.tp, m.fp, m.fn)
        assert result[f"precision_{xx}"] == m.precision
        assert (result[f"recall_{xx}"], result[f"f1_{xx}"]) == (m.recall, m.f1)


# --- empty images --------------------------------------------------------------------------------

EMPTY = np.zeros((5, 6), dtype=np.int32)
ONE = np.zeros((5, 6), dtype=np.int32)
ONE[1:3, 2:4] = 4


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [(EMPTY, EMPTY, 1.0), (EMPTY, ONE, 0.0), (ONE, EMPTY, 0.0)],
    ids=["both-empty", "no-true", "no-pred"],
)
def test_empty_cases(y_true, y_pred, expected):
    for fn in (aji, aji_plus, paper_map, dsb_map):
        assert fn(y_true, y_pred) == expected, fn.__name__
    assert panoptic_quality(y_true, y_pred) == dict.fromkeys(("pq", "dq", "sq"), expected)
    assert coco_map(y_true, y_pred, {4: 0.5}) == expected
    for m in matching(y_true, y_pred, thresh=(0.3, 0.5, 0.9)):
        assert (m.precision, m.recall, m.f1, m.dsb, m.mean_matched_iou) == (expected,) * 5
        assert (m.tp, m.sum_matched_iou) == (0, 0.0)
    result = evaluate_image(y_true, y_pred)
    for key in score_keys(result):
        assert result[key] == expected, key


def test_empty_zero_size_images_are_perfect():
    empty = np.zeros((0, 0), dtype=np.int32)
    assert aji(empty, empty) == aji_plus(empty, empty) == paper_map(empty, empty) == 1.0


def test_precision_without_predictions_and_recall_without_true_objects_are_zero():
    assert matching(ONE, EMPTY).precision == 0.0
    assert matching(EMPTY, ONE).recall == 0.0


# --- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (ONE, ONE[:4], "same pixels"),
        (ONE.astype(float), ONE, "integer"),
        (ONE, ONE > 0, "integer"),
        (ONE - 1, ONE, ">= 0"),
        (ONE[0], ONE[0], "2-D"),
    ],
)
def test_invalid_inputs_raise(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        evaluate_image(y_true, y_pred)
    with pytest.raises(ValueError, match=message):
        aji(y_true, y_pred)


@pytest.mark.parametrize("thresh", [0.0, -0.1, 1.5, (0.5, 2.0)])
def test_invalid_threshold_raises(thresh):
    with pytest.raises(ValueError, match="threshold"):
        matching(ONE, ONE, thresh=thresh)


def test_missing_or_bad_scores_raise():
    with pytest.raises(ValueError, match="no entry"):
        coco_map(ONE, ONE, {3: 0.5})
    with pytest.raises(ValueError, match="entries"):
        coco_map(ONE, ONE, np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        coco_map(ONE, ONE, {4: float("nan")})


def test_matching_of_many_thresholds_equals_one_at_a_time():
    many = matching(TOY_TRUE, TOY_PRED, thresh=PAPER_IOU_THRESHOLDS)
    assert isinstance(many, tuple) and all(isinstance(m, Matching) for m in many)
    assert many == tuple(matching(TOY_TRUE, TOY_PRED, thresh=t) for t in PAPER_IOU_THRESHOLDS)
    assert PAPER_IOU_THRESHOLDS == tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def test_memory_grows_with_pixels_not_with_object_pairs():
    # 22,500 objects of 2 x 2 pixels on each side: a dense table would need 4 GB per array.
    blocks = np.arange(300) // 2
    y_true = (blocks[:, None] * 150 + blocks[None, :] + 1).astype(np.int32)
    y_pred = np.roll(y_true, 1, axis=1)  # each prediction covers half of two true blocks
    tracemalloc.start()
    try:
        same = evaluate_image(y_true, y_true)
        shifted = evaluate_image(y_true, y_pred)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert same["n_true"] == same["n_pred"] == 22_500 and same["aji"] == same["f1_50"] == 1.0
    # Every true block meets two predictions with IoU 2 / 6 and takes the lower label (C 2,
    # U 6); per row of 150 blocks, the prediction of the last block (wrapped round) stays unused
    # (U + 4). Nothing reaches IoU 0.5.
    assert shifted["aji"] == pytest.approx(300 / 904)
    assert shifted["tp_50"] == 0 and shifted["pq"] == 0.0


# --- Evaluator -----------------------------------------------------------------------------------


def test_evaluator_mean_and_pooled_scores_by_hand():
    ev = Evaluator()
    ev.process("toy", TOY_TRUE, TOY_PRED)
    ev.process("merge", MERGE_TRUE, MERGE_PRED)
    result = ev.evaluate()
    json.dumps(result)  # the pipeline writes it as JSON
    assert result["n_images"] == 2 and (result["n_true"], result["n_pred"]) == (5, 4)
    assert set(result["per_image"]) == {"toy", "merge"}
    # Mean of the per-image AJIs 8/13 and 3/7; pooled (8 + 3) / (13 + 7) = 11/20.
    assert result["aji"] == pytest.approx((8 / 13 + 3 / 7) / 2)
    assert result["pooled_aji"] == pytest.approx(11 / 20)
    # At 0.5: toy TP 2 FP 1 FN 1, merge TP 1 FP 0 FN 1 -> TP 3 FP 1 FN 2.
    assert result["pooled_precision_50"] == pytest.approx(3 / 4)
    assert result["pooled_recall_50"] == pytest.approx(3 / 5)
    assert result["pooled_f1_50"] == pytest.approx(6 / (6 + 1 + 2))
    # PQ: TP 3, FP 1, FN 2, IoU sum (2/3 + 1) + 2/3 = 7/3: DQ = 3/4.5, SQ = 7/9.
    assert result["pooled_dq"] == pytest.approx(2 / 3)
    assert result["pooled_sq"] == pytest.approx(7 / 9)
    assert result["pooled_pq"] == pytest.approx(14 / 27)
    # paper mAP: 0.50-0.65 TP 2+1, FP 1+0 -> 3/4; 0.70-0.95 TP 1+0, FP 2+1 -> 1/4.
    assert result["pooled_paper_map"] == pytest.approx((4 * 3 / 4 + 6 * 1 / 4) / 10)


@given(st.lists(label_pairs, min_size=1, max_size=4))
@settings(max_examples=30, deadline=None)
def test_evaluator_dataset_score_is_the_mean_over_images(pairs):
    ev = Evaluator()
    for i, (y_true, y_pred) in enumerate(pairs):
        ev.process(i, y_true, y_pred)
    result = ev.evaluate()
    per_image = [evaluate_image(*p) for p in pairs]
    assert result["per_image"] == dict(enumerate(per_image))
    for key in ("aji", "aji_plus", "paper_map", "dsb_map", "pq", "f1_50", "precision_70"):
        assert result[key] == pytest.approx(np.mean([r[key] for r in per_image]))
        assert 0.0 <= result[f"pooled_{key}"] <= 1.0


def test_evaluator_duplicate_id_raises_and_reset_forgets():
    ev = Evaluator()
    ev.process("a", ONE, ONE)
    with pytest.raises(ValueError, match="already processed"):
        ev.process("a", ONE, EMPTY)
    ev.reset()
    with pytest.raises(ValueError, match="no images"):
        ev.evaluate()
    ev.process("a", EMPTY, EMPTY)
    result = ev.evaluate()
    assert result["aji"] == result["pooled_aji"] == result["pooled_paper_map"] == 1.0
