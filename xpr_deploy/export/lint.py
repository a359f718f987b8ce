"""Export lint: every op counted, anything TensorRT's ONNX parser would not take natively is an error.

Checks (SPEC §4): op types in an allow-list; one TopK per pruned block with K a constant
(initializer or Constant) in [1, 3840], `sorted=1`; Scatter* without reduction; every tensor
shape static (after shape inference); float32 graph inputs and outputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import XprError

#: TensorRT's hard limit on TopK's K
MAX_TOPK_K = 3840

# fmt: off
ALLOWED_OPS: frozenset[str] = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Neg", "Abs", "Exp", "Sigmoid",
    "MatMul", "Gemm", "Conv",
    "Reshape", "Transpose", "Slice", "Concat", "Split", "Squeeze", "Unsqueeze", "Flatten", "Expand",
    "Gather", "GatherElements", "ScatterND", "ScatterElements", "TopK",
    "LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSum", "ReduceMax",
    "Cast", "Where", "Pad", "Constant",
})
# fmt: on
#: extra ops a dynamic-batch export (--max-batch) needs: the batch size read at run time (TensorRT
#: handles both natively; every K stays a constant, checked below)
DYNAMIC_BATCH_OPS: frozenset[str] = frozenset({"Shape", "Range"})
#: custom ops of the `--plugin` mode: op type -> required attributes
PLUGIN_OPS: dict[str, tuple[str, ...]] = {"XprWindowSelect": ("k", "window", "plugin_version", "plugin_namespace")}
_FLOAT_IO = onnx.TensorProto.FLOAT


class LintError(XprError):
    """The exported graph breaks the TensorRT contract of SPEC §4."""


@dataclass
class LintReport:
    op_counts: dict[str, int]
    function_op_counts: dict[str, int] = field(default_factory=dict)
    topk_k: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "op_counts": self.op_counts,
            "function_op_counts": self.function_op_counts,
            "topk_k": self.topk_k,
            "errors": self.errors,
        }

    def raise_for_errors(self, what: str = "graph") -> None:
        if self.errors:
            more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise LintError(f"{what}: export lint failed: {self.errors[0]}{more}")


def _const_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _shape_static(t: onnx.TypeProto, dynamic_batch: bool = False) -> bool:
    """Every dimension a positive constant; with `dynamic_batch` the first may be a symbol."""
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return False
    dims = list(t.tensor_type.shape.dim)
    if dynamic_batch and dims and dims[0].HasField("dim_param"):
        dims = dims[1:]
    return all(d.HasField("dim_value") and d.dim_value > 0 for d in dims)


def lint_model(
    model: onnx.ModelProto | str | Path,
    *,
    expected_topk: int | None = None,
    plugin: bool = False,
    dynamic_batch: bool = False,
) -> LintReport:
    """Lint a graph; `expected_topk` = number of pruned blocks (TopK or XprWindowSelect nodes).

    `dynamic_batch` (--max-batch): graph inputs/outputs may have a symbolic first dimension, Shape
    and Range are allowed, and inner tensors may carry the batch symbol; K stays a constant."""
    allowed = ALLOWED_OPS | DYNAMIC_BATCH_OPS if dynamic_batch else ALLOWED_OPS
    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    g = proto.graph
    counts = Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in g.node)
    rep = LintReport(op_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    fcounts: Counter[str] = Counter()
    for f in proto.functions:
        fcounts.update(n.op_type for n in f.node)
    rep.function_op_counts = dict(sorted(fcounts.items()))
    rep.errors.extend(_op_errors(proto, counts, allowed, plugin))
    _check_selections(g, rep, plugin, expected_topk)
    rep.errors.extend(_io_errors(g, dynamic_batch))
    if dynamic_batch:  # inner shapes are products of the batch symbol: only I/O is checked above
        return rep
    rep.errors.extend(_inner_shape_errors(proto))
    return rep


def _op_errors(proto: onnx.ModelProto, counts: Counter[str], allowed: frozenset[str], plugin: bool) -> list[str]:
    """Ops TensorRT would not take: outside the allow-list (in the graph or a function body), or custom
    ops other than the window-select plugin (with --plugin, and then only with an ONNX function body)."""
    errors = []
    funcs = {(f.domain, f.name): f for f in proto.functions}
    for op in counts:
        if "::" in op:
            dom, typ = op.split("::", 1)
            if not plugin or typ not in PLUGIN_OPS:
                errors.append(f"custom op {op} is not allowed{'' if plugin else ' (only with --plugin)'}")
            elif (dom, typ) not in funcs:
                errors.append(f"custom op {op} has no ONNX function body (ONNX Runtime could not run it)")
        elif op not in allowed:
            errors.append(f"op {op} ({counts[op]}x) is outside the TensorRT allow-list")
    for f in proto.functions:
        for n in f.node:
            if n.op_type not in allowed:
                errors.append(f"op {n.op_type} in function {f.domain}::{f.name} is outside the allow-list")
    return errors


def _check_selections(g: onnx.GraphProto, rep: LintReport, plugin: bool, expected_topk: int | None) -> None:
    """One window selection (TopK, or the plugin) per pruned block, each with a constant K in range
    (recorded in `rep.topk_k`), sorted; scatters without a reduction."""
    consts = _const_values(g)
    selectors = 0
    tags: Counter[str] = Counter()
    for n in g.node:
        for p in n.metadata_props:
            if p.key == "xpr.block":
                tags[p.value] += 1
        if n.op_type == "TopK":
            selectors += 1
            k = consts.get(n.input[1])
            if k is None:
                rep.errors.append(f"TopK {n.name}: K is not a constant initializer")
                continue
            kv = int(np.asarray(k).reshape(-1)[0])
            rep.topk_k.append(kv)
            if not 1 <= kv <= MAX_TOPK_K:
                rep.errors.append(f"TopK {n.name}: K = {kv} outside [1, {MAX_TOPK_K}]")
            if _attr(n, "sorted", 1) != 1:
                rep.errors.append(f"TopK {n.name}: sorted must be 1")
        elif n.op_type in PLUGIN_OPS and plugin:
            selectors += 1
            missing = [a for a in PLUGIN_OPS[n.op_type] if _attr(n, a) is None]
            if missing:
                rep.errors.append(f"{n.op_type} {n.name}: missing attributes {missing}")
                continue
            kv = int(_attr(n, "k"))
            rep.topk_k.append(kv)
            if not 1 <= kv <= MAX_TOPK_K:
                rep.errors.append(f"{n.op_type} {n.name}: k = {kv} outside [1, {MAX_TOPK_K}]")
        elif n.op_type in ("ScatterND", "ScatterElements"):
            red = _attr(n, "reduction", b"none")
            if (red.decode() if isinstance(red, bytes) else red) != "none":
                rep.errors.append(f"{n.op_type} {n.name}: reduction={red!r} (TensorRT takes none only)")
    rep.errors.extend(f"block {k} has {c} window selections (one expected)" for k, c in tags.items() if c > 1)
    if expected_topk is not None and selectors != expected_topk:
        rep.errors.append(f"{selectors} window selections (TopK) for {expected_topk} pruned blocks: expected one each")


def _io_errors(g: onnx.GraphProto, dynamic_batch: bool) -> list[str]:
    """Graph inputs and outputs: static shapes (but the batch axis with --max-batch), float32 I/O."""
    errors = []
    for vi in list(g.input) + list(g.output):
        if not _shape_static(vi.type, dynamic_batch):
            errors.append(f"graph {'input' if vi in g.input else 'output'} {vi.name} has a dynamic shape")
    for vi in g.input:
        if vi.type.tensor_type.elem_type != _FLOAT_IO:
            errors.append(f"input {vi.name} is not float32")
    for vi in g.output:
        if vi.name in ("logits", "prob") and vi.type.tensor_type.elem_type != _FLOAT_IO:
            errors.append(f"output {vi.name} is not float32")
    return errors


def _inner_shape_errors(proto: onnx.ModelProto) -> list[str]:
    """Every inner tensor of a static graph has a static shape (by ONNX shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        dyn = [vi.name for vi in inferred.graph.value_info if not _shape_static(vi.type)]
        if dyn:
            return [f"{len(dyn)} tensors with dynamic or unknown shape, e.g. {dyn[0]}"]
    except Exception as exc:  # shape inference on a broken graph: report, don't crash
        return [f"shape inference failed: {exc}"]
    return []
