"""`xpr export --int8`: an INT8 QDQ graph (`model.int8.onnx`) beside the FP32 one, for ONNX Runtime on CPU.

ONNX Runtime static quantization (`quantize_static`, QDQ format, signed int8, per-channel weights)
of the weight MatMuls only (the Linear layers: attention qkv / proj, MLP fc1 / fc2). Everything else
stays float: the window-scoring path (ReduceL2 norms, TopK, Gather, ScatterND), LayerNorm, Softmax,
GELU, the residual Adds, the activation x activation MatMuls of attention (q·kᵀ, attn·v) and the
head's Gemm. Activations are quantized at the inputs of the integer kernels only: after
quantization every other consumer is rewired to the float tensor (`_float_consumers`), so the
kept-window scores are computed from exactly the values the FP32 graph computes at that point, and
each QuantizeLinear has one consumer, the form ONNX Runtime fuses into integer kernels
(`QDQS8ToU8Transformer`; onnxruntime issue 17389).

Calibration: N breasts of the checkpoint's training split (its split.json, the fold it was trained
on; all labelled pairs of DATA when the checkpoint has none), chosen with a recorded seed, through
the real preprocessing; percentile (99.999) or entropy histograms, collected one breast at a time so
peak memory does not grow with N (`CalibStridedMinMax` 1: the histogram collector merges calls).
The manifest's `int8` entry records the method, the breasts' keys, the seed and the SHA-256 of the
calibration tensors.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, XprError

INT8_GRAPH = "model.int8.onnx"
QUANTIZED_OPS = ("MatMul", "Gemm")  # the Linear layers (the head's Gemm excluded: it stays float)
CALIB_METHODS = ("percentile", "entropy", "minmax")
#: the integer kernels ONNX Runtime's CPU provider runs a fused QDQ MatMul as
INTEGER_KERNELS = ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


class CalibrationError(XprError):
    """The calibration data cannot be read or is too small (exit 2, as every XprError)."""


@dataclass(frozen=True)
class Int8Options:
    calib: Path  # dataset folder (xpr's formats)
    breasts: int = 16
    method: str = "percentile"
    percentile: float = 99.999
    seed: int = 0
    #: node names kept in float beyond the default rule (what parity shows must)
    exclude: tuple[str, ...] = ()

    def check(self) -> None:
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, not {self.method!r}")
        if self.breasts < 1:
            raise ConfigError("--calib-breasts must be >= 1")


def int8_request(
    int8: bool, calib: Path | None, breasts: int = 16, method: str = "percentile", seed: int = 0
) -> Int8Options | None:
    """`xpr export --int8 --calib DATA`: the INT8 graph is calibrated on DATA, so the two go together
    (None: no INT8 graph)."""
    if int8 != (calib is not None):
        raise ConfigError("--int8 and --calib DATA go together (the INT8 graph is calibrated on DATA)")
    return Int8Options(calib, breasts, method, seed=seed) if calib is not None else None


@dataclass
class CalibrationSet:
    cc: np.ndarray  # [n, 1, H, W] float32, preprocessed
    mlo: np.ndarray
    keys: list[str]
    source: str  # which part of which split
    digest: str = ""
    entry: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for a in (self.cc, self.mlo):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        self.digest = h.hexdigest()


def calibration_set(
    data: str | Path, meta: dict[str, Any], img_size: tuple[int, int], opts: Int8Options
) -> CalibrationSet:
    """N breasts of the training split (seeded choice), preprocessed as predict does."""
    from ..data import PreprocessSettings, SplitFile, load_dataset, preprocess_file
    from ..data.splits import SplitError

    root = Path(data)
    if not root.exists():
        raise CalibrationError(f"{root}: no such calibration dataset")
    try:
        ds = load_dataset(root)
    except XprError as exc:
        raise CalibrationError(f"{root}: cannot read the calibration data ({exc})") from None
    pairs = [p for p in ds.pairs if p.label in (0, 1)] or list(ds.pairs)
    ckpt = meta.get("checkpoint_dir")
    split_file = Path(ckpt) / "split.json" if ckpt else None
    if split_file is not None and split_file.is_file():
        fold = int((meta.get("split") or {}).get("fold") or 0)
        try:
            pairs = SplitFile.read(split_file).select(pairs, fold=fold, part="train")
        except SplitError as exc:
            raise CalibrationError(f"{root}: not the data {split_file} splits ({exc})") from None
        source = f"training split of {split_file} (fold {fold})"
    else:
        source = f"all {len(pairs)} pairs of {root} (the checkpoint has no split.json)"
    if not pairs:
        raise CalibrationError(f"{root}: no usable CC+MLO pairs to calibrate on ({len(ds.rejects)} rejected)")
    rng = np.random.default_rng(opts.seed)
    ordered = sorted(pairs, key=lambda p: p.key)
    chosen = [ordered[i] for i in sorted(rng.permutation(len(ordered))[: opts.breasts])]
    pre = meta.get("preprocess") or meta.get("preprocessing")
    s = PreprocessSettings.from_dict(pre) if pre else PreprocessSettings(img_size=img_size)
    try:
        cc = np.stack([preprocess_file(p.cc, s)[None] for p in chosen]).astype(np.float32)
        mlo = np.stack([preprocess_file(p.mlo, s)[None] for p in chosen]).astype(np.float32)
    except XprError as exc:
        raise CalibrationError(f"{root}: a calibration image cannot be preprocessed ({exc})") from None
    return CalibrationSet(cc, mlo, [p.key for p in chosen], source)


class _Reader:
    """One breast per call (`CalibStridedMinMax` 1 sets the range), in the graph's static batch."""

    def __init__(self, cset: CalibrationSet, io: Any, batch: int) -> None:
        self.cset, self.io, self.batch = cset, io, batch
        self.start, self.end, self.pos = 0, len(cset.cc), 0

    def __len__(self) -> int:
        return len(self.cset.cc)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, end_index, start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.end:
            return None
        i = self.pos
        self.pos += 1
        rep = np.repeat  # a static batch > 1 sees the breast repeated (same ranges)
        return {
            self.io.cc: rep(self.cset.cc[i : i + 1], self.batch, axis=0),
            self.io.mlo: rep(self.cset.mlo[i : i + 1], self.batch, axis=0),
        }


def linear_to_gemm(proto: Any) -> int:
    """Each Linear exported as MatMul(x, W) + Add(b) becomes one Gemm(x2d, W, b), in place (with a
    Reshape on each side when x has more than two axes).

    ONNX Runtime does the same fusion itself at load (MatMulAddFusion, basic level) — before its QDQ
    fusions run, so a quantized MatMul + Add would become a float Gemm between Q/DQ pairs. Fused
    here, first, the quantizer sees a Gemm (int32 bias) and ONNX Runtime runs it as QGemm."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    dims = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    inits = {i.name: i for i in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    fused = 0
    for mm in list(proto.graph.node):
        shape = dims.get(mm.input[0])
        if mm.op_type != "MatMul" or mm.input[1] not in inits or not shape or len(shape) < 2:
            continue
        if any(d is None for d in shape[1:]):  # only the batch axis may be dynamic
            continue
        if len(inits[mm.input[1]].dims) != 2 or mm.output[0] in outputs:
            continue
        users = consumers.get(mm.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        bias = next((str(i) for i in add.input if i != mm.output[0]), "")
        if bias not in inits or list(inits[bias].dims) != [inits[mm.input[1]].dims[1]]:
            continue
        k, n = inits[mm.input[1]].dims
        if len(consumers.get(bias, [])) > 1:  # the exporter shares equal constants (a zero bias with a
            # LayerNorm's): the Gemm gets its own copy, so quantizing it (int32) leaves the others float
            own = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(inits[bias]).copy(), f"{mm.name}_bias")
            proto.graph.initializer.append(own)
            bias = own.name
        idx = list(proto.graph.node).index(mm)
        proto.graph.node.remove(add)
        proto.graph.node.remove(mm)
        if len(shape) == 2:
            new = [onnx.helper.make_node("Gemm", [mm.input[0], mm.input[1], bias], list(add.output), name=mm.name)]
        else:  # [B, ..., K] -> [-1, K] -> Gemm -> [-1, ..., N], as ONNX Runtime's own fusion does
            pre, post = f"{mm.name}_to2d", f"{mm.name}_from2d"
            proto.graph.initializer.extend([
                onnx.numpy_helper.from_array(np.array([-1, k], dtype=np.int64), pre + "_shape"),
                onnx.numpy_helper.from_array(np.array([-1, *shape[1:-1], n], dtype=np.int64), post + "_shape"),
            ])  # fmt: skip
            new = [
                onnx.helper.make_node("Reshape", [mm.input[0], pre + "_shape"], [pre], name=pre),
                onnx.helper.make_node("Gemm", [pre, mm.input[1], bias], [mm.name + "_2d"], name=mm.name),
                onnx.helper.make_node("Reshape", [mm.name + "_2d", post + "_shape"], list(add.output), name=post),
            ]
        for j, node in enumerate(new):
            proto.graph.node.insert(idx + j, node)
        fused += 1
    return fused


def weight_kernels(proto: Any, head: set[str]) -> tuple[list[str], list[str]]:
    """(MatMul / Gemm nodes with a constant weight: quantized; the other MatMuls and the head: float)."""
    consts = {i.name for i in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    quant: list[str] = []
    keep: list[str] = []
    for n in proto.graph.node:
        if n.op_type in QUANTIZED_OPS:
            (quant if n.input[1] in consts and n.name not in head else keep).append(n.name)
    return quant, keep


def _float_consumers(proto: Any, quantized: set[str]) -> int:
    """Rewire every consumer of a quantized activation that is not an integer kernel's input to the
    float tensor, and drop the QuantizeLinear/DequantizeLinear pairs nothing reads any more."""
    inits = {i.name for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    float_of: dict[str, str] = {}
    for n in proto.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
            float_of[n.output[0]] = q.input[0]
    rewired = 0
    for n in proto.graph.node:
        if n.name in quantized or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            if name in float_of:
                n.input[i] = float_of[name]
                rewired += 1
    outputs = {o.name for o in proto.graph.output}
    while True:  # drop Q/DQ nodes whose outputs nobody reads
        used = {i for n in proto.graph.node for i in n.input} | outputs
        dead = [
            n for n in proto.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]  # fmt: skip
        if not dead:
            break
        for n in dead:
            proto.graph.node.remove(n)
    return rewired


def quantize_graph(
    fp32: Path, out: Path, cset: CalibrationSet, opts: Int8Options, io: Any, batch: int
) -> dict[str, Any]:
    """The INT8 QDQ graph of `fp32` at `out`; returns the manifest's `int8` entry."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    t0 = time.perf_counter()
    proto = onnx.load(str(fp32))
    head = {n.name for n in proto.graph.node if n.op_type == "Gemm"}  # the classifier head (2 views fused)
    fused = linear_to_gemm(proto)
    quant, keep = weight_kernels(proto, head)
    exclude = [*keep, *opts.exclude]
    method = {
        "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
    }[opts.method]  # fmt: skip
    extra = {
        "CalibStridedMinMax": 1,  # one breast per collect call: memory does not grow with N
        "CalibPercentile": opts.percentile,
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        "DedicatedQDQPair": True,  # one Q/DQ pair per integer kernel: ONNX Runtime fuses one-consumer pairs
    }
    with tempfile.TemporaryDirectory(prefix="xpr-int8-") as tmp:
        raw, src = Path(tmp) / "qdq.onnx", Path(tmp) / "fused.onnx"
        onnx.save(proto, str(src))
        del proto
        quantize_static(
            str(src), str(raw), _Reader(cset, io, batch), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=exclude, per_channel=True,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, extra_options=extra,
        )  # fmt: skip
        q = onnx.load(str(raw))
    rewired = _float_consumers(q, set(quant))
    from .onnx import save_proto

    save_proto(q, out, external_data=False)
    n_int = sum(1 for n in q.graph.node if n.op_type in QUANTIZED_OPS and n.name in set(quant))
    return {
        "graph": out.name,
        "format": "QDQ",
        "weights": "int8 per-channel (symmetric)",
        "activations": "int8 per-tensor (asymmetric)",
        "quantized_ops": list(QUANTIZED_OPS),
        "quantized_nodes": n_int,
        "float_kernels": len(keep),
        "linear_gemm_fused": fused,
        "excluded_nodes": list(opts.exclude),
        "float_consumers_rewired": rewired,
        "calibration": {
            "method": opts.method,
            "percentile": opts.percentile if opts.method == "percentile" else None,
            "breasts": len(cset.keys),
            "keys": cset.keys,
            "seed": opts.seed,
            "source": cset.source,
            "sha256": cset.digest,
        },
        "onnxruntime": _ort_version(),
        "quantize_seconds": round(time.perf_counter() - t0, 2),
    }


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
