"""Checks an engine must pass before it is deserialised (SPEC §5), each failing with one clear line.

The engine's bytes were already hashed by the verified bundle reader (`xpr_deploy.bundle`). Here:
the TensorRT flavour (the manifest's `engines[].backend`) importable and at its exact version, an
NVIDIA GPU, the GPU's compute capability among the engine's. Without a GPU the error is
BackendUnavailable, which callers (validate, bench, pytest) turn into a skip with that reason.
Deserialising and running it is `runners.trt.TrtRunner`, which calls `check_engine` first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..bundle import EngineRef
from ..errors import BackendUnavailable, XprError
from .build import gpu_compute_capability, import_flavour


class EngineMismatch(XprError):
    """The engine does not match its manifest entry (TensorRT flavour version, compute capability)."""


def check_compute_capability(entry: dict[str, Any], device: tuple[int, int]) -> None:
    cc = f"{device[0]}.{device[1]}"
    allowed = entry.get("compute_capabilities") or [entry["compute_capability"]]
    if cc not in allowed:
        raise EngineMismatch(
            f"engine built for compute capability {', '.join(allowed)} ({entry['backend']}), this GPU is {cc}: "
            "rebuild it for this GPU (xpr export --sm ...) or with --hw-compat ampere+"
        )


def check_engine(engine: EngineRef) -> ModuleType:
    """Every check that can run here; returns the TensorRT flavour's module to deserialise with."""
    entry = engine.entry
    trt = import_flavour(entry["backend"])  # the manifest field holds the TensorRT flavour
    have = str(trt.__version__)
    if have != entry["version"]:
        raise EngineMismatch(
            f"{engine.path}: built with {entry['backend']} {entry['version']}, this machine has {have}: "
            "engines only load in the exact version that built them"
        )
    device = gpu_compute_capability()
    if device is None:
        raise BackendUnavailable(f"{entry['backend']} engines need an NVIDIA GPU to run; none is available here")
    check_compute_capability(entry, device)
    return trt
