"""Pruned transformer block (PTB): timm's Swin block with static-K window pruning.

Only `forward` is overridden, so parameter names (and timm/Microsoft weights) are unchanged,
and with K = N the block runs timm's own code path, bit for bit.
"""

from __future__ import annotations

import functools
from typing import cast

import numpy as np
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from ..config import static_k
from .export_ops import is_exporting, use_export_gelu


def window_scores(windows: torch.Tensor) -> torch.Tensor:
    """Window importance [B, N]: mean over the window's tokens of each token's L2 norm, in FP32."""
    return torch.linalg.vector_norm(windows.float(), dim=-1).mean(dim=-1)


def select_windows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, K] of the K highest-scoring windows, sorted by score (TensorRT wants sorted).

    Equal scores are common (every all-background window of a mammogram scores the same), and
    torch.topk breaks such ties arbitrarily while ONNX TopK keeps the lower index. Eager therefore
    uses a stable descending sort, which is exactly ONNX TopK's order, so eager and ONNX Runtime
    keep the same windows; exported graphs get the single static-K TopK.
    """
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        return torch.topk(scores, k, dim=1, largest=True, sorted=True).indices
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@functools.lru_cache(maxsize=64)
def window_token_index(h: int, w: int, window: tuple[int, int], shift: tuple[int, int]) -> np.ndarray:
    """[N, wh*ww] int64: for each window of the shifted map, the flat (row*W + col) index of its tokens in x.

    Gathering x.reshape(H*W, C) with it equals window_partition(roll(x, -shift)); scattering with
    it equals window_reverse followed by roll(+shift). Read-only (shared by the cache).
    """
    wh, ww = window
    rows = (np.arange(h) + shift[0]) % h
    cols = (np.arange(w) + shift[1]) % w
    flat = rows[:, None] * w + cols[None, :]
    idx = flat.reshape(h // wh, wh, w // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    idx.flags.writeable = False
    return idx


_DEVICE_INDEX: dict[tuple[int, int, tuple[int, int], tuple[int, int], str], torch.Tensor] = {}


def token_index_tensor(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """`window_token_index` as a tensor on `device`.

    On accelerators it is cached per device: a host-to-device copy in every block would stall the
    stream and break CUDA-graph capture. While tracing/exporting it is created fresh, so the
    graph gets it as a constant.
    """
    arr = window_token_index(h, w, window, shift)
    if device.type == "cpu" or is_exporting() or torch.compiler.is_compiling():
        return torch.tensor(arr, device=device)
    key = (h, w, window, shift, str(device))
    t = _DEVICE_INDEX.get(key)
    if t is None:
        t = _DEVICE_INDEX[key] = torch.tensor(arr, device=device)
    return t


class PrunedSwinBlock(SwinTransformerBlock):
    """Swin block that runs attention + MLP on the top-K windows only; the rest pass through.

    `keep` is set by the owning model (per stage, annealed during warm-up); K is derived from it
    and the block's fixed input resolution, so it is a Python int in every traced graph.
    """

    keep: float = 1.0
    #: kept window indices [B, K] of the last forward (shifted partition numbering), or None
    last_selection: torch.Tensor | None = None
    record_selection: bool = False

    @property
    def num_windows(self) -> int:
        h, w = cast(tuple[int, int], self.input_resolution)
        return (h // self.window_size[0]) * (w // self.window_size[1])

    @property
    def k(self) -> int:
        return static_k(self.keep, self.num_windows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_exporting():  # the MLP's GELU in the form ONNX Runtime fuses (eager is unchanged)
            use_export_gelu(self.mlp)
        n, k = self.num_windows, self.k
        if k >= n:
            self.last_selection = None
            return super().forward(x)
        return self._forward_pruned(x, k)

    def _forward_pruned(self, x: torch.Tensor, k: int) -> torch.Tensor:
        # Why token indices instead of roll -> window_partition -> ... -> window_reverse -> roll:
        # roll + partition is one fixed permutation of the tokens, so the windows are gathered
        # straight from the block input and the kept windows are scattered straight back into it.
        # That drops four full-size copies per block (ONNX Runtime even emits roll as Slice+Concat
        # pairs) and leaves pruned tokens untouched; the math is bit for bit the same.
        b, h, w, c = x.shape
        wh, ww = self.window_size
        if h % wh or w % ww:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {wh}x{ww}")
        n, t = (h // wh) * (w // ww), wh * ww
        tok = token_index_tensor(h, w, self.window_size, self.shift_size, x.device)
        if b > 1:  # [N, 49] -> [B, N, 49] into the flattened [B*H*W, C] input
            tok = tok.unsqueeze(0) + (torch.arange(b, device=x.device) * (h * w)).view(b, 1, 1)
        tok = tok.reshape(b * n, t)
        x_flat = x.reshape(b * h * w, c)
        windows = x_flat.index_select(0, tok.reshape(-1)).reshape(b * n, t, c)  # = partition(roll(x))

        scores = window_scores(windows.reshape(b, n, t, c))
        idx = select_windows(scores, k)  # [B, K]
        if self.record_selection:
            self.last_selection = idx
        # indices over the window axis of the flattened [B*N, 49, C] tensor: Gather / ScatterND
        flat = (idx + torch.arange(b, device=x.device).unsqueeze(1) * n).reshape(-1)

        kept = windows.index_select(0, flat)  # [B*K, 49, C]
        attn_mask = cast(torch.Tensor | None, self.attn_mask)
        mask = attn_mask.index_select(0, idx.reshape(-1)) if attn_mask is not None else None
        kept = kept + self.drop_path1(self.attn(self.norm1(kept), mask=mask))
        kept = kept + self.drop_path2(self.mlp(self.norm2(kept)))

        # kept tokens go back to where they came from; pruned tokens keep their input bits
        out = x_flat.index_put((tok.index_select(0, flat).reshape(-1),), kept.reshape(-1, c))
        return out.view(b, h, w, c)
