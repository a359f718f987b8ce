"""`xpr export`, `xpr validate`, `xpr bench`, `xpr predict`, `xpr triton`: bundles, parity, timing, serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer
from rich.table import Table

from ..bundle.schema import HW_COMPAT, TRT_FLAVOURS
from ..runners.factory import BACKENDS
from . import triton_options as T
from .common import JsonFlag, Preset, RunnerBackendOpt, _print_json, console, err_console, safe, say
from .data import PreferOpt, StrictSelectionOpt
from .node import TritonModelOpt, TritonOpt

if TYPE_CHECKING:
    from ..dicomweb import DicomWebResult
    from ..results import PredictReport
    from ..validate.run import ValidatedExport

app = typer.Typer()
#: the registered backends `xpr bench --onnx` can time (bench.onnx.ort_backends, without importing bench)
_ORT_BACKENDS = " | ".join(n for n, s in BACKENDS.items() if s.ort)


def _runner_cell(r: dict) -> str:
    """backend / provider / precision of a parity row, as `xpr predict` would run it."""
    if not r:
        return ""
    where = r.get("provider") or r.get("device") or r.get("runtime") or ""
    where = str(where).replace("ExecutionProvider", "")
    return " / ".join(str(x) for x in (r.get("backend"), where, r.get("precision")) if x)


def _parity_table(report: object) -> Table:
    t = Table(
        "candidate",
        "runs as",
        "status",
        "max|Δlogits|",
        "max|Δprob|",
        "kept-set J min",
        "ties",
        "flips",
        "decision flips",
        "ΔAUC",
        "gate / reason",
    )
    for c in report.candidates:  # type: ignore[attr-defined]

        def f(v: object) -> str:
            return "" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)

        col = {"pass": "green", "fail": "red"}.get(c.status, "yellow")
        t.add_row(
            safe(c.name) + (" *" if c.served else ""),
            safe(_runner_cell(c.runner)),
            f"[{col}]{c.status}[/]",
            f(c.max_abs_logits_all),
            f(c.max_abs_prob_all),
            "" if c.min_jaccard is None else f"{c.min_jaccard:.3f}",
            f(c.selection_ties or None),
            f(c.selection_flips or None),
            f(c.decision_flips),
            f(c.delta_auc),
            safe(c.reason or c.gate),
        )
    return t


#: `xpr export`'s options too long to declare in its signature
ExportCheckpointArg = Annotated[
    Path | None, typer.Argument(help="checkpoint folder (omit with --config for random weights)")
]
ExportConfigOpt = Annotated[
    Preset | None, typer.Option("--config", "-c", help="tiny | paper; random weights without CHECKPOINT")
]
ExportWithSelectionOpt = Annotated[bool, typer.Option("--with-selection", help="kept window indices as extra outputs")]
ExportEngineOpt = Annotated[
    bool | None,
    typer.Option("--engine/--no-engine", help="build the engine (default: when a TensorRT flavour is installed)"),
]
ExportTrtFlavourOpt = Annotated[
    str, typer.Option("--trt-flavour", help=f"TensorRT that builds the engine: auto | {' | '.join(TRT_FLAVOURS)}")
]
ExportMaxBatchOpt = Annotated[
    int | None, typer.Option("--max-batch", help="dynamic batch axis 1..N (K stays per-sample static)")
]
ExportParitySamplesOpt = Annotated[
    int, typer.Option("--parity-samples", help="synthetic pairs to validate on (0: skip)")
]
ExportExternalDataOpt = Annotated[
    bool, typer.Option("--external-data", help="weights in <graph>.data beside each graph (always past 2 GB)")
]
ExportInt8Opt = Annotated[
    bool, typer.Option("--int8", help="also model.int8.onnx: INT8 QDQ graph for ONNX Runtime on CPU (--calib)")
]
ExportCalibOpt = Annotated[
    Path | None, typer.Option("--calib", help="with --int8: dataset whose training split calibrates it")
]
ExportCalibMethodOpt = Annotated[str, typer.Option("--calib-method", help="with --int8: percentile | entropy | minmax")]


@app.command()
def export(
    checkpoint: ExportCheckpointArg = None,
    config: ExportConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="bundle folder (default export/<name>)")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="strongly typed FP16 graph (FP32 islands) served")] = False,
    fp32: Annotated[bool, typer.Option("--fp32/--no-fp32", help="with --fp16 also write model.onnx")] = True,
    plugin: Annotated[bool, typer.Option("--plugin", help="window selection as XprWindowSelect custom nodes")] = False,
    with_selection: ExportWithSelectionOpt = False,
    engine: ExportEngineOpt = None,
    trt_flavour: ExportTrtFlavourOpt = "auto",
    sm: Annotated[int, typer.Option("--sm", help="target compute capability, e.g. 86 (RTX 3090)")] = 86,
    hw_compat: Annotated[str, typer.Option("--hw-compat", help=" | ".join(HW_COMPAT))] = "same",
    batch: Annotated[int, typer.Option("--batch", help="static batch size (with --max-batch: the profile's opt)")] = 1,
    max_batch: ExportMaxBatchOpt = None,
    parity_samples: ExportParitySamplesOpt = 8,
    seed: Annotated[int, typer.Option("--seed", help="seed for random weights")] = 0,
    external_data: ExportExternalDataOpt = False,
    int8: ExportInt8Opt = False,
    calib: ExportCalibOpt = None,
    calib_breasts: Annotated[int, typer.Option("--calib-breasts", help="with --int8: breasts to calibrate on")] = 16,
    calib_method: ExportCalibMethodOpt = "percentile",
    calib_seed: Annotated[int, typer.Option("--calib-seed", help="with --int8: seed choosing the breasts")] = 0,
) -> None:
    """ONNX bundle (static K, FP32/FP16/INT8, plugin mode) + sm_86 engine + manifest + parity.json."""
    from ..bundle.reader import check_bundle_target

    if out is not None:  # before loading anything: an existing file or foreign folder is refused (exit 2)
        check_bundle_target(out)
    from ..export.bundle import ExportOptions, check_export_request, default_name, load_source
    from ..export.int8 import int8_request
    from ..validate import export_and_validate

    opts = ExportOptions(
        fp16=fp16, plugin=plugin, with_selection=with_selection, fp32_graph=fp32, engine=engine,
        trt_flavour=trt_flavour, sm=sm, hw_compat=hw_compat, batch=batch, max_batch=max_batch,
        external_data=external_data, parity_samples=parity_samples,
        int8=int8_request(int8, calib, calib_breasts, calib_method, calib_seed),
    )  # fmt: skip
    check_export_request(opts)  # bad options, or an unavailable --trt-flavour, fail before any work
    model, meta = load_source(checkpoint, config, seed)
    dest = out or Path("export") / default_name(model, opts)
    b = export_and_validate(model, meta, dest, opts)
    _print_export(dest, b)
    if b.parity is not None and not b.parity.ok:
        say(err_console, f"{dest}: exported, but parity failed (see {dest / 'parity.json'})", "[red]error:[/]")
        raise typer.Exit(1)


def _print_export(dest: Path, b: ValidatedExport) -> None:
    """What was written (graphs, engines or why none), the manifest digest, timings, the parity table."""
    m = b.manifest
    console.print(
        f"[bold]{safe(dest)}[/]: {safe(', '.join(m['graphs'].values()))} (serves {safe(m['model'])}), "
        f"{len(m['engines'])} engine(s){'' if m['engines'] else ' — ' + safe(m['engine_skipped'])}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"manifest_sha256 {b.view.digest}", highlight=False)
    say(console, "timings: " + ", ".join(f"{k} {v}" for k, v in b.timings.items()))
    if b.parity is not None:
        console.print(_parity_table(b.parity))
        console.print("[dim]* the graph `xpr predict` serves from this bundle[/]")


@app.command()
def validate(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder")],
    data: Annotated[Path | None, typer.Option("--data", help="dataset folder (default: synthetic studies)")] = None,
    samples: Annotated[int, typer.Option("--samples", help="pairs to compare")] = 8,
    out: Annotated[Path | None, typer.Option("--out", help="parity report (default BUNDLE/parity.json)")] = None,
    save_outputs: Annotated[
        Path | None,
        typer.Option("--save-outputs", help="every runner's outputs in polygraphy's JSON (polygraphy inspect data F)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Parity of the bundle against eager FP32, each candidate run as `xpr predict` runs it on this machine:
    kept sets, |Δ| logits/prob, decisions; exit 1 on a broken tolerance."""
    from ..runners import open_source
    from ..validate import store_report, validate_bundle

    source = open_source(bundle)
    if source.bundle is None:
        from ..validate import ParityError

        raise ParityError(f"{bundle}: validate takes an export bundle (run `xpr export` first)")
    report = validate_bundle(source, data=data, samples=samples, save_outputs=save_outputs)
    dest = store_report(source.bundle, report, out)
    if as_json:
        _print_json(report.to_dict())
    else:
        console.print(f"[bold]{safe(bundle)}[/]: {safe(report.inputs)}", highlight=False, soft_wrap=True)
        console.print(_parity_table(report))
        say(console, f"* the graph `xpr predict` serves from this bundle; report: {dest}")
        if save_outputs is not None:
            say(console, f"run results: {save_outputs} (polygraphy inspect data {save_outputs})")
    if not report.ok:
        raise typer.Exit(1)


#: `xpr bench`'s options too long to declare in its signature
BenchBatchOpt = Annotated[
    str | None, typer.Option("--batch", help="with --onnx: time per breast at these batch sizes, e.g. 1,2,4")
]
BenchBackendOpt = Annotated[
    str, typer.Option("--backend", "-b", help=f"with --onnx: the ONNX Runtime backend to time ({_ORT_BACKENDS})")
]
BenchAgainstOpt = Annotated[
    list[str] | None,
    typer.Option("--against", help="with --onnx: also time BACKEND[:PRECISION] interleaved, e.g. onnx:fp32"),
]


@app.command()
def bench(
    eager: Annotated[Path | None, typer.Option("--eager", help="checkpoint to time in PyTorch")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="export bundle (or its .onnx): ONNX Runtime")] = None,
    engine: Annotated[Path | None, typer.Option("--engine", help="engine file or bundle (needs a GPU)")] = None,
    config: Annotated[Preset | None, typer.Option("--config", "-c", help="paper | tiny: random weights")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="also time the same weights at keep 1.0")] = False,
    keep_sweep: Annotated[str | None, typer.Option("--keep-sweep", help="e.g. 1.0,0.75,0.5,0.25")] = None,
    runs: Annotated[int, typer.Option("--runs", help="timed runs per variant")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed runs per variant first")] = 1,
    threads: Annotated[int | None, typer.Option("--threads", help="intra-op threads")] = None,
    device: Annotated[str, typer.Option("--device", help="eager: cpu | cuda")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help="eager: fp32 | fp16 | bf16 (autocast)")] = "fp32",
    mode: Annotated[str, typer.Option("--mode", help="eager: eager | compile | cuda-graph")] = "eager",
    dense_onnx: Annotated[Path | None, typer.Option("--dense-onnx", help="dense graph to compare with")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", help="ONNX Runtime profiles go here")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write the full report here (JSON)")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="keep-sweep PNG (default: beside --out)")] = None,
    batch: BenchBatchOpt = None,
    backend: BenchBackendOpt = "onnx",
    against: BenchAgainstOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Latency (mean, median, p90, p99, min), throughput, peak memory; pruned vs dense; keep sweep;
    per-breast time by batch size."""
    from .. import bench as B

    req = B.bench_request(
        eager=eager, onnx=onnx, engine=engine, config=config, dense=dense, keep_sweep=keep_sweep, runs=runs,
        warmup=warmup, threads=threads, device=device, dtype=dtype, mode=mode, dense_onnx=dense_onnx,
        profile=profile, batch=batch, backend=backend, against=against,
    )  # fmt: skip
    rep = B.run_bench(req, progress=_dim_progress)
    summary = B.print_batches if req.batches is not None else B.print_summary
    _bench_done(rep, summary, out=out, plot=plot, as_json=as_json)


def _dim_progress(msg: str) -> None:
    """A long run's progress lines, dimmed on stderr (stdout keeps the report)."""
    err_console.print(f"[dim]{safe(msg)}[/]", highlight=False, soft_wrap=True)


def _bench_done(
    rep: dict[str, Any],
    summary: Callable[[dict[str, Any], Callable[[str], None]], None],
    *,
    out: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """The end of every `xpr bench`: the summary lines (or, with --json, the whole report as the only
    thing on stdout, the file paths then going to stderr), the --out file, the keep-sweep plot."""
    from .. import bench as B
    from ..io import write_json

    note = err_console if as_json else console
    if not as_json:
        summary(rep, lambda s: say(console, s))
    if out is not None:
        write_json(out, rep)
        say(note, f"report: {out}")
    if rep.get("keep_sweep") and (plot is not None or out is not None):
        png = B.plot_keep_sweep(rep, plot if plot is not None else Path(str(out)).with_suffix(".png"))
        say(note, f"plot: {png}")
    if as_json:
        _print_json(rep)


#: `xpr predict`'s options too long to declare in its signature
PredictStudiesArg = Annotated[
    list[Path] | None, typer.Argument(help="study folders of DICOM files (any names; paired from tags)")
]
PredictHeatmapsOpt = Annotated[
    Path | None, typer.Option("--heatmaps", help="write a window-selection PNG per breast here")
]
PredictOperatingPointOpt = Annotated[
    str | None,
    typer.Option("--operating-point", help="youden | sens=0.90 | spec=0.90 ... (default: the model's)"),
]
PredictDicomOutOpt = Annotated[
    Path | None, typer.Option("--dicom-out", help="write a DICOM SR per study + heatmap Segmentations here")
]
PredictDicomwebOpt = Annotated[
    str | None, typer.Option("--dicomweb", help="DICOMweb root URL of a PACS (with --study)")
]
PredictTimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="with --dicomweb: seconds per transaction, in all (default 60)")
]
PredictMaxResponseMbOpt = Annotated[
    float | None, typer.Option("--max-response-mb", help="with --dicomweb: MiB one answer may hold (default 256)")
]
PredictCaOpt = Annotated[
    Path | None, typer.Option("--ca", help="with --dicomweb: verify an https PACS against this CA file (PEM)")
]
PredictSrOpt = Annotated[
    str,
    typer.Option(
        "--sr", help="with --dicom-out: tid1500 (Comprehensive SR, OHIF) | mammo-cad (Mammography CAD SR) | both"
    ),
]
PredictSegOpt = Annotated[
    str, typer.Option("--seg", help="with --dicom-out: heatmaps as binary (OHIF) | fractional | both")
]


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="checkpoint folder, export bundle folder, or engine file")],
    studies: PredictStudiesArg = None,
    backend: RunnerBackendOpt = None,
    heatmaps: PredictHeatmapsOpt = None,
    operating_point: PredictOperatingPointOpt = None,
    dicom_out: PredictDicomOutOpt = None,
    dicomweb: PredictDicomwebOpt = None,
    study: Annotated[str | None, typer.Option("--study", help="StudyInstanceUID to pull over WADO-RS")] = None,
    store: Annotated[bool, typer.Option("--store", help="STOW-RS the SR and heatmaps back (with --dicomweb)")] = False,
    timeout: PredictTimeoutOpt = None,
    max_response_mb: PredictMaxResponseMbOpt = None,
    ca: PredictCaOpt = None,
    prefer: PreferOpt = "acquired",
    strict: StrictSelectionOpt = False,
    sr: PredictSrOpt = "tid1500",
    seg: PredictSegOpt = "binary",
    triton: TritonOpt = None,
    triton_model: TritonModelOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """P(malignant) and the decision per breast at the operating point, from the screening CC and MLO
    the image selection chooses; images not used and bad studies get a reason. Fails only if no breast was read."""
    from ..dicom_out import SEG_KINDS, SR_KINDS
    from ..errors import ConfigError

    if sr not in SR_KINDS or seg not in SEG_KINDS:
        raise ConfigError(f"--sr is one of {', '.join(SR_KINDS)}; --seg is one of {', '.join(SEG_KINDS)}")
    run: dict[str, Any] = {
        "backend": backend, "heatmaps_dir": heatmaps, "operating_point": operating_point, "dicom_out": dicom_out,
        "prefer": prefer, "strict": strict, "sr": sr, "seg": seg, "triton": triton, "triton_model": triton_model,
    }  # fmt: skip
    pacs = _PacsArgs(store, timeout, max_response_mb, ca)
    if dicomweb is not None or study is not None:
        web = _predict_pacs(model, dicomweb, study, studies, run, pacs)
        rep = web.report
    else:
        web, rep = None, _predict_folders(model, studies, run, pacs)
    if as_json:
        _print_json(web.to_dict() if web is not None else rep.to_dict())
    else:
        _print_predict(rep, web, heatmaps=heatmaps is not None, dicom_out=dicom_out, store=store)
    if not rep.breasts:
        err_console.print("[red]error:[/] no breast could be read (every study was rejected)")
        raise typer.Exit(1)


class _PacsArgs(NamedTuple):
    """`xpr predict`'s options for a PACS (--store, --timeout, --max-response-mb, --ca)."""

    store: bool
    timeout: float | None
    max_response_mb: float | None
    ca: Path | None


def _predict_pacs(
    model: Path, url: str | None, study: str | None, studies: list[Path] | None, run: dict[str, Any], pacs: _PacsArgs
) -> DicomWebResult:
    """`xpr predict --dicomweb URL --study UID`: the study pulled over WADO-RS, predicted, stored back with --store."""
    from ..dicomweb import MAX_RESPONSE_BYTES, TIMEOUT_S, predict_dicomweb
    from ..errors import ConfigError

    if url is None or study is None or studies:
        raise ConfigError("--dicomweb URL and --study UID go together, without STUDIES folders")
    cap = MAX_RESPONSE_BYTES if pacs.max_response_mb is None else int(pacs.max_response_mb * (1 << 20))
    timeout = TIMEOUT_S if pacs.timeout is None else pacs.timeout
    return predict_dicomweb(model, url, study, store=pacs.store, timeout=timeout, max_bytes=cap, ca=pacs.ca, **run)


def _predict_folders(model: Path, studies: list[Path] | None, run: dict[str, Any], pacs: _PacsArgs) -> PredictReport:
    """`xpr predict MODEL STUDIES...`: study folders on disk (the PACS options are refused)."""
    from ..errors import ConfigError
    from ..predict import predict as run_predict

    if not studies:
        raise ConfigError("give STUDIES folders, or --dicomweb URL --study UID")
    if pacs.store or pacs.timeout is not None or pacs.max_response_mb is not None or pacs.ca is not None:
        raise ConfigError("--store, --timeout, --max-response-mb and --ca are for a PACS: use them with --dicomweb")
    return run_predict(model, studies, **run)


def _print_predict(
    rep: PredictReport, web: DicomWebResult | None, *, heatmaps: bool, dicom_out: Path | None, store: bool
) -> None:
    """The table of breasts on stdout; selection notes, images not used, rejects and notes on stderr."""
    t = Table("study", "breast", "P(malignant)", "decision", *(["heatmap"] if heatmaps else []))
    for b in rep.breasts:
        t.add_row(safe(b.study), safe(b.laterality), f"{b.prob:.4f}", safe(b.decision),
                  *([safe(b.heatmap or "")] if heatmaps else []))  # fmt: skip
    console.print(
        f"[bold]{safe(rep.backend)}[/] backend, operating point {safe(rep.operating_point)} "
        f"(threshold {rep.threshold:.4f})",
        highlight=False,
    )
    if rep.breasts:
        console.print(t)
    if rep.dicom:
        say(console, f"DICOM results: {len(rep.dicom)} objects under {dicom_out}")
    if web is not None and store:
        say(console, f"stored {len(web.stored)} objects in {web.url} ({len(web.already)} already there)")
    for b in rep.breasts:
        for note in b.notes:
            say(err_console, f"{b.study}/{b.laterality} {note}", "[cyan]selection[/]")
    for unused in rep.not_used:
        say(err_console, f"{unused['path']}: {unused['reason']}", "[dim]not used[/]")
    for r in rep.rejects:
        line = r["reason"] if r["reason"].startswith(r["path"]) else f"{r['path']}: {r['reason']}"
        say(err_console, line, "[yellow]skipped[/]")
    for n in rep.notes:
        say(err_console, n, "[yellow]note[/]")


@app.command()
def triton(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder (manifest.json + model.onnx)")],
    repo: Annotated[Path, typer.Option("--repo", help="Triton model repository folder (created if missing)")],
    max_batch: T.MaxBatch = None,
    instances: T.Instances = 1,
    name: Annotated[str | None, typer.Option("--name", help="model name prefix (default: the bundle's)")] = None,
    python: Annotated[
        bool, typer.Option("--python/--no-python", help="also the python-backend model (runs xpr's runners)")
    ] = True,
    python_backend: T.PythonBackend = "onnx",
    kind: T.Kind = "cpu",
    dynamic_batching: T.DynamicBatching = True,
    queue_delay_us: T.QueueDelayUs = 0,
    threads: T.Threads = None,
    operating_point: T.OperatingPoint = None,
    as_json: JsonFlag = False,
) -> None:
    """A Triton Inference Server model repository: onnxruntime_onnx, tensorrt_plan for a TensorRT engine, and a
    python-backend model that runs the verified bundle through xpr's runners (any Triton serves it)."""
    from ..triton import PythonModelOptions, write_repository

    py = PythonModelOptions(
        enabled=python, backend=python_backend, kind=kind, dynamic_batching=dynamic_batching,
        queue_delay_us=queue_delay_us, threads=threads,
    )  # fmt: skip
    res = write_repository(
        bundle, repo, max_batch=max_batch, instances=instances, name=name, python=py,
        operating_point=operating_point,
    )  # fmt: skip
    if as_json:
        _print_json(res.to_dict())
        return
    for m in res.models:
        say(console, f"{m.name} ({m.platform}) version {m.version}: {m.config}  max_batch_size {m.max_batch_size}")
    for line in res.skipped:
        say(err_console, line, "[yellow]skipped[/]")


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder (or a graph / engine file inside it)")],
    as_json: JsonFlag = False,
) -> None:
    """Check a bundle as every reader does: manifest seal, schema, paths inside the folder, every file's SHA-256.

    Exit 0 when it verifies, 3 (one line naming the file and what differs) when it does not."""
    from ..bundle import verify_bundle

    d = verify_bundle(bundle).describe()
    if as_json:
        _print_json(d)
        return
    say(console, f"{d['bundle']} ({d['name']}): manifest_sha256 {d['manifest_sha256']}", "[green]verified[/]")
    for rel, h in d["files"].items():
        say(console, f"  {h[:16]}…  {rel}")
