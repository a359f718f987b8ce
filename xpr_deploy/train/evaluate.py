"""`xpr eval`: a checkpoint on a dataset (its test split by default) -> metrics, per-breast outputs, plots.

Library: `evaluate(model, meta, pairs) -> EvalReport` for pairs already in hand, and
`evaluate_checkpoint(ckpt, data, split="test") -> EvalReport` for the whole thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .metrics import CI_METHOD, BinaryMetrics, binary_metrics, roc_curve
from .operating_points import OperatingPoint


@dataclass
class EvalReport:
    """Metrics at the checkpoint's operating threshold, plus every breast's probability."""

    metrics: BinaryMetrics
    label_rule: str
    threshold_method: str
    split: str
    checkpoint: str | None
    breasts: list[dict[str, Any]]  # study, laterality, patient, key, prob, label
    class_names: tuple[str, str] = ("benign", "malignant")
    extra: dict[str, Any] = field(default_factory=dict)
    operating_point: OperatingPoint | None = None  # None: a threshold given by hand

    @property
    def probs(self) -> np.ndarray:
        return np.array([b["prob"] for b in self.breasts], dtype=np.float64)

    @property
    def labels(self) -> np.ndarray:
        return np.array([b["label"] for b in self.breasts], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """The `xpr eval --json` object (top-level metric keys; per-breast list under `breasts`)."""
        m = self.metrics.to_dict()
        return {
            "auc": m["auc"],
            "auc_ci": m["auc_ci"],
            "ci_method": CI_METHOD,
            "acc": m["acc"],
            "f1": m["f1"],
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            "threshold": m["threshold"],
            "threshold_method": self.threshold_method,
            "operating_point": self._point_dict(),
            "n": m["n"],
            "n_pos": m["n_pos"],
            "confusion": m["confusion"],
            "label_rule": self.label_rule,
            "split": self.split,
            "checkpoint": self.checkpoint,
            "class_names": list(self.class_names),
            **self.extra,
            "breasts": self.breasts,
        }

    def _point_dict(self) -> dict[str, Any] | None:
        p = self.operating_point
        if p is None:
            return None
        return {"name": p.name, "threshold": p.threshold, "validation": {"sensitivity": p.sensitivity,
                "specificity": p.specificity, "n": p.n}}  # fmt: skip

    def summary_lines(self) -> list[str]:
        m = self.metrics
        c = m.confusion
        auc = "n/a" if np.isnan(m.auc) else f"{m.auc:.4f}"
        ci = "n/a" if np.isnan(m.auc_ci[0]) else f"{m.auc_ci[0]:.4f}-{m.auc_ci[1]:.4f}"
        return [
            f"{m.n} breasts ({m.n_pos} malignant), split {self.split}, label rule {self.label_rule}",
            f"AUC {auc}  95% CI {ci}  (DeLong)",
            f"at threshold {m.threshold:.4f} ({self.threshold_method}): ACC {m.acc:.4f}  F1 {m.f1:.4f}  "
            f"sensitivity {m.sensitivity:.4f}  specificity {m.specificity:.4f}",
            f"confusion [[TN {c.tn}, FP {c.fp}], [FN {c.fn}, TP {c.tp}]]",
        ] + ([f"operating point {p.describe()}"] if (p := self.operating_point) is not None and p.n else [])

    def write_plots(self, out_dir: str | Path, stem: str = "") -> list[Path]:
        """ROC curve and confusion matrix PNGs into `out_dir`."""
        from .plots import plot_confusion, plot_roc

        out = Path(out_dir)
        m = self.metrics
        paths = []
        if self.labels.size and 0 < m.n_pos < m.n:
            fpr, tpr, _ = roc_curve(self.labels, self.probs)
            point = (1 - m.specificity, m.sensitivity)
            paths.append(
                plot_roc(fpr, tpr, out / f"{stem}roc.png", m.auc, m.auc_ci, point, f"ROC ({self.split}, n={m.n})")
            )
        paths.append(
            plot_confusion(
                m.confusion.matrix(), out / f"{stem}confusion.png", self.class_names, f"threshold {m.threshold:.3f}"
            )
        )
        return paths


def evaluate(
    model: torch.nn.Module,
    meta: dict[str, Any],
    pairs: list[Any],
    *,
    threshold: float | None = None,
    operating_point: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    workers: int = 0,
    split: str = "given",
    label_rule: str | None = None,
) -> EvalReport:
    """Score `pairs` (BreastPair list) with `model` using the checkpoint's preprocessing and threshold."""
    from ..data import PreprocessSettings
    from ..data.torchdata import PairDataset
    from .loop import predict_probs

    pairs = [p for p in pairs if p.label in (0, 1)]
    if not pairs:
        raise ConfigError("no labelled breasts to evaluate")
    try:
        settings = PreprocessSettings.from_dict(meta["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{meta.get('checkpoint_dir', 'checkpoint')}: unusable preprocess settings ({exc})") from None
    dataset = PairDataset(pairs, settings, cache)
    probs, labels = predict_probs(model, dataset, batch_size, device, workers)
    point = None
    if threshold is not None:
        if operating_point is not None:
            raise ConfigError("give --threshold or --operating-point, not both")
        thr, method = float(threshold), "given"
    else:
        from .operating_points import points_from, resolve

        point = resolve(
            points_from(meta.get("operating_points")), operating_point, default=meta.get("operating_point"),
            legacy_threshold=float(meta.get("threshold", 0.5)), legacy_method=meta.get("threshold_method"),
            where=str(meta.get("checkpoint_dir", "checkpoint")),
        )  # fmt: skip
        thr = point.threshold
        method = f"operating point {point.name}" if point.n else str(meta.get("threshold_method", "fixed-0.5"))
    breasts = [
        {
            "study": p.study_id,
            "laterality": p.laterality,
            "patient": p.patient_id,
            "key": p.key,
            "prob": float(pr),
            "label": int(y),
        }
        for p, pr, y in zip(pairs, probs, labels, strict=True)
    ]
    names = meta.get("model_config", {}).get("class_names", ("benign", "malignant"))
    return EvalReport(
        metrics=binary_metrics(labels, probs, thr),
        label_rule=label_rule or meta.get("label_rule", "unknown"),
        threshold_method=method,
        split=split,
        checkpoint=meta.get("checkpoint_dir"),
        breasts=breasts,
        class_names=(str(names[0]), str(names[1])),
        operating_point=point,
    )


def evaluate_checkpoint(
    ckpt: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    data_format: str = "auto",
    label_rule: str | None = None,
    threshold: float | None = None,
    operating_point: str | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    cache: str | Path | None = None,
    workers: int = 0,
) -> EvalReport:
    """Load a checkpoint, index `data` with the checkpoint's label rule, pick `split`, evaluate."""
    from ..data import detect_format
    from .checkpoint import load_checkpoint
    from .datasplit import labelled_pairs, pairs_for_split
    from .distributed import resolve_device

    dev = resolve_device(device)
    model, meta = load_checkpoint(ckpt, device=dev)
    if label_rule is None:  # the rule the model was trained with, when it applies to this dataset
        fmt = detect_format(data) if data_format == "auto" else data_format
        rule = str(meta.get("label_rule", ""))
        label_rule = rule if rule.split(":", 1)[0] == fmt else None
    index, pairs = labelled_pairs(data, data_format, label_rule)
    chosen = pairs_for_split(meta, pairs, split)
    rep = evaluate(
        model,
        meta,
        chosen,
        threshold=threshold,
        operating_point=operating_point,
        batch_size=batch_size,
        device=dev,
        cache=cache,
        workers=workers,
        split=split,
        label_rule=index.label_rule,
    )
    rep.extra["data"] = str(data)
    rep.extra["epoch"] = meta.get("epoch")
    return rep
