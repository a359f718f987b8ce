"""Static-shape, static-K ONNX export of X-Pruning (torch dynamo exporter, opset 18).

Why dynamo: it emits one `TopK` per pruned block with K as a constant initializer, `Gather` /
`ScatterND` over the window axis (from `index_select` / `index_put` in `ptb.py`), and no Shape
arithmetic, so TensorRT gets a fully static graph. The TorchScript exporter (opset 17) leaves
hundreds of Shape/Gather/Concat chains to fold.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import external_data_helper, numpy_helper
from torch import nn

from ..errors import XprError
from ..model.xpruning import XPruning, malignancy_probability
from .fp16 import HalfInput, to_fp16_islands

#: ONNX Runtime 1.3x reads IR version <= 10 reliably; onnx 1.23 would write 14 by default
IR_VERSION = 10
OPSET = 18
INPUT_NAMES = ("cc", "mlo")
OUTPUT_NAMES = ("logits", "prob")


class ExportError(XprError):
    """The ONNX export itself failed (exporter error, checker error)."""


def selection_output_name(view: str, stage: int, block: int) -> str:
    """Name of the extra output holding a block's kept window indices [B, K] (int64)."""
    return f"sel_{view}_s{stage}_b{block}"


def pruned_blocks(model: XPruning) -> list[tuple[str, int, int]]:
    """(view, stage, block) of every block that prunes (K < N): those have a TopK."""
    return [key for key, blk in model.blocks() if blk.k < blk.num_windows]


class ExportModule(nn.Module):
    """cc, mlo -> logits [B, 2], prob [B] (+ kept window indices of each pruned block)."""

    def __init__(self, model: nn.Module, with_selection: bool, keys: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.model = model
        self.with_selection = with_selection
        self.keys = keys

    def forward(self, cc: torch.Tensor, mlo: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.with_selection:
            logits = self.model(cc, mlo)
            return logits, malignancy_probability(logits)
        logits, sel = self.model(cc, mlo, return_selection=True)
        return (logits, malignancy_probability(logits), *(sel[k] for k in self.keys))


@dataclass
class OnnxInfo:
    path: Path
    precision: str  # "fp32" | "fp16"
    opset: int
    ir_version: int
    batch: int
    input_shape: tuple[int, ...]
    outputs: list[str]
    selection_outputs: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter prints progress to stdout and warns a lot; keep the CLI output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


#: onnxscript rewrite rules left out of the exporter's optimizer: SlicesSplit pairs every two Slices
#: of one tensor (a two-output pattern), never matches in this model's graph, and took 38 % of a
#: paper-size export (23.6 of 61.8 s, one thread; 7.4 of 31 s at tiny). tests/test_export_optimizer.py
#: checks that the graph stays byte for byte the one the full rule set gives.
SKIPPED_REWRITES = ("SlicesSplit",)


@contextlib.contextmanager
def optimizer_without(skipped: tuple[str, ...] = SKIPPED_REWRITES) -> Iterator[None]:
    """torch.onnx's `optimize=True` (onnxscript's optimize_ir) with the `skipped` rewrite rules left out.

    optimize_ir reads onnxscript's default rule list when it runs and takes no list of its own, so the
    list is swapped for the export and put back after (onnxscript is pinned; a rule that is not there
    is not an error)."""
    from onnxscript import rewriter

    default = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in default if getattr(r, "name", None) not in skipped)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = default


def _example_inputs(model: XPruning, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    # two distinct tensors: the exporter would otherwise merge identical inputs into one
    shape = (batch, model.cfg.in_chans, *model.cfg.img_size)
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


#: name of the dynamic batch axis in a --max-batch graph
BATCH_DIM = "batch"


def exported_program(
    model: XPruning,
    *,
    fp16: bool = False,
    batch: int = 1,
    with_selection: bool = False,
    max_batch: int | None = None,
    optimize: bool = True,
) -> torch.onnx.ONNXProgram:
    """torch.onnx's program of `model` (eval mode, CPU), before `to_proto` cleans and checks it."""
    keys = pruned_blocks(model)
    net: nn.Module = HalfInput(to_fp16_islands(model)) if fp16 else model
    wrapper = ExportModule(net, with_selection, keys).eval()
    outputs = [*OUTPUT_NAMES, *(selection_output_name(*k) for k in keys)] if with_selection else list(OUTPUT_NAMES)
    dynamic_shapes = None
    example_batch = batch
    if max_batch is not None:
        if max_batch < 1:
            raise ExportError(f"--max-batch must be >= 1, not {max_batch}")
        dim = torch.export.Dim(BATCH_DIM, min=1, max=max(2, max_batch))
        dynamic_shapes = {name: {0: dim} for name in INPUT_NAMES}
        example_batch = 2
    try:
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(
                wrapper,
                _example_inputs(model, example_batch),
                dynamic_shapes=dynamic_shapes,
                input_names=list(INPUT_NAMES),
                output_names=outputs,
                opset_version=OPSET,
                dynamo=True,
                optimize=optimize,
                external_data=False,
            )
    except Exception as exc:  # the exporter raises many types; one line for the user
        raise ExportError(
            f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    assert prog is not None
    return prog


def to_proto(
    model: XPruning,
    *,
    fp16: bool = False,
    batch: int = 1,
    with_selection: bool = False,
    max_batch: int | None = None,
    skipped_rewrites: tuple[str, ...] = SKIPPED_REWRITES,
) -> onnx.ModelProto:
    """Export `model` (eval mode, CPU) to a cleaned, checked ModelProto with static shapes.

    `max_batch` N: the batch axis is dynamic (1..N, named `batch`); every other shape and every K
    stays static (K is per sample). The exporter specialises a size-1 example, so it traces with 2.
    `skipped_rewrites`: onnxscript rewrite rules not run (`()`: the exporter's full optimizer)."""
    model = model.eval().cpu()
    keys = pruned_blocks(model)
    with optimizer_without(skipped_rewrites):
        prog = exported_program(model, fp16=fp16, batch=batch, with_selection=with_selection, max_batch=max_batch)
    proto = prog.model_proto
    clean_graph(proto)
    keys_found = tag_window_selections(proto)
    if sorted(keys_found) != sorted(block_key_str(*k) for k in keys):
        raise ExportError(f"window selections in the graph {keys_found} do not match the pruned blocks")
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    proto.producer_name = "xpr_deploy"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return proto


BLOCK_KEY = "xpr.block"
_SCOPE = re.compile(r"\b(cc|mlo)\.layers\.(\d+)\.blocks\.(\d+)\b")


def block_key_str(view: str, stage: int, block: int) -> str:
    return f"{view}/{stage}/{block}"


def tag_window_selections(proto: onnx.ModelProto) -> list[str]:
    """Mark each TopK with the block it selects for (`xpr.block` = "cc/1/0"), from the exporter's scopes.

    Validation and the lint find a block's kept indices by this tag, whatever the tensor names are.
    """
    keys = []
    for node in proto.graph.node:
        if node.op_type != "TopK":
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        found = list(_SCOPE.finditer(scopes))  # the innermost block scope is the last one
        if not found:
            raise ExportError(f"TopK {node.name}: cannot tell which block it belongs to")
        m = found[-1]
        key = block_key_str(m.group(1), int(m.group(2)) + 1, int(m.group(3)))
        node.metadata_props.add(key=BLOCK_KEY, value=key)
        keys.append(key)
    return keys


def clean_graph(proto: onnx.ModelProto) -> None:
    """Drop no-op nodes the exporter leaves (zero Pads from timm's PatchMerging, Identity)."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    keep = []
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        noop = False
        if node.op_type == "Identity":
            noop = True
        elif node.op_type == "Pad" and len(node.input) > 1 and node.input[1] in inits:
            noop = not np.any(numpy_helper.to_array(inits[node.input[1]]))
        if noop and node.output[0] not in graph_outputs:
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
    for o in g.output:  # an output fed by a removed node keeps its name: nothing to do
        assert o.name not in rename
    used = {n for node in g.node for n in node.input}
    unused = [i for i in g.initializer if i.name not in used]
    for i in unused:
        g.initializer.remove(i)


#: a graph this large cannot be one protobuf message (2 GiB limit, some margin for the graph itself):
#: its weights go to `<graph file>.data` beside it, as ONNX external data
EXTERNAL_DATA_OVER = (2 << 30) - (64 << 20)
#: tensors smaller than this stay inside the graph (onnx's own size_threshold)
EXTERNAL_MIN_BYTES = 1024
#: offsets of tensors of 1 MiB or more are aligned to 64 KiB, so ONNX Runtime can map them
_ALIGN, _ALIGN_FROM = 64 << 10, 1 << 20


def save_proto(proto: onnx.ModelProto, path: str | Path, external_data: bool = False) -> list[Path]:
    """The graph, atomically: one self-contained file up to 2 GB (the paper model is ~280 MB in FP32);
    with `external_data` (or past `EXTERNAL_DATA_OVER`) the initializers of 1 KiB or more go to
    `<name>.data` beside it (location = that bare name, so it resolves only inside the graph's
    folder). Returns the files written. `proto` is changed in place when data goes outside."""
    from ..io import atomic_path, write_buffer

    path = Path(path)
    written = [path]
    if external_data or proto.ByteSize() > EXTERNAL_DATA_OVER:
        data = path.with_name(path.name + ".data")
        tensors = [t for t in proto.graph.initializer if len(t.raw_data) >= EXTERNAL_MIN_BYTES]
        with atomic_path(data) as tmp, open(tmp, "wb") as f:
            for t in tensors:
                if len(t.raw_data) >= _ALIGN_FROM and f.tell() % _ALIGN:
                    f.write(b"\0" * (_ALIGN - f.tell() % _ALIGN))
                offset = f.tell()
                f.write(t.raw_data)
                external_data_helper.set_external_data(t, data.name, offset, len(t.raw_data))
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
        written.append(data)
    write_buffer(path, lambda f: onnx.save_model(proto, f, save_as_external_data=False))
    return written


def export_onnx(
    model: XPruning, path: str | Path, *, fp16: bool = False, batch: int = 1, with_selection: bool = False
) -> OnnxInfo:
    """Export and save; returns what the manifest needs about the graph."""
    proto = to_proto(model, fp16=fp16, batch=batch, with_selection=with_selection)
    save_proto(proto, path)
    sel = [o.name for o in proto.graph.output if o.name.startswith("sel_")]
    return OnnxInfo(
        path=Path(path),
        precision="fp16" if fp16 else "fp32",
        opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        ir_version=proto.ir_version,
        batch=batch,
        input_shape=(batch, model.cfg.in_chans, *model.cfg.img_size),
        outputs=[o.name for o in proto.graph.output],
        selection_outputs=sel,
    )
