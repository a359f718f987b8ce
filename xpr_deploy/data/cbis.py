"""CBIS-DDSM: the four `*_case_description_*.csv` files + the NBIA folder layout.

A CSV row is one abnormality; its "image file path" starts with the case folder
(`Mass-Training_P_00001_LEFT_CC`), which is how the full mammogram is found on disk
(`CBIS-DDSM/<case folder>/<study>/<series: full mammogram images>/1-1.dcm`). Patients are grouped
across all four CSVs; a breast is malignant if any of its abnormalities is.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from .dicom import laterality_of, verify_image, view_of, warnings_of
from .errors import DatasetError, DicomError
from .header import text_value
from .labels import label_rule as resolve_rule
from .pairs import DatasetIndex, ImageRecord, Reject, pair_images
from .selection import SECONDARY_CAPTURE, Instance, NotUsed, Policy, exclusion, read_instance
from .views import is_view
from .vindr import read_csv
from .walk import walk_files

CSV_GLOB = "*case_description*.csv"
_SIDES = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}


def _norm(key: str) -> str:
    return re.sub(r"[^a-z]+", "_", key.lower()).strip("_")


def find_csvs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(CSV_GLOB) if p.is_file())


def _case_folders(root: Path) -> dict[str, Path]:
    """Case folder name -> folder, for the NBIA layout (root/CBIS-DDSM/<case>) or cases at the root."""
    out: dict[str, Path] = {}
    for base in (root, root / "CBIS-DDSM"):
        if base.is_dir():
            for d in base.iterdir():
                if d.is_dir() and d.name != "CBIS-DDSM":
                    out.setdefault(d.name, d)
    return out


def _full_image(root: Path, rel: str, folders: dict[str, Path], cache: dict[str, Path | str]) -> Path | str:
    """The full-mammogram file of a CSV "image file path", or a reason string when not found/ambiguous."""
    rel = rel.strip().replace("\\", "/")
    exact = root / rel
    if rel and exact.is_file():
        return exact
    case = rel.split("/", 1)[0]
    if case in cache:
        return cache[case]
    folder = folders.get(case)
    if folder is None:
        result: Path | str = f"case folder {case or '?'} not found under {root}"
    else:
        files = [f for f in walk_files(folder)[0] if f.suffix == ".dcm"]  # iterative, bounded, no special files
        full = [f for f in files if "full mammogram" in str(f.relative_to(folder)).lower()]
        cands = full or files
        if not cands:
            result = f"no .dcm file under {folder}"
        elif len(cands) > 1:
            result = f"{len(cands)} candidate full-mammogram files under {folder}"
        else:
            result = cands[0]
    cache[case] = result
    return result


#: (patient, side, view) -> {case folder: (full-mammogram file, official split)}
_Views = dict[tuple[str, str, str], dict[str, tuple[Path, str]]]


def load_cbis(
    root: str | Path,
    label_rule: str | None = None,
    *,
    verify: bool = True,
    decode: bool = False,
    policy: Policy | None = None,
) -> DatasetIndex:
    """Index a CBIS-DDSM download (any subset of the four CSVs); with `verify`, the selection rules
    (`policy`) apply to the headers as for a folder, except that CBIS-DDSM's digitized films are
    Secondary Capture objects (Modality MG) and are read."""
    root = Path(root)
    rule = resolve_rule(label_rule, "cbis")
    csvs = find_csvs(root)
    if not csvs:
        raise DatasetError(f"{root}: no {CSV_GLOB} (not a CBIS-DDSM folder)")
    idx = DatasetIndex(root=root, format="cbis", label_rule=rule.name)
    pathologies, views = _read_case_rows(root, csvs, idx)
    records: list[ImageRecord] = []
    for (patient, side, view), cases in sorted(views.items()):
        chosen = _choose_case(idx, patient, side, view, cases)
        path, split = cases[chosen]
        instance = None
        if verify:
            instance = _verified_instance(idx, path, patient, side, view, decode)
            if instance is None:
                continue
        raw = "+".join(sorted(pathologies[(patient, side)]))
        records.append(
            ImageRecord(
                path=path,
                study_id=patient,
                patient_id=patient,
                laterality=side,
                view=view,
                raw_label=raw,
                official_split=split,
                meta={"case": chosen},
                instance=instance,
            )
        )
    idx.pairs = pair_images(records, rule.label, idx.rejects, policy=policy, not_used=idx.not_used)
    return idx


def _read_case_rows(root: Path, csvs: list[Path], idx: DatasetIndex) -> tuple[dict[tuple[str, str], set[str]], _Views]:
    """Every CSV row: the pathologies of each breast, and each (patient, side, view)'s full mammogram
    per case folder; a row that cannot be used is a reject in `idx` naming the CSV line."""
    folders = _case_folders(root)
    cache: dict[str, Path | str] = {}
    pathologies: dict[tuple[str, str], set[str]] = defaultdict(set)
    views: _Views = defaultdict(dict)
    for csv_path in csvs:
        split = "test" if "test" in csv_path.name.lower() else "training"
        for n, raw_row in enumerate(read_csv(csv_path), start=2):
            row = {_norm(k): v for k, v in raw_row.items()}
            where = f"{csv_path.name}:{n}"
            patient = row.get("patient_id", "")
            side = _SIDES.get(row.get("left_or_right_breast", "").upper(), "")
            view = row.get("image_view", "").upper()
            rel = row.get("image_file_path", "")
            if not patient or not rel:
                idx.rejects.append(Reject(where, "row without patient_id or image file path"))
                continue
            if not side:
                bad = row.get("left_or_right_breast", "")
                idx.rejects.append(Reject(where, f"laterality {bad!r} (need LEFT/RIGHT)"))
                continue
            pathologies[(patient, side)].add(row.get("pathology", "").upper() or "?")
            if not is_view(view):
                idx.rejects.append(Reject(where, f"view {view or 'missing'} is not CC or MLO"))
                continue
            case = rel.strip().split("/", 1)[0]
            if case not in views[(patient, side, view)]:
                found = _full_image(root, rel, folders, cache)
                if isinstance(found, str):
                    idx.rejects.append(Reject(where, found))
                    continue
                views[(patient, side, view)][case] = (found, split)
    return pathologies, views


def _choose_case(idx: DatasetIndex, patient: str, side: str, view: str, cases: dict[str, tuple[Path, str]]) -> str:
    """The same mammogram appears under a Mass and a Calc case folder: keep one (Mass first), noted."""
    chosen = sorted(cases, key=lambda c: (not c.lower().startswith("mass"), c))[0]
    if len(cases) > 1:
        idx.notes.append(
            f"{patient} {side} {view}: {len(cases)} case folders ({', '.join(sorted(cases))}); using {chosen}"
        )
    return chosen


def _verified_instance(
    idx: DatasetIndex, path: Path, patient: str, side: str, view: str, decode: bool
) -> Instance | None:
    """The file's header read and checked against its CSV row (laterality, view) and the selection
    rules; None when it is rejected or not used (recorded in `idx` with the reason)."""
    try:
        ds = verify_image(path, decode=decode)
        instance = replace(read_instance(ds, path), study=patient, laterality=side)
        if ("ImageLaterality" in ds or "Laterality" in ds) and (lat := laterality_of(ds, str(path))) != side:
            raise DicomError(f"{path}: laterality {lat} in the DICOM but {side} in the CSV")
        if text_value(ds, "ViewPosition", str(path)) and (v := view_of(ds, str(path))) != view:
            raise DicomError(f"{path}: view {v} in the DICOM but {view} in the CSV")
    except DicomError as exc:
        idx.rejects.append(Reject(str(path), str(exc)))
        return None
    if reason := exclusion(instance, only_mammography_class=False, allow={SECONDARY_CAPTURE}):
        idx.not_used.append(NotUsed(str(path), instance.sop_uid, reason, patient, side))
        return None
    idx.notes.extend(f"{path}: {w}" for w in warnings_of(ds))
    return instance
