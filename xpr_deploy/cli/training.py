"""`xpr train`, `xpr cv`, `xpr eval`, `xpr demo`: training, cross-validation, evaluation, the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..train.config import TrainConfig  # torch-free: the help texts show its defaults
from .common import JsonFlag, Preset, _print_json, console, say

app = typer.Typer()


def _default(name: str) -> str:
    """A TrainConfig default for help texts ("(default X)"; square brackets would be rich markup)."""
    return f"(default {getattr(TrainConfig, name)})"


# options shared by `xpr train` and `xpr cv`: None means "not given", so TrainConfig's default applies
TrainOut = Annotated[Path, typer.Option("--out", "-o", help="run folder (best/, last/, metrics.jsonl, split.json)")]
TrainPreset = Annotated[
    Preset | None, typer.Option("--config", "-c", help=f"model preset: paper or tiny {_default('config')}")
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
    from ..train.run import TrainRequest, run_training

    summary = run_training(TrainRequest(
        data, out, config=config, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        prune_rate=prune_rate, prune_rates=prune_rates, prune_warmup=prune_warmup, holdout=holdout, fold=fold,
        folds=folds, split_file=split_file, val_fraction=val_fraction, pretrained=pretrained, freeze=freeze,
        device=device, seed=seed, resume=resume or None, cache=cache, workers=workers, format=format,
        label_rule=label_rule, amp=False if no_amp else None, progress=False if as_json else None,
        stop_after=stop_after,
    ))  # fmt: skip
    if summary is None:  # torchrun: rank 0 reports
        return
    if as_json:
        _print_json(summary.to_dict())
    elif summary.epochs_done:
        say(console, f"best epoch {summary.best_epoch} -> {summary.best_dir}  ({summary.wall_seconds:.1f} s)")
        say(console, f"learning curve: {summary.history_plot}")


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

    from ..train.cv import run_cv
    from ..train.run import TrainRequest

    base = TrainRequest(
        data, out, config=config, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        prune_rate=prune_rate, prune_rates=prune_rates, prune_warmup=prune_warmup, val_fraction=val_fraction,
        pretrained=pretrained, freeze=freeze, device=device, seed=seed, cache=cache, workers=workers,
        format=format, label_rule=label_rule, progress=not as_json,
    ).train_config()  # fmt: skip
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
    operating_point: Annotated[
        str | None,
        typer.Option("--operating-point", help="youden | sens=0.90 | spec=0.90 ... (default: the checkpoint's)"),
    ] = None,
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
    from ..io import write_json
    from ..train.evaluate import evaluate_checkpoint

    rep = evaluate_checkpoint(
        ckpt,
        data,
        split,
        data_format=format,
        label_rule=label_rule,
        threshold=threshold,
        operating_point=operating_point,
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
        say(console, line)
    if plots is not None:
        say(console, f"plots: {', '.join(d['plots'])}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="everything the demo writes goes here")] = Path("demo-out"),
    steps: Annotated[str | None, typer.Option(help="comma-separated subset of the steps")] = None,
    breasts: Annotated[int | None, typer.Option(help="synthetic breasts (default 320)")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default 6)")] = None,
    seed: int = 0,
) -> None:
    """synth -> train (tiny, CPU) -> eval, and the steps after them; a summary in OUT/demo.json."""
    from ..demo import DEMO_BREASTS, DEMO_EPOCHS, run_demo

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
