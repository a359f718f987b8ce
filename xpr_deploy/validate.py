"""Parity (SPEC §6): eager FP32 is the reference; ONNX Runtime FP32 / FP16, eager FP16 and the engine
are compared against it on realistic inputs (synthetic studies or a dataset), never only on noise.

Every candidate is built by the runner factory with the settings `xpr predict` uses on this machine,
run through polygraphy's `Comparator.run`, and its logits / P(malignant) compared with
`Comparator.compare_accuracy` (`SimpleCompareFunc`, i.e. `CompareFunc.simple`, per-output tolerances). xpr's pruning-aware
layer reads the same run results:

Per candidate: max |Δ| of logits and of P(malignant), decision flips at the operating threshold,
ΔAUC when labels exist, and per block and view the Jaccard of the kept-window sets with the
reference's K-th/(K+1)-th score margin. A selection difference whose windows all score within a
stated epsilon of the reference's K/K+1 boundary is a *tie* (reported, not a failure); any other
difference is a *flip* and fails. Samples with a tie are left out of the |Δ| gate (a tie changes
what the model computes) and reported apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import BlockKey, BundleView, rewrite_file
from .errors import BackendUnavailable, XprError
from .runners import ModelSource, logits_of, make_runner, open_source, probabilities, source_model
from .runners.eager import score_name


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
    runner: dict[str, Any] = field(default_factory=dict)  # backend, provider, precision as predict runs it
    served: bool = False  # the configuration `xpr predict` uses for this bundle by default
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
    #: SHA-256 of the bundle files this report certifies (graphs, engines; not parity.json itself,
    #: whose insertion re-seals the manifest): what a reader checks the report against
    validated_files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "validated_files": self.validated_files,
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
    """One runner's outputs over every sample, concatenated: what the pruning-aware layer reads."""

    logits: np.ndarray  # [n, 2] float64
    prob: np.ndarray  # [n] float64
    selection: dict[BlockKey, np.ndarray]  # [n, K]
    scores: dict[BlockKey, np.ndarray] = field(default_factory=dict)  # reference only: [n, N]


def feeds(cc: np.ndarray, mlo: np.ndarray, io: Any, batch: int) -> list[dict[str, np.ndarray]]:
    """Feed dicts of `batch` samples (the bundle's static batch)."""
    if len(cc) % batch:
        raise ParityError(f"{len(cc)} samples do not fill batches of {batch}: give a multiple of {batch}")
    return [{io.cc: cc[i : i + batch], io.mlo: mlo[i : i + batch]} for i in range(0, len(cc), batch)]


def collect(iterations: Any, runner: Any) -> RunResult:
    """polygraphy IterationResults of one runner -> RunResult."""
    io = runner.io
    logits = np.concatenate([logits_of(it, io) for it in iterations])
    prob = np.concatenate([probabilities(it, io) for it in iterations])
    sel = {key: np.concatenate([np.asarray(it[name]) for it in iterations]) for name, key in runner.selection.items()}
    scores = {}
    for key in sel:
        name = score_name(key)
        if name in iterations[0]:
            scores[key] = np.concatenate([np.asarray(it[name], dtype=np.float64) for it in iterations])
    return RunResult(logits, prob, sel, scores)


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


def gated_output(kind: str) -> str:
    """The output role each kind of candidate is gated on (FP32: logits; reduced precision: prob)."""
    return "logits" if kind == "fp32" else "prob"


def tolerance(kind: str, tol: Tolerances) -> float:
    return {"fp32": tol.logits_fp32, "fp16": tol.prob_fp16}.get(kind, tol.prob_engine)


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
    matched: list[bool] | None = None,  # polygraphy's verdict per sample on the gated output
) -> CandidateParity:
    """The pruning-aware layer: kept-set ties vs flips, |Δ| with and without tie samples, decisions, ΔAUC."""
    eps = tol.tie_eps_fp32 if kind == "fp32" else tol.tie_eps_fp16
    blocks, tie_samples = compare_selection(ref, cand, k_of, eps)
    clean = np.array([i not in tie_samples for i in range(len(ref.prob))])
    dl = np.abs(cand.logits - ref.logits).max(axis=1)
    dp = np.abs(cand.prob - ref.prob)
    res = CandidateParity(
        name,
        "pass",
        max_abs_logits=float(dl[clean].max()) if clean.any() else None,
        max_abs_prob=float(dp[clean].max()) if clean.any() else None,
        max_abs_logits_all=float(dl.max()),
        max_abs_prob_all=float(dp.max()),
        tie_samples=len(tie_samples),
        decision_flips=int(np.sum((ref.prob >= threshold) != (cand.prob >= threshold))),
        blocks=blocks,
    )
    if labels is not None:
        a_ref, a_c = _auc(labels, ref.prob), _auc(labels, cand.prob)
        res.delta_auc = None if a_ref is None or a_c is None else a_c - a_ref
    if matched is None:  # no polygraphy verdict given: the same elementwise rule on the arrays
        d = dl if kind == "fp32" else dp
        matched = [bool(x <= tolerance(kind, tol)) for x in d]
    lim = tolerance(kind, tol)
    problems = []
    if res.selection_flips:
        problems.append(f"{res.selection_flips} kept-set flips beyond the tie epsilon {eps:g}")
    if kind == "fp32":  # exact-arithmetic twin: gate on the samples without a selection tie
        res.gate = f"max|Δlogits| <= {lim:g} on tie-free samples, no flips"
        if not clean.any():
            problems.append("every sample has a selection tie: nothing to gate (use trained weights)")
        elif not all(m for m, c in zip(matched, clean, strict=True) if c):
            problems.append(f"max|Δlogits| {res.max_abs_logits:.3g} > {lim:g}")
    else:  # reduced precision: gate on every sample, ties included
        res.gate = f"max|Δprob| <= {lim:g} on all samples, no flips"
        if not all(matched):
            problems.append(f"max|Δprob| {res.max_abs_prob_all:.3g} > {lim:g}")
    if problems:
        res.status, res.reason = "fail", "; ".join(problems)
    return res


def _skipped(name: str, reason: str, runner: dict[str, Any] | None = None) -> CandidateParity:
    return CandidateParity(name, "skipped", reason, runner=runner or {})


# ---- the run --------------------------------------------------------------------------------
@dataclass
class Candidate:
    """A runner to compare, or the reason it cannot run here."""

    name: str
    kind: str  # fp32 | fp16 | engine
    runner: Any | None
    skip: str = ""
    served: bool = False


def candidates(source: ModelSource, model: Any) -> list[Candidate]:
    """ONNX Runtime on each graph, eager FP16 islands, and the engine: each as `xpr predict` runs it."""
    out: list[Candidate] = []
    view = source.bundle
    graphs = view.graphs if view is not None else {}
    served = str(view.graph()) if view is not None else ""
    for prec in ("fp32", "fp16"):
        name = f"onnxruntime-{prec}"
        if prec not in graphs:
            out.append(Candidate(name, prec, None, f"no {prec.upper()} graph in the bundle"))
            continue
        r = make_runner(source, "onnx", precision=prec, all_selections=True, name=name)
        out.append(Candidate(name, prec, r, served=str(graphs[prec]) == served))
    out.append(Candidate("eager-fp16", "fp16", make_runner(
        source, "eager", precision="fp16", all_selections=True, model=model, name="eager-fp16")))  # fmt: skip
    if view is None or not view.engines:
        why = (view.manifest.get("engine_skipped") if view is not None else None) or "none was built"
        out.append(Candidate("engine", "engine", None, f"no engine in the bundle ({why})"))
    else:
        from .engine.runtime import check_engine

        ref = view.engine()
        try:
            check_engine(ref)
        except BackendUnavailable as exc:
            out.append(Candidate("engine", "engine", None, str(exc)))
        else:
            r = make_runner(source, "engine", name="engine")
            out.append(Candidate("engine", "fp16" if ref.precision == "fp16" else "engine", r))
    return out


def _quiet_polygraphy() -> Any:
    from polygraphy.logger import G_LOGGER

    return G_LOGGER.verbosity(G_LOGGER.ERROR)


def run_parity(
    source: ModelSource,
    cc: np.ndarray,
    mlo: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    inputs: str = "",
    model: Any = None,
    tol: Tolerances | None = None,
    save_outputs: str | Path | None = None,
    extra: list[Candidate] | None = None,
) -> ParityReport:
    """Run the reference and every candidate through polygraphy, then compare (module docstring)."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    tol = tol or Tolerances()
    model = (model if model is not None else source_model(source)).float().eval()
    k_of = {key: blk.k for key, blk in model.blocks()}
    batch = source.bundle.batch if source.bundle is not None else 1
    threshold = source.threshold
    ref_runner = make_runner(source, "eager", all_selections=True, scores=True, model=model, name="eager-fp32")
    ref_runner.batch = batch
    ref_name = ref_runner.name
    cands = [*candidates(source, model), *(extra or [])]
    for c in cands:
        if c.runner is not None and c.runner.backend == "eager":
            c.runner.batch = batch
    runnable = [c for c in cands if c.runner is not None]
    data = feeds(cc, mlo, source.io, batch)
    with _quiet_polygraphy():
        results = Comparator.run([ref_runner, *(c.runner for c in runnable)], data_loader=data)
        if save_outputs is not None:
            _save_results(results, Path(save_outputs))
        verdicts = {}
        for c in runnable:
            role = gated_output(c.kind)
            out = getattr(source.io, role)
            func = SimpleCompareFunc(
                atol={out: tolerance(c.kind, tol)}, rtol={out: 0.0}, check_shapes=True,
                find_output_func=lambda name, _i, _it, out=out: [name] if name == out else [],
            )  # fmt: skip
            acc = Comparator.compare_accuracy(results, comparisons=[(0, 1 + runnable.index(c))], compare_func=func)
            per_iter = acc[0][(ref_name, c.runner.name)]  # type: ignore[union-attr]
            verdicts[c.name] = [bool(it[out]) for it in per_iter for _ in range(batch)]
    ref = collect(results[ref_name], ref_runner)
    report_rows: list[CandidateParity] = []
    for c in cands:
        if c.runner is None:
            report_rows.append(_skipped(c.name, c.skip))
            continue
        r: Any = c.runner
        row = compare(
            c.name, ref, collect(results[r.name], r), k_of=k_of, threshold=threshold,
            labels=labels, tol=tol, kind=c.kind, matched=verdicts[c.name],
        )  # fmt: skip
        row.runner, row.served = r.describe(), c.served
        report_rows.append(row)
    files = source.bundle.manifest["files"] if source.bundle is not None else {}
    certified = {rel: h for rel, h in files.items() if rel != source.bundle.manifest.get("parity")}  # type: ignore[union-attr]
    return ParityReport(len(cc), inputs, threshold, tol, report_rows, validated_files=certified)


def _save_results(results: Any, path: Path) -> None:
    """polygraphy's JSON (`polygraphy inspect data F`, `polygraphy run --load-outputs F`), atomically."""
    from .io import atomic_path

    with atomic_path(path, suffix=".json") as tmp:
        results.save(str(tmp))


# ---- bundles --------------------------------------------------------------------------------
def validate_bundle(
    bundle: str | Path | ModelSource,
    *,
    data: str | Path | None = None,
    model: Any = None,
    samples: int = 8,
    seed: int = 0,
    tol: Tolerances | None = None,
    save_outputs: str | Path | None = None,
) -> ParityReport:
    """Parity of a verified bundle's graphs (and engine) against its source model in eager FP32.

    The eager model comes from `model`, else the manifest's source checkpoint (its weights hash
    checked), else (random-weight exports) the recorded seed: rebuilt bit for bit with the same torch.
    """
    source = bundle if isinstance(bundle, ModelSource) else open_source(bundle)
    if source.bundle is None:
        raise ParityError(f"{source.path}: validate takes an export bundle (run `xpr export` first)")
    size = tuple(source.cfg.img_size)
    if data is not None:
        cc, mlo, labels = dataset_inputs(data, size, limit=samples)  # type: ignore[arg-type]
        what = f"dataset {data} ({len(cc)} pairs)"
    else:
        cc, mlo, labels = synthetic_inputs(size, samples, seed)  # type: ignore[arg-type]
        what = f"synthetic studies (xpr synth renderer, seed {seed}, {samples} pairs)"
    return run_parity(source, cc, mlo, labels=labels, inputs=what, model=model, tol=tol, save_outputs=save_outputs)


def write_report(report: ParityReport, path: str | Path) -> None:
    from .io import write_json

    write_json(path, report.to_dict())


def store_report(view: BundleView, report: ParityReport, out: str | Path | None = None) -> Path:
    """Write the report to `out`, or into the bundle as its parity.json (re-sealing the manifest)."""
    import json

    if out is not None and Path(out).resolve() != (view.root / "parity.json").resolve():
        write_report(report, out)
        return Path(out)
    data = (json.dumps(report.to_dict(), indent=2, default=str) + "\n").encode()
    rewrite_file(view, "parity.json", data)
    return view.root / "parity.json"



__all__ = ["ParityReport", "Tolerances", "run_parity", "synthetic_inputs", "validate_bundle", "write_report"]


# ---- export, then validate the sealed bundle (as optimum does) ------------------------------
@dataclass
class ValidatedExport:
    bundle: Any  # export.bundle.Bundle
    parity: ParityReport | None
    view: BundleView

    @property
    def ok(self) -> bool:
        return self.parity is None or self.parity.ok

    @property
    def path(self) -> Path:
        return self.view.root

    @property
    def manifest(self) -> dict[str, Any]:
        return self.view.manifest

    @property
    def engine(self) -> Any:
        return self.bundle.engine

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.bundle.timings)


def export_and_validate(model: Any, meta: dict[str, Any], out: str | Path, options: Any = None) -> ValidatedExport:
    """`xpr export`: write the bundle, then validate what a reader of it gets: the verified bundle,
    through the same runners predict uses; parity.json is stored into the bundle and re-sealed."""
    import time

    from .export.bundle import ExportOptions, export_bundle

    opts = options or ExportOptions()
    b = export_bundle(model, meta, out, opts)
    source = open_source(out)
    if opts.parity_samples <= 0:
        assert source.bundle is not None
        return ValidatedExport(b, None, source.bundle)
    t0 = time.perf_counter()
    cc, mlo, labels = synthetic_inputs(tuple(source.cfg.img_size), opts.parity_samples, opts.parity_seed)  # type: ignore[arg-type]
    what = f"synthetic studies (xpr synth renderer, seed {opts.parity_seed}, {opts.parity_samples} pairs)"
    report = run_parity(source, cc, mlo, labels=labels, inputs=what, model=model)
    assert source.bundle is not None
    store_report(source.bundle, report)
    b.timings["parity_s"] = round(time.perf_counter() - t0, 2)
    view = BundleView.open(out)
    b.manifest = view.manifest
    return ValidatedExport(b, report, view)
