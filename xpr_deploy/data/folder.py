"""A plain folder of DICOM studies (a PACS export): pairing from the tags alone, no labels."""

from __future__ import annotations

from pathlib import Path

from .dicom import laterality_of, read_image, view_of
from .errors import DicomError
from .labels import label_rule as resolve_rule
from .pairs import DatasetIndex, ImageRecord, Reject, pair_images

#: files that are obviously not DICOM are skipped without a reject
SKIP_SUFFIXES = {
    ".csv",
    ".json",
    ".txt",
    ".md",
    ".npy",
    ".npz",
    ".png",
    ".jpg",
    ".jpeg",
    ".xml",
    ".html",
    ".pdf",
    ".zip",
    ".gz",
    ".tsv",
}


def load_folder(root: str | Path, label_rule: str | None = None) -> DatasetIndex:
    """Every DICOM under `root`, paired on (StudyInstanceUID, laterality); labels are -1."""
    root = Path(root)
    rule = resolve_rule(label_rule, "folder")
    idx = DatasetIndex(root=root, format="folder", label_rule=rule.name)
    records: list[ImageRecord] = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() in SKIP_SUFFIXES or path.name == "DICOMDIR":
            continue
        try:
            ds = read_image(path, header_only=True)
            lat = laterality_of(ds, str(path))
            view = view_of(ds, str(path))
        except DicomError as exc:
            idx.rejects.append(Reject(str(path), str(exc)))
            continue
        study = str(ds.get("StudyInstanceUID", "") or path.parent.name)
        patient = str(ds.get("PatientID", "") or study)
        records.append(
            ImageRecord(
                path=path,
                study_id=study,
                patient_id=patient,
                laterality=lat,
                view=view,
                raw_label=None,
                meta={"sop_instance_uid": str(ds.get("SOPInstanceUID", ""))},
            )
        )
    idx.pairs = pair_images(records, rule.label, idx.rejects)
    return idx
