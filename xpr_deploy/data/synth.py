"""Synthetic mammography studies for tests and the demo, in the real VinDr and CBIS layouts.

Three modules, one concern each: this one is the public entry (`write_synthetic`) and the layouts
(folders, file names, UIDs, the annotation CSVs of VinDr-Mammo and CBIS-DDSM); the breast model
and renderer are `synth_render` (`Breast`, `Lesion`, `plan_breasts`, `render_view`,
`LESION_RADIUS`); stored pixels and the DICOM files are `synth_dicom` (`render_stored`,
`mg_dataset`, `save_mg`, `to_stored`, `window_for`). Their names are re-exported here, so
`from xpr_deploy.data.synth import X` works for all of them.

A dataset mixes MONOCHROME1/2 and uncompressed, RLE and JPEG 2000 lossless transfer syntaxes;
every file is a valid MG For Presentation object (checked by `dciodvfy`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID, generate_uid

from ..errors import ConfigError
from ..io import OutputError, atomic_dir, write_text
from .dicom import MG_FOR_PRESENTATION
from .synth_dicom import (
    BITS,
    MAXV,
    ORIENTATION,
    TRANSFER_SYNTAX_NAMES,
    TRANSFER_SYNTAXES,
    mg_dataset,
    render_stored,
    save_mg,
    to_stored,
    window_for,
)
from .synth_render import LESION_RADIUS, Breast, Lesion, plan_breasts, render_view
from .views import VIEW_CODES, VIEWS

__all__ = [
    "BITS",
    "LESION_RADIUS",
    "MAXV",
    "MG_FOR_PRESENTATION",
    "ORIENTATION",
    "TRANSFER_SYNTAXES",
    "TRANSFER_SYNTAX_NAMES",
    "VIEWS",
    "VIEW_CODES",
    "Breast",
    "Lesion",
    "SynthSummary",
    "mg_dataset",
    "plan_breasts",
    "render_stored",
    "render_view",
    "save_mg",
    "to_stored",
    "window_for",
    "write_synthetic",
]


@dataclass
class SynthSummary:
    """What `write_synthetic` wrote."""

    root: Path
    format: str
    breasts: int
    positives: int
    files: list[Path]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "format": self.format,
            "breasts": self.breasts,
            "positives": self.positives,
            "files": len(self.files),
            "seconds": round(self.seconds, 2),
        }


def _uid(*parts: Any) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _hex(*parts: Any) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow(r)
    return buf.getvalue()


def write_synthetic(
    out: str | Path,
    breasts: int,
    format: str = "vindr",
    size: tuple[int, int] = (1024, 512),
    seed: int = 0,
    positive_fraction: float = 0.5,
    overwrite: bool = False,
    transfer_syntax: str = "mixed",
) -> SynthSummary:
    """Write `breasts` synthetic breasts (CC + MLO each) in the VinDr or CBIS layout under `out`.

    The folder appears atomically; an existing non-empty folder is replaced only with `overwrite`.
    `transfer_syntax`: "mixed" cycles `TRANSFER_SYNTAXES`; a name of `TRANSFER_SYNTAX_NAMES` uses one.
    """
    if transfer_syntax != "mixed" and transfer_syntax not in TRANSFER_SYNTAX_NAMES:
        names = ", ".join(["mixed", *TRANSFER_SYNTAX_NAMES])
        raise ConfigError(f"transfer syntax {transfer_syntax!r}: choose one of {names}")
    if format not in ("vindr", "cbis"):
        raise ConfigError(f"synthetic format must be vindr or cbis, not {format!r}")
    if breasts < 1:
        raise ConfigError("need at least one breast")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ConfigError(f"positive fraction {positive_fraction} must be in [0, 1]")
    h, w = size
    if h < 64 or w < 32:
        raise ConfigError(f"size {h}x{w} too small (min 64x32)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputError(f"{out}: exists and is not empty (pass overwrite / --force)")
    t0 = time.perf_counter()
    plan = plan_breasts(breasts, seed, positive_fraction, format)
    rng = np.random.default_rng([seed, 99])
    # group breasts into studies/patients: VinDr studies have L and R; CBIS patients have 1-2 breasts
    groups: list[list[Breast]] = []
    i = 0
    while i < breasts:
        take = 2 if (format == "vindr" or rng.random() < 0.5) and i + 1 < breasts else 1
        group = plan[i : i + take]
        sides = ["L", "R"] if take == 2 else [str(rng.choice(["L", "R"]))]
        for b, s in zip(group, sides, strict=True):
            b.laterality = s
        groups.append(group)
        i += take
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    img_no = 0
    with atomic_dir(out) as tmp:
        for g, group in enumerate(groups):
            photometric = "MONOCHROME1" if g % 2 else "MONOCHROME2"
            study_uid = _uid(seed, format, g, "study")
            patient_id = f"P_{g + 1:05d}" if format == "cbis" else _hex(seed, g, "patient")[:16]
            study_hex = _hex(seed, g, "study")
            split = "test" if rng.random() < 0.2 else ("training" if format == "vindr" else "train")
            for b in group:
                birads = (
                    int(rng.choice([4, 5], p=[0.7, 0.3]))
                    if b.malignant
                    else int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                )
                density = str(rng.choice(["A", "B", "C", "D"]))
                abn = "mass" if b.malignant or format == "vindr" else "calcification"
                pathology = "MALIGNANT" if b.malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"]))
                for view in VIEWS:
                    center, width = int(rng.integers(1700, 2100)), int(rng.integers(3000, 3800))
                    stored, pad = render_stored(b, view, size, photometric, center, width, padding=img_no % 4 == 3)
                    series_uid = _uid(seed, format, g, b.laterality, view, "series")
                    sop_uid = _uid(seed, format, g, b.laterality, view, "sop")
                    ds = mg_dataset(
                        stored,
                        photometric=photometric,
                        laterality=b.laterality,
                        view=view,
                        window=window_for(photometric, center, width),
                        patient_id=patient_id,
                        patient_name=f"SYNTH^{patient_id}",
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_uid=sop_uid,
                        accession=f"A{g + 1:06d}",
                        instance=img_no + 1,
                        padding_value=pad,
                    )
                    ts = (
                        TRANSFER_SYNTAX_NAMES.get(transfer_syntax) or TRANSFER_SYNTAXES[img_no % len(TRANSFER_SYNTAXES)]
                    )
                    img_no += 1
                    box = b.boxes.get(view)
                    if box is not None and b.laterality == "R":  # stored mirrored
                        box = [w - 1 - box[2], box[1], w - 1 - box[0], box[3]]
                    if format == "vindr":
                        image_id = _hex(seed, g, b.laterality, view, "image")
                        rel = Path("images") / study_hex / f"{image_id}.dicom"
                        rows.append(
                            {
                                "study_id": study_hex,
                                "series_id": _hex(seed, g, b.laterality, view, "series"),
                                "image_id": image_id,
                                "laterality": b.laterality,
                                "view_position": view,
                                "height": h,
                                "width": w,
                                "breast_birads": f"BI-RADS {birads}",
                                "breast_density": f"DENSITY {density}",
                                "split": split,
                                "box": box,
                            }
                        )
                    else:
                        kind = "Mass" if abn == "mass" else "Calc"
                        tag = "Training" if split == "train" else "Test"
                        side = "LEFT" if b.laterality == "L" else "RIGHT"
                        case = f"{kind}-{tag}_{patient_id}_{side}_{view}"
                        series_no = int(_hex(case)[:4], 16) % 90000 + 10000
                        rel = (
                            Path("CBIS-DDSM")
                            / case
                            / f"07-20-2016-DDSM-{series_no % 1000:03d}"
                            / f"1.000000-full mammogram images-{series_no}"
                            / "1-1.dcm"
                        )
                        rows.append(
                            {
                                "kind": kind,
                                "split": split,
                                "patient_id": patient_id,
                                "breast_density": "ABCD".index(density) + 1,
                                "side": side,
                                "view": view,
                                "abnormality_type": abn,
                                "pathology": pathology,
                                "assessment": birads,
                                "case": case,
                                "study_uid": study_uid,
                                "series_uid": series_uid,
                            }
                        )
                    save_mg(ds, tmp / rel, ts)
                    files.append(out / rel)
        if format == "vindr":
            _write_vindr_csvs(tmp, rows)
        else:
            _write_cbis_csvs(tmp, rows)
    return SynthSummary(
        root=out,
        format=format,
        breasts=breasts,
        positives=sum(b.malignant for b in plan),
        files=files,
        seconds=time.perf_counter() - t0,
    )


def _write_vindr_csvs(root: Path, rows: list[dict[str, Any]]) -> None:
    cols = [
        "study_id",
        "series_id",
        "image_id",
        "laterality",
        "view_position",
        "height",
        "width",
        "breast_birads",
        "breast_density",
        "split",
    ]
    write_text(root / "breast-level_annotations.csv", _csv([{k: r[k] for k in cols} for r in rows], cols))
    fcols = [*cols[:9], "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]
    frows = []
    for r in rows:
        f = {k: r[k] for k in cols}
        if r["box"] is not None:
            f.update(
                finding_categories="['Mass']",
                finding_birads=r["breast_birads"],
                **{k: f"{v:.2f}" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), r["box"], strict=True)},
            )
        else:
            f.update(finding_categories="['No Finding']", finding_birads="", xmin="", ymin="", xmax="", ymax="")
        frows.append(f)
    write_text(root / "finding_annotations.csv", _csv(frows, fcols))


def _write_cbis_csvs(root: Path, rows: list[dict[str, Any]]) -> None:
    tail = ["pathology", "subtlety", "image file path", "cropped image file path", "ROI mask file path"]
    mass_cols = [
        "patient_id",
        "breast_density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "mass shape",
        "mass margins",
        "assessment",
        *tail,
    ]
    calc_cols = [
        "patient_id",
        "breast density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "calc type",
        "calc distribution",
        "assessment",
        *tail,
    ]
    for kind, cols in (("Mass", mass_cols), ("Calc", calc_cols)):
        for split in ("train", "test"):
            out = []
            for r in rows:
                if r["kind"] != kind or r["split"] != split:
                    continue
                img = f"{r['case']}/{r['study_uid']}/{r['series_uid']}/000000.dcm"
                row = {
                    "patient_id": r["patient_id"],
                    cols[1]: r["breast_density"],
                    "left or right breast": r["side"],
                    "image view": r["view"],
                    "abnormality id": 1,
                    "abnormality type": r["abnormality_type"],
                    "assessment": r["assessment"],
                    "pathology": r["pathology"],
                    "subtlety": 4,
                    "image file path": img,
                    "cropped image file path": f"{r['case']}_1/{r['study_uid']}/x/000000.dcm",
                    "ROI mask file path": f"{r['case']}_1/{r['study_uid']}/x/000001.dcm\n",
                }
                if kind == "Mass":
                    row.update(
                        {
                            "mass shape": "IRREGULAR" if r["pathology"] == "MALIGNANT" else "OVAL",
                            "mass margins": "SPICULATED" if r["pathology"] == "MALIGNANT" else "CIRCUMSCRIBED",
                        }
                    )
                else:
                    row.update({"calc type": "PUNCTATE", "calc distribution": "CLUSTERED"})
                out.append(row)
            name = f"{kind.lower()}_case_description_{split}_set.csv"
            write_text(root / name, _csv(out, cols))
