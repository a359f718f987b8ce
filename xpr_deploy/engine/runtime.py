"""Load and run a bundle's engine, after checking it against the manifest (SPEC §5).

Checks, in this order, each failing with one clear line: the file's SHA-256 against the manifest
(no GPU needed), the backend importable and at the manifest's exact version, an NVIDIA GPU, the
GPU's compute capability among the engine's. Without a GPU the error is BackendUnavailable, which
callers (validate, predict, bench, pytest) turn into a skip with that reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, XprError
from ..io import sha256_file
from .build import gpu_compute_capability, import_backend


class EngineMismatch(XprError):
    """The engine file does not match its manifest entry (hash, backend version, compute capability)."""


def find_manifest(engine: Path) -> tuple[Path, dict[str, Any]]:
    """The bundle folder and manifest for an engine file (bundle/engines/model.smXX.engine)."""
    for cand in (engine.parent, engine.parent.parent):
        m = cand / "manifest.json"
        if m.is_file():
            try:
                return cand, json.loads(m.read_text())
            except (OSError, ValueError) as exc:
                raise EngineMismatch(f"{m}: unreadable manifest ({exc})") from None
    raise EngineMismatch(f"{engine}: no manifest.json beside it or one folder up: cannot check it")


def manifest_entry(engine: Path, bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    for e in manifest.get("engines") or []:
        if (bundle / e["path"]).resolve() == engine.resolve():
            return e  # type: ignore[no-any-return]
    raise EngineMismatch(f"{engine}: not listed in {bundle / 'manifest.json'}")


def check_compute_capability(entry: dict[str, Any], device: tuple[int, int]) -> None:
    cc = f"{device[0]}.{device[1]}"
    allowed = entry.get("compute_capabilities") or [entry["compute_capability"]]
    if cc not in allowed:
        raise EngineMismatch(
            f"engine built for compute capability {', '.join(allowed)} ({entry['backend']}), this GPU is {cc}: "
            "rebuild it for this GPU (xpr export --sm ...) or with --hw-compat ampere+"
        )


def check_engine(engine: str | Path, manifest: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Run every check that can run here; returns (manifest entry, backend module)."""
    engine = Path(engine)
    if not engine.is_file():
        raise EngineMismatch(f"{engine}: no such engine file")
    if manifest is None:
        bundle, manifest = find_manifest(engine)
    else:
        bundle = engine.parent.parent
    entry = manifest_entry(engine, bundle, manifest)
    digest = sha256_file(engine)
    if digest != entry["sha256"]:
        raise EngineMismatch(
            f"{engine}: SHA-256 {digest[:12]}… does not match the manifest ({entry['sha256'][:12]}…): "
            "file changed or corrupt"
        )
    trt = import_backend(entry["backend"])
    have = str(trt.__version__)
    if have != entry["version"]:
        raise EngineMismatch(
            f"{engine}: built with {entry['backend']} {entry['version']}, this machine has {have}: "
            "engines only load in the exact version that built them"
        )
    device = gpu_compute_capability()
    if device is None:
        raise BackendUnavailable(f"{entry['backend']} engines need an NVIDIA GPU to run; none is available here")
    check_compute_capability(entry, device)
    return entry, trt


@dataclass
class EngineRunner:
    """A deserialised engine with one execution context; I/O through torch CUDA tensors."""

    path: Path
    entry: dict[str, Any]
    engine: Any
    context: Any
    input_names: list[str]
    output_names: list[str]
    batch: int

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        dt = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32}
        bufs: dict[str, torch.Tensor] = {}
        for name in self.input_names + self.output_names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = dt[self.engine.get_tensor_dtype(name).name]
            if name in feeds:
                bufs[name] = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", dtype).reshape(shape)
            else:
                bufs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, bufs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise XprError(f"{self.path}: engine execution failed")
        stream.synchronize()
        return {n: bufs[n].cpu().numpy() for n in self.output_names}


def load_engine(engine: str | Path, manifest: dict[str, Any] | None = None) -> EngineRunner:
    """Check the engine against its manifest, then deserialise it on the GPU."""
    engine = Path(engine)
    entry, trt = check_engine(engine, manifest)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    eng = runtime.deserialize_cuda_engine(engine.read_bytes())
    if eng is None:
        raise EngineMismatch(f"{engine}: {entry['backend']} could not deserialise it (see the log above)")
    names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
    inputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    ctx = eng.create_execution_context()
    return EngineRunner(engine, entry, eng, ctx, inputs, outputs, int(eng.get_tensor_shape(inputs[0])[0]))
