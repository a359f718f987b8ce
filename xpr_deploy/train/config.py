"""`TrainConfig`: every option of `xpr train` / `xpr cv`, with the defaults the CLI shows.

Kept free of torch so the CLI can build its help from these defaults without importing it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..config import NUM_STAGES, ModelConfig, get_config
from ..errors import ConfigError

#: options that shape the result; `--resume` refuses to change them
RUN_SHAPING = (
    "config", "epochs", "batch_size", "lr", "weight_decay", "prune_rates", "prune_warmup", "holdout",
    "fold", "folds", "split_file", "val_fraction", "pretrained", "seed", "label_rule", "data_format",
    "lr_warmup_epochs", "grad_clip", "min_lr_ratio", "freeze",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything `xpr train` needs; saved in every checkpoint's meta (`train_config`)."""

    data: str
    out: str
    config: str = "paper"
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    lr_warmup_epochs: float = 1.0  # linear LR warm-up before the cosine decay
    min_lr_ratio: float = 0.01  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm (0: off)
    prune_rates: tuple[float, ...] | None = None  # None: the preset's; 1 value or 4 (per stage)
    prune_warmup: int = 5  # epochs over which keep anneals 1.0 -> target
    holdout: float = 0.2  # test fraction of patients (8:2) unless `fold` is set
    fold: int | None = None  # 0-based fold held out as test (patient-level k-fold)
    folds: int = 5
    split_file: str | None = None  # an existing SplitFile JSON instead of making one (used by `xpr cv`)
    val_fraction: float = 0.1  # patients of the training part used for model selection (0: last epoch)
    pretrained: str | None = None  # local ImageNet Swin-T file
    #: frozen Swin parts: "paper" (patch embedding + stages 1-2, SPEC §2) or "stem" (patch embedding only;
    #: an option for random-init runs, where there are no ImageNet features to preserve)
    freeze: str = "paper"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    cache: str | None = None
    workers: int = 0
    label_rule: str | None = None
    data_format: str = "auto"
    amp: bool = True  # bf16 (fp16 + scaler where bf16 is missing) autocast on CUDA; never on CPU
    progress: bool = True
    stop_after: int | None = None  # end this invocation after N epochs, as an interruption would

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prune_rates"] = list(self.prune_rates) if self.prune_rates is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("prune_rates") is not None:
            kw["prune_rates"] = tuple(kw["prune_rates"])
        return cls(**kw)

    def model_config(self) -> ModelConfig:
        try:
            cfg = get_config(self.config)
            if self.prune_rates is not None:
                rates = self.prune_rates
                if len(rates) not in (1, NUM_STAGES):
                    raise ValueError(f"give 1 or {NUM_STAGES} prune rates, got {len(rates)}")
                cfg = cfg.with_prune_rates(rates[0] if len(rates) == 1 else tuple(rates))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.freeze not in ("paper", "stem"):
            raise ConfigError(f"--freeze must be paper or stem, got {self.freeze!r}")
        if self.freeze == "stem":
            cfg = replace(cfg, frozen_stages=0)
        return cfg

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ConfigError(f"--fold {self.fold} is outside 0..{self.folds - 1}")
        if self.fold is None and not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"--holdout must be in (0, 1), got {self.holdout}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        self.model_config()
