"""Tests of nucseg.type_metrics: hand-worked cases (expected values worked out in the comments),
the pairing rule at its radius, the empty cases, and real CoNSeP labels scored against themselves
and against a relabelling of their types.
"""

from __future__ import annotations

import numpy as np
import pytest

from nucseg import datasets
from nucseg.datasets.labelled import CONSEP_TYPES
from nucseg.type_metrics import (
    TypeEvaluator,
    centroids,
    detection_scores,
    pair_centroids,
    type_scores,
)


def squares(shape, centres, half=2):
    """Label image of (2 half + 1)-pixel squares, label k + 1 centred on centres[k]."""
    out = np.zeros(shape, np.int32)
    for k, (r, c) in enumerate(centres):
        out[r - half : r + half + 1, c - half : c + half + 1] = k + 1
    return out


def test_centroids_are_mean_row_and_column():
    labels = np.zeros((6, 6), np.int32)
    labels[0, 0:2] = 4  # pixels (0,0), (0,1): centroid (0, 0.5)
    labels[2:5, 3] = 7  # (2,3), (3,3), (4,3): centroid (3, 3)
    values, rc = centroids(labels)
    assert values.tolist() == [4, 7]
    np.testing.assert_allclose(rc, [[0, 0.5], [3, 3]])


def test_pairing_keeps_hungarian_pairs_within_radius_inclusive():
    true = [[0, 0], [0, 40], [50, 50]]
    pred = [[0, 12], [0, 52.5], [200, 200]]
    # Hungarian minimises the total: (0,0)-(0,12) 12, (0,40)-(0,52.5) 12.5, the third ~212;
    # kept: distance <= 12 only, so the first pair (exactly 12) and not the second.
    pairs, lone_t, lone_p = pair_centroids(np.array(true), np.array(pred), radius=12)
    assert pairs.tolist() == [[0, 0]]
    assert lone_t.tolist() == [1, 2] and lone_p.tolist() == [1, 2]


def test_pairing_is_global_not_greedy():
    # Greedy nearest-first would pair true 1 with pred 0 (distance 1) and leave true 0 alone;
    # the Hungarian total 3 + 1 ... : t0-p0 = 3, t1-p1 = 4 (total 7) beats t1-p0 = 1, t0-p1 = 8.
    true = np.array([[0.0, 0.0], [0.0, 4.0]])
    pred = np.array([[0.0, 3.0], [0.0, 8.0]])
    pairs, lone_t, lone_p = pair_centroids(true, pred, radius=12)
    assert pairs.tolist() == [[0, 0], [1, 1]] and lone_t.size == 0 and lone_p.size == 0


def test_pairing_with_an_empty_side():
    pairs, lone_t, lone_p = pair_centroids(np.zeros((0, 2)), np.array([[1.0, 1.0]]))
    assert pairs.shape == (0, 2) and lone_t.size == 0 and lone_p.tolist() == [0]


def test_type_scores_hand_worked():
    pt, pp = np.array([1, 1, 2, 2, 3]), np.array([1, 2, 2, 1, 3])
    ut, up = np.array([1, 3]), np.array([2])
    # type 1: pairs with 1 on either side (1,1) (1,2) (2,1): TP 1, FP_c 1, FN_c 1;
    # FP_d 0, FN_d 1. F = 2/(2+2+2+0+1) = 2/7, P = 1/(1+2+0) = 1/3, R = 1/(1+2+1) = 1/4.
    s = type_scores(pt, pp, ut, up, 1)
    assert (s["tp"], s["fp_class"], s["fn_class"], s["fp_det"], s["fn_det"]) == (1, 1, 1, 0, 1)
    assert s["f1"] == pytest.approx(2 / 7)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 4)
    # type 2: (1,2) (2,2) (2,1): TP 1, FP_c 1, FN_c 1; FP_d 1, FN_d 0: F = 2/(2+2+2+1) = 2/7.
    assert type_scores(pt, pp, ut, up, 2)["f1"] == pytest.approx(2 / 7)
    # type 3: (3,3) TP 1; FN_d 1: F = 2/(2+1) = 2/3, P = 1, R = 1/2.
    s3 = type_scores(pt, pp, ut, up, 3)
    assert (s3["f1"], s3["precision"], s3["recall"]) == pytest.approx((2 / 3, 1.0, 0.5))
    # F is the harmonic mean of P and R
    assert s["f1"] == pytest.approx(
        2 * s["precision"] * s["recall"] / (s["precision"] + s["recall"])
    )
    # detection: TP 5, FP 1, FN 2: F1 = 10/13; types agree on 3 of the 5 pairs.
    d = detection_scores(pt, pp, len(ut), len(up))
    assert d["f1"] == pytest.approx(10 / 13) and d["type_accuracy"] == pytest.approx(3 / 5)


def _two_images():
    ev = TypeEvaluator({1: "a", 2: "b", 3: "c", 4: "d"})
    # image 1: 5x5 squares. true (5,5) a, (5,30) b, (30,5) c, (50,50) a;
    #          pred (6,5) a [1 px off], (5,36) a [6 px off], (30,5) c [exact], (50,20) b [far].
    true = squares((60, 60), [(5, 5), (5, 30), (30, 5), (50, 50)])
    pred = squares((60, 60), [(6, 5), (5, 36), (30, 5), (50, 20)])
    ev.process("1", true, {1: 1, 2: 2, 3: 3, 4: 1}, pred, {1: 1, 2: 1, 3: 3, 4: 2})
    # image 2: no true nucleus, one predicted of type d.
    ev.process("2", np.zeros((60, 60), np.int32), {}, squares((60, 60), [(30, 30)]), {1: 4})
    return ev.evaluate()


def test_type_evaluator_hand_worked_two_images():
    r = _two_images()
    # pairs (distance <= 12): (5,5)-(6,5) a/a, (5,30)-(5,36) b/a, (30,5)-(30,5) c/c;
    # unpaired true (50,50) a; unpaired pred (50,20) b and image 2's d.
    d = r["detection"]
    assert (d["tp"], d["fp"], d["fn"]) == (3, 2, 1)
    assert d["f1"] == pytest.approx(6 / 9) and d["type_accuracy"] == pytest.approx(2 / 3)
    t = r["types"]
    # a: pairs (a,a) (b,a): TP 1, FP_c 1; FN_d 1: F = 2/(2+2+1) = 2/5, P = 1/3, R = 1/2
    assert (t["a"]["f1"], t["a"]["precision"], t["a"]["recall"]) == pytest.approx((0.4, 1 / 3, 0.5))
    # b: pair (b,a): FN_c 1; FP_d 1: F = 0;  c: TP 1 alone: F = 1
    assert t["b"]["f1"] == 0.0 and t["c"]["f1"] == 1.0
    # d: one unpaired prediction: F = 0, P = 0, R = 0/0 with something of type d present: 0
    assert (t["d"]["f1"], t["d"]["precision"], t["d"]["recall"]) == (0.0, 0.0, 0.0)
    # PQ per type (IoU > 0.5): a: (5,5)/(6,5) 5x5 squares 1 px apart, IoU 20/30; TP 1, FP 1, FN 1:
    # DQ 1/2, SQ 2/3, PQ 1/3. b: TP 0, PQ 0. c: exact, PQ 1. d: FP 1, PQ 0.
    assert r["pq_plus_per_type"] == pytest.approx({"a": 1 / 3, "b": 0.0, "c": 1.0, "d": 0.0})
    assert r["mpq_plus"] == pytest.approx((1 / 3 + 0 + 1 + 0) / 4)
    # PanNuke: image 1 has true a, b, c: mean(1/3, 0, 1); image 2 has no true type: left out
    assert r["mpq_pannuke"] == pytest.approx(4 / 9)
    # confusion of the pairs, rows true a..d, columns predicted
    assert r["confusion"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_empty_cases():
    ev = TypeEvaluator({1: "a", 2: "b"})
    empty = np.zeros((8, 8), np.int32)
    ev.process("e", empty, {}, empty, {})
    r = ev.evaluate()  # nothing to get wrong: every score 1.0; PanNuke's mPQ undefined
    assert r["detection"]["f1"] == 1.0 and r["types"]["a"]["f1"] == 1.0
    assert r["mpq_plus"] == 1.0 and r["pq_plus_per_type"] == {} and r["mpq_pannuke"] is None
    ev.reset()
    one = squares((8, 8), [(4, 4)])
    ev.process("t", one, {1: 1}, empty, {})
    r = ev.evaluate()  # a true nucleus, no prediction: every score 0; b absent everywhere: 1.0
    assert r["detection"]["f1"] == 0.0 and r["detection"]["precision"] == 0.0
    assert r["types"]["a"]["f1"] == 0.0 and r["types"]["b"]["f1"] == 1.0
    assert r["mpq_plus"] == 0.0 and r["mpq_pannuke"] == 0.0


def test_errors():
    ev = TypeEvaluator({1: "a"})
    one = squares((8, 8), [(4, 4)])
    with pytest.raises(ValueError, match="have no type"):
        ev.process("x", one, {}, one, {1: 1})
    ev.process("x", one, {1: 1}, one, {1: 1})
    with pytest.raises(ValueError, match="already processed"):
        ev.process("x", one, {1: 1}, one, {1: 1})
    with pytest.raises(ValueError, match="no images"):
        TypeEvaluator({1: "a"}).evaluate()


def test_real_consep_tile_against_itself_and_shuffled_types(data_root):
    sample = datasets.load_sample("consep", "consep_train_01", root=data_root)
    ev = TypeEvaluator(CONSEP_TYPES)
    ev.process("same", sample.labels, sample.types, sample.labels, sample.types)
    r = ev.evaluate()
    assert r["detection"]["f1"] == 1.0 and r["mpq_plus"] == 1.0
    assert all(s["f1"] == 1.0 for s in r["types"].values())
    counts = np.bincount(list(sample.types.values()), minlength=5)[1:]
    assert np.diag(r["confusion"]).tolist() == counts.tolist()
    # every type moved to the next one: detection unchanged, no type right
    moved = {k: v % 4 + 1 for k, v in sample.types.items()}
    ev.reset()
    ev.process("moved", sample.labels, sample.types, sample.labels, moved)
    r = ev.evaluate()
    assert r["detection"]["f1"] == 1.0 and r["detection"]["type_accuracy"] == 0.0
    assert all(s["f1"] == 0.0 for s in r["types"].values() if s["n_true"])
    # a shift of the prediction by 3 pixels keeps every pair (radius 12) but lowers PQ
    shifted = np.roll(sample.labels, 3, axis=1)
    shifted[:, :3] = 0
    ev.reset()
    ev.process("shift", sample.labels, sample.types, shifted, sample.types)
    r = ev.evaluate()
    assert r["detection"]["recall"] > 0.99 and r["mpq_plus"] < 0.95
