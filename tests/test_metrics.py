"""Metrics against scikit-learn and hand-computed confusion matrices; DeLong against a brute-force version."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from xpr_deploy.train.metrics import (
    binary_metrics,
    confusion,
    delong_auc,
    roc_auc,
    roc_curve,
    youden_threshold,
)

Y = [0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1]
S = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.65, 0.5, 0.5, 0.5, 0.05, 0.7]  # ties across classes at 0.5


def test_auc_matches_sklearn_on_fixed_vectors() -> None:
    assert roc_auc(Y, S) == pytest.approx(roc_auc_score(Y, S), abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 57)
        s = np.round(rng.random(57), 1)  # many ties
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn() -> None:
    fpr, tpr, thr = roc_curve(Y, S)
    sf, st, sthr = sk_roc_curve(Y, S, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    np.testing.assert_allclose(thr[1:], sthr[1:])


def _delong_bruteforce(y: list[int], s: list[float]) -> tuple[float, float]:
    """DeLong 1988 with the explicit Mann-Whitney kernel (O(m n)), the definition itself."""
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]

    def psi(a: float, b: float) -> float:
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = [np.mean([psi(p, n) for n in neg]) for p in pos]
    v01 = [np.mean([psi(p, n) for p in pos]) for n in neg]
    auc = float(np.mean(v10))
    return auc, float(np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg))


def test_delong_variance_matches_definition() -> None:
    r = delong_auc(Y, S)
    auc, var = _delong_bruteforce(Y, S)
    assert r.auc == pytest.approx(auc, abs=1e-12)
    assert r.variance == pytest.approx(var, rel=1e-10)
    half = 1.959963984540054 * math.sqrt(var)
    assert r.ci == pytest.approx((auc - half, min(1.0, auc + half)), abs=1e-9)
    assert 0.0 <= r.ci[0] <= r.auc <= r.ci[1] <= 1.0


def test_delong_edge_cases() -> None:
    assert math.isnan(delong_auc([1, 1, 1], [0.1, 0.2, 0.3]).auc)  # one class: undefined
    perfect = delong_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect.auc == 1.0 and perfect.ci == (1.0, 1.0)


def test_confusion_hand_computed() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [1, 0, 1, 0, 1, 0, 0, 1]
    c = confusion(y, p)
    assert (c.tn, c.fp, c.fn, c.tp) == (3, 1, 1, 3)
    assert c.matrix() == confusion_matrix(y, p).tolist()


def test_binary_metrics_at_threshold_hand_computed() -> None:
    # threshold 0.5, prob >= t is malignant: predictions 0,0,0,1,0,1,1,1,1,1,0,1
    m = binary_metrics(Y, S, 0.5)
    assert (m.confusion.tn, m.confusion.fp, m.confusion.fn, m.confusion.tp) == (4, 2, 1, 5)
    assert m.acc == pytest.approx(9 / 12)
    assert m.sensitivity == pytest.approx(5 / 6)
    assert m.specificity == pytest.approx(4 / 6)
    assert m.f1 == pytest.approx(2 * 5 / (2 * 5 + 2 + 1))
    assert m.f1 == pytest.approx(f1_score(Y, (np.array(S) >= 0.5).astype(int)))
    assert m.n == 12 and m.n_pos == 6
    d = m.to_dict()
    assert d["confusion"]["matrix"] == [[4, 2], [1, 5]] and len(d["auc_ci"]) == 2


def test_youden_threshold() -> None:
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.6, 0.4, 0.7, 0.9]
    t = youden_threshold(y, s)
    m = binary_metrics(y, s, t)
    # the best achievable J on this data is 2/3 (t = 0.7 or t = 0.4); the highest such threshold wins
    assert m.sensitivity + m.specificity - 1 == pytest.approx(2 / 3)
    assert t == pytest.approx(0.7)
    assert youden_threshold([1, 1], [0.2, 0.3]) == 0.5
