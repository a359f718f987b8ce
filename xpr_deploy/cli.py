"""The `xpr` command line: one short function per command over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from .errors import XprError

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
        t.add_row(b["view"], str(b["stage"]), str(b["block"]), "x".join(map(str, b["window_grid"])),
                  str(b["windows"]), str(b["k"]), "yes" if b["shifted"] else "")
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
    from .predict import predict as run_predict

    rep = run_predict(model, studies, backend=backend, heatmaps_dir=heatmaps)
    if as_json:
        _print_json({"breasts": [b.to_dict() for b in rep.breasts], "rejects": rep.rejects,
                     "backend": rep.backend, "threshold": rep.threshold})
    else:
        t = Table("study", "breast", "P(malignant)", "decision", *(["heatmap"] if heatmaps else []))
        for b in rep.breasts:
            t.add_row(b.study, b.laterality, f"{b.prob:.4f}", b.decision, *([b.heatmap or ""] if heatmaps else []))
        console.print(f"[bold]{rep.backend}[/] backend, threshold {rep.threshold:.3f}")
        console.print(t)
        for r in rep.rejects:
            err_console.print(f"[yellow]skipped[/] {r['path']}: {r['reason']}", highlight=False, soft_wrap=True)
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
