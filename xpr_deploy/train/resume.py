"""`--resume`: the interrupted run's own settings, and refusing options that would change that run.

`train` restores the configuration with `resume_config`; the CLI checks explicit options with
`check_resume_overrides` (re-exported from `loop`, where it lived before).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import recover_dir
from .checkpoint import META, CheckpointError, load_train_state, read_meta
from .config import RUN_SHAPING, TrainConfig


def resume_config(cfg: TrainConfig, run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The interrupted run's own settings (runtime options may change) and its optimizer/RNG state."""
    last = recover_dir(run_dir / "last")  # killed between the swap's renames: the state is in .last.old
    if not (last / META).is_file():
        raise CheckpointError(f"{last}: nothing to resume (no {META}); start without --resume")
    saved = TrainConfig.from_dict(read_meta(last).get("train_config", {}))
    return (
        replace(
            saved,
            device=cfg.device,
            workers=cfg.workers,
            cache=cfg.cache or saved.cache,
            progress=cfg.progress,
            stop_after=cfg.stop_after,
            resume=True,
            out=cfg.out,
            data=cfg.data,
        ),
        load_train_state(last),
    )


def check_resume_overrides(saved: TrainConfig, given: dict[str, Any]) -> None:
    """Refuse explicit options that would change an interrupted run (the result would not be that run)."""
    for k, v in given.items():
        if k in RUN_SHAPING and v is not None:
            old = getattr(saved, k)
            if (tuple(v) if isinstance(v, list) else v) != old:
                raise ConfigError(f"--{k.replace('_', '-')} {v} differs from the interrupted run ({old}); drop it")
