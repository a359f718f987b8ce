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


def _check_args(
    breasts: int, format: str, size: tuple[int, int], positive_fraction: float, transfer_syntax: str
) -> None:
    """Refuse bad arguments before anything is rendered or written (exit code 2 through ConfigError)."""
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


def _group_breasts(plan: list[Breast], format: str, rng: np.random.Generator) -> list[list[Breast]]:
    """Group breasts into studies/patients and set their sides: VinDr studies have L and R; CBIS patients 1-2."""
    groups: list[list[Breast]] = []
    i = 0
    while i < len(plan):
        take = 2 if (format == "vindr" or rng.random() < 0.5) and i + 1 < len(plan) else 1
        group = plan[i : i + take]
        sides = ["L", "R"] if take == 2 else [str(rng.choice(["L", "R"]))]
        for b, s in zip(group, sides, strict=True):
            b.laterality = s
        groups.append(group)
        i += take
    return groups


@dataclass(frozen=True)
class _Study:
    """One group's identifiers, photometric interpretation and dataset split, shared by its images."""

    g: int
    photometric: str
    uid: str
    patient_id: str
    hex: str
    split: str

    @classmethod
    def draw(cls, g: int, seed: int, format: str, rng: np.random.Generator) -> _Study:
        """Alternate MONOCHROME1/2 per study; about one study in five goes to the test split."""
        return cls(
            g=g,
            photometric="MONOCHROME1" if g % 2 else "MONOCHROME2",
            uid=_uid(seed, format, g, "study"),
            patient_id=f"P_{g + 1:05d}" if format == "cbis" else _hex(seed, g, "patient")[:16],
            hex=_hex(seed, g, "study"),
            split="test" if rng.random() < 0.2 else ("training" if format == "vindr" else "train"),
        )


@dataclass(frozen=True)
class _Labels:
    """A breast's annotation: BI-RADS, density, abnormality type and pathology (consistent with `malignant`)."""

    birads: int
    density: str
    abn: str
    pathology: str

    @classmethod
    def draw(cls, b: Breast, format: str, rng: np.random.Generator) -> _Labels:
        """Malignant breasts get BI-RADS 4-5 and MALIGNANT; the others 1-3 and a benign pathology."""
        birads = int(rng.choice([4, 5], p=[0.7, 0.3])) if b.malignant else int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        density = str(rng.choice(["A", "B", "C", "D"]))
        abn = "mass" if b.malignant or format == "vindr" else "calcification"
        pathology = "MALIGNANT" if b.malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"]))
        return cls(birads, density, abn, pathology)


def _vindr_entry(
    seed: int, st: _Study, b: Breast, lab: _Labels, view: str, size: tuple[int, int], box: list[float] | None
) -> tuple[Path, dict[str, Any]]:
    """The file's place in the VinDr-Mammo layout and its row of the annotation CSVs."""
    h, w = size
    image_id = _hex(seed, st.g, b.laterality, view, "image")
    rel = Path("images") / st.hex / f"{image_id}.dicom"
    row = {
        "study_id": st.hex,
        "series_id": _hex(seed, st.g, b.laterality, view, "series"),
        "image_id": image_id,
        "laterality": b.laterality,
        "view_position": view,
        "height": h,
        "width": w,
        "breast_birads": f"BI-RADS {lab.birads}",
        "breast_density": f"DENSITY {lab.density}",
        "split": st.split,
        "box": box,
    }
    return rel, row


def _cbis_entry(st: _Study, b: Breast, lab: _Labels, view: str, series_uid: str) -> tuple[Path, dict[str, Any]]:
    """The file's place in the CBIS-DDSM (TCIA download) layout and its row of the case-description CSVs."""
    kind = "Mass" if lab.abn == "mass" else "Calc"
    tag = "Training" if st.split == "train" else "Test"
    side = "LEFT" if b.laterality == "L" else "RIGHT"
    case = f"{kind}-{tag}_{st.patient_id}_{side}_{view}"
    series_no = int(_hex(case)[:4], 16) % 90000 + 10000
    rel = (
        Path("CBIS-DDSM")
        / case
        / f"07-20-2016-DDSM-{series_no % 1000:03d}"
        / f"1.000000-full mammogram images-{series_no}"
        / "1-1.dcm"
    )
    row = {
        "kind": kind,
        "split": st.split,
        "patient_id": st.patient_id,
        "breast_density": "ABCD".index(lab.density) + 1,
        "side": side,
        "view": view,
        "abnormality_type": lab.abn,
        "pathology": lab.pathology,
        "assessment": lab.birads,
        "case": case,
        "study_uid": st.uid,
        "series_uid": series_uid,
    }
    return rel, row


def _view_dataset(
    seed: int, format: str, st: _Study, b: Breast, view: str, size: tuple[int, int], img_no: int,
    rng: np.random.Generator,
) -> Any:  # fmt: skip
    """Render one view with a drawn window (every fourth image padded) as an MG For Presentation dataset."""
    center, width = int(rng.integers(1700, 2100)), int(rng.integers(3000, 3800))
    stored, pad = render_stored(b, view, size, st.photometric, center, width, padding=img_no % 4 == 3)
    return mg_dataset(
        stored,
        photometric=st.photometric,
        laterality=b.laterality,
        view=view,
        window=window_for(st.photometric, center, width),
        patient_id=st.patient_id,
        patient_name=f"SYNTH^{st.patient_id}",
        study_uid=st.uid,
        series_uid=_uid(seed, format, st.g, b.laterality, view, "series"),
        sop_uid=_uid(seed, format, st.g, b.laterality, view, "sop"),
        accession=f"A{st.g + 1:06d}",
        instance=img_no + 1,
        padding_value=pad,
    )


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
    _check_args(breasts, format, size, positive_fraction, transfer_syntax)
    w = size[1]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputError(f"{out}: exists and is not empty (pass overwrite / --force)")
    t0 = time.perf_counter()
    plan = plan_breasts(breasts, seed, positive_fraction, format)
    rng = np.random.default_rng([seed, 99])
    groups = _group_breasts(plan, format, rng)
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    img_no = 0
    with atomic_dir(out) as tmp:
        for g, group in enumerate(groups):
            st = _Study.draw(g, seed, format, rng)
            for b in group:
                lab = _Labels.draw(b, format, rng)
                for view in VIEWS:
                    ds = _view_dataset(seed, format, st, b, view, size, img_no, rng)
                    ts = (
                        TRANSFER_SYNTAX_NAMES.get(transfer_syntax) or TRANSFER_SYNTAXES[img_no % len(TRANSFER_SYNTAXES)]
                    )
                    img_no += 1
                    box = b.boxes.get(view)
                    if box is not None and b.laterality == "R":  # stored mirrored
                        box = [w - 1 - box[2], box[1], w - 1 - box[0], box[3]]
                    if format == "vindr":
                        rel, row = _vindr_entry(seed, st, b, lab, view, size, box)
                    else:
                        rel, row = _cbis_entry(st, b, lab, view, str(ds.SeriesInstanceUID))
                    rows.append(row)
                    save_mg(ds, tmp / rel, ts)
                    files.append(out / rel)
        (_write_vindr_csvs if format == "vindr" else _write_cbis_csvs)(tmp, rows)
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
