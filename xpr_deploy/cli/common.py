"""What every `xpr` command shares: the consoles, the common option types, JSON output, option parsing."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

#: the model presets (`config.PRESETS`; a test keeps the two equal): a choice, so a wrong one is a usage error
Preset = Literal["paper", "tiny"]
ConfigOpt = Annotated[Preset, typer.Option("--config", "-c", help="model preset: paper (2688x896) or tiny (448x224)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")]


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _parse_size(text: str) -> tuple[int, int]:
    from ..errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r}: expected ROWSxCOLS, e.g. 1024x512") from None
    return h, w


def _rates(prune_rate: float | None, prune_rates: str | None) -> tuple[float, ...] | None:
    from ..errors import ConfigError

    if prune_rate is not None and prune_rates:
        raise ConfigError("give --prune-rate or --prune-rates, not both")
    if prune_rates:
        try:
            return tuple(float(r) for r in prune_rates.split(","))
        except ValueError:
            raise ConfigError(f"--prune-rates {prune_rates!r}: need numbers like 0.5,0.5,0.5,0.5") from None
    return (prune_rate,) if prune_rate is not None else None


def _keep_sweep(keep_sweep: str | None) -> list[float] | None:
    """`--keep-sweep 1.0,0.5` as keep ratios in (0, 1] (None: no sweep)."""
    from ..bench import BenchError

    try:
        sweep = [float(k) for k in keep_sweep.split(",")] if keep_sweep else None
    except ValueError:
        raise BenchError(f"--keep-sweep {keep_sweep!r}: give comma-separated keep ratios such as 1.0,0.5") from None
    if sweep and not all(0.0 < k <= 1.0 for k in sweep):
        raise BenchError("--keep-sweep: keep ratios must be in (0, 1]")
    return sweep
