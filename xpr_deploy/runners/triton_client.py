"""A Triton Inference Server as a runner: the model `xpr triton` wrote for a bundle, served elsewhere.

Several `xpr listen` nodes (or `xpr predict` runs) then share one GPU server while each node keeps the
bundle itself for what happens around inference (selection, preprocessing, heatmaps, DICOM writers).
`activate()` checks that the server is live, picks the model (`<bundle name>_onnx`, `_trt` or
`_python`, the first one ready; or the one named) and that its `xpr_bundle_sha256` parameter is this
bundle's digest, so a node never reports another model's answer under its bundle's name. `infer` asks
for every output the served model has that the bundle names (probabilities, logits, kept windows),
so the outputs are read exactly as the ONNX runner's are (`runners.outputs`).

URL: `http://HOST:PORT` (default scheme) or `grpc://HOST:PORT`. Every failure (down, timed out, an
answer that is not what the bundle promises) is one `TritonPeerError` line naming the URL (exit 4).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import BlockKey, BundleView
from ..errors import ConfigError, PeerError, XprError
from .base import XprRunner
from .registry import BackendSpec, RunnerRequest, register_backend

if TYPE_CHECKING:
    from .factory import ModelSource

#: numpy dtype -> Triton datatype name
_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}


class TritonPeerError(PeerError):
    """The Triton server is down, refuses, or serves something other than this bundle."""


def parse_url(url: str) -> tuple[str, str]:
    """`http://host:port` / `grpc://host:port` / `host:port` -> (protocol, "host:port")."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url
    rest = rest.rstrip("/")
    if scheme not in ("http", "grpc") or not rest or "/" in rest or any(c.isspace() for c in rest):
        raise TritonPeerError(f"--triton {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    return scheme, rest


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class TritonRunner(XprRunner):
    """Inference on a Triton server serving `view`'s model (`model`: its name there; None: found)."""

    backend = "triton"

    def __init__(
        self, view: BundleView, url: str, model: str | None = None, *, timeout: float = 60.0, name: str | None = None
    ) -> None:
        super().__init__(name or "triton")
        self.view = view
        self.url = url
        self.protocol, self.address = parse_url(url)
        self.model = model
        self.timeout = timeout
        self.io = view.io
        self._bundle_selection: dict[str, BlockKey] = dict(view.selection_outputs())
        self._client: Any = None
        self._mod: Any = None
        self._outputs: list[str] = []
        self._version = ""

    # ---- polygraphy's contract ------------------------------------------------------------------
    def activate_impl(self) -> None:
        try:
            if self.protocol == "http":
                import tritonclient.http as mod

                client = mod.InferenceServerClient(
                    self.address, connection_timeout=self.timeout, network_timeout=self.timeout
                )
            else:
                import tritonclient.grpc as mod  # type: ignore[no-redef]

                client = mod.InferenceServerClient(self.address)
        except ImportError as exc:
            raise TritonPeerError(f"--triton needs tritonclient[{self.protocol}] ({exc})") from None
        except Exception as exc:
            raise TritonPeerError(f"{self.url}: {_one_line(exc)}") from None
        self._client, self._mod = client, mod
        self.model = self._pick_model()
        grpc = self.protocol == "grpc"
        config = self._call("model config", client.get_model_config, self.model, **({"as_json": True} if grpc else {}))
        config = config.get("config", config) if grpc else config
        served = {str(o["name"]) for o in config.get("output", [])}
        digest = (config.get("parameters") or {}).get("xpr_bundle_sha256", {}).get("string_value")
        if digest != self.view.digest:
            raise TritonPeerError(
                f"{self.url}: model {self.model!r} serves bundle {str(digest)[:12]}…, not {self.view.root} "
                f"({str(self.view.digest)[:12]}…): run `xpr triton` on this bundle"
            )
        io = self.io
        if io.prob not in served and io.logits not in served:
            raise TritonPeerError(f"{self.url}: model {self.model!r} has neither {io.prob!r} nor {io.logits!r}")
        self._outputs = [str(o["name"]) for o in self.view.outputs if str(o["name"]) in served]
        self.selection = {k: v for k, v in self._bundle_selection.items() if k in served}

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """One request; any failure is one line naming the server."""
        try:
            return fn(*args, **kw)
        except XprError:
            raise
        except Exception as exc:  # tritonclient's InferenceServerException, socket/HTTP/gRPC errors
            raise TritonPeerError(f"{self.url}: {what} failed: {_one_line(exc)}") from None

    def _pick_model(self) -> str:
        if not self._call("liveness check", self._client.is_server_live):
            raise TritonPeerError(f"{self.url}: the server is not live")
        if self.model is not None:
            if not self._call("readiness check", self._client.is_model_ready, self.model):
                raise TritonPeerError(f"{self.url}: model {self.model!r} is not loaded (ready)")
            return self.model
        base = self.view.name.replace(" ", "_")
        names = [f"{base}_{suffix}" for suffix in ("onnx", "trt", "python")]
        for name in names:
            if self._call("readiness check", self._client.is_model_ready, name):
                return name
        raise TritonPeerError(
            f"{self.url}: none of the models {', '.join(names)} is loaded (serve `xpr triton`'s repository "
            "for this bundle, or name the model)"
        )

    def get_input_metadata_impl(self) -> Any:
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for t in self.view.inputs:
            shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in t["shape"])
            meta.add(str(t["name"]), np.dtype(str(t["dtype"])), shape)
        return meta

    def infer_impl(self, feed_dict: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        mod, inputs = self._mod, []
        for name, a in feed_dict.items():
            arr = np.ascontiguousarray(a)
            i = mod.InferInput(name, list(arr.shape), _DTYPES.get(arr.dtype, "FP32"))
            i.set_data_from_numpy(arr if arr.dtype in _DTYPES else arr.astype(np.float32))
            inputs.append(i)
        wanted = [mod.InferRequestedOutput(o) for o in self._outputs]
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        t0 = time.perf_counter()
        what = f"inference on {self.model!r}"
        answer = self._call(what, self._client.infer, self.model, inputs, outputs=wanted, **kw)
        self.inference_time = time.perf_counter() - t0
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for o in self._outputs:
            value = answer.as_numpy(o)
            if value is None:
                raise TritonPeerError(f"{self.url}: the answer of {self.model!r} has no output {o!r}")
            out[o] = value
        return out

    def deactivate_impl(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a connection to a server that went away: nothing to free
                pass

    def describe(self) -> dict[str, Any]:
        return {"backend": "triton", "url": self.url, "protocol": self.protocol, "model": self.model}


def build_triton_runner(source: ModelSource, req: RunnerRequest) -> TritonRunner:
    assert source.bundle is not None  # make_runner checked: needs="bundle"
    if not req.triton:
        raise ConfigError("the triton backend needs the server's URL (--triton http://HOST:PORT)")
    return TritonRunner(source.bundle, req.triton, req.triton_model, name=req.name)


register_backend(
    BackendSpec(
        "triton", "the bundle's model on a Triton server (`xpr triton`'s repository; --triton URL)", needs="bundle",
        artefact="a Triton server serving the bundle's repository", build=build_triton_runner,
        devices=("cpu", "cuda"), batch="bundle", selection_outputs=True,
    )
)  # fmt: skip
