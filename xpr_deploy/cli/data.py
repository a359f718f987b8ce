"""`xpr synth` and `xpr data check / prepare`: synthetic studies, dataset checks, the preprocessing cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import ConfigOpt, JsonFlag, _parse_size, _print_json, console, err_console, safe, say

app = typer.Typer()

data_app = typer.Typer(
    help="Index, check and prepare DICOM datasets (VinDr-Mammo, CBIS-DDSM, folders).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
FormatOpt = Annotated[str, typer.Option("--format", help="auto, vindr, cbis or folder")]
#: `selection.PREFER` as a choice, so a wrong one is a usage error
Prefer = Literal["acquired", "synthesized"]
PreferOpt = Annotated[
    Prefer,
    typer.Option(
        "--prefer",
        help="acquired (default) or synthesized: which 2D image of a view is read when a study holds both",
    ),
]
StrictSelectionOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="curated data: a breast is used only if its study holds exactly one clean CC and MLO for it",
    ),
]
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
        say(
            console,
            f"wrote {len(s.files)} files, {s.breasts} breasts ({s.positives} malignant), "
            f"{s.format} layout, to {s.root} in {s.seconds:.1f} s",
        )


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="dataset root")],
    format: FormatOpt = "auto",
    label_rule: LabelRuleOpt = None,
    seed: Annotated[int, typer.Option(help="seed of the split counts")] = 0,
    folds: Annotated[int, typer.Option(help="k of the k-fold counts")] = 5,
    strict: Annotated[
        bool,
        typer.Option(
            help="curated data: every selection choice rejects the breast, and exit 1 if anything was "
            "rejected or not used"
        ),
    ] = False,
    prefer: PreferOpt = "acquired",
    decode: Annotated[
        bool, typer.Option(help="also decode and preprocess every file (slow; finds corrupt compressed streams)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Studies, breasts, pairs, positives, split counts; the image selection's decisions (images not
    used and why, choices made); every rejected file or breast with why. Headers and native pixel data
    lengths are always checked; --decode decodes the pixels too."""

    from ..data import Policy, check_dataset

    s = check_dataset(data, format, label_rule, seed=seed, k=folds, decode=decode, policy=Policy(prefer, strict))
    if as_json:
        _print_json(s)
    else:
        console.print(
            f"[bold]{safe(s['root'])}[/] ({s['format']}, label rule {safe(s['label_rule'])}): {s['studies']} studies, "
            f"{s['breasts']} breasts, [bold]{s['pairs']} pairs[/], {s['positives']} positive",
            highlight=False,
            soft_wrap=True,
        )
        ho = s["splits"].get("holdout")
        if ho and "error" not in ho:
            console.print(
                f"hold-out 8:2: train {ho['train']} ({ho['train_positives']} pos), "
                f"test {ho['test']} ({ho['test_positives']} pos)"
            )
        for note in s["notes"]:
            console.print(f"[dim]note: {safe(note)}[/]", highlight=False, soft_wrap=True)
        for key, d in s["selection"].items():
            say(
                console,
                f"{key}: CC {d['cc']} ({d['cc_sop_uid']}), MLO {d['mlo']} ({d['mlo_sop_uid']})",
                "[cyan]used[/]",
            )
            for line in d["notes"]:
                say(console, line, " ")
        for n in s["not_used"]:
            say(console, f"{n['path']}: {n['reason']}", "[dim]not used[/]")
        for r in s["rejects"]:
            line = r["reason"] if r["reason"].startswith(r["path"]) else f"{r['path']}: {r['reason']}"
            say(console, line, "[yellow]rejected[/]")
    if strict and (s["rejects"] or s["not_used"]):
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
        say(
            console,
            f"{rep.prepared} prepared, {rep.reused} reused, {len(rep.rejected)} rejected, {len(rep.failed)} failed "
            f"({rep.pairs_ready}/{rep.pairs} pairs ready; {rep.workers} workers, {rep.images_per_s:.2f} images/s) "
            f"-> {cache}/{rep.settings_hash}",
        )
        for kind, items in (("rejected", rep.index_rejects + rep.rejected), ("failed", rep.failed)):
            for f in items:
                line = f["reason"] if f["reason"].startswith(f["path"]) else f"{f['path']}: {f['reason']}"
                say(console, line, f"[yellow]{kind}[/]")
    if rep.failed or (strict and (rep.rejected or rep.index_rejects)):
        raise typer.Exit(1)
