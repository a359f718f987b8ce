"""`xpr cv`: patient-level k-fold cross-validation and a summary table like the paper's Table 1.

One split file (`RUN/split.json`) fixes the folds; fold k trains in `RUN/fold<k>/` (selecting its
checkpoint on a validation slice of its own training patients) and is scored on its test fold.
Summary: ACC / F1 / Sens / Spec as mean ± SD over folds; AUC as mean ± SD over folds and as the
pooled out-of-fold AUC with a DeLong 95 % CI (each breast is predicted exactly once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import write_json, write_text
from . import distributed as D
from .checkpoint import META, read_meta
from .loop import TrainConfig, train
from .metrics import CI_METHOD, binary_metrics, delong_auc

METRICS = ("auc", "acc", "f1", "sensitivity", "specificity")


@dataclass
class CVResult:
    run_dir: Path
    folds: list[dict[str, Any]]  # per fold: fold, n, metrics (eval JSON without per-breast list)
    summary: dict[str, Any]
    markdown: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "summary": self.summary, "folds": self.folds}


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return {"mean": None, "sd": None}
    return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}


def summarize(folds: list[dict[str, Any]], breasts: list[dict[str, Any]], decisions: list[int]) -> dict[str, Any]:
    """Mean ± SD per metric over folds, and pooled out-of-fold AUC with its DeLong CI."""
    out: dict[str, Any] = {m: _mean_sd([f["metrics"][m] for f in folds]) for m in METRICS}
    labels = [b["label"] for b in breasts]
    probs = [b["prob"] for b in breasts]
    pooled = delong_auc(labels, probs)
    # pooled decisions use each fold's own threshold
    pooled_m = binary_metrics(labels, decisions, 0.5).to_dict()
    out["pooled"] = {
        "auc": None if math.isnan(pooled.auc) else pooled.auc,
        "auc_ci": None if math.isnan(pooled.ci[0]) else list(pooled.ci),
        "acc": pooled_m["acc"],
        "f1": pooled_m["f1"],
        "sensitivity": pooled_m["sensitivity"],
        "specificity": pooled_m["specificity"],
        "n": len(labels),
        "n_pos": int(sum(labels)),
    }
    out["ci_method"] = CI_METHOD
    return out


def _fmt(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def markdown_table(summary: dict[str, Any], folds: list[dict[str, Any]], title: str) -> str:
    """Table-1-style Markdown: the summary row, then one row per fold."""
    p = summary["pooled"]
    ci = p["auc_ci"]
    auc_cell = f"{_fmt(p['auc'])} ({_fmt(ci[0])}–{_fmt(ci[1])})" if ci else _fmt(p["auc"])

    def ms(m: str) -> str:
        d = summary[m]
        return "n/a" if d["mean"] is None else f"{d['mean']:.3f} ± {d['sd']:.3f}"

    lines = [
        f"# {title}",
        "",
        "| Model | AUC, pooled (95% CI) | AUC | ACC | F1 | Sens. | Spec. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {summary['model']} | {auc_cell} | {ms('auc')} | {ms('acc')} | {ms('f1')} | "
        f"{ms('sensitivity')} | {ms('specificity')} |",
        "",
        f"{len(folds)}-fold patient-level cross-validation, {p['n']} breasts ({p['n_pos']} malignant), "
        f"label rule `{summary['label_rule']}`. Mean ± SD over folds; pooled AUC over out-of-fold "
        f"predictions with a {summary['ci_method']} CI. Thresholds: each fold's validation Youden point.",
        "",
        "| Fold | n | AUC (95% CI) | ACC | F1 | Sens. | Spec. | threshold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in folds:
        m = f["metrics"]
        c = m["auc_ci"]
        cell = f"{_fmt(m['auc'])} ({_fmt(c[0])}–{_fmt(c[1])})" if c and c[0] is not None else _fmt(m["auc"])
        lines.append(
            f"| {f['fold']} | {m['n']} | {cell} | {_fmt(m['acc'])} | {_fmt(m['f1'])} | "
            f"{_fmt(m['sensitivity'])} | {_fmt(m['specificity'])} | {_fmt(m['threshold'])} |"
        )
    return "\n".join(lines) + "\n"


def _fold_done(fold_dir: Path) -> bool:
    last = fold_dir / "last"
    if not (last / META).is_file():
        return False
    meta = read_meta(last)
    return int(meta.get("epoch", 0)) >= int(meta.get("train_config", {}).get("epochs", math.inf))


def run_cv(base: TrainConfig, folds: int = 5) -> CVResult:
    """Train and evaluate every fold into `base.out`; write `cv.json` and `cv.md` there."""
    from ..data import SplitFile, make_folds
    from .datasplit import SPLIT, labelled_pairs
    from .evaluate import evaluate_checkpoint

    if base.fold is not None:
        raise ConfigError("xpr cv trains every fold; drop --fold (use xpr train --fold K for one)")
    run = Path(base.out)
    info = D.init_distributed(base.device)
    try:
        index, pairs = labelled_pairs(base.data, base.data_format, base.label_rule)
        split_path = run / SPLIT
        if base.resume and split_path.is_file():
            split = SplitFile.read(split_path)
        else:
            if (run / SPLIT).exists() and any(run.glob("fold*/last")):
                raise ConfigError(f"{run}: already holds a cross-validation run (use --resume, or another --out)")
            split = make_folds(pairs, folds, base.seed, label_rule=index.label_rule)
            if info.is_main:
                split.write(split_path)
        D.barrier()
        results: list[dict[str, Any]] = []
        all_breasts: list[dict[str, Any]] = []
        decisions: list[int] = []
        for k in range(len(split.folds)):
            fdir = run / f"fold{k}"
            cfg = replace(base, out=str(fdir), fold=k, folds=len(split.folds), split_file=str(split_path))
            if base.resume and _fold_done(fdir):
                pass
            else:
                cfg = replace(cfg, resume=base.resume and (fdir / "last" / META).is_file())
                res = train(cfg)
                if not res.finished:  # stopped early on purpose (stop_after): leave the rest for --resume
                    return CVResult(run, results, {}, "")
            rep_d: dict[str, Any] = {}
            if info.is_main:
                rep = evaluate_checkpoint(
                    fdir, base.data, "test", data_format=base.data_format, label_rule=base.label_rule,
                    batch_size=base.batch_size * 2, device=str(info.device), cache=base.cache, workers=base.workers,
                )  # fmt: skip
                rep_d = rep.to_dict()
                write_json(fdir / "eval.json", rep_d)
                all_breasts.extend(rep.breasts)
                decisions.extend(int(b["prob"] >= rep.metrics.threshold) for b in rep.breasts)
                results.append({"fold": k, "run_dir": str(fdir), "metrics": {**rep_d, "breasts": None}})
            D.barrier()
        summary: dict[str, Any] = {}
        md = ""
        if info.is_main:
            summary = summarize(results, all_breasts, decisions)
            summary["model"] = f"X-Pruning ({base.config})"
            summary["label_rule"] = index.label_rule
            summary["folds"] = len(split.folds)
            md = markdown_table(summary, results, f"Cross-validation: {base.data}")
            write_json(run / "cv.json", {"summary": summary, "folds": results})
            write_text(run / "cv.md", md)
        return CVResult(run, results, summary, md)
    finally:
        D.cleanup()
