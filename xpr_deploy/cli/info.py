"""`xpr info` and `xpr doctor`: the model's numbers and what this machine offers."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import ConfigOpt, JsonFlag, _print_json, console, safe

app = typer.Typer()


@app.command()
def info(config: ConfigOpt = "paper", as_json: JsonFlag = False) -> None:
    """Parameters, per-block window grid / N / K, and multiply-adds dense vs pruned."""
    from ..config import get_config
    from ..model.summary import summarize

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
    from ..doctor import run_checks

    checks = run_checks()
    if as_json:
        _print_json([c.__dict__ for c in checks])
        return
    t = Table("component", "", "version / reason")
    for c in checks:
        t.add_row(safe(c.name), "[green]ok[/]" if c.ok else "[yellow]--[/]", safe(c.detail))
    console.print(t)
