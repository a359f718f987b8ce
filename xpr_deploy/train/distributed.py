"""DDP plumbing: one code path for a single process, `torchrun` on GPUs (NCCL) and on CPUs (gloo).

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op for rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import BackendUnavailable, ConfigError

T = TypeVar("T")
_owner_depth = 0  # nesting of init_distributed calls; the outermost one tears the group down


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda when available, else cpu; `cuda` without a GPU is an error, not a silent fallback."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda: torch reports no CUDA device (use --device cpu)")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the `torchrun` process group if there is one (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    global _owner_depth
    if world > 1:
        if not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _owner_depth += 1
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    """Undo one init_distributed; the process group ends with the outermost (e.g. `xpr cv` around `train`)."""
    global _owner_depth
    if _owner_depth > 0:
        _owner_depth -= 1
    if _owner_depth == 0 and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
