"""`xpr train` as a Python call: `run_training(TrainRequest(data, out, ...))`.

A request holds the options as given (None: not given), not a `TrainConfig`, because `--resume`
must tell an option that would change the interrupted run from one that was left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import TrainConfig

#: request fields that are not TrainConfig fields as they are (combined or renamed by `train_config`)
_NOT_CONFIG = ("data", "out", "prune_rate", "prune_rates", "format")


def parse_rates(prune_rate: float | None, prune_rates: str | None) -> tuple[float, ...] | None:
    """`--prune-rate R` (every stage) or `--prune-rates r1,r2,r3,r4`, not both; None: the preset's."""
    if prune_rate is not None and prune_rates:
        raise ConfigError("give --prune-rate or --prune-rates, not both")
    if prune_rates:
        try:
            return tuple(float(r) for r in prune_rates.split(","))
        except ValueError:
            raise ConfigError(f"--prune-rates {prune_rates!r}: need numbers like 0.5,0.5,0.5,0.5") from None
    return (prune_rate,) if prune_rate is not None else None


@dataclass
class TrainRequest:
    """The options of `xpr train` (and the shared ones of `xpr cv`); None = not given, so that
    TrainConfig's default applies."""

    data: Path
    out: Path
    config: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    prune_rate: float | None = None
    prune_rates: str | None = None
    prune_warmup: int | None = None
    holdout: float | None = None
    fold: int | None = None
    folds: int | None = None
    split_file: Path | None = None
    val_fraction: float | None = None
    pretrained: Path | None = None
    freeze: str | None = None
    device: str | None = None
    seed: int | None = None
    resume: bool | None = None
    cache: Path | None = None
    workers: int | None = None
    format: str | None = None  # auto | vindr | cbis (TrainConfig.data_format)
    label_rule: str | None = None
    amp: bool | None = None
    progress: bool | None = None
    stop_after: int | None = None  # epochs, then stop as if interrupted (tests of --resume)

    def train_config(self) -> TrainConfig:
        """The TrainConfig these options make; with `resume` on a run folder, options that would
        change the run are refused (ConfigError naming the option)."""
        from ..io import recover_dir
        from .checkpoint import read_meta
        from .resume import check_resume_overrides

        given: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_CONFIG}
        given.update(prune_rates=parse_rates(self.prune_rate, self.prune_rates), data_format=self.format)
        set_opts: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
        last = (
            recover_dir(self.out / "last") if set_opts.get("resume") else self.out / "last"
        )  # .last.old after a crash
        if set_opts.get("resume") and (last / "meta.json").is_file():
            saved = TrainConfig.from_dict(read_meta(last).get("train_config", {}))
            check_resume_overrides(saved, set_opts)
        return TrainConfig(data=str(self.data), out=str(self.out), **set_opts)


@dataclass
class TrainSummary:
    """What `xpr train` reports: where the run and its best checkpoint are, and how it went."""

    run_dir: Path
    best_dir: Path
    best_epoch: int
    best_val: dict[str, Any]  # auc, auc_ci, loss, threshold of the best epoch
    epochs_done: int
    finished: bool  # False when stopped early (`stop_after`)
    wall_seconds: float
    history_plot: Path | None  # RUN/history.png: loss and validation AUC per epoch

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "best": str(self.best_dir),
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "epochs_done": self.epochs_done,
            "finished": self.finished,
            "wall_seconds": round(self.wall_seconds, 1),
            "history_plot": str(self.history_plot) if self.history_plot else None,
        }


def run_training(request: TrainRequest | TrainConfig) -> TrainSummary | None:
    """Train as `xpr train` does (into `out`, resumable), then draw the learning curve. Under
    torchrun every rank trains and rank 0 alone reports: the other ranks get None."""
    from .loop import train

    cfg = request.train_config() if isinstance(request, TrainRequest) else request
    res = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return None
    best = res.best_metrics or {}
    curve = None
    if res.history:  # loss and validation AUC per epoch: a glance tells whether it learned or overfitted
        from .plots import plot_history

        curve = plot_history([r.to_dict() for r in res.history], res.run_dir / "history.png")
    return TrainSummary(
        run_dir=res.run_dir,
        best_dir=res.best_dir,
        best_epoch=res.best_epoch,
        best_val={k: best.get(k) for k in ("auc", "auc_ci", "loss", "threshold")},
        epochs_done=len(res.history),
        finished=res.finished,
        wall_seconds=res.wall_seconds,
        history_plot=curve,
    )
