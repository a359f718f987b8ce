"""`xpr bench --eager`: an XPruning model in PyTorch through `runners.EagerRunner`, at its own keep
ratio plus dense (keep 1.0) and a keep sweep, interleaved in one process.

All variants share the weights: each runner switches K before its call (the model's own keep
ratio is restored afterwards). Timed calls run on device tensors (no host copies), synchronised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runners.eager import EagerRunner
from .errors import BenchError
from .inputs import example_views
from .memory import PeakRSS, _torch_memory_hooks
from .report import assemble_report, variant_name
from .timer import _cuda_event_timer, time_interleaved

DTYPES = ("fp32", "fp16", "bf16")


def model_summary(model: Any) -> dict[str, Any]:
    cfg = model.cfg
    return {"config": cfg.name, "img_size": list(cfg.img_size), "keep_ratios": list(model.keep_ratios)}


def macs_for_keep(cfg: Any, keep: float) -> float:
    from ..model.summary import macs

    return float(macs(cfg.with_prune_rates(1.0 - keep), pruned=True))


def bench_eager(
    model: Any,
    *,
    runs: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    batch: int = 1,
    dense: bool = False,
    keep_sweep: Sequence[float] | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    mode: str = "eager",
    inputs: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the model: `dtype` fp16/bf16 runs under autocast (LayerNorm, softmax and the window scores
    stay FP32, as in the FP16 export); `mode` eager, compile (one compiled graph per keep ratio) or
    cuda-graph (captured per keep ratio, replayed; CUDA only)."""
    if dtype not in DTYPES:
        raise BenchError(f"dtype {dtype!r}: choose fp32, fp16 or bf16")
    autocast = None if dtype == "fp32" else dtype  # mode and device are checked by EagerRunner
    own = list(model.keep_ratios)
    main_keep = own[0] if len(set(own)) == 1 else None
    keeps: dict[str, float | None] = {"pruned": None}
    if dense:
        keeps["dense"] = 1.0
    for k in keep_sweep or ():
        name = variant_name(float(k))
        if name == "dense" or main_keep is None or abs(float(k) - main_keep) > 1e-9:
            keeps.setdefault(name, float(k))
    try:
        runners = {
            n: EagerRunner(model, name=n, device=device, autocast=autocast, mode=mode, keep=k, threads=threads)
            for n, k in keeps.items()
        }
    except ConfigError as exc:
        raise BenchError(str(exc)) from None
    if inputs is None:
        inputs = example_views((batch, model.cfg.in_chans, *model.cfg.img_size))
    try:
        for r in runners.values():
            r.activate()
        first = runners["pruned"]
        cc, mlo = first.to_device(inputs[0]), first.to_device(inputs[1])
        fns: dict[str, Callable[[], Any]] = {n: functools.partial(r.run_tensors, cc, mlo) for n, r in runners.items()}
        dev = first._dev
        memory = _torch_memory_hooks(dev)
        gpu_timer = _cuda_event_timer if dev.type == "cuda" else None
        times = time_interleaved(fns, runs, warmup, memory=memory, gpu_timer=gpu_timer, progress=progress)
        torch_threads = _torch_threads()
    finally:
        for r in runners.values():
            if r.is_active:
                r.deactivate()
        model.set_keep(own)
    uniform = {n: (main_keep if n == "pruned" else k) for n, k in keeps.items()}
    macs = {n: macs_for_keep(model.cfg, k) for n, k in uniform.items() if k is not None}
    settings = {
        "runs": runs,
        "warmup": warmup,
        "threads": torch_threads,
        "batch": batch,
        "device": str(dev),
        "dtype": dtype,
        "mode": mode,
        "runner": first.describe(),
        "memory": PeakRSS().scope if dev.type == "cpu" else "torch.cuda.max_memory_allocated per call",
    }
    return assemble_report("eager", times, uniform, "pruned", batch, settings, model_summary(model), macs)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())
