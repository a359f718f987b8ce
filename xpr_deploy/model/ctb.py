"""Cross-attention transformer block (CTB): one view's tokens query the other view's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from .export_ops import ExportGELU, is_exporting

#: most bytes one exported attention score tensor [heads, queries, keys] (FP32) may take per sample
EXPORT_SCORE_BYTES = 160 * 2**20


def _export_query_chunk(heads: int, nq: int, nk: int) -> int:
    """Query rows per attention chunk in an exported graph; nq (no chunking) in eager.

    Why: eager SDPA on CPU/GPU is a fused kernel that never holds the scores, but the ONNX graph
    spells attention as MatMul -> Softmax -> MatMul, and at 2352 tokens x 24 heads each of those
    FP32 tensors is 507 MiB per sample (x2 directions). Query chunks bound that at EXPORT_SCORE_BYTES.
    The bound is per sample, never from the batch size: a chunk count computed from a dynamic batch
    would make the exporter specialise the batch to its example (a `--max-batch` graph fixed at 2).
    """
    if not is_exporting():
        return nq
    per_row = heads * nk * 4
    n = max(1, -(-nq * per_row // EXPORT_SCORE_BYTES))
    while nq % n:  # equal chunks: one repeated pattern in the graph
        n += 1
    return nq // n


class CrossAttention(nn.Module):
    """Global multi-head attention with queries from one sequence and keys/values from another."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, nq, c = query.shape
        nk = context.shape[1]
        h = self.num_heads
        q = self.q(query).reshape(b, nq, h, c // h).transpose(1, 2)
        kv = self.kv(context).reshape(b, nk, 2, h, c // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        chunk = _export_query_chunk(h, nq, nk)
        if chunk >= nq:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # each query row's softmax is independent: same math, 1/n of the score memory
            out = torch.cat(
                [F.scaled_dot_product_attention(q[:, :, i : i + chunk], k, v) for i in range(0, nq, chunk)], 2
            )
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class CrossViewBlock(nn.Module):
    """Pre-norm cross-attention + MLP, residual around both (separate norms for query and context)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=ExportGELU)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = query + self.attn(self.norm_q(query), self.norm_kv(context))
        return x + self.mlp(self.norm2(x))


class CrossViewFusion(nn.Module):
    """Both directions (CC <- MLO and MLO <- CC), each reading the pre-fusion features of both views."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cc_from_mlo = CrossViewBlock(dim, num_heads, mlp_ratio)
        self.mlo_from_cc = CrossViewBlock(dim, num_heads, mlp_ratio)

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cc, mlo: NHWC feature maps of the same shape; returns the fused maps, same shapes."""
        b, h, w, c = cc.shape
        cc_seq, mlo_seq = cc.reshape(b, h * w, c), mlo.reshape(b, h * w, c)
        cc_out = self.cc_from_mlo(cc_seq, mlo_seq)
        mlo_out = self.mlo_from_cc(mlo_seq, cc_seq)
        return cc_out.reshape(b, h, w, c), mlo_out.reshape(b, h, w, c)
