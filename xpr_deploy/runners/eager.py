"""PyTorch eager runner: the parity reference, and the backend that runs a checkpoint directly.

polygraphy's own `PytRunner` hard-codes `.cuda()` and knows nothing of kept windows, so this one is
xpr's: CPU or CUDA; FP32, the export's FP16 islands (`precision="fp16"`), or autocast FP16/BF16;
plain calls, a captured CUDA graph, or `torch.compile`. With `keep` set, K is switched to that keep
ratio before every call (benchmarks run several keep ratios over one set of weights).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import BlockKey
from ..errors import BackendUnavailable, ConfigError
from .base import XprRunner
from .registry import FP16_GATE, BackendSpec, ParityRow, RunnerRequest, register_backend

if TYPE_CHECKING:
    from .factory import ModelSource

MODES = ("eager", "cuda-graph", "compile")
AUTOCAST = (None, "fp16", "bf16")


def selection_name(key: BlockKey) -> str:
    view, stage, block = key
    return f"sel_{view}_s{stage}_b{block}"


def score_name(key: BlockKey) -> str:
    view, stage, block = key
    return f"score_{view}_s{stage}_b{block}"


def block_scores(blk: Any, x: Any) -> Any:
    """The scores a pruned block ranks its windows by: the same token index and FP32 score as its forward."""
    from ..model.ptb import token_index_tensor, window_scores

    _, h, w, _ = x.shape
    tok = token_index_tensor(h, w, tuple(blk.window_size), tuple(blk.shift_size), x.device)
    return window_scores(x, tok)


class EagerRunner(XprRunner):
    """Outputs: logits [B, 2], prob [B], and with `selection` the kept windows `sel_<view>_s<S>_b<B>` of
    every pruned block; with `scores` also the FP32 window scores `score_...` [B, N] those were ranked by."""

    backend = "eager"

    def __init__(
        self,
        model: Any | Callable[[], Any],
        *,
        name: str = "eager",
        device: str = "cpu",
        precision: str = "fp32",
        autocast: str | None = None,
        mode: str = "eager",
        keep: float | None = None,
        selection: bool = False,
        scores: bool = False,
        threads: int | None = None,
        source: str = "",
    ) -> None:
        super().__init__(name)
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"eager precision {precision!r}: fp32 or fp16 (the export's FP16 islands)")
        if autocast not in AUTOCAST:
            raise ConfigError(f"autocast {autocast!r}: choose fp16 or bf16")
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r}: choose eager, compile or cuda-graph")
        if mode == "cuda-graph" and not device.startswith("cuda"):
            raise ConfigError("cuda-graph mode needs --device cuda")
        if mode != "eager" and (selection or scores):
            raise ConfigError(f"{mode} mode returns logits and prob only (no kept windows)")
        self._model = model
        self.device, self.precision, self.autocast, self.mode = device, precision, autocast, mode
        self.keep, self.want_selection, self.want_scores, self.threads = keep, selection, scores, threads
        self.source = source
        self.model: Any = None
        self._call: Callable[[Any, Any], Any] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("CUDA requested but torch sees no GPU")
        model = self._model() if callable(self._model) and not isinstance(self._model, torch.nn.Module) else self._model
        model = model.eval().to(dev)
        if self.precision == "fp16":
            from ..export.fp16 import to_fp16_islands

            model = to_fp16_islands(model)
        self.model, self._dev = model, dev
        self._own_keep = list(self._xpruning.keep_ratios)
        self._dtype = model.cc.patch_embed.proj.weight.dtype if hasattr(model, "cc") else torch.float32
        cfg = self._xpruning.cfg
        self.input_shape = (self.batch or 1, cfg.in_chans, *cfg.img_size)
        self.selection = {
            selection_name(k): k for k, blk in self._xpruning.blocks() if blk.k < blk.num_windows
        } if self.want_selection else {}  # fmt: skip
        self._call = self._make_call()

    def deactivate_impl(self) -> None:
        if self.keep is not None and self.model is not None:
            self._xpruning.set_keep(self._own_keep)
        self.model, self._call = None, None

    @property
    def _xpruning(self) -> Any:
        return getattr(self.model, "model", self.model)  # the FP16-islands wrapper keeps the model inside

    def get_input_metadata_impl(self) -> Any:
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for name in self.io.inputs:
            meta.add(name, np.float32, self.input_shape)
        return meta

    # ---- calls -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        import torch

        if self.autocast is None:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.autocast == "fp16" else torch.bfloat16
        # the weight-cast cache must be off while a CUDA graph is captured
        return torch.autocast(self._dev.type, dtype=dtype, cache_enabled=self.mode != "cuda-graph")

    def _set_keep(self) -> None:
        if self.keep is not None:
            self._xpruning.set_keep(float(self.keep))

    def _make_call(self) -> Callable[[Any, Any], Any]:
        import torch

        model = self.model
        if self.mode == "compile":
            self._set_keep()
            compiled = torch.compile(model, dynamic=False)
            return lambda cc, mlo: compiled(cc, mlo)
        if self.mode == "cuda-graph":
            self._set_keep()
            self._static = [torch.zeros(self.input_shape, device=self._dev, dtype=self._dtype) for _ in range(2)]
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode(), self._autocast():
                for _ in range(2):
                    model(*self._static)  # warm the allocator and kernels before capture
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode(), self._autocast():
                out = model(*self._static)

            def replay(cc: Any, mlo: Any) -> Any:
                self._static[0].copy_(cc)
                self._static[1].copy_(mlo)
                graph.replay()
                return out

            return replay
        return lambda cc, mlo: model(cc, mlo, return_selection=True) if self.want_selection else model(cc, mlo)

    def run_tensors(self, cc: Any, mlo: Any) -> Any:
        """One call on device tensors, synchronised (benchmarks time this without host copies)."""
        import torch

        assert self._call is not None
        self._set_keep()
        with torch.inference_mode(), self._autocast():
            out = self._call(cc, mlo)
        if self._dev.type == "cuda":
            torch.cuda.synchronize(self._dev)
        return out

    def to_device(self, arr: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self._dev, self._dtype)

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        from ..model.xpruning import malignancy_probability

        cc, mlo = (self.to_device(feed_dict[n]) for n in self.io.inputs)
        captured: dict[BlockKey, Any] = {}
        hooks = self._score_hooks(captured) if self.want_scores else []
        start = time.perf_counter()
        try:
            res = self.run_tensors(cc, mlo)
        finally:
            for h in hooks:
                h.remove()
        self.inference_time = time.perf_counter() - start
        logits, sel = res if self.want_selection else (res, {})
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        out[self.io.logits] = logits.float().cpu().numpy()
        out[self.io.prob] = malignancy_probability(logits).cpu().numpy()
        for name, key in self.selection.items():
            out[name] = sel[key].cpu().numpy()
        for key, sc in captured.items():
            out[score_name(key)] = sc.double().cpu().numpy()
        return out

    def _score_hooks(self, captured: dict[BlockKey, Any]) -> list[Any]:
        """Record each pruned block's window scores (same roll + partition + FP32 score as its forward)."""
        hooks = []
        for key, blk in self._xpruning.blocks():
            if blk.k < blk.num_windows:

                def hook(mod: Any, args: tuple[Any, ...], key: BlockKey = key) -> None:
                    captured[key] = block_scores(mod, args[0]).detach()

                hooks.append(blk.register_forward_pre_hook(hook))
        return hooks

    def describe(self) -> dict[str, Any]:
        prec = self.precision if self.autocast is None else f"autocast-{self.autocast}"
        return {"backend": "eager", "device": self.device, "precision": prec, "mode": self.mode, "source": self.source}


def build_eager(source: ModelSource, req: RunnerRequest) -> EagerRunner:
    """PyTorch on the source's checkpoint (or a random-weight bundle's recorded seed), as predict runs it."""
    from .factory import source_model

    loader = req.model if req.model is not None else (lambda: source_model(source))
    r = EagerRunner(
        loader, name=req.name or f"eager-{req.precision or 'fp32'}", device=req.device,
        precision=req.precision or "fp32", selection=req.selection or req.all_selections, scores=req.scores,
        source=str(source.checkpoint or source.path),
    )  # fmt: skip
    r.io = source.io
    return r


def _eager_fp16_candidate(source: ModelSource, model: Any, row: ParityRow) -> tuple[Any, str]:
    return build_eager(source, RunnerRequest(precision="fp16", all_selections=True, model=model, name=row.name)), ""


def _doctor_line() -> tuple[bool, str]:
    try:
        import torch
    except Exception as exc:  # ImportError, or a shared library missing under it
        return False, f"torch: {type(exc).__name__}"
    return True, "cpu" + (", cuda" if torch.cuda.is_available() else "")


register_backend(
    BackendSpec(
        "eager", "PyTorch on the checkpoint (a bundle's source checkpoint or seed)", needs="checkpoint",
        artefact="checkpoint", build=build_eager, devices=("cpu", "cuda"), batch="any", selection_outputs=True,
        parity=(ParityRow("eager-fp16", FP16_GATE, "fp16", _eager_fp16_candidate),), doctor=_doctor_line,
    )
)  # fmt: skip
