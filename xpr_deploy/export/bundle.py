"""`xpr export`: the whole bundle, written atomically (a failure leaves no partial folder).

BUNDLE/
  model.onnx              FP32 graph (always, unless --fp16 --no-fp32)
  model.fp16.onnx         strongly typed FP16 graph (--fp16); the served graph when present
  model.int8.onnx         INT8 QDQ graph for ONNX Runtime on CPU (--int8 --calib DATA; export/int8.py)
  model[.fp16].onnx.data  its weights, when kept outside (--external-data, or a graph over 2 GB)
  engines/model.sm86.engine   TensorRT-RTX / TensorRT engine of the served graph (when built)
  engines/timing.cache    TensorRT 11 only (TensorRT-RTX has no timing cache)
  parity.json             validation right after export (as optimum does)
  manifest.json           schema export/manifest.schema.json; SHA-256 of every other file
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..bundle.reader import check_bundle_target
from ..bundle.schema import FORMAT, FORMAT_VERSION, HW_COMPAT, TRT_FLAVOURS, tensor_entry
from ..bundle.seal import write_sealed
from ..errors import BackendUnavailable, ConfigError
from ..io import atomic_dir, sha256_file, write_json
from ..model.summary import block_table
from ..model.xpruning import XPruning
from ..trt_engine.build import EngineInfo, EngineOptions, build_engine, resolve_flavour
from .fp16 import FP32_ISLANDS
from .int8 import INT8_GRAPH, CalibrationSet, Int8Options, calibration_set, quantize_graph
from .lint import LintReport, lint_model
from .onnx import OPSET, pruned_blocks, save_proto, selection_output_name, to_proto
from .plugin import fuse_window_select, plugin_manifest_entry

GRAPH_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": INT8_GRAPH}
ENGINE_DIR = "engines"


@dataclass
class ExportOptions:
    fp16: bool = False
    plugin: bool = False
    with_selection: bool = False
    fp32_graph: bool = True  # with --fp16 also write model.onnx (ONNX Runtime-on-CPU fallback, parity bridge)
    engine: bool | None = None  # None: build one when a TensorRT flavour is available
    #: which TensorRT builds the engine: auto | bundle.schema.TRT_FLAVOURS (`xpr export --trt-flavour`)
    trt_flavour: str = "auto"
    sm: int = 86
    hw_compat: str = "same"
    batch: int = 1
    #: dynamic batch axis 1..max_batch (K per sample stays static); `batch` is then the profile's opt
    max_batch: int | None = None
    #: weights in `<graph>.data` beside each graph (ONNX external data); always past 2 GB
    external_data: bool = False
    parity_samples: int = 8  # 0: skip validation (parity.json says so)
    parity_seed: int = 0
    name: str | None = None
    #: also an INT8 QDQ graph of the FP32 one, calibrated on a dataset (export/int8.py)
    int8: Int8Options | None = None

    def check(self) -> None:
        if self.hw_compat not in HW_COMPAT:
            raise ConfigError(f"--hw-compat must be {' or '.join(HW_COMPAT)}, not {self.hw_compat!r}")
        if self.trt_flavour not in ("auto", *TRT_FLAVOURS):
            raise ConfigError(f"--trt-flavour must be auto, {' or '.join(TRT_FLAVOURS)}, not {self.trt_flavour!r}")
        if self.batch < 1:
            raise ConfigError("--batch must be >= 1")
        if self.max_batch is not None and not 1 <= self.batch <= self.max_batch:
            raise ConfigError(f"--max-batch {self.max_batch}: must be >= 1 and >= --batch {self.batch}")
        if not self.fp16 and not self.fp32_graph:
            raise ConfigError("--no-fp32 needs --fp16: the bundle would have no graph")
        if self.int8 is not None:
            self.int8.check()
            if not self.fp32_graph:
                raise ConfigError("--int8 quantizes the FP32 graph: drop --no-fp32")
            if self.plugin:
                raise ConfigError("--int8 and --plugin: ONNX Runtime cannot run the XprWindowSelect plugin nodes")


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    lint: dict[str, LintReport]
    engine: EngineInfo | None
    timings: dict[str, float] = field(default_factory=dict)


def default_name(model: XPruning, options: ExportOptions) -> str:
    return f"{model.cfg.name}-{'fp16' if options.fp16 else 'fp32'}{'-plugin' if options.plugin else ''}"


def preprocessing_entry(model: XPruning, meta: dict[str, Any]) -> dict[str, Any]:
    """The settings the checkpoint was trained with, plus the named steps of the contract."""
    from ..data.dicom import PreprocessSettings

    pre = meta.get("preprocess") or meta.get("preprocessing")
    settings = PreprocessSettings.from_dict(pre) if pre else PreprocessSettings.for_config(model.cfg)
    return {
        **settings.to_dict(),
        "window": "first WindowCenter/WindowWidth + VOILUTFunction (PS3.3 C.11.2.1.2); min-max without a window",
        "inversion": "MONOCHROME1: x = 1 - x",
        "orientation": "chest wall on the left (content-based left-right flip)",
        "crop": "breast bounding box (mask x > mask_threshold, profile >= profile_threshold)",
        "resize": "antialiased bilinear (triangle) to img_size, columns then rows",
        "normalisation": f"(x - {settings.mean}) / {settings.std}, float32",
        "contract": "export/README.md#preprocessing-contract",
    }


def _resolve_engine(options: ExportOptions) -> tuple[str | None, str | None]:
    """(TensorRT flavour to build with, or None; why no engine). Explicit requests fail early and loudly."""
    if options.engine is False:
        return None, "disabled (--no-engine)"
    if options.engine or options.trt_flavour != "auto":
        return resolve_flavour(options.trt_flavour), None
    try:
        return resolve_flavour("auto"), None
    except BackendUnavailable as exc:
        return None, str(exc)


def check_export_request(options: ExportOptions) -> None:
    """What can fail before the model is loaded: the options, and a TensorRT flavour asked for by name
    (`--trt-flavour tensorrt` on a machine without it costs no load and no export work)."""
    options.check()
    if options.engine is not False and options.trt_flavour != "auto":
        resolve_flavour(options.trt_flavour)


def export_bundle(
    model: XPruning, meta: dict[str, Any], out: str | Path, options: ExportOptions | None = None
) -> Bundle:
    """Export graphs, lint them, build the engine, write the sealed manifest: all or nothing."""
    opts = options or ExportOptions()
    opts.check()
    flavour, engine_skipped = _resolve_engine(opts)  # before any work: --trt-flavour tensorrt fails here
    model = model.float().eval().cpu()
    cfg = model.cfg
    out = Path(out)
    keys = pruned_blocks(model)
    precisions: list[str] = [
        p
        for p in ("fp32", "fp16")
        if (p == "fp32" and (opts.fp32_graph or not opts.fp16)) or (p == "fp16" and opts.fp16)
    ]
    served = "fp16" if opts.fp16 else "fp32"
    timings: dict[str, float] = {}
    lints: dict[str, LintReport] = {}
    engine: EngineInfo | None = None
    plugin_count = 0
    check_bundle_target(out)
    calib: CalibrationSet | None = None
    if opts.int8 is not None:  # bad calibration data fails before any export work
        calib = calibration_set(opts.int8.calib, meta, tuple(cfg.img_size), opts.int8)  # type: ignore[arg-type]
    int8_entry: dict[str, Any] | None = None
    with atomic_dir(out) as tmp:
        for prec in precisions:
            t0 = time.perf_counter()
            proto = to_proto(
                model, fp16=prec == "fp16", batch=opts.batch, with_selection=opts.with_selection,
                max_batch=opts.max_batch,
            )  # fmt: skip
            if opts.plugin:
                plugin_count = fuse_window_select(proto, cfg.window_size)
            rep = lint_model(
                proto, expected_topk=len(keys), plugin=opts.plugin, dynamic_batch=opts.max_batch is not None
            )
            rep.raise_for_errors(GRAPH_FILES[prec])
            lints[prec] = rep
            save_proto(proto, tmp / GRAPH_FILES[prec], external_data=opts.external_data)
            del proto
            timings[f"export_{prec}_s"] = round(time.perf_counter() - t0, 2)
        if opts.int8 is not None and calib is not None:
            from ..bundle import IoNames

            io = IoNames("cc", "mlo", "logits", "prob")
            int8_entry = quantize_graph(tmp / GRAPH_FILES["fp32"], tmp / INT8_GRAPH, calib, opts.int8, io, opts.batch)
            timings["export_int8_s"] = int8_entry["quantize_seconds"]
        if flavour is not None:
            profile = None if opts.max_batch is None else (1, opts.batch, opts.max_batch)
            eopts = EngineOptions(flavour=flavour, sm=opts.sm, hw_compat=opts.hw_compat, batch_profile=profile)
            engine = build_engine(tmp / GRAPH_FILES[served], tmp / ENGINE_DIR, eopts)
            timings["engine_parse_s"], timings["engine_build_s"] = engine.parse_seconds, engine.build_seconds
        # validation runs on the sealed bundle afterwards (validate.export_and_validate), so what it
        # certifies is exactly what readers will serve; until then the report says so
        pending = "validation not run (--parity-samples 0)" if opts.parity_samples == 0 else "validation pending"
        write_json(tmp / "parity.json", {"ok": None, "skipped": pending})
        manifest = build_manifest(
            model, meta, opts, tmp, precisions, served, keys, lints, engine, engine_skipped, plugin_count, timings
        )
        if int8_entry is not None:
            manifest["graphs"]["int8"] = INT8_GRAPH
            manifest["int8"] = int8_entry
        write_sealed(tmp, manifest)
    if engine is not None:
        engine.path = out / ENGINE_DIR / engine.path.name
    return Bundle(out, manifest, lints, engine, timings)


def build_manifest(
    model: XPruning,
    meta: dict[str, Any],
    opts: ExportOptions,
    root: Path,
    precisions: list[str],
    served: str,
    keys: list[tuple[str, int, int]],
    lints: dict[str, LintReport],
    engine: EngineInfo | None,
    engine_skipped: str | None,
    plugin_count: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    cfg = model.cfg
    b = opts.batch if opts.max_batch is None else -1  # -1: the dynamic batch axis (bundle/reader.py)
    shape = (b, cfg.in_chans, *cfg.img_size)
    blocks, selection_outputs = block_entries(model, keys, opts.with_selection, b)
    outputs = [tensor_entry("logits", "float32", (b, cfg.num_classes)), tensor_entry("prob", "float32", (b,))]
    from ..train.checkpoint import git_commit

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": opts.name or default_name(model, opts),
        "toolkit_version": __version__,
        "git_commit": git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": GRAPH_FILES[served],
        "graphs": {p: GRAPH_FILES[p] for p in precisions},
        "precision": served,
        "fp32_islands": list(FP32_ISLANDS) if opts.fp16 else [],
        "opset": OPSET,
        "ir_version": 10,
        "batch": opts.batch,
        "max_batch": opts.max_batch,
        "static_shapes": opts.max_batch is None,
        "inputs": [tensor_entry("cc", "float32", shape), tensor_entry("mlo", "float32", shape)],
        "outputs": outputs + selection_outputs,
        "io": {"cc": "cc", "mlo": "mlo", "logits": "logits", "prob": "prob"},
        "model_config": cfg.to_dict(),
        **decision_entries(model, meta),
        "blocks": blocks,
        "plugin": plugin_manifest_entry(plugin_count) if opts.plugin else None,
        "lint": {p: r.to_dict() for p, r in lints.items()},
        "source_checkpoint": source_entry(meta),
        "engines": [] if engine is None else [engine_entry(engine, GRAPH_FILES[served])],
        "engine_skipped": engine_skipped,
        "parity": "parity.json",
        "timings": timings,
        "files": file_digests(root),
    }


def block_entries(
    model: XPruning, keys: list[tuple[str, int, int]], with_selection: bool, batch: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every block's window geometry and K (readers draw heatmaps from it), and the kept-window output
    of each pruned block when the graph has them (`--with-selection`)."""
    pruned = set(keys)
    blocks, outputs = [], []
    for row in block_table(model.cfg):
        key = (row.view, row.stage, row.block)
        sel = selection_output_name(*key) if with_selection and key in pruned else None
        if sel:
            outputs.append(tensor_entry(sel, "int64", (batch, row.k)))
        blocks.append({
            "view": row.view, "stage": row.stage, "block": row.block, "window_grid": list(row.window_grid),
            "windows": row.windows, "k": row.k, "shifted": row.shifted, "shift_size": list(row.shift),
            "pruned": key in pruned,
            "selection_output": sel,
        })  # fmt: skip
    return blocks, outputs


def decision_entries(model: XPruning, meta: dict[str, Any]) -> dict[str, Any]:
    """What turns pixels into a decision, from the checkpoint: preprocessing, labels, thresholds."""
    return {
        "preprocessing": preprocessing_entry(model, meta),
        "label_rule": meta.get("label_rule"),
        "class_names": list(meta.get("class_names") or model.cfg.class_names),
        "threshold": float(meta.get("threshold", 0.5)),
        "threshold_method": meta.get("threshold_method"),
        "operating_points": dict(meta.get("operating_points") or {}),
        "operating_point": meta.get("operating_point"),
    }


def source_entry(meta: dict[str, Any]) -> dict[str, Any]:
    """Which checkpoint the bundle was exported from (provenance)."""
    src = meta.get("checkpoint_dir") or meta.get("checkpoint")
    return {
        "path": str(src) if src else None,
        "weights_sha256": meta.get("weights_sha256"),
        "random_seed": meta.get("random_seed"),
    }


def engine_entry(engine: EngineInfo, onnx: str) -> dict[str, Any]:
    """The built engine's facts as readers check them (flavour, GPUs, plugins, file digest)."""
    required = [op for op, how in engine.plugins.items() if how == "plugin"]
    return {
        "backend": engine.flavour, "version": engine.version,
        "compute_capability": engine.compute_capability, "compute_capabilities": engine.compute_capabilities,
        "hw_compat": engine.hw_compat, "flags": engine.flags, "strongly_typed": True,
        "timing_cache_sha256": engine.timing_cache_sha256,
        "timing_cache": f"{ENGINE_DIR}/{engine.timing_cache}" if engine.timing_cache else None,
        "path": f"{ENGINE_DIR}/{engine.path.name}", "sha256": engine.sha256, "size_bytes": engine.size_bytes,
        "onnx": onnx, "build_seconds": engine.build_seconds, "parse_seconds": engine.parse_seconds,
        "plugins": engine.plugins, "plugins_required": required, "notes": engine.notes,
        "profile": engine.profile,
    }  # fmt: skip


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file written so far but the manifest (sealed with it)."""
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def load_source(
    checkpoint: str | Path | None, config: str | None = None, seed: int = 0
) -> tuple[XPruning, dict[str, Any]]:
    """(model, meta) from a checkpoint, or random weights of a preset (seed recorded for `xpr validate`)."""
    if checkpoint is None:
        if config is None:
            raise ConfigError("give a checkpoint, or --config tiny|paper for random weights")
        from ..config import get_config
        from ..model.xpruning import random_model

        try:
            cfg = get_config(config)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return random_model(cfg, seed), {"random_seed": seed}
    from ..train.checkpoint import CheckpointError, load_checkpoint

    try:
        model, meta = load_checkpoint(checkpoint)
    except CheckpointError:
        raise
    except Exception as exc:  # anything else a broken file can raise: still one line
        raise CheckpointError(f"{checkpoint}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    if config is not None and config != model.cfg.name:
        raise ConfigError(f"--config {config} disagrees with the checkpoint's config {model.cfg.name!r}")
    return model, meta
