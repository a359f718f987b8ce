"""The `xpr` command line: one short function per command over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from .errors import XprError
from .train.config import TrainConfig  # torch-free: the help texts show its defaults

app = typer.Typer(
    name="xpr",
    help="X-Pruning: dual-view mammography classifier, from DICOM to TensorRT engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="model preset: paper (2688x896) or tiny (448x224)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")]


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
def info(config: ConfigOpt = "paper", as_json: JsonFlag = False) -> None:
    """Parameters, per-block window grid / N / K, and multiply-adds dense vs pruned."""
    from .config import get_config
    from .model.summary import summarize

    s = summarize(get_config(config))
    if as_json:
        _print_json(s)
        return
    console.print(
        f"[bold]{s['config']}[/] {s['img_size'][0]}x{s['img_size'][1]}  params {s['params_total']:,} "
        f"(trainable {s['params_trainable']:,}, frozen {s['params_frozen']:,})"
    )
    t = Table("view", "stage", "block", "window grid", "N", "K", "shifted")
    for b in s["blocks"]:
        t.add_row(
            b["view"],
            str(b["stage"]),
            str(b["block"]),
            "x".join(map(str, b["window_grid"])),
            str(b["windows"]),
            str(b["k"]),
            "yes" if b["shifted"] else "",
        )
    console.print(t)
    console.print(
        f"multiply-adds per breast: dense {s['macs_dense'] / 1e9:.1f} G, pruned {s['macs_pruned'] / 1e9:.1f} G "
        f"({s['macs_ratio']:.2f}x)"
    )


@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """What this machine offers: torch/CUDA, ONNX Runtime providers, TensorRT(-RTX), DICOM decoders."""
    from .doctor import run_checks

    checks = run_checks()
    if as_json:
        _print_json([c.__dict__ for c in checks])
        return
    t = Table("component", "", "version / reason")
    for c in checks:
        t.add_row(c.name, "[green]ok[/]" if c.ok else "[yellow]--[/]", c.detail)
    console.print(t)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="checkpoint folder, export bundle folder, or engine file")],
    studies: Annotated[list[Path], typer.Argument(help="study folders of DICOM files (any names; paired from tags)")],
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="eager | onnx | engine (default: from MODEL)")
    ] = None,
    heatmaps: Annotated[
        Path | None, typer.Option("--heatmaps", help="write a window-selection PNG per breast here")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """P(malignant) and the decision per breast; bad studies get a reason. Fails only if no breast was read."""
    from rich.markup import escape

    from .predict import predict as run_predict

    rep = run_predict(model, studies, backend=backend, heatmaps_dir=heatmaps)
    if as_json:
        _print_json(
            {
                "breasts": [b.to_dict() for b in rep.breasts],
                "rejects": rep.rejects,
                "backend": rep.backend,
                "threshold": rep.threshold,
            }
        )
    else:
        t = Table("study", "breast", "P(malignant)", "decision", *(["heatmap"] if heatmaps else []))
        for b in rep.breasts:
            t.add_row(b.study, b.laterality, f"{b.prob:.4f}", b.decision, *([b.heatmap or ""] if heatmaps else []))
        console.print(f"[bold]{rep.backend}[/] backend, threshold {rep.threshold:.3f}")
        if rep.breasts:
            console.print(t)
        for r in rep.rejects:
            line = r["reason"] if r["reason"].startswith(r["path"]) else f"{r['path']}: {r['reason']}"
            err_console.print(f"[yellow]skipped[/] {escape(line)}", highlight=False, soft_wrap=True)
    if not rep.breasts:
        err_console.print("[red]error:[/] no breast could be read (every study was rejected)")
        raise typer.Exit(1)


@app.command()
def triton(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder (manifest.json + model.onnx)")],
    repo: Annotated[Path, typer.Option("--repo", help="Triton model repository folder (created if missing)")],
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="max_batch_size; only for a dynamic-batch export")
    ] = None,
    instances: Annotated[int, typer.Option("--instances", help="model instances per device")] = 1,
    name: Annotated[str | None, typer.Option("--name", help="model name prefix (default: the bundle's)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A Triton Inference Server model repository: onnxruntime_onnx, plus tensorrt_plan for a TensorRT engine."""
    from .triton import write_repository

    res = write_repository(bundle, repo, max_batch=max_batch, instances=instances, name=name)
    if as_json:
        _print_json(res.to_dict())
        return
    for m in res.models:
        console.print(f"{m.name} ({m.platform}) version {m.version}: {m.config}  max_batch_size {m.max_batch_size}")
    for line in res.skipped:
        err_console.print(f"[yellow]skipped[/] {line}", highlight=False, soft_wrap=True)


# --- data layer (issue 3): xpr synth, xpr data check / prepare ---------------------------------

data_app = typer.Typer(
    help="Index, check and prepare DICOM datasets (VinDr-Mammo, CBIS-DDSM, folders).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
FormatOpt = Annotated[str, typer.Option("--format", help="auto, vindr, cbis or folder")]
LabelRuleOpt = Annotated[
    str | None,
    typer.Option("--label-rule", help="vindr:birads>=4 (default), vindr:birads>=3, vindr:birads>=5, cbis:pathology"),
]


def _parse_size(text: str) -> tuple[int, int]:
    from .errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r}: expected ROWSxCOLS, e.g. 1024x512") from None
    return h, w


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="output folder (created; must be empty unless --force)")],
    breasts: Annotated[int, typer.Option(help="number of breasts (CC + MLO each)")] = 12,
    format: Annotated[str, typer.Option("--format", help="vindr or cbis layout")] = "vindr",
    size: Annotated[str, typer.Option(help="stored image ROWSxCOLS")] = "1024x512",
    seed: int = 0,
    positive_fraction: Annotated[float, typer.Option(help="fraction of malignant breasts")] = 0.5,
    force: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write mammogram-like synthetic DICOM studies in the VinDr or CBIS layout (tests, demos)."""
    from .data.synth import write_synthetic

    s = write_synthetic(out, breasts, format, _parse_size(size), seed, positive_fraction, overwrite=force)
    if as_json:
        _print_json(s.to_dict())
    else:
        console.print(
            f"wrote {len(s.files)} files, {s.breasts} breasts ({s.positives} malignant), "
            f"{s.format} layout, to {s.root} in {s.seconds:.1f} s"
        )


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="dataset root")],
    format: FormatOpt = "auto",
    label_rule: LabelRuleOpt = None,
    seed: Annotated[int, typer.Option(help="seed of the split counts")] = 0,
    folds: Annotated[int, typer.Option(help="k of the k-fold counts")] = 5,
    strict: Annotated[bool, typer.Option(help="exit 1 if anything was rejected")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Studies, breasts, pairs, positives, split counts, and every rejected file or breast with why."""
    from .data import check_dataset

    s = check_dataset(data, format, label_rule, seed=seed, k=folds)
    if as_json:
        _print_json(s)
    else:
        console.print(
            f"[bold]{s['root']}[/] ({s['format']}, label rule {s['label_rule']}): {s['studies']} studies, "
            f"{s['breasts']} breasts, [bold]{s['pairs']} pairs[/], {s['positives']} positive"
        )
        ho = s["splits"].get("holdout")
        if ho and "error" not in ho:
            console.print(
                f"hold-out 8:2: train {ho['train']} ({ho['train_positives']} pos), "
                f"test {ho['test']} ({ho['test_positives']} pos)"
            )
        for note in s["notes"]:
            console.print(f"[dim]note: {note}[/]", highlight=False)
        for r in s["rejects"]:
            console.print(f"[yellow]rejected[/] {r['path']}: {r['reason']}", highlight=False, soft_wrap=True)
    if strict and s["rejects"]:
        raise typer.Exit(1)


@data_app.command("prepare")
def data_prepare(
    data: Annotated[Path, typer.Argument(help="dataset root")],
    cache: Annotated[Path, typer.Option("--cache", help="cache folder for the model-ready arrays")],
    config: ConfigOpt = "paper",
    size: Annotated[str | None, typer.Option(help="ROWSxCOLS instead of the config's size")] = None,
    format: FormatOpt = "auto",
    label_rule: LabelRuleOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Preprocess every paired image once into the cache (keyed by file SHA-256 and settings)."""
    from .config import get_config
    from .data import PreparedCache, PreprocessSettings, load_dataset

    settings = PreprocessSettings(img_size=_parse_size(size) if size else get_config(config).img_size)
    ds = load_dataset(data, format, label_rule)
    paths = [p for pair in ds.pairs for p in (pair.cc, pair.mlo)]
    rep = PreparedCache(cache).prepare(paths, settings)
    out = {
        "cache": str(cache),
        "settings": settings.to_dict(),
        "settings_hash": settings.hash(),
        "pairs": len(ds.pairs),
        **rep.to_dict(),
    }
    if as_json:
        _print_json(out)
    else:
        console.print(
            f"{rep.computed} computed, {rep.cached} already cached, {len(rep.failed or [])} failed "
            f"-> {cache}/{settings.hash()}"
        )
        for f in rep.failed or []:
            console.print(f"[yellow]failed[/] {f['path']}: {f['reason']}", highlight=False, soft_wrap=True)


# --- training and evaluation (issue 4): xpr train / cv / eval / demo --------------------------------


def _rates(prune_rate: float | None, prune_rates: str | None) -> tuple[float, ...] | None:
    from .errors import ConfigError

    if prune_rate is not None and prune_rates:
        raise ConfigError("give --prune-rate or --prune-rates, not both")
    if prune_rates:
        try:
            return tuple(float(r) for r in prune_rates.split(","))
        except ValueError:
            raise ConfigError(f"--prune-rates {prune_rates!r}: need numbers like 0.5,0.5,0.5,0.5") from None
    return (prune_rate,) if prune_rate is not None else None


def _train_config(
    data: Path, out: Path, prune_rate: float | None, prune_rates: str | None, format: str | None, **given: object
) -> TrainConfig:
    """TrainConfig from the options of `xpr train` / `xpr cv` (None = not given: TrainConfig's default).

    With --resume on a run folder, options that would change the run are refused.
    """
    from .train.checkpoint import read_meta
    from .train.loop import check_resume_overrides

    given.update(prune_rates=_rates(prune_rate, prune_rates), data_format=format)
    set_opts = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
    if set_opts.get("resume") and (out / "last" / "meta.json").is_file():
        saved = TrainConfig.from_dict(read_meta(out / "last").get("train_config", {}))
        check_resume_overrides(saved, set_opts)
    return TrainConfig(data=str(data), out=str(out), **set_opts)  # type: ignore[arg-type]


def _default(name: str) -> str:
    """A TrainConfig default for help texts ("(default X)"; square brackets would be rich markup)."""
    return f"(default {getattr(TrainConfig, name)})"


# options shared by `xpr train` and `xpr cv`: None means "not given", so TrainConfig's default applies
TrainOut = Annotated[Path, typer.Option("--out", "-o", help="run folder (best/, last/, metrics.jsonl, split.json)")]
TrainPreset = Annotated[
    str | None, typer.Option("--config", "-c", help=f"model preset: paper or tiny {_default('config')}")
]
Epochs = Annotated[int | None, typer.Option(help=f"epochs {_default('epochs')}")]
BatchSize = Annotated[int | None, typer.Option(help=f"breasts per step and process {_default('batch_size')}")]
Lr = Annotated[float | None, typer.Option(help=f"AdamW peak learning rate {_default('lr')}")]
WeightDecay = Annotated[float | None, typer.Option(help=f"AdamW weight decay {_default('weight_decay')}")]
PruneRate = Annotated[float | None, typer.Option(help="pruning rate r in every stage (default: the preset's, 0.5)")]
PruneRates = Annotated[str | None, typer.Option(help="per-stage rates r1,r2,r3,r4")]
PruneWarmup = Annotated[
    int | None, typer.Option(help=f"epochs annealing keep 1.0 -> target {_default('prune_warmup')}")
]
ValFraction = Annotated[
    float | None, typer.Option(help=f"validation share of training patients {_default('val_fraction')}")
]
Pretrained = Annotated[Path | None, typer.Option(help="local ImageNet Swin-T weights file")]
Freeze = Annotated[
    str | None, typer.Option(help=f"frozen parts: paper (embedding + stages 1-2) or stem {_default('freeze')}")
]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda")]
Seed = Annotated[int | None, typer.Option(help=f"seed of init, shuffling and splits {_default('seed')}")]
Cache = Annotated[Path | None, typer.Option(help="cache folder for preprocessed arrays (recommended)")]
Workers = Annotated[int, typer.Option(help="data loader worker processes")]
DataFormat = Annotated[str | None, typer.Option("--format", help="auto, vindr or cbis (default auto)")]
LabelRule = Annotated[str | None, typer.Option(help="e.g. vindr:birads>=4 (default: the format's)")]


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="dataset root (VinDr-Mammo or CBIS-DDSM layout)")],
    out: TrainOut,
    config: TrainPreset = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    weight_decay: WeightDecay = None,
    prune_rate: PruneRate = None,
    prune_rates: PruneRates = None,
    prune_warmup: PruneWarmup = None,
    holdout: Annotated[float | None, typer.Option(help=f"test fraction of patients {_default('holdout')}")] = None,
    fold: Annotated[int | None, typer.Option(help="train k-fold fold K (0-based) instead of a hold-out")] = None,
    folds: Annotated[int | None, typer.Option(help=f"number of folds with --fold {_default('folds')}")] = None,
    split_file: Annotated[Path | None, typer.Option("--split", help="use this split.json")] = None,
    val_fraction: ValFraction = None,
    pretrained: Pretrained = None,
    freeze: Freeze = None,
    device: Device = "auto",
    seed: Seed = None,
    resume: Annotated[bool, typer.Option(help="continue the interrupted run in --out from last/")] = False,
    cache: Cache = None,
    workers: Workers = 0,
    format: DataFormat = None,
    label_rule: LabelRule = None,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="no mixed precision on CUDA")] = False,
    stop_after: Annotated[int | None, typer.Option(hidden=True)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train X-Pruning: weighted CE, AdamW + cosine, pruning warm-up, best checkpoint by validation AUC.

    Multi-GPU / multi-process: `torchrun --nproc-per-node N -m xpr_deploy.cli train ...` (gloo on CPU).
    """
    import os

    from .train.loop import train as run_train

    cfg = _train_config(
        data,
        out,
        config=config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        prune_rate=prune_rate,
        prune_rates=prune_rates,
        prune_warmup=prune_warmup,
        holdout=holdout,
        fold=fold,
        folds=folds,
        split_file=split_file,
        val_fraction=val_fraction,
        pretrained=pretrained,
        freeze=freeze,
        device=device,
        seed=seed,
        resume=resume or None,
        cache=cache,
        workers=workers,
        format=format,
        label_rule=label_rule,
        amp=False if no_amp else None,
        progress=False if as_json else None,
        stop_after=stop_after,
    )
    res = run_train(cfg)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    best = res.best_metrics or {}
    summary = {
        "run_dir": str(res.run_dir),
        "best": str(res.best_dir),
        "best_epoch": res.best_epoch,
        "best_val": {k: best.get(k) for k in ("auc", "auc_ci", "loss", "threshold")},
        "epochs_done": len(res.history),
        "finished": res.finished,
        "wall_seconds": round(res.wall_seconds, 1),
    }
    if as_json:
        _print_json(summary)
    elif res.history:
        console.print(f"best epoch {res.best_epoch} -> {res.best_dir}  ({res.wall_seconds:.1f} s)")


@app.command()
def cv(
    data: Annotated[Path, typer.Argument(help="dataset root")],
    out: TrainOut,
    folds: Annotated[int, typer.Option(help="number of patient-level folds")] = 5,
    config: TrainPreset = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    weight_decay: WeightDecay = None,
    prune_rate: PruneRate = None,
    prune_rates: PruneRates = None,
    prune_warmup: PruneWarmup = None,
    val_fraction: ValFraction = None,
    pretrained: Pretrained = None,
    freeze: Freeze = None,
    device: Device = "auto",
    seed: Seed = None,
    resume: Annotated[bool, typer.Option(help="skip finished folds, resume the interrupted one")] = False,
    cache: Cache = None,
    workers: Workers = 0,
    format: DataFormat = None,
    label_rule: LabelRule = None,
    as_json: JsonFlag = False,
) -> None:
    """k-fold cross-validation (patient level): every fold, then a Table-1-style summary (cv.md, cv.json)."""
    from dataclasses import replace

    from .train.cv import run_cv

    base = _train_config(
        data,
        out,
        config=config,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        prune_rate=prune_rate,
        prune_rates=prune_rates,
        prune_warmup=prune_warmup,
        val_fraction=val_fraction,
        pretrained=pretrained,
        freeze=freeze,
        device=device,
        seed=seed,
        cache=cache,
        workers=workers,
        format=format,
        label_rule=label_rule,
        progress=not as_json,
    )
    base = replace(base, resume=resume)  # per fold, in run_cv (OUT itself is not a run folder)
    res = run_cv(base, folds)
    if as_json:
        _print_json(res.to_dict())
    elif res.markdown:
        console.print(res.markdown, markup=False, highlight=False)


@app.command("eval")
def eval_cmd(
    ckpt: Annotated[Path, typer.Argument(help="checkpoint folder (or a run folder: its best/)")],
    data: Annotated[Path, typer.Argument(help="dataset root")],
    split: Annotated[str, typer.Option(help="test (the run's held-out breasts), val, train or all")] = "test",
    threshold: Annotated[float | None, typer.Option(help="instead of the checkpoint's threshold")] = None,
    plots: Annotated[Path | None, typer.Option(help="write roc.png and confusion.png here")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write the JSON report here")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    batch_size: Annotated[int, typer.Option()] = 8,
    cache: Annotated[Path | None, typer.Option()] = None,
    format: Annotated[str, typer.Option("--format")] = "auto",
    label_rule: Annotated[str | None, typer.Option(help="default: the checkpoint's rule")] = None,
    as_json: JsonFlag = False,
) -> None:
    """AUC with a DeLong 95% CI, ACC, F1, sensitivity, specificity at the stated threshold, per-breast outputs."""
    from .io import write_json
    from .train.evaluate import evaluate_checkpoint

    rep = evaluate_checkpoint(
        ckpt,
        data,
        split,
        data_format=format,
        label_rule=label_rule,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        cache=cache,
    )
    d = rep.to_dict()
    if plots is not None:
        d["plots"] = [str(p) for p in rep.write_plots(plots)]
    if out is not None:
        write_json(out, d)
    if as_json:
        _print_json(d)
        return
    for line in rep.summary_lines():
        console.print(line, highlight=False)
    if plots is not None:
        console.print(f"plots: {', '.join(d['plots'])}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="everything the demo writes goes here")] = Path("demo-out"),
    steps: Annotated[str | None, typer.Option(help="comma-separated subset of the steps")] = None,
    breasts: Annotated[int | None, typer.Option(help="synthetic breasts (default 320)")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default 6)")] = None,
    seed: int = 0,
) -> None:
    """synth -> train (tiny, CPU) -> eval, and the steps after them; a summary in OUT/demo.json."""
    from .demo import DEMO_BREASTS, DEMO_EPOCHS, run_demo

    res = run_demo(
        out,
        only=steps.split(",") if steps else None,
        breasts=DEMO_BREASTS if breasts is None else breasts,
        epochs=DEMO_EPOCHS if epochs is None else epochs,
        seed=seed,
    )
    t = Table("step", "seconds", "")
    for s in res.steps:
        t.add_row(s["name"], str(s["seconds"]), "[green]ok[/]" if s["ok"] else "[red]failed[/]")
    console.print(t)


# ---- export + validate (issue 5) ----------------------------------------------------------------
def _parity_table(report: object) -> Table:
    t = Table(
        "candidate",
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
            c.name,
            f"[{col}]{c.status}[/]",
            f(c.max_abs_logits_all),
            f(c.max_abs_prob_all),
            "" if c.min_jaccard is None else f"{c.min_jaccard:.3f}",
            f(c.selection_ties or None),
            f(c.selection_flips or None),
            f(c.decision_flips),
            f(c.delta_auc),
            c.reason or c.gate,
        )
    return t


@app.command()
def export(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="checkpoint folder (omit with --config for random weights)")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="tiny | paper; random weights without CHECKPOINT")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="bundle folder (default export/<name>)")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="strongly typed FP16 graph (FP32 islands) served")] = False,
    fp32: Annotated[bool, typer.Option("--fp32/--no-fp32", help="with --fp16 also write model.onnx")] = True,
    plugin: Annotated[bool, typer.Option("--plugin", help="window selection as XprWindowSelect custom nodes")] = False,
    with_selection: Annotated[
        bool, typer.Option("--with-selection", help="kept window indices as extra outputs")
    ] = False,
    engine: Annotated[
        bool | None,
        typer.Option("--engine/--no-engine", help="build the engine (default: when a backend is installed)"),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto | tensorrt-rtx | tensorrt")] = "auto",
    sm: Annotated[int, typer.Option("--sm", help="target compute capability, e.g. 86 (RTX 3090)")] = 86,
    hw_compat: Annotated[str, typer.Option("--hw-compat", help="same | ampere+")] = "same",
    batch: Annotated[int, typer.Option("--batch", help="static batch size")] = 1,
    parity_samples: Annotated[
        int, typer.Option("--parity-samples", help="synthetic pairs to validate on (0: skip)")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="seed for random weights")] = 0,
) -> None:
    """ONNX bundle (static K, FP32/FP16, plugin mode) + sm_86 engine + manifest + parity.json."""
    from .export.bundle import ExportOptions, default_name, export_bundle, load_source

    opts = ExportOptions(
        fp16=fp16,
        plugin=plugin,
        with_selection=with_selection,
        fp32_graph=fp32,
        engine=engine,
        backend=backend,
        sm=sm,
        hw_compat=hw_compat,
        batch=batch,
        parity_samples=parity_samples,
    )
    opts.check()
    if engine is not False and backend != "auto":  # an unavailable backend fails before any work
        from .engine.build import resolve_backend

        resolve_backend(backend)
    model, meta = load_source(checkpoint, config, seed)
    dest = out or Path("export") / default_name(model, opts)
    b = export_bundle(model, meta, dest, opts)
    m = b.manifest
    console.print(
        f"[bold]{dest}[/]: {', '.join(m['graphs'].values())} (serves {m['model']}), "
        f"{len(m['engines'])} engine(s){'' if m['engines'] else ' — ' + str(m['engine_skipped'])}"
    )
    console.print("timings: " + ", ".join(f"{k} {v}" for k, v in b.timings.items()))
    if b.parity is not None:
        console.print(_parity_table(b.parity))
        if not b.parity.ok:
            err_console.print(f"[red]error:[/] {dest}: exported, but parity failed (see {dest / 'parity.json'})")
            raise typer.Exit(1)


@app.command()
def validate(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder")],
    data: Annotated[Path | None, typer.Option("--data", help="dataset folder (default: synthetic studies)")] = None,
    samples: Annotated[int, typer.Option("--samples", help="pairs to compare")] = 8,
    out: Annotated[Path | None, typer.Option("--out", help="parity report (default BUNDLE/parity.json)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Parity of the bundle against eager FP32: kept sets, |Δ| logits/prob, decisions; exit 1 on a broken tolerance."""
    from .validate import update_bundle_report, validate_bundle

    report = validate_bundle(bundle, data=data, samples=samples)
    update_bundle_report(bundle, report, out)
    if as_json:
        _print_json(report.to_dict())
    else:
        console.print(f"[bold]{bundle}[/]: {report.inputs}")
        console.print(_parity_table(report))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def bench(
    eager: Annotated[Path | None, typer.Option("--eager", help="checkpoint to time in PyTorch")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="export bundle (or its .onnx): ONNX Runtime")] = None,
    engine: Annotated[Path | None, typer.Option("--engine", help="engine file or bundle (needs a GPU)")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="paper | tiny: random weights")] = None,
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
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report here")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="keep-sweep PNG (default: beside --json)")] = None,
) -> None:
    """Latency (mean, median, p90, p99, min), throughput, peak memory; pruned vs dense; keep sweep."""
    from . import bench as B
    from .io import write_json

    chosen = [n for n, v in (("--eager", eager), ("--onnx", onnx), ("--engine", engine)) if v is not None]
    if len(chosen) > 1 or (not chosen and config is None):
        raise B.BenchError("give one of --eager CKPT, --onnx BUNDLE, --engine ENGINE (or --config for random weights)")
    try:
        sweep = [float(k) for k in keep_sweep.split(",")] if keep_sweep else None
    except ValueError:
        raise B.BenchError(f"--keep-sweep {keep_sweep!r}: give comma-separated keep ratios such as 1.0,0.5") from None
    if sweep and not all(0.0 < k <= 1.0 for k in sweep):
        raise B.BenchError("--keep-sweep: keep ratios must be in (0, 1]")

    def progress(msg: str) -> None:
        err_console.print(f"[dim]{msg}[/]", highlight=False)

    if engine is not None:
        rep = B.bench_engine(engine, runs=runs, warmup=warmup, progress=progress)
    elif onnx is not None:
        rep = B.bench_onnx(
            onnx,
            runs=runs,
            warmup=warmup,
            threads=threads,
            dense=dense,
            keep_sweep=sweep,
            dense_path=dense_onnx,
            profile_dir=profile,
            progress=progress,
        )
    else:
        if eager is not None:
            from . import load_checkpoint

            model, _ = load_checkpoint(str(eager), device="cpu")
        else:
            from .config import get_config
            from .validate import random_model

            model = random_model(get_config(str(config)), 0)
        rep = B.bench_eager(
            model,
            runs=runs,
            warmup=warmup,
            threads=threads,
            dense=dense,
            keep_sweep=sweep,
            device=device,
            dtype=dtype,
            mode=mode,
            progress=progress,
        )
    B.print_summary(rep, lambda s: console.print(s, highlight=False))
    if json_out is not None:
        write_json(json_out, rep)
        console.print(f"report: {json_out}")
    if rep.get("keep_sweep") and (plot is not None or json_out is not None):
        png = B.plot_keep_sweep(rep, plot if plot is not None else Path(str(json_out)).with_suffix(".png"))
        console.print(f"plot: {png}")


def main() -> None:
    """Entry point: expected failures print one line and exit non-zero, without a traceback."""
    try:
        rc = app(standalone_mode=False)
    except XprError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
