"""Export-friendly spellings of ops whose default ONNX decomposition runs slowly in ONNX Runtime.

Eager math is untouched: the alternative form is used only while a graph is being exported.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def is_exporting() -> bool:
    """True inside torch.onnx.export / torch.export tracing (dynamo or TorchScript exporter)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


class ExportGELU(nn.GELU):
    """nn.GELU whose exported graph is the one ONNX Runtime fuses into a single Gelu kernel.

    Why: opset 18 has no Gelu op; the exporter writes x * (0.5 * (erf(x / sqrt2) + 1)), which ONNX
    Runtime's GeluFusion does not match, so every MLP hidden tensor (115 MB per stage-1 block at
    2688x896) goes through five separate element-wise passes. (x * 0.5) * (erf(x / sqrt2) + 1) is
    the same function in the order the fusion expects; TensorRT fuses either form. Same parameters
    (none), same eager result.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate != "none" or not is_exporting():
            return super().forward(x)
        return (x * 0.5) * (torch.erf(x / math.sqrt(2.0)) + 1.0)


def use_export_gelu(module: nn.Module) -> int:
    """Turn every exact nn.GELU inside `module` into ExportGELU in place; returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is nn.GELU and m.approximate == "none":
            m.__class__ = ExportGELU
            n += 1
    return n
