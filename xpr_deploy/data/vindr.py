"""VinDr-Mammo: `breast-level_annotations.csv` + `images/<study_id>/<image_id>.dicom`.

VinDr has no patient id, so the study is the split group. Pairs are (study_id, laterality), never
series (28 studies have two series).
"""

from __future__ import annotations

import ast
import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from .dicom import laterality_of, verify_image, view_of, warnings_of
from .errors import DatasetError, DicomError
from .labels import label_rule as resolve_rule
from .pairs import DatasetIndex, ImageRecord, Reject, pair_images
from .selection import NotUsed, Policy, exclusion, read_instance
from .views import is_view

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
REQUIRED = ("study_id", "image_id", "laterality", "view_position", "breast_birads")


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with stripped keys and values (CBIS paths end in stray newlines)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from None


def _findings(root: Path) -> dict[str, list[dict[str, Any]]]:
    path = root / FINDING_CSV
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not path.exists():
        return out
    for row in read_csv(path):
        try:
            cats = ast.literal_eval(row.get("finding_categories", "[]") or "[]")
        except (ValueError, SyntaxError):
            cats = [row.get("finding_categories", "")]
        if not row.get("xmin"):
            continue
        try:
            box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (KeyError, ValueError):
            continue
        out[row.get("image_id", "")].append(
            {"categories": list(cats), "birads": row.get("finding_birads", ""), "box": box}
        )
    return out


def load_vindr(
    root: str | Path,
    label_rule: str | None = None,
    *,
    verify: bool = True,
    decode: bool = False,
    policy: Policy | None = None,
) -> DatasetIndex:
    """Index a VinDr-Mammo download. `verify` reads every DICOM header (no pixels) and checks its
    tags and pixel data length, and applies the selection rules (one per SOP Instance UID, no
    secondary capture, tomosynthesis or modified view, ...; `policy`); `decode` also runs the
    preprocessing on the pixels."""
    root = Path(root)
    rule = resolve_rule(label_rule, "vindr")
    csv_path = root / BREAST_CSV
    if not csv_path.exists():
        raise DatasetError(f"{root}: no {BREAST_CSV} (not a VinDr-Mammo folder)")
    rows = read_csv(csv_path)
    if rows and (missing := [c for c in REQUIRED if c not in rows[0]]):
        raise DatasetError(f"{csv_path}: missing columns {', '.join(missing)}")
    findings = _findings(root)
    idx = DatasetIndex(root=root, format="vindr", label_rule=rule.name)
    records: list[ImageRecord] = []
    for row in rows:
        study, image = row["study_id"], row["image_id"]
        path = root / "images" / study / f"{image}.dicom"
        lat = row["laterality"].upper()
        view = row["view_position"].upper()
        if lat not in ("L", "R"):
            idx.rejects.append(Reject(str(path), f"laterality {lat or 'missing'} in {BREAST_CSV} (need L or R)"))
            continue
        if not is_view(view):
            idx.rejects.append(Reject(str(path), f"view {view or 'missing'} is not CC or MLO"))
            continue
        instance = None
        if verify:
            try:
                ds = verify_image(path, decode=decode)
                instance = replace(read_instance(ds, path), study=study, laterality=lat)
                if ("ImageLaterality" in ds or "Laterality" in ds) and (tag_lat := laterality_of(ds, str(path))) != lat:
                    raise DicomError(f"{path}: laterality {tag_lat} in the DICOM but {lat} in {BREAST_CSV}")
                if ("ViewPosition" in ds or "ViewCodeSequence" in ds) and (tag_view := view_of(ds, str(path))) != view:
                    raise DicomError(f"{path}: view {tag_view} in the DICOM but {view} in {BREAST_CSV}")
            except DicomError as exc:
                idx.rejects.append(Reject(str(path), str(exc)))
                continue
            if reason := exclusion(instance, only_mammography_class=False):
                idx.not_used.append(NotUsed(str(path), instance.sop_uid, reason, study, lat))
                continue
            idx.notes.extend(f"{path}: {w}" for w in warnings_of(ds))
        elif not path.exists():
            idx.rejects.append(Reject(str(path), f"{path}: file not found"))
            continue
        meta: dict[str, Any] = {"image_id": image, "series_id": row.get("series_id", "")}
        if image in findings:
            meta["findings"] = findings[image]
        records.append(
            ImageRecord(
                path=path,
                study_id=study,
                patient_id=study,
                laterality=lat,
                view=view,
                raw_label=row["breast_birads"],
                official_split=row.get("split", ""),
                meta=meta,
                instance=instance,
            )
        )
    idx.pairs = pair_images(records, rule.label, idx.rejects, policy=policy, not_used=idx.not_used)
    return idx
