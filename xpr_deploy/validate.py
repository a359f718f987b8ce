"""Parity (SPEC §6): eager FP32 is the reference; ONNX Runtime FP32 / FP16, eager FP16 and the engine
are compared against it on realistic inputs (synthetic studies or a dataset), never only on noise.

Per candidate: max |Δ| of logits and of P(malignant), decision flips at the operating threshold,
ΔAUC when labels exist, and per block and view the Jaccard of the kept-window sets with the
reference's K-th/(K+1)-th score margin. A selection difference whose windows all score within a
stated epsilon of the reference's K/K+1 boundary is a *tie* (reported, not a failure); any other
difference is a *flip* and fails. Samples with a tie are left out of the |Δ| gate (a tie changes
what the model computes) and reported apart.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from .errors import BackendUnavailable, XprError
from .model.ptb import PrunedSwinBlock, window_scores
from .model.xpruning import XPruning, malignancy_probability

BlockKey = tuple[str, int, int]


class ParityError(XprError):
    """Validation could not run (no model to compare against, unreadable data)."""


@dataclass(frozen=True)
class Tolerances:
    """Gates per candidate; `tie_eps` is relative to the reference's boundary score."""

    logits_fp32: float = 1e-4  # ONNX Runtime FP32 vs eager FP32
    prob_fp16: float = 1e-2  # FP16 graph / eager FP16 vs eager FP32
    prob_engine: float = 1e-2  # engine (FP32 may run TF32 kernels; FP16) vs eager FP32
    tie_eps_fp32: float = 1e-5
    tie_eps_fp16: float = 2e-2


@dataclass
class BlockParity:
    view: str
    stage: int
    block: int
    k: int
    windows: int
    min_jaccard: float
    min_margin: float  # smallest (s_K - s_K+1) / s_K over the samples, reference scores
    ties: int  # samples whose kept set differs only across a near-tie
    flips: int  # samples whose kept set differs beyond the tie epsilon


@dataclass
class CandidateParity:
    name: str
    status: str  # pass | fail | skipped
    reason: str = ""
    max_abs_logits: float | None = None  # over samples without selection ties
    max_abs_prob: float | None = None
    max_abs_logits_all: float | None = None  # over every sample
    max_abs_prob_all: float | None = None
    tie_samples: int = 0
    decision_flips: int | None = None
    delta_auc: float | None = None
    gate: str = ""
    blocks: list[BlockParity] = field(default_factory=list)

    @property
    def selection_flips(self) -> int:
        return sum(b.flips for b in self.blocks)

    @property
    def selection_ties(self) -> int:
        return sum(b.ties for b in self.blocks)

    @property
    def min_jaccard(self) -> float | None:
        return min((b.min_jaccard for b in self.blocks), default=None)


@dataclass
class ParityReport:
    samples: int
    inputs: str
    threshold: float
    tolerances: Tolerances
    candidates: list[CandidateParity]
    reference: str = "eager-fp32"

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "samples": self.samples,
            "inputs": self.inputs,
            "threshold": self.threshold,
            "tolerances": asdict(self.tolerances),
            "candidates": [
                {
                    **{k: v for k, v in asdict(c).items() if k != "blocks"},
                    "selection_flips": c.selection_flips,
                    "selection_ties": c.selection_ties,
                    "min_jaccard": c.min_jaccard,
                    "blocks": [asdict(b) for b in c.blocks],
                }
                for c in self.candidates
            ],
        }


# ---- inputs ---------------------------------------------------------------------------------
def synthetic_inputs(img_size: tuple[int, int], n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mammogram-like CC/MLO pairs (xpr synth's renderer, half with a lesion in both views), normalised
    as preprocessing step 9 does: (cc [n,1,H,W], mlo [n,1,H,W], labels [n])."""
    from .data.dicom import PreprocessSettings
    from .data.synth import plan_breasts, render_view

    s = PreprocessSettings(img_size=img_size)
    breasts = plan_breasts(n, seed, 0.5, "vindr")
    views = {
        v: np.stack([((render_view(b, v, img_size) - s.mean) / s.std)[None] for b in breasts]).astype(np.float32)
        for v in ("CC", "MLO")
    }
    return views["CC"], views["MLO"], np.array([int(b.malignant) for b in breasts])


def dataset_inputs(
    root: str | Path, img_size: tuple[int, int], limit: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `limit` breast pairs of a dataset folder, preprocessed by the contract (labels -1 if none)."""
    from .data import PreprocessSettings, load_dataset, preprocess_file

    ds = load_dataset(root)
    if not ds.pairs:
        raise ParityError(f"{root}: no usable CC+MLO pairs ({len(ds.rejects)} rejected)")
    s = PreprocessSettings(img_size=img_size)
    pairs = ds.pairs[:limit]
    cc = np.stack([preprocess_file(p.cc, s)[None] for p in pairs]).astype(np.float32)
    mlo = np.stack([preprocess_file(p.mlo, s)[None] for p in pairs]).astype(np.float32)
    return cc, mlo, np.array([p.label for p in pairs])


# ---- runs -----------------------------------------------------------------------------------
@dataclass
class RunResult:
    logits: np.ndarray  # [n, 2] float64
    selection: dict[BlockKey, np.ndarray]  # [n, K]
    scores: dict[BlockKey, np.ndarray] = field(default_factory=dict)  # reference only: [n, N]


def _block_scores(blk: PrunedSwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The scores the block ranks windows by (same roll + partition + FP32 score as its forward)."""
    from timm.models.swin_transformer import window_partition

    b, _, _, c = x.shape
    sh, sw = blk.shift_size
    xs = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if any(blk.shift_size) else x
    wh, ww = blk.window_size
    win = window_partition(xs, blk.window_size).reshape(b, -1, wh * ww, c)
    return window_scores(win)


def run_eager(model: XPruning, cc: np.ndarray, mlo: np.ndarray, *, scores: bool = False, batch: int = 1) -> RunResult:
    """Eager forward (model's own dtype/device), batch by batch; optionally the reference window scores."""
    model.eval()
    dev = next(model.parameters()).device
    dtype: torch.dtype = model.cc.patch_embed.proj.weight.dtype  # type: ignore[union-attr, assignment]
    logits, sels, scs = [], [], []
    for i in range(0, len(cc), batch):
        captured: dict[BlockKey, torch.Tensor] = {}
        hooks = []
        if scores:
            for key, blk in model.blocks():
                if blk.k < blk.num_windows:

                    def hook(
                        mod: torch.nn.Module, args: tuple[Any, ...], key: BlockKey = key, out: dict = captured
                    ) -> None:
                        out[key] = _block_scores(mod, args[0]).detach()  # type: ignore[arg-type]

                    hooks.append(blk.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                x1 = torch.from_numpy(cc[i : i + batch]).to(dev, dtype)
                x2 = torch.from_numpy(mlo[i : i + batch]).to(dev, dtype)
                lg, sel = model(x1, x2, return_selection=True)
        finally:
            for h in hooks:
                h.remove()
        logits.append(lg.double().cpu().numpy())
        sels.append({k: v.cpu().numpy() for k, v in sel.items()})
        scs.append({k: v.double().cpu().numpy() for k, v in captured.items()})
    keys = [k for k, blk in model.blocks() if blk.k < blk.num_windows]
    return RunResult(
        np.concatenate(logits),
        {k: np.concatenate([s[k] for s in sels]) for k in keys},
        {k: np.concatenate([s[k] for s in scs]) for k in keys} if scores else {},
    )


def selection_tensors(proto: onnx.ModelProto) -> dict[str, BlockKey]:
    """Tensor name -> block for every tagged window selection (TopK indices / XprWindowSelect output)."""
    from .export.onnx import BLOCK_KEY

    out: dict[str, BlockKey] = {}
    for n in proto.graph.node:
        tag = next((p.value for p in n.metadata_props if p.key == BLOCK_KEY), None)
        if tag is None:
            continue
        view, stage, block = tag.split("/")
        out[n.output[1] if n.op_type == "TopK" else n.output[0]] = (view, int(stage), int(block))
    return out


def run_onnx(path: str | Path, cc: np.ndarray, mlo: np.ndarray, threads: int = 2) -> RunResult:
    """ONNX Runtime (CPU) on a bundle graph, with every block's kept indices exposed as outputs."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    sel = selection_tensors(proto)
    present = {o.name for o in proto.graph.output}
    for name in sel:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del proto
    batch = int(sess.get_inputs()[0].shape[0])
    names = ["logits", *sel]
    logits, sels = [], []
    for i in range(0, len(cc), batch):
        res = sess.run(names, {"cc": cc[i : i + batch], "mlo": mlo[i : i + batch]})
        logits.append(np.asarray(res[0], dtype=np.float64))
        sels.append(res[1:])
    return RunResult(
        np.concatenate(logits),
        {key: np.concatenate([s[j] for s in sels]) for j, key in enumerate(sel.values())},
    )


# ---- comparison -----------------------------------------------------------------------------
def compare_selection(
    ref: RunResult, cand: RunResult, k_of: dict[BlockKey, int], eps: float
) -> tuple[list[BlockParity], set[int]]:
    """Per-block Jaccard / margin / ties / flips, and the samples that saw a tie anywhere.

    Blocks are visited in execution order; once a sample ties in a view, later differences in that
    view (and in stage 4, after the views are fused) descend from the tie and count as ties too.
    """
    blocks, tie_samples = [], set()
    tainted: dict[str, set[int]] = {"cc": set(), "mlo": set()}
    order = sorted(ref.selection, key=lambda kb: (kb[1] == 4, kb[1], kb[0] != "cc", kb[2]))
    for key in order:
        if key not in cand.selection:
            continue
        r, c, sc, k = ref.selection[key], cand.selection[key], ref.scores[key], k_of[key]
        view = key[0]
        jac, margins, ties, flips = [], [], 0, 0
        for i in range(len(r)):
            rs, cs = set(r[i].tolist()), set(c[i].tolist())
            jac.append(len(rs & cs) / len(rs | cs))
            srt = np.sort(sc[i])[::-1]
            top, nxt = srt[k - 1], srt[k] if k < len(srt) else -np.inf
            margins.append(float((top - nxt) / max(abs(top), 1e-12)))
            if rs == cs:
                continue
            upstream = i in tainted[view] or (key[1] == 4 and (i in tainted["cc"] or i in tainted["mlo"]))
            boundary = 0.5 * (top + nxt)
            diff = np.array(sorted(rs ^ cs))
            if upstream or np.all(np.abs(sc[i][diff] - boundary) <= eps * max(abs(boundary), 1e-12)):
                ties += 1
                tie_samples.add(i)
                tainted[view].add(i)
            else:
                flips += 1
        blocks.append(
            BlockParity(key[0], key[1], key[2], k, sc.shape[1], float(min(jac)), float(min(margins)), ties, flips)
        )
    return blocks, tie_samples


def _auc(labels: np.ndarray, p: np.ndarray) -> float | None:
    ok = labels >= 0
    if len(set(labels[ok].tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels[ok], p[ok]))


def compare(
    name: str,
    ref: RunResult,
    cand: RunResult,
    *,
    k_of: dict[BlockKey, int],
    threshold: float,
    labels: np.ndarray | None,
    tol: Tolerances,
    kind: str,  # fp32 | fp16 | engine
) -> CandidateParity:
    eps = tol.tie_eps_fp32 if kind == "fp32" else tol.tie_eps_fp16
    blocks, tie_samples = compare_selection(ref, cand, k_of, eps)
    p_ref = malignancy_probability(torch.from_numpy(ref.logits)).numpy()
    p_c = malignancy_probability(torch.from_numpy(cand.logits)).numpy()
    clean = np.array([i not in tie_samples for i in range(len(p_ref))])
    dl = np.abs(cand.logits - ref.logits).max(axis=1)
    dp = np.abs(p_c - p_ref)
    res = CandidateParity(
        name,
        "pass",
        max_abs_logits=float(dl[clean].max()) if clean.any() else None,
        max_abs_prob=float(dp[clean].max()) if clean.any() else None,
        max_abs_logits_all=float(dl.max()),
        max_abs_prob_all=float(dp.max()),
        tie_samples=len(tie_samples),
        decision_flips=int(np.sum((p_ref >= threshold) != (p_c >= threshold))),
        blocks=blocks,
    )
    if labels is not None:
        a_ref, a_c = _auc(labels, p_ref), _auc(labels, p_c)
        res.delta_auc = None if a_ref is None or a_c is None else a_c - a_ref
    problems = []
    if res.selection_flips:
        problems.append(f"{res.selection_flips} kept-set flips beyond the tie epsilon {eps:g}")
    if kind == "fp32":  # exact-arithmetic twin: gate on the samples without a selection tie
        res.gate = f"max|Δlogits| <= {tol.logits_fp32:g} on tie-free samples, no flips"
        if res.max_abs_logits is None:
            problems.append("every sample has a selection tie: nothing to gate (use trained weights)")
        elif res.max_abs_logits > tol.logits_fp32:
            problems.append(f"max|Δlogits| {res.max_abs_logits:.3g} > {tol.logits_fp32:g}")
    else:  # reduced precision: gate on every sample, ties included
        lim = tol.prob_fp16 if kind == "fp16" else tol.prob_engine
        res.gate = f"max|Δprob| <= {lim:g} on all samples, no flips"
        if res.max_abs_prob_all is not None and res.max_abs_prob_all > lim:
            problems.append(f"max|Δprob| {res.max_abs_prob_all:.3g} > {lim:g}")
    if problems:
        res.status, res.reason = "fail", "; ".join(problems)
    return res


def _skipped(name: str, reason: str) -> CandidateParity:
    return CandidateParity(name, "skipped", reason)


def run_parity(
    model: XPruning,
    cc: np.ndarray,
    mlo: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    inputs: str = "",
    graphs: dict[str, Path] | None = None,
    engine: Path | None = None,
    engine_precision: str = "fp32",
    threshold: float = 0.5,
    tol: Tolerances | None = None,
    no_engine_reason: str = "no engine in the bundle",
) -> ParityReport:
    """Compare every available candidate against eager FP32 on the given inputs."""
    tol = tol or Tolerances()
    model = model.float().eval()
    k_of = {key: blk.k for key, blk in model.blocks()}
    ref = run_eager(model, cc, mlo, scores=True)
    cands: list[CandidateParity] = []
    kw = {"k_of": k_of, "threshold": threshold, "labels": labels, "tol": tol}
    for prec, label in (("fp32", "onnxruntime-fp32"), ("fp16", "onnxruntime-fp16")):
        path = (graphs or {}).get(prec)
        if path is None:
            cands.append(_skipped(label, f"no {prec.upper()} graph in the bundle"))
            continue
        cands.append(compare(label, ref, run_onnx(path, cc, mlo), kind=prec, **kw))  # type: ignore[arg-type]
    try:
        from .export.fp16 import to_fp16_islands

        half = to_fp16_islands(model)
        cands.append(compare("eager-fp16", ref, run_eager(half, cc, mlo), kind="fp16", **kw))  # type: ignore[arg-type]
    except (RuntimeError, NotImplementedError) as exc:  # an op without a CPU half kernel
        cands.append(_skipped("eager-fp16", f"torch has no FP16 CPU kernel here ({str(exc).splitlines()[0]})"))
    if engine is None:
        cands.append(_skipped("engine", no_engine_reason))
    else:
        cands.append(_engine_candidate(engine, ref, cc, mlo, kind=engine_precision, **kw))
    return ParityReport(len(cc), inputs, threshold, tol, cands)


def _engine_candidate(engine: Path, ref: RunResult, cc: np.ndarray, mlo: np.ndarray, **kw: Any) -> CandidateParity:
    from .engine.runtime import load_engine

    try:
        runner = load_engine(engine)
    except BackendUnavailable as exc:
        return _skipped("engine", str(exc))
    logits, sels = [], []
    b = runner.batch
    for i in range(0, len(cc), b):
        out = runner.infer({"cc": cc[i : i + b], "mlo": mlo[i : i + b]})
        logits.append(np.asarray(out["logits"], dtype=np.float64))
        sels.append({k: v for k, v in out.items() if k.startswith("sel_")})
    sel: dict[BlockKey, np.ndarray] = {}
    for name in sels[0] if sels else []:
        _, view, s, blk = name.split("_")
        sel[(view, int(s[1:]), int(blk[1:]))] = np.concatenate([x[name] for x in sels])
    kind = "fp16" if kw.pop("kind") == "fp16" else "engine"
    return compare("engine", ref, RunResult(np.concatenate(logits), sel), kind=kind, **kw)


# ---- bundles --------------------------------------------------------------------------------
def validate_bundle(
    bundle: str | Path,
    *,
    data: str | Path | None = None,
    model: XPruning | None = None,
    samples: int = 8,
    seed: int = 0,
    tol: Tolerances | None = None,
) -> ParityReport:
    """Parity of a bundle's graphs (and engine) against its source model in eager FP32.

    The eager model comes from `model`, else the manifest's source checkpoint, else (random-weight
    exports) the recorded seed: random weights are rebuilt bit for bit with the same torch.
    """
    from .export.manifest import read_manifest

    bundle = Path(bundle)
    man = read_manifest(bundle)
    if model is None:
        model = model_from_manifest(man)
    cfg_size = tuple(man["model_config"]["img_size"])
    if data is not None:
        cc, mlo, labels = dataset_inputs(data, cfg_size, limit=samples)  # type: ignore[arg-type]
        what = f"dataset {data} ({len(cc)} pairs)"
    else:
        cc, mlo, labels = synthetic_inputs(cfg_size, samples, seed)  # type: ignore[arg-type]
        what = f"synthetic studies (xpr synth renderer, seed {seed}, {samples} pairs)"
    graphs = {p: bundle / f for p, f in man["graphs"].items()}
    engine = None
    eprec = man["precision"]
    for e in man.get("engines") or []:
        engine = bundle / e["path"]
        eprec = "fp16" if e.get("onnx", "").endswith(".fp16.onnx") else "fp32"
        break
    return run_parity(
        model,
        cc,
        mlo,
        labels=labels,
        inputs=what,
        graphs=graphs,
        engine=engine,
        engine_precision=eprec,
        threshold=float(man["threshold"]),
        tol=tol,
    )


def model_from_manifest(man: dict[str, Any]) -> XPruning:
    src = man["source_checkpoint"]
    if src.get("path"):
        from .train.checkpoint import load_checkpoint

        model, _ = load_checkpoint(src["path"])
        return model
    if src.get("random_seed") is not None:
        from .config import ModelConfig
        from .model.xpruning import build_model

        with _seeded(int(src["random_seed"])):
            return build_model(ModelConfig.from_dict(man["model_config"])).eval()
    raise ParityError("the manifest names no source checkpoint and no random seed: nothing to compare against")


@contextlib.contextmanager
def _seeded(seed: int) -> Any:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def random_model(config: Any, seed: int = 0) -> XPruning:
    """Random weights, reproducible from `seed` (recorded in the manifest for `xpr validate`)."""
    from .model.xpruning import build_model

    with _seeded(seed):
        return build_model(config).eval()


def write_report(report: ParityReport, path: str | Path) -> None:
    from .io import write_json

    write_json(path, report.to_dict())


__all__ = ["ParityReport", "Tolerances", "run_parity", "synthetic_inputs", "validate_bundle", "write_report"]


def update_bundle_report(bundle: str | Path, report: ParityReport, out: str | Path | None = None) -> Path:
    """Write the report; into the bundle by default, keeping the manifest's SHA-256 of parity.json true."""
    from .io import sha256_file, write_json

    bundle = Path(bundle)
    dest = Path(out) if out is not None else bundle / "parity.json"
    write_report(report, dest)
    if dest.resolve() == (bundle / "parity.json").resolve():
        man_path = bundle / "manifest.json"
        import json

        man = json.loads(man_path.read_text())
        man["files"]["parity.json"] = sha256_file(dest)
        write_json(man_path, man)
    return dest
