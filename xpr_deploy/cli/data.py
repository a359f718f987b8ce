"""`xpr synth` and `xpr data check / prepare`: synthetic studies, dataset checks, the preprocessing cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOpt, JsonFlag, _parse_size, _print_json, console

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
    as_json: JsonFlag = False,
) -> None:
    """Write mammogram-like synthetic DICOM studies in the VinDr or CBIS layout (tests, demos)."""
    from ..data.synth import write_synthetic

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
    as_json: JsonFlag = False,
) -> None:
    """Preprocess every paired image once into the cache (keyed by file SHA-256 and settings)."""
    from ..config import get_config
    from ..data import PreparedCache, PreprocessSettings, load_dataset

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
