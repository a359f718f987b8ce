"""Running the candidates: each built by the runner factory as `xpr predict` runs it, all through
polygraphy's `Comparator.run`, the gated output checked by `Comparator.compare_accuracy`; then the
pruning-aware comparison (`compare.py`) on the same results. Also `xpr export`'s validate-after-export."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import BundleView, rewrite_file
from ..runners import BACKENDS, ModelSource, logits_of, make_runner, open_source, probabilities, source_model
from ..runners.eager import score_name
from ..runners.registry import Gate
from .compare import RunResult, _skipped, batch_invariance, compare
from .inputs import dataset_inputs, synthetic_inputs
from .report import CandidateParity, ParityError, ParityReport, write_parity_report


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


@dataclass
class Candidate:
    """A runner to compare, or the reason it cannot run here."""

    name: str
    gate: Gate
    runner: Any | None
    skip: str = ""
    served: bool = False


def candidates(source: ModelSource, model: Any) -> list[Candidate]:
    """Every parity row the registered backends declare (registry order), each runner built as
    `xpr predict` runs it, or the reason it cannot run here."""
    out: list[Candidate] = []
    view = source.bundle
    served = str(view.graph()) if view is not None else ""
    for spec in BACKENDS.values():
        for row in spec.parity:
            assert row.candidate is not None, f"{spec.name}: parity row {row.name} has no candidate"
            runner, why = row.candidate(source, model, row)
            if runner is None and row.optional:
                continue
            is_served = runner is not None and str(getattr(runner, "graph", "")) == served
            out.append(Candidate(row.name, row.gate, runner, why, served=is_served))
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
    save_outputs: str | Path | None = None,
    extra: list[Candidate] | None = None,
) -> ParityReport:
    """Run the reference and every candidate through polygraphy, then compare (module docstring)."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc

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
            out = getattr(source.io, c.gate.output)
            func = SimpleCompareFunc(
                atol={out: c.gate.atol}, rtol={out: 0.0}, check_shapes=True,
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
            labels=labels, gate=c.gate, matched=verdicts[c.name],
        )  # fmt: skip
        row.runner, row.served = r.describe(), c.served
        report_rows.append(row)
    files = source.bundle.manifest["files"] if source.bundle is not None else {}
    certified = {rel: h for rel, h in files.items() if rel != source.bundle.manifest.get("parity")}  # type: ignore[union-attr]
    inv = _batch_invariance(source, runnable, results, cc, mlo) if source.bundle is not None else []
    gates = {c.name: asdict(c.gate) for c in cands}
    return ParityReport(len(cc), inputs, threshold, gates, report_rows, validated_files=certified, batch_invariance=inv)


def _batch_invariance(
    source: ModelSource, runnable: list[Candidate], results: Any, cc: np.ndarray, mlo: np.ndarray
) -> list[dict[str, Any]]:
    """Dynamic-batch bundles: every bundle candidate again in batches of max_batch (the last one may
    be smaller), against its own run above (batches of the manifest's opt batch)."""
    from polygraphy.comparator import Comparator

    view = source.bundle
    if view is None or not view.dynamic_batch:
        return []
    n = min(int(view.max_batch or 1), len(cc))
    if n <= view.batch:
        return []
    data = [{source.io.cc: cc[i : i + n], source.io.mlo: mlo[i : i + n]} for i in range(0, len(cc), n)]
    out = []
    for c in runnable:
        r: Any = c.runner
        if r.backend == "eager":
            continue
        with _quiet_polygraphy():
            batched = Comparator.run([r], data_loader=data)
        atol = c.gate.atol
        out.append(batch_invariance(c.name, collect(results[r.name], r), collect(batched[r.name], r), n, atol))
    return out


def _save_results(results: Any, path: Path) -> None:
    """polygraphy's JSON (`polygraphy inspect data F`, `polygraphy run --load-outputs F`), atomically."""
    from ..io import atomic_path

    with atomic_path(path, suffix=".json") as tmp:
        results.save(str(tmp))


def validate_bundle(
    bundle: str | Path | ModelSource,
    *,
    data: str | Path | None = None,
    model: Any = None,
    samples: int = 8,
    seed: int = 0,
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
    return run_parity(source, cc, mlo, labels=labels, inputs=what, model=model, save_outputs=save_outputs)


def store_report(view: BundleView, report: ParityReport, out: str | Path | None = None) -> Path:
    """Write the report to `out`, or into the bundle as its parity.json (re-sealing the manifest)."""
    import json

    if out is not None and Path(out).resolve() != (view.root / "parity.json").resolve():
        write_parity_report(report, out)
        return Path(out)
    data = (json.dumps(report.to_dict(), indent=2, default=str) + "\n").encode()
    rewrite_file(view, "parity.json", data)
    return view.root / "parity.json"


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

    from ..export.bundle import ExportOptions, export_bundle

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
