"""`xpr synth` and `xpr data check / prepare`: synthetic studies, dataset checks, the preprocessing cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOpt, JsonFlag, _parse_size, _print_json, console, err_console

app = typer.Typer()

data_app = typer.Typer(
    help="Index, check and prepare DICOM datasets (VinDr-Mammo, CBIS-DDSM, folders).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
FormatOpt = Annotated[str, typer.Option("--format", help="auto, vindr, cbis or folder")]
LabelRuleOpt = Annotated[
    str | None,
    typer.Option("--label-rule", help="vindr:birads>=4 (default), vindr:birads>=3, vindr:birads>=5, cbis:pathology"),
]


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="output folder (created; must be empty unless --force)")],
    breasts: Annotated[int, typer.Option(help="number of breasts (CC + MLO each)")] = 12,
    format: Annotated[str, typer.Option("--format", help="vindr or cbis layout")] = "vindr",
    size: Annotated[str, typer.Option(help="stored image ROWSxCOLS")] = "1024x512",
    seed: int = 0,
    positive_fraction: Annotated[float, typer.Option(help="fraction of malignant breasts")] = 0.5,
    force: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    transfer_syntax: Annotated[
        str,
        typer.Option(
            help="mixed (uncompressed, RLE, JPEG 2000 in turn), uncompressed, implicit, deflated, rle, jpeg-ls "
            "or jpeg2000"
        ),
    ] = "mixed",
    as_json: JsonFlag = False,
) -> None:
    """Write mammogram-like synthetic DICOM studies in the VinDr or CBIS layout (tests, demos)."""
    from ..data.synth import write_synthetic

    s = write_synthetic(
        out,
        breasts,
        format,
        _parse_size(size),
        seed,
        positive_fraction,
        overwrite=force,
        transfer_syntax=transfer_syntax,
    )
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
    decode: Annotated[
        bool, typer.Option(help="also decode and preprocess every file (slow; finds corrupt compressed streams)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Studies, breasts, pairs, positives, split counts, and every rejected file or breast with why.
    Headers and native pixel data lengths are always checked; --decode decodes the pixels too."""
    from ..data import check_dataset

    s = check_dataset(data, format, label_rule, seed=seed, k=folds, decode=decode)
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
    workers: Annotated[
        int | None, typer.Option(help="worker processes (default: the cores this process may use); 1 = no pool")
    ] = None,
    strict: Annotated[bool, typer.Option(help="exit 1 if any file was rejected, too")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Preprocess every paired image once into the cache (keyed by file SHA-256 and settings).

    Resumable: a run that was stopped reuses the finished entries. A rejected file is reported
    and skipped (exit 0, or 1 with --strict); a failed one (its worker died) makes the exit 1.
    """
    from ..config import get_config
    from ..data import PreprocessSettings, prepare_dataset
    from .progress import FileProgress

    settings = PreprocessSettings(img_size=_parse_size(size) if size else get_config(config).img_size)
    with FileProgress(err_console, "prepare") as bar:
        rep = prepare_dataset(data, cache, settings, format, label_rule, workers=workers, progress=bar)
    if as_json:
        _print_json(rep.to_dict())
    else:
        console.print(
            f"{rep.prepared} prepared, {rep.reused} reused, {len(rep.rejected)} rejected, {len(rep.failed)} failed "
            f"({rep.pairs_ready}/{rep.pairs} pairs ready; {rep.workers} workers, {rep.images_per_s:.2f} images/s) "
            f"-> {cache}/{rep.settings_hash}",
            highlight=False,
            soft_wrap=True,
        )
        for kind, items in (("rejected", rep.rejected), ("failed", rep.failed)):
            for f in items:
                line = f["reason"] if f["reason"].startswith(f["path"]) else f"{f['path']}: {f['reason']}"
                console.print(f"[yellow]{kind}[/] {line}", highlight=False, soft_wrap=True)
    if rep.failed or (strict and (rep.rejected or rep.index_rejects)):
        raise typer.Exit(1)
