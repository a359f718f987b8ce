"""`xpr view`: xpr's results on the mammograms in OHIF, on loopback, for a person without a PACS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonFlag, _print_json, console, err_console

app = typer.Typer()


@app.command()
def view(
    studies: Annotated[list[Path] | None, typer.Argument(help="study folders of DICOM files")] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="predict with this bundle/checkpoint and show its results too")
    ] = None,
    dicomweb: Annotated[
        str | None, typer.Option("--dicomweb", help="show a DICOMweb server's studies instead (no upload)")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1 (0: a free one)")] = 0,
    operating_point: Annotated[
        str | None, typer.Option("--operating-point", help="with --bundle: youden | sens=0.90 | ...")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open STUDY folders (with --bundle: and xpr's SR + heatmaps on them) in OHIF, served with a
    private Orthanc on 127.0.0.1 until Ctrl-C; or point OHIF at --dicomweb URL."""
    from ..viewer import start_view

    session = start_view(studies or [], bundle=bundle, dicomweb=dicomweb, port=port,
                         operating_point=operating_point)  # fmt: skip
    try:
        if as_json:
            _print_json(session.to_dict())
        else:
            console.print(f"[green]OHIF[/] {session.url}", highlight=False)
            for uid in session.studies:
                console.print(f"  {session.study_url(uid)}", highlight=False, soft_wrap=True)
            if session.uploaded:
                console.print(f"{session.uploaded} DICOM objects in the viewer's Orthanc", highlight=False)
            for line in session.rejected:
                err_console.print(f"[yellow]not stored:[/] {line}", highlight=False, soft_wrap=True)
            console.print("Ctrl-C stops the viewer", highlight=False)
        while True:  # Ctrl-C / SIGTERM (cli.signals): exit 130 / 143 after the cleanup below
            time.sleep(0.5)
    finally:
        session.close()
