"""A plain folder of DICOM studies (a PACS export): pairing from the tags alone, no labels."""

from __future__ import annotations

from pathlib import Path

from .dicom import laterality_of, verify_image, view_of, warnings_of
from .errors import DicomError
from .header import printable, text_value
from .labels import label_rule as resolve_rule
from .pairs import DatasetIndex, ImageRecord, Reject, pair_images
from .walk import walk_files

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


def load_folder(root: str | Path, label_rule: str | None = None, *, decode: bool = False) -> DatasetIndex:
    """Every DICOM under `root`, paired on (StudyInstanceUID, laterality); labels are -1.

    Each file is checked on its own (a bad one is a Reject, the rest go on); `decode` also runs
    the preprocessing on its pixels, so a file that passes is one `train`/`predict` can use."""
    root = Path(root)
    rule = resolve_rule(label_rule, "folder")
    idx = DatasetIndex(root=root, format="folder", label_rule=rule.name)
    records: list[ImageRecord] = []
    files, skipped = walk_files(root)  # iterative and bounded; special files named, never opened
    idx.rejects.extend(skipped)
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() in SKIP_SUFFIXES or path.name == "DICOMDIR":
            continue
        try:
            ds = verify_image(path, decode=decode)
            lat = laterality_of(ds, str(path))
            view = view_of(ds, str(path))
        except DicomError as exc:
            idx.rejects.append(Reject(str(path), str(exc)))
            continue
        idx.notes.extend(f"{path}: {w}" for w in warnings_of(ds))
        study = printable(text_value(ds, "StudyInstanceUID", str(path)), 128) or path.parent.name
        patient = printable(text_value(ds, "PatientID", str(path)), 128) or study
        records.append(
            ImageRecord(
                path=path,
                study_id=study,
                patient_id=patient,
                laterality=lat,
                view=view,
                raw_label=None,
                meta={"sop_instance_uid": text_value(ds, "SOPInstanceUID", str(path))},
            )
        )
    idx.pairs = pair_images(records, rule.label, idx.rejects)
    return idx
