"""A plain folder of DICOM studies (a PACS export): every instance indexed, the screening CC and MLO
of each breast chosen by the selection rules (`selection.py`) from the tags alone, no labels."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from .dicom import (
    CHECK_SETTINGS,
    check_mg,
    check_pixels,
    laterality_of,
    open_dicom,
    preprocess_with_geometry,
    view_of,
    warnings_of,
)
from .errors import DicomError
from .header import printable, text_value
from .labels import label_rule as resolve_rule
from .pairs import DatasetIndex, ImageRecord, Reject, pair_images
from .selection import Instance, NotUsed, Policy, exclusion, read_instance
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


def load_folder(
    root: str | Path, label_rule: str | None = None, *, decode: bool = False, policy: Policy | None = None
) -> DatasetIndex:
    """Every DICOM under `root`, one per SOP Instance UID, screening views chosen per (StudyInstanceUID,
    laterality) by `policy` (acquired or synthesized 2D first, `strict`); labels are -1.

    Each file is checked on its own (an unreadable or invalid one is a Reject, the rest go on; one
    that is valid but not a screening view is NotUsed with the rule); `decode` also runs the
    preprocessing on the pixels of the candidates, so a file that passes is one `predict` can use."""
    root = Path(root)
    rule = resolve_rule(label_rule, "folder")
    idx = DatasetIndex(root=root, format="folder", label_rule=rule.name)
    headers: list[tuple[Instance, Dataset]] = []
    files, skipped = walk_files(root)  # iterative and bounded; special files named, never opened
    idx.rejects.extend(skipped)
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() in SKIP_SUFFIXES or path.name == "DICOMDIR":
            continue
        try:
            ds = open_dicom(path, header_only=True)
            headers.append((read_instance(ds, path), ds))
        except DicomError as exc:
            idx.rejects.append(Reject(str(path), str(exc)))
    records: list[ImageRecord] = []
    for inst, ds in headers:
        if reason := exclusion(inst):
            idx.not_used.append(NotUsed(str(inst.path), inst.sop_uid, reason, inst.study, inst.laterality))
            continue
        path = inst.path
        try:
            check_pixels(ds, str(path))
            check_mg(ds, str(path))
            lat = laterality_of(ds, str(path))
            view = view_of(ds, str(path))
            if decode:
                preprocess_with_geometry(path, CHECK_SETTINGS)
        except DicomError as exc:
            idx.rejects.append(Reject(str(path), str(exc)))
            continue
        idx.notes.extend(f"{path}: {w}" for w in warnings_of(ds))
        study = inst.study or path.parent.name
        patient = printable(text_value(ds, "PatientID", str(path)), 128) or study
        records.append(
            ImageRecord(
                path=path,
                study_id=study,
                patient_id=patient,
                laterality=lat,
                view=view,
                raw_label=None,
                meta={"sop_instance_uid": inst.sop_uid},
                instance=inst,
            )
        )
    # one instance per SOP Instance UID among the usable ones (pair_images): a copy that is
    # excluded or broken never displaces the good file of the same UID
    idx.pairs = pair_images(records, rule.label, idx.rejects, policy=policy, not_used=idx.not_used)
    return idx
