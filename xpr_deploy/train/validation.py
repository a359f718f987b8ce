"""P(malignant) over a dataset (one process or sharded over DDP ranks) and the validation metrics.

`fit` selects the best epoch with these; `evaluate` predicts with `predict_probs` too. Re-exported
from `loop`, so `from xpr_deploy.train.loop import X` keeps working for them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..model.xpruning import malignancy_probability
from . import distributed as D
from .metrics import binary_metrics
from .operating_points import DEFAULT_POINT, DEFAULT_TARGETS, choose_all
from .recipe import amp_context


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    dataset: Dataset[Any],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    workers: int = 0,
    amp: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> tuple[np.ndarray, np.ndarray]:
    """(P(malignant), labels) over `dataset` in order; with `shard=(rank, world)` only every world-th item."""
    device = torch.device(device)
    rank, world = shard
    idx = list(range(rank, len(dataset), world))  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = model.training
    model.eval()
    ctx, _ = amp_context(device, amp)
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    try:
        for cc, mlo, y in loader:
            with ctx:
                logits = model(cc.to(device, non_blocking=True), mlo.to(device, non_blocking=True))
            probs.append(malignancy_probability(logits).cpu().numpy().astype(np.float64))
            labels.append(np.asarray(y, dtype=np.int64).reshape(-1))
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(labels)


def predict_probs_distributed(
    model: nn.Module, dataset: Dataset[Any], info: D.DistInfo, batch_size: int, workers: int, amp: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each rank predicts its shard; the shards are gathered back into dataset order on every rank."""
    p, y = predict_probs(model, dataset, batch_size, info.device, workers, amp, shard=(info.rank, info.world_size))
    parts = D.all_gather_objects((p, y))
    n = len(dataset)  # type: ignore[arg-type]
    probs, labels = np.zeros(n), np.zeros(n, dtype=np.int64)
    for r, (pr, yr) in enumerate(parts):
        probs[r :: info.world_size], labels[r :: info.world_size] = pr, yr
    return probs, labels


def validation_metrics(probs: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None) -> dict[str, Any]:
    """AUC (+ DeLong CI), loss, Youden threshold and metrics at it, for model selection and the log."""
    lp = torch.log(torch.tensor(np.stack([1 - probs, probs], 1)).clamp_min(1e-12)).float()
    loss = float(F.nll_loss(lp, torch.as_tensor(labels), weight=weights)) if len(labels) else math.nan
    points = choose_all(labels, probs, DEFAULT_TARGETS)
    default = points.get(DEFAULT_POINT)
    thr = default.threshold if default is not None else 0.5
    m = binary_metrics(labels, probs, thr).to_dict()
    m["loss"] = loss
    m["threshold_method"] = "youden-validation" if default is not None else "fixed-0.5"
    m["operating_points"] = {k: p.to_dict() for k, p in points.items()}
    m["operating_point"] = DEFAULT_POINT if default is not None else None
    return m
