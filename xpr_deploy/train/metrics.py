"""Binary classification metrics: AUC with a DeLong 95 % CI, ACC / F1 / sensitivity / specificity.

Implemented here (numpy only) so the numbers in checkpoints, `xpr eval` and `xpr cv` come from one
place; the tests check them against scikit-learn and hand-computed confusion matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

ArrayLike = Sequence[float] | npt.NDArray[Any]

#: how the AUC confidence interval is computed (written into every report)
CI_METHOD = "DeLong (fast midrank algorithm, Sun & Xu 2014), normal approximation, clipped to [0, 1]"


def _as_arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def _midranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    z = x[order]
    n = z.size
    ranks = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and z[j] == z[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1.0
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks
    return out


@dataclass(frozen=True)
class AUCResult:
    auc: float
    variance: float
    ci: tuple[float, float]


def delong_auc(labels: ArrayLike, scores: ArrayLike, confidence: float = 0.95) -> AUCResult:
    """ROC AUC and its DeLong variance / CI. NaN when one class is missing (AUC undefined)."""
    y, s = _as_arrays(labels, scores)
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return AUCResult(math.nan, math.nan, (math.nan, math.nan))
    tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    if m < 2 or n < 2:  # the structural components need two samples per class for a variance
        return AUCResult(auc, math.nan, (math.nan, math.nan))
    v10 = (tz[:m] - tx) / n  # per positive: fraction of negatives scored below it
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: fraction of positives scored above it
    var = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * math.sqrt(max(var, 0.0))
    return AUCResult(auc, var, (max(0.0, auc - half), min(1.0, auc + half)))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC (Mann-Whitney with midranks for ties); NaN with a single class."""
    return delong_auc(labels, scores).auc


def roc_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(fpr, tpr, thresholds), thresholds decreasing, starting at +inf (point (0, 0)); `score >= t` is positive."""
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], y_sorted.size - 1] if y.size else np.array([], dtype=int)
    tps = np.cumsum(y_sorted)[distinct].astype(np.float64)
    fps = (distinct + 1 - tps).astype(np.float64)
    p, n = max(int(y.sum()), 0), int(y.size - y.sum())
    tpr = np.r_[0.0, tps / p] if p else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n] if n else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s_sorted[distinct]]


def youden_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the highest such threshold); 0.5 if undefined."""
    fpr, tpr, thr = roc_curve(labels, scores)
    if thr.size < 2 or np.isnan(fpr).any() or np.isnan(tpr).any():
        return 0.5
    j = tpr[1:] - fpr[1:]
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # float ties (2/3 vs 1 - 1/3): highest threshold
    return float(thr[1:][best])


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold; the positive class is malignant (label 1)."""

    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def n(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    def matrix(self) -> list[list[int]]:
        """[[TN, FP], [FN, TP]]: rows are the true class, columns the predicted one (sklearn order)."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


def confusion(labels: ArrayLike, predictions: ArrayLike) -> Confusion:
    y, p = _as_arrays(labels, predictions)
    pi = p.astype(np.int64)
    return Confusion(
        tn=int(((y == 0) & (pi == 0)).sum()),
        fp=int(((y == 0) & (pi == 1)).sum()),
        fn=int(((y == 1) & (pi == 0)).sum()),
        tp=int(((y == 1) & (pi == 1)).sum()),
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class BinaryMetrics:
    """Everything `xpr eval` reports for one set of predictions."""

    n: int
    n_pos: int
    auc: float
    auc_ci: tuple[float, float]
    acc: float
    f1: float
    sensitivity: float
    specificity: float
    threshold: float
    confusion: Confusion
    ci_method: str = CI_METHOD

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auc_ci"] = [None if math.isnan(c) else c for c in self.auc_ci]
        d["confusion"] = {**asdict(self.confusion), "matrix": self.confusion.matrix()}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def binary_metrics(labels: ArrayLike, probs: ArrayLike, threshold: float = 0.5) -> BinaryMetrics:
    """Metrics of P(malignant) `probs` against 0/1 `labels`; predicted malignant when prob >= threshold."""
    y, s = _as_arrays(labels, probs)
    c = confusion(y, (s >= threshold).astype(np.int64))
    a = delong_auc(y, s)
    denom_f1 = 2 * c.tp + c.fp + c.fn
    return BinaryMetrics(
        n=c.n,
        n_pos=int(y.sum()),
        auc=a.auc,
        auc_ci=a.ci,
        acc=_ratio(c.tp + c.tn, c.n),
        f1=2 * c.tp / denom_f1 if denom_f1 else 0.0,  # sklearn's zero_division=0 convention
        sensitivity=_ratio(c.tp, c.tp + c.fn),
        specificity=_ratio(c.tn, c.tn + c.fp),
        threshold=float(threshold),
        confusion=c,
    )
