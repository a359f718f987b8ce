"""The JSON Schema of a checkpoint's `meta.json`, checked once when it is read (`checkpoint.read_meta`),
so no reader (predict, export, eval, validate, bench, resume) meets a threshold of "high" or a
depth of -1 as a traceback deep inside: the refusal is one line naming the file and the field.

The schema follows what `save_checkpoint` and `xpr train` write. Keys a checkpoint of an older
toolkit may lack stay optional; the model configuration is required whole (a missing key would
silently become a preset's default) and bounded (a hostile size cannot make the loader allocate
without end). Numbers are finite: NaN compares false with every bound.
"""

from __future__ import annotations

import functools
import math
from dataclasses import fields
from typing import Any

from ..config import NUM_STAGES, ModelConfig
from ..data.preproc import PREPROC_VERSION
from .config import TrainConfig

FORMAT = "xpr-checkpoint"
FORMAT_VERSION = 1

_NUM = {"type": "number", "format": "finite"}
_PROB = {**_NUM, "minimum": 0, "maximum": 1}
_RATE = {**_NUM, "minimum": 0, "exclusiveMaximum": 1}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_STR_OR_NULL = {"type": ["string", "null"]}


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _ints(n: int, lo: int, hi: int) -> dict[str, Any]:
    return {"type": "array", "items": _int(lo, hi), "minItems": n, "maxItems": n}


_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
_CLASS_NAMES = {"type": "array", "items": _NAME, "minItems": 2, "maxItems": 2}

#: every field of ModelConfig, with bounds well beyond the presets (paper: 2688x896, 96, (2,2,6,2))
MODEL_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [f.name for f in fields(ModelConfig)],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "img_size": _ints(2, 1, 16384),
        "in_chans": _int(1, 4),
        "patch_size": _int(1, 32),
        "embed_dim": _int(1, 1024),
        "depths": _ints(NUM_STAGES, 1, 32),
        "num_heads": _ints(NUM_STAGES, 1, 128),
        "window_size": _int(1, 64),
        "mlp_ratio": {**_NUM, "exclusiveMinimum": 0, "maximum": 16},
        "prune_rates": {"type": "array", "items": _RATE, "minItems": NUM_STAGES, "maxItems": NUM_STAGES},
        "ctb_heads": _int(1, 128),
        "head_hidden": _int(1, 8192),
        "num_classes": {"const": 2},
        "frozen_stages": _int(0, NUM_STAGES),
        "drop_path_rate": _RATE,
        "class_names": _CLASS_NAMES,
    },
}

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _leaf(name: str) -> dict[str, Any]:
    return dict(_NUM) if name == "float" else {"type": _JSON_TYPES[name]}


def _field_schema(annotation: str) -> dict[str, Any]:
    """A TrainConfig field's annotation (a string: `from __future__ import annotations`) as a schema."""
    parts = [p.strip() for p in annotation.split("|")]
    (base,) = [p for p in parts if p != "None"]
    if base.startswith("tuple["):  # tuple[float, ...]
        s = {"type": "array", "items": _leaf(base[len("tuple[") :].split(",")[0])}
    else:
        s = _leaf(base)
    return {"anyOf": [s, {"type": "null"}]} if "None" in parts else s


#: `train_config`: the TrainConfig fields by their types (`--resume` rebuilds the run from it)
TRAIN_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "out"],
    "properties": {f.name: _field_schema(str(f.type)) for f in fields(TrainConfig)},
}

_OPERATING_POINT = {
    "type": "object",
    "required": ["threshold"],
    "properties": {
        "threshold": _PROB,
        "sensitivity": {"anyOf": [_PROB, {"type": "null"}]},
        "specificity": {"anyOf": [_PROB, {"type": "null"}]},
        "n": {"type": ["integer", "null"], "minimum": 0},
    },
}

META_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "xpr-checkpoint-meta-1",
    "title": "xpr checkpoint meta.json",
    "type": "object",
    "required": ["format", "format_version", "model_config", "weights_sha256"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": _int(1, FORMAT_VERSION),
        "model_config": MODEL_CONFIG_SCHEMA,
        "weights_sha256": {**_SHA, "description": "SHA-256 of model.safetensors"},
        "threshold": _PROB,
        "threshold_method": _STR_OR_NULL,
        "operating_points": {
            "type": "object",
            "propertyNames": {"pattern": "^(youden|(sens|spec)=[01](\\.[0-9]+)?)$"},
            "additionalProperties": _OPERATING_POINT,
        },
        "operating_point": _STR_OR_NULL,
        "class_names": _CLASS_NAMES,
        "label_rule": _STR_OR_NULL,
        "preprocess": {
            "type": ["object", "null"],
            "properties": {
                "img_size": _ints(2, 1, 16384),
                "mask_threshold": _NUM,
                "profile_threshold": _NUM,
                "mean": _NUM,
                "std": {**_NUM, "exclusiveMinimum": 0},
                "version": {"const": PREPROC_VERSION},
            },
        },
        "epoch": _int(0, 10**6),
        "train_config": TRAIN_CONFIG_SCHEMA,
        "split": {"type": "object", "properties": {"fold": _int(0, 10**4)}},
        "metrics": {"type": "object"},
        "selection": {"type": "object"},
        "data": {"type": "object"},
        "world_size": _int(1, 10**6),
        "class_weights": {"type": "array", "items": _NUM},
        "toolkit_version": _STR_OR_NULL,
        "created_utc": _STR_OR_NULL,
        "git_commit": _STR_OR_NULL,
    },
}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _finite(instance: object) -> bool:
    return not isinstance(instance, float) or math.isfinite(instance)


def _strict_int(checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def strict_validator(schema: dict[str, Any]) -> Any:
    """Draft 2020-12 where "integer" is an int (JSON's 1e308 or 3.0 is not: `range(3.0)` fails) and
    the format "finite" refuses NaN and infinities; the bundle reader checks manifests with it too."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _strict_int))
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("finite")(_finite)
    return strict(schema, format_checker=checker)


def first_problem(validator: Any, doc: Any) -> str | None:
    """The most relevant schema violation as `at <path>: <message>` (one line, values shortened)."""
    import jsonschema

    exc = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if exc is None:
        return None
    loc = "/".join(str(p) for p in exc.absolute_path) or "(top)"
    msg = exc.message if exc.validator != "format" else f"{_short(exc.instance)} is not a finite number"
    msg = " ".join(msg.split())
    return f"at {loc}: {msg[:200]}{'…' if len(msg) > 200 else ''}"


@functools.cache
def _validator() -> Any:
    return strict_validator(META_SCHEMA)


def schema_problem(meta: Any) -> str | None:
    """None when `meta` follows META_SCHEMA and its facts agree; else one line: where and what."""
    problem = first_problem(_validator(), meta)
    if problem is not None:
        return f"does not follow the checkpoint schema {problem}"
    points, default = meta.get("operating_points") or {}, meta.get("operating_point")
    if default is not None and default not in points:
        return f"operating_point {_short(default)} is not among operating_points"
    pre = (meta.get("preprocess") or {}).get("img_size")
    size = meta["model_config"]["img_size"]
    if pre is not None and list(pre) != list(size):
        return f"preprocess.img_size {_short(pre)} differs from model_config.img_size {size}"
    return None
