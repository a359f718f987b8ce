"""Strongly typed FP16: precision lives in the graph (TensorRT 11 / TensorRT-RTX have no FP16 flag).

The FP16 graph is the export of an FP16 *eager* model with FP32 islands, so the eager FP16
model and the ONNX graph compute the same thing: weights, matmuls, convolutions, attention and
MLPs in FP16; every LayerNorm, the window scores + TopK (already FP32 in `ptb.window_scores`),
the final pooling and the fusion head in FP32; float32 inputs and outputs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.xpruning import XPruning

#: what the manifest records as the FP32 islands of an FP16 graph
FP32_ISLANDS: tuple[str, ...] = (
    "LayerNormalization (every LayerNorm: Cast to FP32, normalise with FP32 scale/bias, Cast back)",
    "window scores (L2 norm over channels, mean over the window) and TopK",
    "final LayerNorm + global average pool + fusion head (LN, Linear, GELU, Linear) + softmax",
)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in FP32 whatever the input dtype; returns `out_dtype` (default: input's)."""

    out_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        y = F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return y.to(self.out_dtype or x.dtype)


def to_fp16_islands(model: XPruning) -> XPruning:
    """A copy of `model` in FP16 with FP32 islands (the original is left untouched)."""
    m = copy.deepcopy(model).eval().half()
    for mod in m.modules():
        if isinstance(mod, nn.LayerNorm):
            mod.float()
            mod.__class__ = FP32LayerNorm
    final_norms: list[nn.Module] = [m.cc.norm, m.mlo.norm, m.head.norm]
    m.head.float()
    for norm in final_norms:
        norm.out_dtype = torch.float32  # type: ignore[assignment]  # pool + head in FP32
    return m


class HalfInput(nn.Module):
    """float32 views in, FP16 into the network: the Cast is the first node of the graph."""

    def __init__(self, model: XPruning) -> None:
        super().__init__()
        self.model = model

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor, return_selection: bool = False):  # type: ignore[no-untyped-def]
        return self.model(cc.half(), mlo.half(), return_selection=return_selection)
