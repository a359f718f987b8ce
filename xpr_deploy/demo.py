"""`xpr demo`: the whole life of the model on CPU, step by step, into one output folder.

Steps run in order; each gets the shared `DemoContext`, writes under `ctx.out / <step name>`,
and returns a small JSON-able summary (collected in `OUT/demo.json`). Later steps read what earlier
ones left in `ctx.artifacts` (e.g. "data", "run", "checkpoint", "eval"). To add a step, append
`Step("name", function, "what it shows")` to `STEPS` (or insert it where it belongs):

    def export_step(ctx: DemoContext) -> dict:
        bundle = export_checkpoint(ctx.artifacts["checkpoint"], ctx.out / "export")
        ctx.artifacts["bundle"] = bundle
        return {"bundle": str(bundle)}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import XprError
from .io import write_json

#: demo sizes: small enough for a 2-core laptop (about two minutes for training), large enough to
#: learn from random init: 80 breasts (50 to train on, batch 8) gave held-out AUC 0.75, 320 gave
#: 0.92-1.0 over four data + training seeds
DEMO_BREASTS = 320
DEMO_STORED_SIZE = (448, 224)
DEMO_EPOCHS = 6


@dataclass
class DemoContext:
    out: Path
    config: str = "tiny"
    device: str = "cpu"
    seed: int = 0
    breasts: int = DEMO_BREASTS
    epochs: int = DEMO_EPOCHS
    quiet: bool = False
    artifacts: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DemoContext], dict[str, Any]]
    help: str = ""


@dataclass
class DemoResult:
    out: Path
    steps: list[dict[str, Any]]  # name, seconds, ok, summary | error

    @property
    def ok(self) -> bool:
        return all(s["ok"] for s in self.steps)


# ---- the steps ------------------------------------------------------------------------------


def synth_step(ctx: DemoContext) -> dict[str, Any]:
    from .data.synth import write_synthetic

    root = ctx.out / "data"
    s = write_synthetic(root, ctx.breasts, "vindr", size=DEMO_STORED_SIZE, seed=ctx.seed, overwrite=True)
    ctx.artifacts["data"] = root
    return {"data": str(root), "breasts": s.breasts, "positives": s.positives}


def train_step(ctx: DemoContext) -> dict[str, Any]:
    import shutil

    from .train.loop import TrainConfig, train

    run = ctx.out / "run"
    shutil.rmtree(run, ignore_errors=True)  # the demo always starts a fresh run
    cfg = TrainConfig(
        data=str(ctx.artifacts["data"]),
        out=str(run),
        config=ctx.config,
        **demo_train_settings(ctx.epochs),
        device=ctx.device,
        seed=ctx.seed,
        cache=str(ctx.out / "cache"),
        progress=not ctx.quiet,
    )
    res = train(cfg)
    ctx.artifacts["run"] = run
    ctx.artifacts["checkpoint"] = res.best_dir
    val = res.best_metrics or {}
    return {
        "run": str(run),
        "checkpoint": str(res.best_dir),
        "best_epoch": res.best_epoch,
        "val_auc": val.get("auc"),
        "train_seconds": round(res.wall_seconds, 1),
        "finished": res.finished,
    }


def eval_step(ctx: DemoContext) -> dict[str, Any]:
    from .train.evaluate import evaluate_checkpoint

    rep = evaluate_checkpoint(
        ctx.artifacts["checkpoint"], ctx.artifacts["data"], "test", device=ctx.device, cache=ctx.out / "cache"
    )
    out = ctx.out / "eval"
    write_json(out / "eval.json", rep.to_dict())
    rep.write_plots(out)
    ctx.artifacts["eval"] = rep
    points = _at_operating_points(rep)
    write_json(out / "operating_points.json", points)
    for line in rep.summary_lines():
        ctx.log(f"  {line}")
    for name, p in points.items():
        ctx.log(f"  at {name} (threshold {p['threshold']:.4f}): validation sensitivity {_f(p['val_sensitivity'])} "
                f"specificity {_f(p['val_specificity'])}; test sensitivity {_f(p['test_sensitivity'])} "
                f"specificity {_f(p['test_specificity'])}")  # fmt: skip
    return {
        "auc": rep.metrics.auc, "auc_ci": list(rep.metrics.auc_ci), "n": rep.metrics.n, "eval": str(out),
        "operating_point": rep.operating_point.name if rep.operating_point else rep.threshold_method,
        "threshold": rep.metrics.threshold, "operating_points": points,
    }  # fmt: skip


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _at_operating_points(rep: Any) -> dict[str, Any]:
    """Every operating point of the checkpoint on the test split: `xpr eval --operating-point NAME` for each."""
    from .train.checkpoint import read_meta
    from .train.metrics import binary_metrics
    from .train.operating_points import points_from

    meta = read_meta(rep.checkpoint) if rep.checkpoint else {}
    out = {}
    for name, p in points_from(meta.get("operating_points")).items():
        m = binary_metrics(rep.labels, rep.probs, p.threshold).to_dict()
        out[name] = {"threshold": p.threshold, "val_sensitivity": p.sensitivity, "val_specificity": p.specificity,
                     "test_sensitivity": m["sensitivity"], "test_specificity": m["specificity"]}  # fmt: skip
    return out


def demo_train_settings(epochs: int = DEMO_EPOCHS) -> dict[str, Any]:
    """Training settings that learn the synthetic lesions from random init on CPU (tests use them too).

    Batch 4 at lr 3e-4 rather than 8 at 5e-4: twice the optimizer steps per epoch, and the larger
    step size sometimes collapsed a run to a constant output (loss ln 2) before it found the lesions.
    """
    return {"epochs": epochs, "batch_size": 4, "lr": 3e-4, "prune_warmup": 2, "holdout": 0.25, "val_fraction": 0.15}


def export_step(ctx: DemoContext) -> dict[str, Any]:
    """`xpr export --fp16 --with-selection`: FP32 + FP16 graphs, the sm_86 engine when TensorRT-RTX is
    installed, then parity on the sealed bundle (parity.json)."""
    from .export.bundle import ExportOptions, load_source
    from .validate import export_and_validate

    model, meta = load_source(ctx.artifacts["checkpoint"])
    out = Path(ctx.out) / "export"
    res = export_and_validate(model, meta, out, ExportOptions(fp16=True, with_selection=True, parity_samples=4))
    ctx.artifacts["bundle"] = out
    by = {c.name: c for c in res.parity.candidates} if res.parity is not None else {}
    for c in by.values():
        ctx.log(f"  parity {c.name}: {c.status} {c.reason or c.gate}")
    if not res.ok:
        raise DemoError(f"{out}: exported, but parity failed (see parity.json)")
    m = res.view.manifest
    return {
        "bundle": str(out),
        "bundle_sha256": res.view.digest,
        "graphs": m["graphs"],
        "engine": m["engines"][0]["path"] if m["engines"] else None,
        "engine_skipped": m["engine_skipped"],
        "parity_ok": res.ok,
        "fp32_max_abs_logits": by["onnxruntime-fp32"].max_abs_logits if by else None,
        "fp16_max_abs_prob": by["onnxruntime-fp16"].max_abs_prob_all if by else None,
        "timings": res.bundle.timings,
    }


def _bad_study(folder: Path, example: Path) -> Path:
    """A study folder a PACS export might really contain: a non-DICOM file and a truncated image."""
    from .io import write_bytes

    write_bytes(folder / "README.bin", b"exported by a PACS; not an image\n")
    raw = example.read_bytes()
    write_bytes(folder / "truncated.dcm", raw[: len(raw) * 2 // 3])  # pixel data cut short
    return folder


def predict_step(ctx: DemoContext) -> dict[str, Any]:
    """`xpr predict` on the held-out studies (plus a broken one) with heatmaps; compared with eval,
    and the exported bundle's served graph on the same studies."""
    from .predict import predict

    data = Path(ctx.artifacts["data"])
    ckpt = ctx.artifacts["checkpoint"]
    out = Path(ctx.out) / "predict"
    ev = ctx.artifacts.get("eval")
    eval_probs = {(b["study"], b["laterality"]): float(b["prob"]) for b in (ev.breasts if ev is not None else [])}
    folders = sorted({data / "images" / s for s, _ in eval_probs}) or sorted((data / "images").iterdir())[:4]
    bad = _bad_study(out / "inbox-broken-study", next(folders[0].iterdir()))
    rep = predict(ckpt, [*folders, bad], backend="eager", heatmaps_dir=out / "heatmaps", dicom_out=out / "dicom")
    # VinDr's study id is the images/<study_id>/ folder; predict names studies by StudyInstanceUID
    by_breast = {(Path(b.cc).parent.name, b.laterality): b.prob for b in rep.breasts}
    common = sorted(set(by_breast) & set(eval_probs))
    vs_eval = max((abs(by_breast[k] - eval_probs[k]) for k in common), default=None)
    summary: dict[str, Any] = {
        "breasts": len(rep.breasts),
        "rejects": len(rep.rejects),
        "max_abs_diff_vs_eval": vs_eval,
        "operating_point": rep.operating_point,
        "threshold": rep.threshold,
        "heatmaps": str(out / "heatmaps"),
        "dicom": {"folder": str(out / "dicom"), **_check_dicom(rep)},
    }
    bundle = ctx.artifacts.get("bundle")
    if bundle is not None:  # the exported graph on the same studies
        onnx = predict(Path(bundle), folders, backend="onnx")
        onnx_probs = {(Path(b.cc).parent.name, b.laterality): b.prob for b in onnx.breasts}
        summary["onnx_graph"] = onnx.runner.get("graph")
        summary["onnx_runner"] = onnx.runner
        summary["max_abs_diff_onnx_vs_eager"] = max(
            (abs(onnx_probs[k] - by_breast[k]) for k in onnx_probs if k in by_breast), default=None
        )
    path = out / "predictions.json"
    write_json(path, {**rep.to_dict(), "compared": summary})
    ctx.artifacts["predictions"] = path
    return {**summary, "predictions": str(path)}


def _check_dicom(rep: Any) -> dict[str, Any]:
    """The predict step's DICOM results checked: dciodvfy errors, and the SR's probabilities vs printed."""
    import pydicom

    from .dicom_out import dciodvfy_errors, sr_probabilities

    errors: dict[str, int] | None = {}
    printed = {}
    for b in rep.breasts:
        study = str(pydicom.dcmread(b.cc, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        printed[(study, b.laterality)] = b.prob
    read_back: dict[tuple[str, str], float] = {}
    for p in rep.dicom:
        errs = dciodvfy_errors(p)
        if errs is None:
            errors = None
        elif errors is not None:
            errors[Path(p).name] = len(errs)
        if Path(p).name.startswith("sr_"):
            study, probs = sr_probabilities(p)
            read_back.update({(study, lat): v for lat, v in probs.items()})
    diff = max((abs(read_back[k] - printed[k]) for k in printed if k in read_back), default=None)
    return {
        "objects": len(rep.dicom),
        "srs": sum(Path(p).name.startswith("sr_") for p in rep.dicom),
        "dciodvfy_errors": None if errors is None else sum(errors.values()),
        "sr_breasts_read_back": len(read_back),
        "sr_max_abs_diff_vs_printed": diff,
    }


def bench_step(ctx: DemoContext) -> dict[str, Any]:
    """`xpr bench`: a short bench of the demo model, pruned against dense, eager and ONNX Runtime.

    Tiny config on a shared CPU: the figures show the report and the ratio machinery, not speed.
    """
    from .bench import bench_eager, bench_onnx
    from .train.checkpoint import load_checkpoint

    out = Path(ctx.out) / "bench"
    model, _ = load_checkpoint(str(ctx.artifacts["checkpoint"]))
    reports = {"eager": bench_eager(model, runs=3, warmup=1, threads=2, dense=True)}
    bundle = ctx.artifacts.get("bundle")
    if bundle is not None:
        reports["onnx"] = bench_onnx(Path(bundle), runs=3, warmup=1, threads=2, dense=True, precision="fp32")
    for name, rep in reports.items():
        write_json(out / f"{name}.json", rep)
        ctx.log(f"  {name}: median {rep['median_ms']:.1f} ms, pruned/dense {rep['pruned_over_dense']:.2f}")
    ctx.artifacts["bench"] = out
    return {
        name: {k: rep.get(k) for k in ("median_ms", "p99_ms", "peak_mem_mb", "dense_median_ms", "pruned_over_dense")}
        for name, rep in reports.items()
    } | {"reports": str(out)}


def report_step(ctx: DemoContext) -> dict[str, Any]:
    """REPORT.md over everything the earlier steps wrote (keep this step last)."""
    from .demo_report import step_from_demo, write_demo_report

    root = Path(ctx.out)
    steps = [step_from_demo(r, root) for r in ctx.artifacts.get("steps") or []]
    notes = ["Machine-readable summary: [demo.json](demo.json) (written as the demo finishes, after this report)."]
    path = write_demo_report(root, steps, ctx.artifacts.get("predictions"), title="xpr demo report", notes=notes)
    return {"report": str(path)}


class DemoError(XprError):
    """A demo step produced something wrong (e.g. an exported bundle that fails its own parity)."""


STEPS: list[Step] = [
    Step("synth", synth_step, "synthetic VinDr-layout DICOM studies, lesions in both views for malignant breasts"),
    Step("train", train_step, "X-Pruning (tiny) from random init, best checkpoint by validation AUC"),
    Step("eval", eval_step, "held-out test breasts: AUC with DeLong CI, ROC, confusion matrix"),
    Step("export", export_step, "xpr export --fp16: ONNX bundle, TensorRT-RTX sm_86 engine, parity vs eager"),
    Step("predict", predict_step, "xpr predict on the held-out studies + a broken one: heatmaps, |Δ| vs eval"),
    Step("bench", bench_step, "xpr bench: eager and ONNX Runtime, pruned vs dense, latency and peak memory"),
    Step("report", report_step, "REPORT.md linking every artefact (keep this step last)"),
]


def run_demo(
    out: str | Path, steps: list[Step] | None = None, only: list[str] | None = None, **ctx_kw: Any
) -> DemoResult:
    """Run the demo steps in order (all, or `only` those named); stop at the first failure."""
    ctx = DemoContext(out=Path(out), **ctx_kw)
    ctx.out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in (steps or STEPS) if not only or s.name in only]
    record: list[dict[str, Any]] = []
    ctx.artifacts["steps"] = record  # the report step reads what ran before it
    for step in todo:
        ctx.log(f"[demo] {step.name}: {step.help}")
        t0 = time.perf_counter()
        try:
            summary = step.run(ctx)
        except Exception as exc:
            record.append({"name": step.name, "ok": False, "seconds": round(time.perf_counter() - t0, 1),
                           "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            write_json(ctx.out / "demo.json", {"ok": False, "steps": record})
            raise
        record.append({"name": step.name, "ok": True, "seconds": round(time.perf_counter() - t0, 1), **summary})
        ctx.log(f"[demo] {step.name}: done in {record[-1]['seconds']} s")
    write_json(ctx.out / "demo.json", {"ok": True, "steps": record})
    return DemoResult(ctx.out, record)
