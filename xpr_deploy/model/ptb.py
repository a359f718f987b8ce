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


def window_scores(x: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """Window importance [B, N]: mean over the window's tokens of each token's L2 norm, in FP32.

    x is the block input [B, H, W, C], tok the [N, T] token index of `window_token_index`. Why
    norms first: the norm over channels is taken once per token on the map and only the [B, H*W]
    norms (1/C of the activation) are gathered into windows, so no [B, N, T, C] copy of every
    window is made before TopK. Same values, same order, same FP32 mean as scoring gathered windows.
    """
    b = x.shape[0]
    norms = torch.linalg.vector_norm(x.float(), dim=-1).reshape(b, -1)  # [B, H*W]
    return norms.index_select(1, tok.reshape(-1)).reshape(b, *tok.shape).mean(dim=-1)


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


@functools.lru_cache(maxsize=64)
def window_mask_table(h: int, w: int, window: tuple[int, int], shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(table [M, T, T] float32, index [N] int64): timm's shifted-window mask of window i is table[index[i]].

    Why: timm keeps a dense [N, T, T] mask per shifted block (3072 x 49 x 49 floats in stage 1 at
    paper size, 86 MB of the FP32 graph), but a shifted grid has only a handful of distinct masks
    (interior, last row, last column, corner). Built the way timm's `get_attn_mask` builds it
    (region ids, -100 where two tokens of a window come from different regions); read-only.
    """
    wh, ww = window
    regions = np.zeros((h, w), dtype=np.int64)
    cnt = 0
    for rs in (slice(0, -wh), slice(-wh, -shift[0]), slice(-shift[0], None)):
        for cs in (slice(0, -ww), slice(-ww, -shift[1]), slice(-shift[1], None)):
            regions[rs, cs] = cnt
            cnt += 1
    win = regions.reshape(h // wh, wh, w // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    patterns, pattern_of = np.unique(win, axis=0, return_inverse=True)  # few distinct region layouts
    masks = np.where(patterns[:, None, :] - patterns[:, :, None] != 0, -100.0, 0.0).astype(np.float32)
    table, mask_of = np.unique(masks, axis=0, return_inverse=True)
    index = np.ascontiguousarray(mask_of.reshape(-1)[pattern_of.reshape(-1)], dtype=np.int64)
    table = np.ascontiguousarray(table)
    table.flags.writeable = False
    index.flags.writeable = False
    return table, index


_DEVICE_CONST: dict[tuple[object, ...], torch.Tensor] = {}


def _const_tensor(key: tuple[object, ...], arr: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A geometry constant as a tensor on `device`.

    On accelerators it is cached per device: a host-to-device copy in every block would stall the
    stream and break CUDA-graph capture. While tracing/exporting it is created fresh, so the
    graph gets it as a constant.
    """
    if device.type == "cpu" or is_exporting() or torch.compiler.is_compiling():
        return torch.tensor(arr, device=device, dtype=dtype)
    full = (*key, str(device), dtype)
    t = _DEVICE_CONST.get(full)
    if t is None:
        t = _DEVICE_CONST[full] = torch.tensor(arr, device=device, dtype=dtype)
    return t


def token_index_tensor(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """`window_token_index` as an int64 tensor on `device`."""
    arr = window_token_index(h, w, window, shift)
    return _const_tensor(("tok", h, w, window, shift), arr, device, torch.int64)


def mask_table_tensors(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """`window_mask_table` as tensors on `device`: the table in `dtype` (0 and -100 are exact in FP16)."""
    table, index = window_mask_table(h, w, window, shift)
    key = ("mask", h, w, window, shift)
    return _const_tensor(key, table, device, dtype), _const_tensor(key, index, device, torch.int64)


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
        # roll + partition is one fixed permutation of the tokens, so the kept windows are gathered
        # straight from the block input and scattered straight back into it (ONNX Runtime emits roll
        # as Slice+Concat pairs and partition/reverse as 6-D Transposes). The windows are scored from
        # per-token norms and only the K kept windows are ever copied; their masks come from a
        # small table. Pruned tokens keep their input bits; the math is bit for bit the same.
        b, h, w, c = x.shape
        wh, ww = self.window_size
        if h % wh or w % ww:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {wh}x{ww}")
        t = wh * ww
        shift = cast(tuple[int, int], tuple(self.shift_size))
        tok = token_index_tensor(h, w, self.window_size, shift, x.device)  # [N, T]
        idx = select_windows(window_scores(x, tok), k)  # [B, K]
        if self.record_selection:
            self.last_selection = idx
        # the kept windows' tokens as rows of the flattened [B*H*W, C] input: Gather / ScatterND
        rows = tok.index_select(0, idx.reshape(-1))  # [B*K, T]
        if b > 1:
            rows = (rows.view(b, k, t) + (torch.arange(b, device=x.device) * (h * w)).view(b, 1, 1)).view(b * k, t)
        rows = rows.reshape(-1)
        x_flat = x.reshape(b * h * w, c)
        kept = x_flat.index_select(0, rows).reshape(b * k, t, c)  # = partition(roll(x))[kept]

        mask = None
        dense_mask = cast(torch.Tensor | None, self.attn_mask)
        if dense_mask is not None:  # timm's decision: shifted blocks only (the dense buffer itself is unused)
            table, mask_index = mask_table_tensors(h, w, self.window_size, shift, x.device, dense_mask.dtype)
            mask = table.index_select(0, mask_index.index_select(0, idx.reshape(-1)))  # [B*K, T, T]
        kept = kept + self.drop_path1(self.attn(self.norm1(kept), mask=mask))
        kept = kept + self.drop_path2(self.mlp(self.norm2(kept)))

        # kept tokens go back to where they came from; pruned tokens keep their input bits
        out = x_flat.index_put((rows,), kept.reshape(-1, c))
        return out.view(b, h, w, c)
