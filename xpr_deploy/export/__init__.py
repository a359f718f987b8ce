"""Export: static-K ONNX (FP32 / strongly typed FP16 / custom-plugin), lint, manifest, bundle.

Public API: `export_bundle(model, meta, out, ExportOptions(...)) -> Bundle`, `export_onnx`,
`lint_model`. Reading a bundle: `xpr_deploy.bundle.BundleView`. Layout: export/README.md.
"""

from __future__ import annotations

from .bundle import Bundle, ExportOptions, export_bundle
from .lint import LintReport, lint_model
from .onnx import export_onnx

__all__ = [
    "Bundle",
    "ExportOptions",
    "LintReport",
    "export_bundle",
    "export_onnx",
    "lint_model",
]
