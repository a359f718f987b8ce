"""Operating points: decision thresholds chosen on the validation split for named targets.

A target is a name: `youden` (maximise sensitivity + specificity - 1), `sens=0.90` (the highest
threshold whose validation sensitivity is at least 0.90), `spec=0.90` (the lowest threshold whose
validation specificity is at least 0.90). Every threshold t in one gap between two neighbouring
distinct validation scores, (s_low, s_high], gives the same validation confusion matrix; the chosen
threshold is the middle of that gap (of the whole run of equally good gaps for Youden), never its
edge: an edge threshold equal to the lowest positive score flips every slightly lower test score
(the demo's old 0.995 on a perfectly separated validation split gave test sensitivity 0.84).

The points are written into the checkpoint (`operating_points`, `operating_point` = the default),
the bundle manifest, and read by `xpr eval`, `xpr predict`, the C API and the Triton model.
numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .metrics import ArrayLike, _as_arrays

#: chosen at every validation (the first is the default a checkpoint decides with)
DEFAULT_TARGETS: tuple[str, ...] = ("youden", "sens=0.90", "spec=0.90", "sens=0.95", "spec=0.95")
DEFAULT_POINT = "youden"
_TARGET = re.compile(r"^(sens|spec)=(0(?:\.\d+)?|1(?:\.0+)?)$")


class OperatingPointError(ConfigError):
    """An operating point name that is not a target, or not one the model carries."""


@dataclass(frozen=True)
class OperatingPoint:
    name: str  # the target, e.g. "sens=0.90"
    threshold: float  # predicted malignant when P(malignant) >= threshold
    sensitivity: float | None  # on the validation split
    specificity: float | None
    n: int  # validation breasts it was chosen on

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> OperatingPoint:
        sens, spec = d.get("sensitivity"), d.get("specificity")
        return cls(
            name,
            float(d["threshold"]),
            None if sens is None else float(sens),
            None if spec is None else float(spec),
            int(d.get("n") or 0),
        )

    def describe(self) -> str:
        """`sens=0.90 (threshold 0.4123; validation sensitivity 0.950, specificity 0.875)`."""
        s = f"{self.name} (threshold {self.threshold:.4f}"
        if self.sensitivity is not None and self.specificity is not None:
            s += f"; validation sensitivity {self.sensitivity:.3f}, specificity {self.specificity:.3f}"
        return s + ")"


def parse_target(name: str) -> tuple[str, float | None]:
    """("youden", None) or ("sens" | "spec", value in [0, 1]); anything else is an OperatingPointError."""
    n = name.strip().lower()
    if n == "youden":
        return "youden", None
    m = _TARGET.match(n)
    if not m:
        raise OperatingPointError(f"operating point {name!r}: use youden, sens=0.90 or spec=0.90 (a value in [0, 1])")
    return m.group(1), float(m.group(2))


def canonical(name: str) -> str:
    """`Sens=0.9` -> `sens=0.90`: one spelling per target, so lookups agree."""
    kind, v = parse_target(name)
    return kind if v is None else f"{kind}={v:.2f}" if round(v, 2) == v else f"{kind}={v:g}"


def _gaps(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds high to low `d` (above every score while one fits in [0, 1], then each
    distinct score) and the lower edge of each one's gap (the next lower score, or below all)."""
    d = np.unique(s)[::-1]
    if d[0] < 1.0:  # "nothing is malignant": a threshold of 1.0 (prob >= 1.0 never happens below it)
        d = np.r_[1.0, d]
    low = np.r_[d[1:], 0.0 if d[-1] > 0 else float(d[-1]) - 1.0]
    return d, low


def _rates(y: np.ndarray, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) when predicting positive for score >= each of `d`."""
    p, n = int(y.sum()), int(y.size - y.sum())
    pos_ge = np.array([(s[y == 1] >= t).sum() for t in d], dtype=np.float64)
    neg_ge = np.array([(s[y == 0] >= t).sum() for t in d], dtype=np.float64)
    return pos_ge / p, 1.0 - neg_ge / n


def choose(labels: ArrayLike, scores: ArrayLike, target: str) -> OperatingPoint:
    """The threshold for `target` on (labels, scores): the middle of the gap that meets it (module docstring).

    Both classes are needed; a target no threshold meets (sens=1.0 is always met, spec=1.0 too, by
    an extreme threshold) cannot occur, so this never guesses."""
    kind, value = parse_target(target)
    name = canonical(target)
    y, s = _as_arrays(labels, scores)
    if y.size == 0 or y.sum() == 0 or y.sum() == y.size:
        raise OperatingPointError(f"operating point {name}: the validation split needs both classes")
    d, low = _gaps(s)
    sens, spec = _rates(y, s, d)
    if kind == "youden":
        j = sens + spec - 1.0
        best = j >= j.max() - 1e-12  # float ties (2/3 vs 1 - 1/3)
        # runs of neighbouring equally good gaps form one interval; take the widest, then its middle
        runs, i = [], 0
        while i < d.size:
            if best[i]:
                k = i
                while k + 1 < d.size and best[k + 1]:
                    k += 1
                runs.append((float(low[k]), float(d[i]), i))
                i = k + 1
            else:
                i += 1
        lo, hi, idx = max(runs, key=lambda r: (r[1] - r[0], -r[2]))
    elif kind == "sens":
        assert value is not None
        ok = np.flatnonzero(sens >= value - 1e-12)
        idx = int(ok[0])  # highest threshold still meeting it (sensitivity grows as t falls)
        lo, hi = float(low[idx]), float(d[idx])
    else:
        assert value is not None
        ok = np.flatnonzero(spec >= value - 1e-12)
        # lowest threshold still meeting it; none does when scores of 1.0 include negatives: the
        # highest threshold (the reported specificity then says the target was missed)
        idx = int(ok[-1]) if ok.size else 0
        lo, hi = float(low[idx]), float(d[idx])
    thr = 0.5 * (lo + hi)
    if lo >= 0.0 and hi <= 1.0:
        thr = min(max(thr, 0.0), 1.0)
    pred = s >= thr
    got_sens = float((pred & (y == 1)).sum() / y.sum())
    got_spec = float((~pred & (y == 0)).sum() / (y.size - y.sum()))
    return OperatingPoint(name, float(thr), got_sens, got_spec, int(y.size))


def choose_all(
    labels: ArrayLike, scores: ArrayLike, targets: Sequence[str] = DEFAULT_TARGETS
) -> dict[str, OperatingPoint]:
    """Every target's point; {} when the split has a single class (nothing can be chosen)."""
    y, _ = _as_arrays(labels, scores)
    if y.size == 0 or y.sum() == 0 or y.sum() == y.size:
        return {}
    return {canonical(t): choose(labels, scores, t) for t in targets}


def points_from(d: Mapping[str, Any] | None) -> dict[str, OperatingPoint]:
    """A checkpoint's / manifest's `operating_points` object back to OperatingPoints."""
    return {str(k): OperatingPoint.from_dict(str(k), v) for k, v in (d or {}).items()}


def resolve(
    points: Mapping[str, OperatingPoint],
    name: str | None,
    *,
    default: str | None,
    legacy_threshold: float,
    legacy_method: str | None,
    where: str,
) -> OperatingPoint:
    """The operating point `name` (None: the model's default) among `points`; a model without
    operating points (older checkpoints) has one, its `threshold`, named after its method."""
    legacy = OperatingPoint(legacy_method or "threshold", float(legacy_threshold), None, None, 0)
    if not points:
        if name is None:
            return legacy
        raise OperatingPointError(
            f"{where}: carries no operating points (only threshold {legacy_threshold:.4f}, "
            f"{legacy_method or 'fixed'}); retrain, or pass a threshold"
        )
    if name is None:  # the named default; none named: the `threshold` itself (as the C API reads it)
        return points.get(default, legacy) if default is not None else legacy
    key = canonical(name)
    if key not in points:
        raise OperatingPointError(f"{where}: no operating point {key} (has {', '.join(points)})")
    return points[key]
