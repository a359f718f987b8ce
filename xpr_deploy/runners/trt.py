"""TensorRT / TensorRT-RTX engines: device buffers and a stream allocated once on activation.

The engine is taken from a verified bundle (its bytes are hashed by the bundle reader); loading
checks the backend version and the GPU's compute capability (`trt_engine.checks.check_engine`).
Without an NVIDIA GPU activation raises BackendUnavailable with the reason: validate and bench
turn that into a skipped row, predict into a one-line error.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import BlockKey, EngineRef, IoNames
from ..errors import BackendUnavailable, XprError
from .base import XprRunner
from .registry import FP16_GATE, BackendSpec, ParityRow, RunnerRequest, register_backend

if TYPE_CHECKING:
    from .factory import ModelSource


class EngineRunError(XprError):
    """An engine could not be deserialised or failed to execute."""


class TrtRunner(XprRunner):
    """Outputs: every I/O tensor of the engine that is not an input, copied to the host."""

    backend = "engine"

    def __init__(self, engine: EngineRef, io: IoNames, selection: dict[str, BlockKey], name: str = "engine") -> None:
        super().__init__(name)
        self.ref, self.io = engine, io
        self.selection = dict(selection)
        self.engine: Any = None

    def activate_impl(self) -> None:
        import torch

        from ..trt_engine.checks import check_engine

        trt = check_engine(self.ref)  # BackendUnavailable without a GPU, EngineMismatch on version / sm
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.ref.path.read_bytes())
        if self.engine is None:
            raise EngineRunError(f"{self.ref.path}: {self.ref.flavour} could not deserialise it (see the log above)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        missing = [n for n in (*self.io.inputs, self.io.logits, self.io.prob) if n not in names]
        if missing:
            raise EngineRunError(f"{self.ref.path}: engine has no tensor {missing[0]!r} (manifest io)")
        dt = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32}
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        for n in names:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(n))
            self.buffers[n] = torch.empty(shape, dtype=dt[self.engine.get_tensor_dtype(n).name], device="cuda")
            self.context.set_tensor_address(n, self.buffers[n].data_ptr())
        self.batch = int(self.buffers[self.io.cc].shape[0])
        self.stream = torch.cuda.Stream()

    def deactivate_impl(self) -> None:
        self.buffers, self.context, self.engine = {}, None, None

    def get_input_metadata_impl(self) -> Any:
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for n in self.input_names:
            meta.add(n, np.float32, tuple(self.buffers[n].shape))
        return meta

    def execute(self) -> None:
        """Run the engine on what is in the device buffers (benchmarks time this alone)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineRunError(f"{self.ref.path}: engine execution failed")

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        import torch

        start = time.perf_counter()
        with torch.cuda.stream(self.stream):
            for n in self.input_names:
                self.buffers[n].copy_(torch.from_numpy(np.ascontiguousarray(feed_dict[n])), non_blocking=False)
            self.execute()
        self.stream.synchronize()
        out = OrderedDict((n, self.buffers[n].cpu().numpy()) for n in self.output_names)
        self.inference_time = time.perf_counter() - start
        return out

    def describe(self) -> dict[str, Any]:
        e = self.ref.entry
        return {
            "backend": "engine",
            "engine": e["path"],
            "runtime": f"{e['backend']} {e['version']}",
            "precision": self.ref.precision,
            "sm": e["compute_capability"],
        }


def build_engine_runner(source: ModelSource, req: RunnerRequest) -> TrtRunner:
    view = source.bundle
    assert view is not None
    return TrtRunner(view.engine(), view.io, view.selection_outputs(), name=req.name or "engine")


def _engine_candidate(source: ModelSource, model: Any, row: ParityRow) -> tuple[Any, str]:
    """The bundle's engine, or why it cannot run here (none built; no GPU / runtime)."""
    from ..trt_engine.checks import check_engine

    view = source.bundle
    if view is None or not view.engines:
        why = (view.manifest.get("engine_skipped") if view is not None else None) or "none was built"
        return None, f"no engine in the bundle ({why})"
    try:
        check_engine(view.engine())
    except BackendUnavailable as exc:
        return None, str(exc)
    return build_engine_runner(source, RunnerRequest(name=row.name)), ""


register_backend(
    BackendSpec(
        "engine", "the bundle's TensorRT / TensorRT-RTX engine (needs an NVIDIA GPU)", needs="bundle",
        artefact="engines[]", build=build_engine_runner, devices=("cuda",), selection_outputs=True, triton=True,
        parity=(ParityRow("engine", FP16_GATE, None, _engine_candidate),),
    )
)  # fmt: skip
