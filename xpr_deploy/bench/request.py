"""One `xpr bench` run as a typed value, and the one call that runs it.

`xpr bench` takes one of three targets (`--eager CKPT`, `--onnx BUNDLE`, `--engine ENGINE`, or
`--config` for random weights) and options that only some adapters read. `bench_request` turns the
command line's text into a `BenchRequest`, refusing a bad combination in one line before anything
is loaded (in the order the options are read), and `run_bench` picks the adapter: a Python caller
gets exactly what `xpr bench` times, without the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch import bench_batches, parse_batches
from .eager import bench_eager
from .engine import bench_engine
from .errors import BenchError
from .onnx import bench_onnx


def parse_keep_sweep(text: str | None) -> list[float] | None:
    """`1.0,0.5` as keep ratios in (0, 1] (None: no sweep)."""
    try:
        sweep = [float(k) for k in text.split(",")] if text else None
    except ValueError:
        raise BenchError(f"--keep-sweep {text!r}: give comma-separated keep ratios such as 1.0,0.5") from None
    if sweep and not all(0.0 < k <= 1.0 for k in sweep):
        raise BenchError("--keep-sweep: keep ratios must be in (0, 1]")
    return sweep


@dataclass(frozen=True)
class BenchRequest:
    """What to time and how; `eager`, `onnx`, `engine` (one of them) or `config` (random weights).
    `batches`: per-breast time at these batch sizes (ONNX Runtime only)."""

    eager: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    config: str | None = None
    dense: bool = False
    keep_sweep: list[float] | None = None
    runs: int = 5
    warmup: int = 1
    threads: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    mode: str = "eager"
    dense_onnx: Path | None = None
    profile: Path | None = None
    batches: list[int] | None = None
    backend: str = "onnx"
    against: tuple[str, ...] = ()

    def check(self) -> None:
        """The combinations no adapter takes, each one line (BenchError, exit 2)."""
        _check_target(self.eager, self.onnx, self.engine, self.config)
        _check_onnx_only(self.onnx, self.backend, self.against, self.batches is not None)


def _check_target(eager: Path | None, onnx: Path | None, engine: Path | None, config: str | None) -> None:
    chosen = [n for n, v in (("--eager", eager), ("--onnx", onnx), ("--engine", engine)) if v is not None]
    if len(chosen) > 1 or (not chosen and config is None):
        raise BenchError("give one of --eager CKPT, --onnx BUNDLE, --engine ENGINE (or --config for random weights)")


def _check_onnx_only(onnx: Path | None, backend: str, against: Sequence[str], batch: bool) -> None:
    if (backend != "onnx" or against) and onnx is None:
        raise BenchError("--backend and --against go with --onnx BUNDLE")
    if batch and onnx is None:
        raise BenchError("--batch goes with --onnx BUNDLE (ONNX Runtime, per-breast time by batch size)")


def bench_request(
    *,
    eager: Path | None = None,
    onnx: Path | None = None,
    engine: Path | None = None,
    config: str | None = None,
    dense: bool = False,
    keep_sweep: str | None = None,
    runs: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    mode: str = "eager",
    dense_onnx: Path | None = None,
    profile: Path | None = None,
    batch: str | None = None,
    backend: str = "onnx",
    against: Sequence[str] | None = None,
) -> BenchRequest:
    """A checked request from `xpr bench`'s option text (`keep_sweep` "1.0,0.5", `batch` "1,2,4"),
    refused in the order the command line always checked it."""
    _check_target(eager, onnx, engine, config)
    sweep = parse_keep_sweep(keep_sweep)
    _check_onnx_only(onnx, backend, against or (), batch is not None)
    return BenchRequest(
        eager=eager, onnx=onnx, engine=engine, config=config, dense=dense, keep_sweep=sweep, runs=runs,
        warmup=warmup, threads=threads, device=device, dtype=dtype, mode=mode, dense_onnx=dense_onnx,
        profile=profile, batches=parse_batches(batch) if batch is not None else None, backend=backend,
        against=tuple(against or ()),
    )  # fmt: skip


def run_bench(req: BenchRequest, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The report of the adapter the request names (batch sizes, engine, ONNX Runtime or eager)."""
    req.check()
    if req.batches is not None:
        assert req.onnx is not None  # check() said so
        return bench_batches(
            req.onnx, req.batches, runs=req.runs, warmup=req.warmup, threads=req.threads, progress=progress
        )
    if req.engine is not None:
        return bench_engine(req.engine, runs=req.runs, warmup=req.warmup, progress=progress)
    if req.onnx is not None:
        return bench_onnx(
            req.onnx, runs=req.runs, warmup=req.warmup, threads=req.threads, dense=req.dense,
            keep_sweep=req.keep_sweep, dense_path=req.dense_onnx, profile_dir=req.profile, progress=progress,
            backend=req.backend, against=req.against,
        )  # fmt: skip
    return bench_eager(
        _eager_model(req), runs=req.runs, warmup=req.warmup, threads=req.threads, dense=req.dense,
        keep_sweep=req.keep_sweep, device=req.device, dtype=req.dtype, mode=req.mode, progress=progress,
    )  # fmt: skip


def _eager_model(req: BenchRequest) -> Any:
    """The checkpoint's model on the CPU, or random weights of the `config` preset (seed 0)."""
    if req.eager is not None:
        from ..train.checkpoint import load_checkpoint

        model, _ = load_checkpoint(str(req.eager), device="cpu")
        return model
    from ..config import get_config
    from ..model.xpruning import random_model

    return random_model(get_config(str(req.config)), 0)
