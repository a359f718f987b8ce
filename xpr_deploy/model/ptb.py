"""Pruned transformer block (PTB): timm's Swin block with static-K window pruning.

Only `forward` is overridden, so parameter names (and timm/Microsoft weights) are unchanged,
and with K = N the block runs timm's own code path, bit for bit.
"""

from __future__ import annotations

from typing import cast

import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

from ..config import static_k


def window_scores(windows: torch.Tensor) -> torch.Tensor:
    """Window importance [B, N]: mean over the window's tokens of each token's L2 norm, in FP32."""
    return torch.linalg.vector_norm(windows.float(), dim=-1).mean(dim=-1)


def select_windows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, K] of the K highest-scoring windows, sorted by score (TensorRT wants sorted)."""
    return torch.topk(scores, k, dim=1, largest=True, sorted=True).indices


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
        n, k = self.num_windows, self.k
        if k >= n:
            self.last_selection = None
            return super().forward(x)
        return self._forward_pruned(x, k)

    def _forward_pruned(self, x: torch.Tensor, k: int) -> torch.Tensor:
        b, h, w, c = x.shape
        wh, ww = self.window_size
        if h % wh or w % ww:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {wh}x{ww}")
        sh, sw = self.shift_size
        shifted = any(self.shift_size)
        xs = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if shifted else x

        n = (h // wh) * (w // ww)
        windows = window_partition(xs, self.window_size).reshape(b * n, wh * ww, c)

        scores = window_scores(windows.reshape(b, n, wh * ww, c))
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

        windows = windows.index_put((flat,), kept)  # pruned windows keep their input bits
        out = window_reverse(windows.view(-1, wh, ww, c), self.window_size, h, w)
        return torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if shifted else out
