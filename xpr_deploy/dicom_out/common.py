"""What every DICOM result shares: the checked copy of a source header (`clean_source`), the model
as a device (`DeviceIdentity`), one breast's result (`BreastDicom`), derived UIDs, local codes, the
region the model looked at, and where an object is written (`object_path`)."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import XprError
from ..io import child_path, is_uid, uid_name

if TYPE_CHECKING:
    from pydicom import Dataset

    from ..train.operating_points import OperatingPoint

NOT_FOR_CLINICAL = "NOT FOR CLINICAL USE"
SR_SERIES_DESCRIPTION = f"xpr X-Pruning AI result - {NOT_FOR_CLINICAL}"
SEG_SERIES_DESCRIPTION = f"xpr window-selection heatmaps - {NOT_FOR_CLINICAL}"
MANUFACTURER = "xpr (X-Pruning deployment toolkit)"
SR_SERIES_NUMBER = 9901
SEG_SERIES_NUMBER = 9902
SEG_BINARY_SERIES_NUMBER = 9903
SEG_BINARY_SERIES_DESCRIPTION = f"xpr most-kept windows per stage - {NOT_FOR_CLINICAL}"
#: local codes (a private coding scheme: no standard code says "decision of this model")
_SCHEME = "99XPR"


class DicomOutError(XprError):
    """The DICOM results could not be built or written."""


# ---- the source header the writers see -----------------------------------------------------------

#: Patient and study attributes the results carry (the Patient and General Study modules' Type 2
#: ones, then Type 3 ones copied only when valid): keyword -> (VR, Type 2). Nothing else of the
#: source's Patient, Clinical Trial and Study modules is copied.
PATIENT_STUDY: dict[str, tuple[str, bool]] = {
    "PatientName": ("PN", True),
    "PatientID": ("LO", True),
    "PatientBirthDate": ("DA", True),
    "PatientSex": ("CS", True),
    "StudyDate": ("DA", True),
    "StudyTime": ("TM", True),
    "ReferringPhysicianName": ("PN", True),
    "StudyID": ("SH", True),
    "AccessionNumber": ("SH", True),
    "IssuerOfPatientID": ("LO", False),
    "StudyDescription": ("LO", False),
    "PatientAge": ("AS", False),
    "PatientIdentityRemoved": ("CS", False),
    "DeidentificationMethod": ("LO", False),
}
#: identifiers every result copies or references: must be valid UIDs (Type 1)
SOURCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_ENUMS = {"PatientSex": ("M", "F", "O"), "PatientIdentityRemoved": ("YES", "NO")}
#: groups of the Patient, Clinical Trial Subject/Study and Visit attributes, dropped from the copy
_PATIENT_GROUPS = (0x0010, 0x0012, 0x0038)
#: study-level attributes outside those groups (General Study, Patient Study), dropped from the copy
_STUDY_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName", "ConsultingPhysicianIdentificationSequence",
    "StudyDescription", "ProcedureCodeSequence", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence", "ReferencedStudySequence",
    "StudyID", "RequestingService", "RequestingServiceCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
)  # fmt: skip
#: highdicom's advice on a valid one-component Person Name ("ANONYMOUS"): not a problem of the source
_PN_ADVICE = r".*is unlikely to represent the intended person name"
#: an input tag as `io.input_tag` makes it (anything else is hashed too)
_TAG_RE = re.compile(r"[0-9A-Za-z_-]{1,32}")


def _text(value: object) -> str:
    """A header value as the text it was stored as ("" when absent; several values joined by a backslash)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)  # type: ignore[attr-defined]
    return str(value)


def _shown(value: object, limit: int = 40) -> str:
    from ..data.header import printable

    return repr(printable(value, limit))


def _check_value(keyword: str, vr: str, value: object) -> tuple[str, str | None]:
    """(the value to write, why it is invalid or None): "" for absent and empty values."""
    from pydicom.config import RAISE
    from pydicom.valuerep import DA, TM, validate_value

    if value is None or value == "" or (isinstance(value, (list, tuple)) and not value):
        return "", None
    if isinstance(value, (bytes, bytearray)):
        return "", f"{_shown(bytes(value))} is not text"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "", f"{_shown(value)} holds several values"
    text = str(value)
    if vr != "PN":
        text = text.strip()
    if not text:
        return "", None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate_value(vr, text, RAISE)
            if "\\" in text:
                raise ValueError("several values")
            if vr == "DA":
                DA(text)
            elif vr == "TM":
                TM(text)
            if any(not c.isprintable() for c in text):  # decoded text: ISO 2022 escapes are gone by now
                raise ValueError("control characters")
    except (ValueError, TypeError, OverflowError) as exc:
        msg = str(exc)
        detail = "" if msg.startswith(("Invalid value for VR", "Unable to convert")) else f" ({_shown(msg, 60)[1:-1]})"
        return "", f"{_shown(text)} is not a valid {vr}{detail}"
    if keyword in _ENUMS and text not in _ENUMS[keyword]:
        return "", f"{_shown(text)} is not {', '.join(_ENUMS[keyword][:-1])} or {_ENUMS[keyword][-1]}"
    return text, None


def clean_source(ds: Dataset) -> tuple[Dataset, list[str]]:
    """A copy of a source header safe to hand to highdicom, and what was left empty and why.

    The copy keeps the image attributes (geometry, references, equipment) and only the patient and
    study attributes of `PATIENT_STUDY`, each checked for its VR (and the enumerated values of
    Patient's Sex): absent or empty Type 2 ones are written empty, invalid ones too (named in the
    returned lines), invalid Type 3 ones are left out. A source UID that is not a valid UID is a
    `DicomOutError`: a result must sit in the source's study and reference its images."""
    from pydicom.charset import python_encoding
    from pydicom.datadict import tag_for_keyword

    for kw in SOURCE_UIDS:
        value = _text(ds.get(kw))
        if not is_uid(value):
            raise DicomOutError(f"{kw} {_shown(value, 70)} is not a valid UID")
    out = copy.deepcopy(ds)
    drop = {tag_for_keyword(kw) for kw in _STUDY_KEYWORDS}
    for tag in list(out.keys()):
        if tag.group in _PATIENT_GROUPS or tag in drop:
            del out[tag]
    problems: list[str] = []
    charset = ds.get("SpecificCharacterSet")
    names = [charset] if isinstance(charset, str) else list(charset or [])
    if not all(isinstance(n, str) and n.strip() in python_encoding for n in names):
        problems.append(f"SpecificCharacterSet {_shown(charset)} is not a known character set (ASCII values only)")
        if "SpecificCharacterSet" in out:
            del out.SpecificCharacterSet
        names = []
    ascii_only = all(str(n).strip() in ("", "ISO_IR 6", "ISO 2022 IR 6") for n in names)
    for kw, (vr, type2) in PATIENT_STUDY.items():
        value, why = _check_value(kw, vr, ds.get(kw))
        if why is None and value and ascii_only and not value.isascii():
            value, why = "", f"{_shown(value)} is not ASCII and the character set is not declared"
        if why is not None:
            problems.append(f"{kw} {why}")
        if value or type2:
            setattr(out, kw, value)
    if out.get("PatientIdentityRemoved") != "YES" or not out.get("DeidentificationMethod"):
        for kw in ("PatientIdentityRemoved", "DeidentificationMethod"):  # 1C: both or neither
            if kw in out:
                del out[kw]
    return out, problems


@dataclass(frozen=True)
class DeviceIdentity:
    """Who observed: the model as a device, and the operating point it decided at."""

    model_name: str
    version: str  # xpr version
    digest: str | None  # the bundle's manifest SHA-256 (checkpoints: the weights' SHA-256)
    point: OperatingPoint
    class_names: tuple[str, str] = ("benign", "malignant")

    @property
    def uid(self) -> str:
        return derived_uid("device", self.model_name, self.version, self.digest or "")


@dataclass
class BreastDicom:
    """One breast's result and what it was computed from."""

    laterality: str  # "L" | "R"
    prob: float
    decision: str  # a class name
    sources: dict[str, Dataset]  # view ("cc", "mlo") -> source header (pixels not needed)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # view -> float32 [stages, rows, cols] in [0, 1]


def derived_uid(*parts: str) -> str:
    """A 2.25 UID (UUID-derived, ITU-T X.667) from a SHA-256 of `parts`: the same inputs, the same UID.

    (pydicom's `generate_uid(None, entropy_srcs=...)` ignores the sources and is random.)"""
    import hashlib

    h = hashlib.sha256("\x00".join(["xpr-result", *parts]).encode()).digest()[:16]
    b = bytearray(h)
    b[6] = (b[6] & 0x0F) | 0x50  # a name-based (version 5 style) UUID, variant RFC 4122
    b[8] = (b[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(b, 'big')}"


_uid = derived_uid


def _code(value: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value, _SCHEME, meaning)


def _site(laterality: str) -> Any:
    from pydicom.sr.codedict import codes

    return codes.SCT.LeftBreast if laterality == "L" else codes.SCT.RightBreast


def _study_key(breasts: Sequence[BreastDicom]) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for b in breasts for ds in b.sources.values())


def _breast_name(b: BreastDicom) -> str:
    return f"{'left' if b.laterality == 'L' else 'right'} breast"


def breast_regions(b: BreastDicom) -> dict[str, Any]:
    """view -> `regions.Region` (where the model looked) for each of the breast's images with a heatmap."""
    from ..regions import attention_region

    out: dict[str, Any] = {}
    for view in ("cc", "mlo"):
        if view in b.heatmaps and view in b.sources:
            region = attention_region(b.heatmaps[view])
            if region is not None:
                out[view] = region
    return out


def object_name(ds: Dataset, tag: str = "") -> str:
    """`<sr|seg>_<SOPInstanceUID>[_<tag>].dcm`: the UID as it is when valid, else a hash (`io.uid_name`)."""
    kind = {"SR": "sr", "SEG": "seg"}.get(str(ds.get("Modality", "")), "obj")
    if tag and not _TAG_RE.fullmatch(tag):
        tag = uid_name(tag)
    return f"{kind}_{uid_name(_text(ds.get('SOPInstanceUID')))}{'_' + tag if tag else ''}.dcm"


def object_path(out_dir: str | Path, ds: Dataset, tag: str = "") -> Path:
    """OUT/<StudyInstanceUID>/<object_name>, proven inside OUT (`io.child_path`)."""
    return child_path(out_dir, uid_name(_text(ds.get("StudyInstanceUID"))), object_name(ds, tag))


def read_source(path: str | Path) -> Dataset:
    """A source header for references (no pixel data), read as the pipeline reads it: every value
    converted and checked once, so a hostile value is a one-line DicomError, not a traceback."""
    from ..data.dicom import open_dicom

    return open_dicom(path, header_only=True)
