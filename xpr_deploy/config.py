"""Model and training configurations: the `paper` and `tiny` presets of SPEC §2."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import ConfigError

#: Swin stages are numbered 1..4 everywhere in the toolkit (as in the paper).
NUM_STAGES = 4


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the graph: sizes, depths and the static pruning rates."""

    name: str = "paper"
    img_size: tuple[int, int] = (2688, 896)  # rows x columns of each view
    in_chans: int = 1
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    #: pruning rate r per stage (keep = 1 - r); r = 0 means dense, no TopK at all
    prune_rates: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)
    ctb_heads: int = 24
    head_hidden: int = 384
    num_classes: int = 2
    frozen_stages: int = 2  # patch embedding + stages 1..frozen_stages get no gradient
    drop_path_rate: float = 0.0
    class_names: tuple[str, str] = ("benign", "malignant")

    def __post_init__(self) -> None:
        unit = self.patch_size * 8 * self.window_size  # 4 * 2^3 * 7 = 224
        h, w = self.img_size
        if h % unit or w % unit:
            raise ValueError(f"img_size {h}x{w} must be a multiple of {unit} in both dimensions")
        for r in self.prune_rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"prune rate {r} must be in [0, 1)")
        if len(self.depths) != NUM_STAGES or len(self.num_heads) != NUM_STAGES:
            raise ValueError("depths and num_heads need one entry per stage (4)")

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(NUM_STAGES))

    def stage_grid(self, stage: int) -> tuple[int, int]:
        """Token grid (rows, cols) of a stage, 1-based."""
        f = self.patch_size * 2 ** (stage - 1)
        return self.img_size[0] // f, self.img_size[1] // f

    def window_grid(self, stage: int) -> tuple[int, int]:
        gh, gw = self.stage_grid(stage)
        return gh // self.window_size, gw // self.window_size

    def num_windows(self, stage: int) -> int:
        a, b = self.window_grid(stage)
        return a * b

    def keep(self, stage: int) -> float:
        return 1.0 - self.prune_rates[stage - 1]

    def with_prune_rates(self, rates: float | tuple[float, ...]) -> ModelConfig:
        if isinstance(rates, (int, float)):
            rates = (float(rates),) * NUM_STAGES
        return replace(self, prune_rates=tuple(float(r) for r in rates))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        tuples = {"img_size", "depths", "num_heads", "prune_rates", "class_names"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})  # type: ignore[arg-type]


def static_k(keep: float, n: int) -> int:
    """K = ceil(keep * N) as a Python int; the tiny epsilon keeps 0.5 * 3072 at 1536."""
    return max(1, min(n, math.ceil(keep * n - 1e-9)))


def warmup_keep(epoch: int, warmup_epochs: int, target_keep: float) -> float:
    """Keep ratio for a 0-based epoch: 1.0 at epoch 0, linear to the target at `warmup_epochs`."""
    if warmup_epochs <= 0:
        return target_keep
    t = min(1.0, epoch / warmup_epochs)
    return 1.0 - (1.0 - target_keep) * t


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "tiny": ModelConfig(
        name="tiny",
        img_size=(448, 224),
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        ctb_heads=8,
        head_hidden=64,
    ),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown config {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return replace(cfg, **overrides) if overrides else cfg
