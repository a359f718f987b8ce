"""The recipe's small pieces: seeding, class weights of the loss, lr and keep schedules, AMP.

Used by the epoch loop (`loop.fit`) and by validation (`validation.predict_probs`); re-exported from
`loop`, so `from xpr_deploy.train.loop import X` keeps working for all of them.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..config import NUM_STAGES, ModelConfig, warmup_keep
from ..errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(labels: Sequence[int], num_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency weights n / (C * n_c) from the training labels (paper: weighted CE)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if (counts == 0).any():
        missing = [i for i, c in enumerate(counts) if c == 0]
        raise ConfigError(f"the training split has no samples of class {missing}: cannot weight the loss")
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to `min_ratio` of the base lr (per optimizer step)."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def keep_for_epoch(cfg: ModelConfig, epoch: int, warmup_epochs: int) -> list[float]:
    """Per-stage keep ratio for a 0-based epoch (1.0 -> target over the warm-up)."""
    return [warmup_keep(epoch, warmup_epochs, cfg.keep(s)) for s in range(1, NUM_STAGES + 1)]


def target_keep(cfg: ModelConfig) -> list[float]:
    return [cfg.keep(s) for s in range(1, NUM_STAGES + 1)]


def amp_context(device: torch.device, enabled: bool) -> tuple[contextlib.AbstractContextManager[Any], bool]:
    """(autocast context, needs GradScaler): bf16 where supported, else fp16; nothing on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext(), False
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), False
    return torch.autocast("cuda", dtype=torch.float16), True
