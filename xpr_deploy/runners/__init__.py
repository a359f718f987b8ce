"""One runner per backend, on polygraphy's runner contract (`activate` / `infer(feed)` -> raw named
outputs / `deactivate`, `inference_time` per call), and one factory that builds them.

- `eager.EagerRunner`: PyTorch (CPU/CUDA; FP32, FP16 islands, autocast; plain, CUDA graph, compiled)
- `onnxrt.OnnxRuntimeRunner`: polygraphy's `OnnxrtRunner` over `onnxrt.create_session`
- `trt.TrtRunner`: TensorRT / TensorRT-RTX engines (needs an NVIDIA GPU)
- `triton_client.TritonRunner`: the bundle's model on a Triton server (`xpr triton`'s repository)
- `outputs`: raw outputs -> P(malignant), kept-window sets
- `registry`: each backend declared once, where its runner is defined (`register_backend`); the
  factory, the CLI's backend options, validate's rows and doctor read it
GPU libraries are imported only when a runner that needs them is activated.
"""

from __future__ import annotations

from .factory import BACKENDS, ModelSource, check_backend, make_runner, open_source, source_model
from .outputs import kept_windows, logits_of, probabilities
from .registry import BackendSpec, Gate, ParityRow, RunnerRequest, backend_spec, register_backend

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "Gate",
    "ModelSource",
    "ParityRow",
    "RunnerRequest",
    "backend_spec",
    "check_backend",
    "kept_windows",
    "logits_of",
    "make_runner",
    "open_source",
    "probabilities",
    "register_backend",
    "source_model",
]
