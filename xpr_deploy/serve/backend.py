"""The `python`-backend model `xpr triton` writes: it runs inside Triton's Python stub.

The generated model.py only puts the configured folders first on `sys.path` (numpy 1.x, xpr's
source root, the venv's site-packages) and hands over to `XprTritonModel`, which:

- opens the bundle copied beside it with the verified reader (`BundleView.open`: seal, schema,
  every file's SHA-256) and refuses to load (Triton reports the model as failed) when it does not
  verify or is not the bundle the repository was written for (`xpr_bundle_sha256`);
- builds its runner with `runners.make_runner` (ONNX Runtime CPU/CUDA, or the engine), i.e. the
  configuration `xpr predict` and `xpr validate` run;
- checks each request (input present, float32, [n, 1, H, W], finite pixels) and answers a bad one
  with an error naming the input, while the other requests of the batch are served;
- concatenates the requests Triton's dynamic batcher hands it and runs them in chunks the model
  takes (the bundle's static batch, or up to its `max_batch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import XprError

MODEL_PY = '''"""Written by `xpr triton`: runs ./<version>/bundle through xpr (xpr_deploy.serve.backend)."""

import json
import sys


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        paths = json.loads(config["parameters"]["xpr_sys_path"]["string_value"])
        for p in reversed(paths):
            if p in sys.path:
                sys.path.remove(p)
            sys.path.insert(0, p)
        from xpr_deploy.serve.backend import XprTritonModel

        self.model = XprTritonModel(args, config)

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model.finalize()
'''


class RequestError(XprError):
    """One request is bad (message names the input); the rest of the batch is served."""


class ModelLoadError(XprError):
    """The python model cannot load (wrong numpy on the stub's path, a bundle other than the one written)."""


def _params(config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}


class XprTritonModel:
    def __init__(self, args: dict[str, Any], config: dict[str, Any]) -> None:
        import numpy as np

        if int(np.__version__.split(".")[0]) >= 2:
            raise ModelLoadError(
                f"numpy {np.__version__} on the stub's path ({np.__file__}): Triton's Python stub needs numpy 1.x "
                "first on sys.path (xpr_sys_path)"
            )
        from ..bundle import BundleView
        from ..runners import make_runner
        from ..runners.onnxrt import OrtSettings

        params = _params(config)
        self.name = str(args.get("model_name", config.get("name", "?")))
        root = Path(args["model_repository"]) / str(args["model_version"]) / "bundle"
        view = BundleView.open(root)  # BundleError (naming the file) -> the model does not load
        want = params.get("xpr_bundle_sha256")
        if want and view.digest != want:
            raise ModelLoadError(f"{root}: manifest_sha256 {view.digest[:12]}… is not the served bundle's {want[:12]}…")
        self.view = view
        self.io = view.io
        h, w = view.model_config().img_size
        self.hw = (int(h), int(w))
        self.max_batch = int(config.get("max_batch_size", 0))
        self.outputs = [str(o["name"]) for o in config.get("output", [])]
        self.out_dtype = {str(o["name"]): str(o["dtype"]) for o in view.outputs}
        backend = params.get("xpr_backend") or "onnx"
        threads = int(params["xpr_threads"]) if params.get("xpr_threads") else None
        providers = tuple(p for p in params.get("xpr_providers", "").split(",") if p)
        runner: Any = make_runner(
            str(root), backend, ort=OrtSettings(providers=providers, threads=threads), name=f"triton-{backend}"
        )
        runner.activate()
        self.runner = runner
        # the chunk the graph takes: its static batch, or up to max_batch for a dynamic batch axis
        self.static_batch = view.batch if not view.dynamic_batch else None
        self.chunk = self.static_batch or max(1, view.max_batch or self.max_batch or 1)
        self.describe = self.runner.describe()

    # ---- requests ----------------------------------------------------------------------------
    def _input(self, request: Any, name: str) -> Any:
        import numpy as np
        import triton_python_backend_utils as pb_utils

        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            raise RequestError(f"input {name!r} is missing")
        a = t.as_numpy()
        if a.dtype != np.float32:
            raise RequestError(f"input {name!r} has dtype {a.dtype}, expected float32")
        h, w = self.hw
        if a.ndim != 4 or tuple(a.shape[1:]) != (1, h, w) or a.shape[0] < 1:
            raise RequestError(f"input {name!r} has shape {list(a.shape)}, expected [n, 1, {h}, {w}]")
        if self.max_batch == 0 and a.shape[0] != self.view.batch:
            raise RequestError(f"input {name!r} has batch {a.shape[0]}, the model takes {self.view.batch}")
        if not np.isfinite(a).all():
            raise RequestError(f"input {name!r} has NaN or infinite pixels")
        return a

    def _run(self, cc: Any, mlo: Any) -> dict[str, Any]:
        """Outputs for n samples, run in chunks of what the graph takes (a static batch is padded)."""
        import numpy as np

        n = cc.shape[0]
        parts: dict[str, list[Any]] = {o: [] for o in self.outputs}
        for s in range(0, n, self.chunk):
            c, m = cc[s : s + self.chunk], mlo[s : s + self.chunk]
            k = c.shape[0]
            if self.static_batch and k < self.static_batch:
                pad = [(0, self.static_batch - k), (0, 0), (0, 0), (0, 0)]
                c, m = np.pad(c, pad, mode="edge"), np.pad(m, pad, mode="edge")
            out = self.runner.infer({self.io.cc: np.ascontiguousarray(c), self.io.mlo: np.ascontiguousarray(m)})
            for o in self.outputs:
                parts[o].append(np.array(out[o][:k], copy=True))
        return {o: np.concatenate(v, axis=0) for o, v in parts.items()}

    def execute(self, requests: list[Any]) -> list[Any]:
        import numpy as np
        import triton_python_backend_utils as pb_utils

        responses: list[Any] = [None] * len(requests)
        good: list[tuple[int, Any, Any]] = []
        for i, r in enumerate(requests):
            try:
                good.append((i, self._input(r, self.io.cc), self._input(r, self.io.mlo)))
            except RequestError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}"))
        if good:
            try:
                cc = np.concatenate([g[1] for g in good], axis=0)
                mlo = np.concatenate([g[2] for g in good], axis=0)
                out = self._run(cc, mlo)
            except Exception as exc:
                msg = f"{self.name}: inference failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
                for i, _, _ in good:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(msg))
                return responses
            start = 0
            for i, c, _ in good:
                n = c.shape[0]
                tensors = []
                for o in self.outputs:
                    a = out[o][start : start + n].astype(self.out_dtype.get(o, "float32"), copy=False)
                    tensors.append(pb_utils.Tensor(o, np.ascontiguousarray(a)))
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses

    def finalize(self) -> None:
        try:
            self.runner.deactivate()
        except Exception:
            pass
