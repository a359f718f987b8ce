"""The manifest's JSON Schema: one source, written to `export/manifest.schema.json` (a test keeps
the two identical). Checking a manifest against it is the verified reader's job (`bundle.reader`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..train.meta_schema import MODEL_CONFIG_SCHEMA

FORMAT = "xpr-bundle"
#: 2: the manifest seals itself (`manifest_sha256`), names its I/O roles (`io`), and every path is
#: a plain relative path inside the bundle. Bundles of format 1 are refused with "re-export".
FORMAT_VERSION = 2
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "export" / "manifest.schema.json"

#: the TensorRT flavours an engine is built with (`xpr export --trt-flavour`, a manifest's `engines[].backend`)
TRT_FLAVOURS = ("tensorrt-rtx", "tensorrt")
#: an engine's hardware compatibility: this GPU's compute capability only, or every one from Ampere on
HW_COMPAT = ("same", "ampere+")

_TENSOR = {
    "type": "object",
    "required": ["name", "dtype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "dtype": {"enum": ["float32", "float16", "int64", "int32"]},
        # -1: the dynamic batch axis of a --max-batch export (first dimension only; the reader checks)
        "shape": {
            "type": "array",
            "items": {"type": "integer", "anyOf": [{"minimum": 1}, {"const": -1}]},
            "minItems": 1,
        },
    },
}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
#: a path inside the bundle: relative, "/"-separated, no empty, "." or ".." part, no backslash or
#: drive (the reader checks it again, and that it resolves inside the folder: symlinks count)
_REL = {"type": "string", "pattern": "^(?!/)(?!.*(^|/)\\.{1,2}(/|$))(?!.*//)[^\\\\:\\x00]+$"}
_ENGINE = {
    "type": "object",
    "required": [
        "backend", "version", "compute_capability", "compute_capabilities", "hw_compat", "flags",
        "strongly_typed", "timing_cache_sha256", "path", "sha256", "onnx", "plugins_required",
    ],
    "properties": {
        "backend": {"enum": list(TRT_FLAVOURS)},
        "version": {"type": "string"},
        "compute_capability": {"type": "string", "pattern": "^[0-9]+\\.[0-9]$"},
        "compute_capabilities": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "hw_compat": {"enum": list(HW_COMPAT)},
        "flags": {"type": "array", "items": {"type": "string"}},
        "strongly_typed": {"const": True},
        "timing_cache_sha256": {"anyOf": [_SHA, {"type": "null"}]},
        "timing_cache": {"anyOf": [_REL, {"type": "null"}]},
        "path": {**_REL, "description": "relative to the bundle folder"},
        "sha256": _SHA,
        "size_bytes": {"type": "integer"},
        "onnx": {**_REL, "description": "the graph the engine was built from"},
        "build_seconds": {"type": "number"},
        "parse_seconds": {"type": "number"},
        "plugins": {"type": "object", "additionalProperties": {"enum": ["plugin", "local-function"]}},
        "plugins_required": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "profile": {
            "type": ["object", "null"],
            "description": "optimisation profile of a dynamic-batch engine (batch sizes)",
            "required": ["min", "opt", "max"],
            "properties": {k: {"type": "integer", "minimum": 1} for k in ("min", "opt", "max")},
        },
    },
}  # fmt: skip

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "xpr-bundle-manifest-1",
    "title": "xpr export bundle manifest",
    "type": "object",
    "required": [
        "format", "format_version", "name", "toolkit_version", "created_utc", "model", "graphs", "precision",
        "opset", "ir_version", "batch", "inputs", "outputs", "model_config", "preprocessing", "label_rule",
        "class_names", "threshold", "blocks", "source_checkpoint", "engines", "files", "io", "manifest_sha256",
    ],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"const": FORMAT_VERSION},
        "name": {"type": "string"},
        "toolkit_version": {"type": "string"},
        "git_commit": {"type": ["string", "null"]},
        "created_utc": {"type": "string"},
        "manifest_sha256": {
            **_SHA,
            "description": "SHA-256 of this file's bytes with these 64 hex digits replaced by 64 '0' characters",
        },
        "model": {**_REL, "description": "the graph to serve (FP16 when exported with --fp16)"},
        "graphs": {
            "type": "object",
            "description": "precision -> file: fp32 and/or fp16; int8 (QDQ, ONNX Runtime on CPU) with --int8",
            "properties": {"fp32": _REL, "fp16": _REL, "int8": _REL},
            "additionalProperties": False,
            "minProperties": 1,
        },
        "io": {
            "type": "object",
            "description": "role -> tensor name: every reader (Python, C++, Triton) takes the names from here",
            "required": ["cc", "mlo", "logits", "prob"],
            "properties": {r: {"type": "string", "minLength": 1} for r in ("cc", "mlo", "logits", "prob")},
            "additionalProperties": False,
        },
        "precision": {"enum": ["fp32", "fp16"]},
        "fp32_islands": {"type": "array", "items": {"type": "string"}},
        "opset": {"type": "integer", "minimum": 17},
        "ir_version": {"type": "integer", "maximum": 10},
        "batch": {"type": "integer", "minimum": 1, "description": "static batch; with max_batch the profile's opt"},
        "max_batch": {
            "type": ["integer", "null"], "minimum": 1,
            "description": "dynamic batch axis (-1 first in every shape): 1..max_batch samples; absent/null: static",
        },
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 2, "maxItems": 2},
        "outputs": {"type": "array", "items": _TENSOR, "minItems": 2},
        "model_config": MODEL_CONFIG_SCHEMA,
        "preprocessing": {"type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}},
        "label_rule": {"type": ["string", "null"]},
        "class_names": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "threshold_method": {"type": ["string", "null"]},
        "operating_points": {
            "type": "object",
            "description": "target name (youden, sens=0.90, spec=0.90, ...) -> threshold chosen on the validation "
            "split and the validation sensitivity / specificity at it; predicted malignant when prob >= threshold",
            "propertyNames": {"pattern": "^(youden|(sens|spec)=[01](\\.[0-9]+)?)$"},
            "additionalProperties": {
                "type": "object",
                "required": ["threshold"],
                "properties": {
                    "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    "sensitivity": {"type": ["number", "null"]},
                    "specificity": {"type": ["number", "null"]},
                    "n": {"type": "integer", "minimum": 0},
                },
            },
        },
        "operating_point": {
            "type": ["string", "null"],
            "description": "the operating point `threshold` is (the default); a key of operating_points",
        },
        "blocks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["view", "stage", "block", "window_grid", "windows", "k", "pruned"],
                "properties": {
                    "view": {"enum": ["cc", "mlo"]},
                    "stage": {"type": "integer", "minimum": 1, "maximum": 4},
                    "block": {"type": "integer", "minimum": 0},
                    "window_grid": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                    "windows": {"type": "integer", "minimum": 1},
                    "k": {"type": "integer", "minimum": 1, "maximum": 3840},
                    "shifted": {"type": "boolean"},
                    # cyclic shift in tokens (rows, cols): 0 along a dimension no larger than a window
                    "shift_size": {
                        "type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2,
                    },
                    "pruned": {"type": "boolean"},
                    "selection_output": {"type": ["string", "null"]},
                },
            },
        },
        "int8": {
            "type": ["object", "null"],
            "description": "how graphs.int8 was made (xpr export --int8): QDQ static quantization, calibration",
            "required": ["graph", "format", "quantized_ops", "calibration"],
            "properties": {
                "graph": _REL,
                "format": {"const": "QDQ"},
                "quantized_ops": {"type": "array", "items": {"type": "string"}},
                "calibration": {
                    "type": "object",
                    "required": ["method", "breasts", "seed", "sha256", "keys"],
                    "properties": {
                        "method": {"enum": ["percentile", "entropy", "minmax"]},
                        "breasts": {"type": "integer", "minimum": 1},
                        "seed": {"type": "integer"},
                        "sha256": _SHA,
                        "keys": {"type": "array", "items": {"type": "string"}},
                        "source": {"type": "string"},
                    },
                },
            },
        },
        "plugin": {
            "type": ["object", "null"],
            "properties": {
                "op_type": {"type": "string"},
                "domain": {"type": "string"},
                "plugin_version": {"type": "string"},
                "plugin_namespace": {"type": "string"},
                "required_at_runtime": {"type": "boolean"},
            },
        },
        "lint": {"type": "object"},
        "source_checkpoint": {
            "type": "object",
            "required": ["path", "weights_sha256", "random_seed"],
            "properties": {
                "path": {"type": ["string", "null"]},
                "weights_sha256": {"type": ["string", "null"]},
                "random_seed": {"type": ["integer", "null"], "description": "random weights: torch seed used"},
            },
        },
        "engines": {"type": "array", "items": _ENGINE},
        "engine_skipped": {"type": ["string", "null"]},
        "parity": {"anyOf": [_REL, {"type": "null"}]},
        "files": {
            "type": "object",
            "description": "SHA-256 of every file in the bundle except manifest.json, by relative path",
            "propertyNames": _REL,
            "additionalProperties": _SHA,
            "minProperties": 1,
        },
    },
}  # fmt: skip


def schema_json() -> str:
    return json.dumps(MANIFEST_SCHEMA, indent=2) + "\n"


def tensor_entry(name: str, dtype: str, shape: tuple[int, ...] | list[int]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": [int(d) for d in shape]}
