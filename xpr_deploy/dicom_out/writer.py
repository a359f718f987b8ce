"""Build and write a study's result objects: the SR(s), then the heatmap Segmentations, each file
written atomically under OUT/<StudyInstanceUID>/, one line per study that could not get them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import XprError
from ..io import OutputError, write_error
from .common import _PN_ADVICE, BreastDicom, DeviceIdentity, DicomOutError, _study_key, _text, clean_source, object_path
from .seg import add_pixel_measures, build_heatmap, build_heatmap_binary
from .sr_mammo_cad import build_mammo_cad_sr
from .sr_tid1500 import build_sr

if TYPE_CHECKING:
    from pydicom import Dataset

#: `--seg`: which heatmap Segmentations to write per mammogram
SEG_KINDS = ("binary", "fractional", "both")
#: `--sr`: which result SRs to write per study: the TID 1500 Comprehensive SR (OHIF and general
#: viewers), the Mammography CAD SR (TID 4000, mammography workstations), or both
SR_KINDS = ("tid1500", "mammo-cad", "both")


@dataclass
class StudyResults:
    """One study's result objects (SR first) and the warning lines about its source headers."""

    study: str  # the Study Instance UID
    objects: list[Dataset]
    warnings: list[str] = field(default_factory=list)


def study_results(
    breasts: Sequence[BreastDicom], device: DeviceIdentity, *, sr: str = "tid1500", seg: str = "binary"
) -> StudyResults:
    """The SR(s) (`sr`: tid1500 | mammo-cad | both), then the heatmap Segmentation(s) of each source
    image that has a heatmap (`seg`: binary | fractional | both), built from checked copies of the
    source headers (`clean_source`). Values left empty are named in one warning line; what highdicom
    or pydicom would warn about is caught here and named there too, never printed. A Mammography
    CAD SR that cannot be built (a breast without a region) fails the study with `sr` mammo-cad and
    is one warning line with `sr` both."""
    from ..data.header import printable

    if sr not in SR_KINDS:
        raise DicomOutError(f"--sr {sr!r}: choose one of {', '.join(SR_KINDS)}")
    if seg not in SEG_KINDS:
        raise DicomOutError(f"--seg {seg!r}: choose one of {', '.join(SEG_KINDS)}")
    if not breasts:
        raise DicomOutError("no breast to report")
    study = _text(next(iter(breasts[0].sources.values())).get("StudyInstanceUID"))
    problems: list[str] = []
    cad_note = ""
    clean = []
    for b in sorted(breasts, key=lambda b: b.laterality):
        sources = {}
        for view, ds in b.sources.items():
            sources[view], found = clean_source(ds)
            problems += [p for p in found if p not in problems]
        clean.append(replace(b, sources=sources))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=_PN_ADVICE)
        key = _study_key(clean)
        objs = [build_sr(clean, device)] if sr in ("tid1500", "both") else []
        if sr in ("mammo-cad", "both"):
            try:
                objs.append(build_mammo_cad_sr(clean, device))
            except DicomOutError as exc:
                if sr == "mammo-cad":
                    raise
                cad_note = f"{printable(study, 70)}: {printable(str(exc), 300)}"
        for b in clean:
            for view in ("cc", "mlo"):
                if view not in b.heatmaps:
                    continue
                source, maps = b.sources[view], b.heatmaps[view]
                if seg in ("binary", "both"):
                    objs.append(build_heatmap_binary(source, maps, device, key))
                if seg in ("fractional", "both"):
                    objs.append(add_pixel_measures(build_heatmap(source, maps, device, key), source))
    for w in caught:
        line = printable(f"{w.category.__name__}: {str(w.message).splitlines()[0] if str(w.message) else ''}", 160)
        if line not in problems:
            problems.append(line)
    notes = [f"{printable(study, 70)}: DICOM results written with empty or left-out values: " + "; ".join(problems)]
    return StudyResults(study, objs, (notes if problems else []) + ([cad_note] if cad_note else []))


def study_objects(
    breasts: Sequence[BreastDicom], device: DeviceIdentity, *, sr: str = "tid1500", seg: str = "binary"
) -> list[Dataset]:
    """The study's result objects (`study_results` without its warning lines)."""
    return study_results(breasts, device, sr=sr, seg=seg).objects


def write_objects(out_dir: str | Path, objs: Sequence[Dataset], tag: str = "") -> list[Path]:
    """Each object to OUT/<StudyInstanceUID>/<sr|seg>_<SOPInstanceUID>_<tag>.dcm, atomically.

    `tag` names the input (`io.input_tag`): the same study in two input folders gives two sets of files."""
    from ..io import write_buffer

    paths = []
    for ds in objs:
        dest = object_path(out_dir, ds, tag)
        write_buffer(dest, lambda f, ds=ds: ds.save_as(f, enforce_file_format=True))  # OutputError names dest
        paths.append(dest)
    return paths


@dataclass
class WrittenResults:
    """What `write_study_results` did: files written, warning lines, and one line per study without results."""

    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def write_study_results(
    out_dir: str | Path,
    results: Mapping[tuple[str, str], Sequence[BreastDicom]],
    device: DeviceIdentity,
    *,
    sr: str = "tid1500",
    seg: str = "binary",
) -> WrittenResults:
    """Per (input tag, study): build and write the study's objects; a study whose objects cannot be
    built or written is one line in `failures` and the other studies still get theirs.

    An output folder that cannot be created is an OutputError (no study could get results)."""
    from ..data.header import one_line, printable

    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(root, exc) from None
    if not root.is_dir():
        raise OutputError(f"{root}: not a folder", root, "not a folder")
    done = WrittenResults()
    for tag, study in sorted(results):
        try:
            built = study_results(results[tag, study], device, sr=sr, seg=seg)
            done.paths += write_objects(root, built.objects, tag)
            done.warnings += built.warnings  # only for results that exist
        except XprError as exc:
            done.failures.append(f"{printable(study, 70)}: no DICOM results: {printable(str(exc), 300)}")
        except Exception as exc:  # highdicom and pydicom raise ValueError, AttributeError, ... on odd headers
            why = f"{type(exc).__name__}: {one_line(exc)}"
            done.failures.append(f"{printable(study, 70)}: no DICOM results: {why}")
    return done
