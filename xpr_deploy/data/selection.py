"""Clinical image selection: from every instance a study holds, which CC and which MLO each breast uses.

A PACS study is not four clean files: the same instance exported twice, FOR PROCESSING copies,
tomosynthesis objects and their synthesized 2D views, spot and magnification views, retakes,
secondary captures and other modalities sit beside the screening views. A clinical CAD reads
one screening CC and one screening MLO per breast; these rules say which (README "Image
selection", with the DICOM attributes read), in this order:

1. what is not a screening mammogram is not used (`exclusion`): another SOP class than Digital
   Mammography X-Ray Image Storage - For Presentation (another modality, FOR PROCESSING,
   tomosynthesis, breast projection, secondary capture, ...), tomosynthesis / stereotactic /
   contrast recombined Image Type values (PS3.3 C.8.11.7.1.4), a partial view, a view other than
   CC or MLO (CID 4014), a view with a modifier (ViewModifierCodeSequence, CID 4015);
2. one instance per SOP Instance UID among the files left (`dedupe`, after the file checks): a
   second file with the same UID is a duplicate export;
3. per breast and view (`choose`): acquired 2D before synthesized 2D (Image Type value 4
   GENERATED_2D) unless `prefer="synthesized"`; the other kind is used when it is all there is,
   and the breast says so;
4. images still equally valid (a retake): ORIGINAL before DERIVED, then the later acquisition
   (AcquisitionDateTime, else AcquisitionDate/Time), then the later content (ContentDate/Time),
   then the higher InstanceNumber; a tie on all of them is no answer ("ambiguous").

`strict` (curated datasets): a breast is used only when its study holds exactly one clean CC and
one clean MLO for it; every choice above becomes a rejection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

from .header import FOR_PROCESSING_CLASSES, MG_FOR_PRESENTATION, is_code_string, printable, text_value
from .views import VIEWS, modifier_name, view_name

#: `prefer`: which 2D image of a view is read when the study holds both
PREFER = ("acquired", "synthesized")
#: Image Type value 4 of a synthesized (mathematically generated) 2D image, PS3.3 Table C.8-74d
GENERATED_2D = "GENERATED_2D"

#: Secondary Capture Image Storage
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: SOP classes that are never a screening mammogram, with the reason written
SOP_CLASS_REASONS: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "tomosynthesis object (Breast Tomosynthesis Image Storage)",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "tomosynthesis projections (Breast Projection X-Ray Image Storage)",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "tomosynthesis projections (Breast Projection X-Ray Image Storage)",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture (Secondary Capture Image Storage), not an acquired image",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary capture (Multi-frame Secondary Capture), not an acquired image",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary capture (Multi-frame Secondary Capture), not an acquired image",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary capture (Multi-frame Secondary Capture), not an acquired image",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary capture (Multi-frame Secondary Capture), not an acquired image",
}
#: Image Type value 3 terms (PS3.3 C.8.11.7.1.4, C.8.21.6.1.1) of images that are not a screening view
IMAGE_TYPE_3_REASONS: dict[str, str] = {
    "TOMO_PROJ": "tomosynthesis projection",
    "TOMOSYNTHESIS": "tomosynthesis reconstruction",
    "TOMO_SCOUT": "biopsy image",
    "STEREO_SCOUT": "stereotactic biopsy image",
    "STEREO_MINUS": "stereotactic biopsy image",
    "STEREO_PLUS": "stereotactic biopsy image",
    "PREFIRE": "biopsy image",
    "PREFIRE_MINUS": "biopsy image",
    "PREFIRE_PLUS": "biopsy image",
    "POSTFIRE": "biopsy image",
    "POSTFIRE_MINUS": "biopsy image",
    "POSTFIRE_PLUS": "biopsy image",
    "POSTBIOPSY": "biopsy image",
    "POSTMARKER": "biopsy image",
}
#: Image Type value 4 terms of contrast-enhanced recombined images (PS3.3 Table C.8-74d)
IMAGE_TYPE_4_REASONS: dict[str, str] = {
    "SUBTRACTION": "contrast-enhanced recombined image",
    "ADDITION": "contrast-enhanced recombined image",
}


@dataclass(frozen=True)
class Policy:
    """How a breast's images are chosen: `prefer` acquired or synthesized 2D; `strict` rejects every choice."""

    prefer: str = "acquired"
    strict: bool = False

    def __post_init__(self) -> None:
        if self.prefer not in PREFER:
            from ..errors import ConfigError

            raise ConfigError(f"prefer {self.prefer!r}: choose {' or '.join(PREFER)}")


@dataclass(frozen=True)
class Instance:
    """What selection reads of one instance's header (empty when not known, e.g. a CSV row only)."""

    path: Path
    sop_uid: str
    study: str = ""
    laterality: str = ""  # L | R | '' (tolerant read; the strict check is dicom.laterality_of)
    view: str = ""  # CC, MLO, ML, XCCL, ... (ViewPosition, else CID 4014 code); '' unknown
    modality: str = "MG"
    sop_class: str = ""
    intent: str = ""  # PresentationIntentType
    image_type: tuple[str, ...] = ()
    partial_view: bool = False
    modifiers: tuple[str, ...] = ()  # CID 4015 names from ViewCodeSequence > ViewModifierCodeSequence
    acquired: str = ""  # YYYYMMDDHHMMSS.ffffff, comparable as text; '' unknown
    content: str = ""
    number: int | None = None  # InstanceNumber

    @property
    def synthesized(self) -> bool:
        """A synthesized 2D image (generated from tomosynthesis): Image Type value 4 GENERATED_2D."""
        return GENERATED_2D in self.image_type

    @property
    def original(self) -> bool:
        return not self.image_type or self.image_type[0] != "DERIVED"

    @property
    def kind(self) -> str:
        return "synthesized 2D" if self.synthesized else "acquired 2D"


@dataclass
class NotUsed:
    """An instance the selection left out, and why (JSON-able)."""

    path: str
    sop_uid: str
    reason: str
    study: str = ""
    laterality: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sop_uid": self.sop_uid, "reason": self.reason}


@dataclass
class ViewChoice:
    """The image used for one view of one breast, the others of that view with their reason, and notes."""

    used: Instance | None = None
    not_used: list[NotUsed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said with the answer (synthesized 2D used, retake)
    problem: str = ""  # why no image of this view can be used although there are candidates
    fallback: bool = False  # the used image is not the preferred kind (acquired / synthesized)


# ---- reading ---------------------------------------------------------------------------------


def _stamp(date: str, time: str) -> str:
    """DA + TM (or a DT) as YYYYMMDDHHMMSS.ffffff, comparable as text; '' without a date."""
    date = "".join(c for c in date if c.isdigit())[:8]
    if len(date) != 8:
        return ""
    whole, _, frac = time.strip().partition(".")
    whole = "".join(c for c in whole if c.isdigit())[:6].ljust(6, "0")
    frac = "".join(c for c in frac if c.isdigit())[:6].ljust(6, "0")
    return f"{date}{whole}.{frac}"


def _datetime(ds: Dataset, path: str, dt: str, date: str, time: str) -> str:
    value = text_value(ds, dt, path) if dt else ""
    if value:
        digits = value.split("+")[0].split("-")[0]
        return _stamp(digits[:8], digits[8:])
    return _stamp(text_value(ds, date, path), text_value(ds, time, path))


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_instance(ds: Dataset, path: str | Path) -> Instance:
    """The selection attributes of a header; values it cannot parse raise the header's one-line InvalidValue."""
    p = str(path)
    lat = printable(text_value(ds, "ImageLaterality", p).upper() or text_value(ds, "Laterality", p).upper())
    position = printable(text_value(ds, "ViewPosition", p).upper())
    # a damaged ViewPosition (a flipped length swallowed the next elements) is a broken file that
    # the reader rejects with its reason (`dicom.view_of`), not a view that is "not used"
    view = position if is_code_string(position) else ""
    modifiers: list[str] = []
    seq = ds["ViewCodeSequence"].value if "ViewCodeSequence" in ds else None
    if isinstance(seq, DicomSequence) and len(seq):
        item = seq[0]
        where = f"{p}: ViewCodeSequence"
        code_view = view_name(text_value(item, "CodeValue", where), text_value(item, "CodeMeaning", where))
        view = view or code_view or printable(text_value(item, "CodeMeaning", where))
        mods = item["ViewModifierCodeSequence"].value if "ViewModifierCodeSequence" in item else None
        if isinstance(mods, DicomSequence):
            where = f"{p}: ViewModifierCodeSequence"
            for m in mods:
                modifiers.append(
                    printable(modifier_name(text_value(m, "CodeValue", where), text_value(m, "CodeMeaning", where)))
                )
    image_type = tuple(v.strip().upper() for v in text_value(ds, "ImageType", p).split("\\"))
    return Instance(
        path=Path(path),
        sop_uid=printable(text_value(ds, "SOPInstanceUID", p), 128),
        study=printable(text_value(ds, "StudyInstanceUID", p), 128),
        laterality=lat if lat in ("L", "R") else "",
        view=view,
        modality=printable(text_value(ds, "Modality", p).upper()),
        sop_class=text_value(ds, "SOPClassUID", p),
        intent=text_value(ds, "PresentationIntentType", p).upper(),
        image_type=image_type if any(image_type) else (),
        partial_view=text_value(ds, "PartialView", p).upper() == "YES",
        modifiers=tuple(modifiers),
        acquired=_datetime(ds, p, "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime"),
        content=_datetime(ds, p, "", "ContentDate", "ContentTime"),
        number=_int(text_value(ds, "InstanceNumber", p)),
    )


# ---- rules 1 and 2: one per SOP Instance UID, only screening mammograms ------------------------


def dedupe(instances: Iterable[Instance]) -> tuple[list[Instance], list[NotUsed]]:
    """One instance per SOP Instance UID (the first given is kept); the other files are duplicates."""
    kept: dict[str, Instance] = {}
    dupes: list[NotUsed] = []
    for inst in instances:
        key = inst.sop_uid or str(inst.path)
        if key in kept:
            first = kept[key]
            reason = f"duplicate of {first.path} (same SOP Instance UID)"
            dupes.append(NotUsed(str(inst.path), inst.sop_uid, reason, inst.study, inst.laterality))
        else:
            kept[key] = inst
    return list(kept.values()), dupes


def _sop_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else f"SOP class {printable(uid, 64)}"


def exclusion(inst: Instance, *, only_mammography_class: bool = True, allow: Collection[str] = ()) -> str:
    """Why this instance is not a screening mammogram ('' if it may be one).

    A study from a PACS (folders, DICOMweb, the node): only Digital Mammography X-Ray Image Storage.
    A curated dataset's loader relaxes the SOP class rule: `only_mammography_class=False` accepts
    any single-frame image class but still leaves out those of SOP_CLASS_REASONS, except the ones
    in `allow` (CBIS-DDSM stores its digitized films as Secondary Capture).

    An instance of the mammography class itself must be Modality MG, FOR PRESENTATION and one
    frame (its IOD says so): one that is not is a broken file, rejected by the reader
    (`dicom.check_mg`, `check_pixels`) with its own reason, not an image "not used"."""
    if inst.sop_class and inst.sop_class != MG_FOR_PRESENTATION:
        if inst.modality != "MG":
            return f"modality {inst.modality or 'missing'}, not MG (mammography)"
        if inst.sop_class in FOR_PROCESSING_CLASSES:
            return "FOR PROCESSING image (raw detector data); the FOR PRESENTATION image is read"
        if inst.sop_class in SOP_CLASS_REASONS and inst.sop_class not in allow:
            return SOP_CLASS_REASONS[inst.sop_class]
        if only_mammography_class:
            return f"{_sop_name(inst.sop_class)}, not Digital Mammography X-Ray Image Storage"
    it = inst.image_type
    # a synthesized 2D image carries the tomosynthesis term in value 3 (biopsy would take its place)
    tomo_2d = inst.synthesized and len(it) > 2 and it[2] in ("TOMOSYNTHESIS", "TOMO_PROJ")
    if len(it) > 2 and it[2] in IMAGE_TYPE_3_REASONS and not tomo_2d:
        return f"{IMAGE_TYPE_3_REASONS[it[2]]} (Image Type value 3 {it[2]})"
    if len(it) > 3 and it[3] in IMAGE_TYPE_4_REASONS:
        return f"{IMAGE_TYPE_4_REASONS[it[3]]} (Image Type value 4 {it[3]})"
    if inst.partial_view:
        return "partial view (Partial View YES), not a whole-breast view"
    if inst.view and inst.view not in VIEWS:
        return f"view {inst.view} is not a screening view (CC or MLO)"
    if inst.modifiers:
        return f"{inst.view or 'view'} with view modifier {', '.join(inst.modifiers)}: not a screening view"
    return ""


# ---- rules 3 and 4: one image per view -------------------------------------------------------


def rank(inst: Instance) -> tuple[bool, str, str, int]:
    """Higher is preferred among images of one kind: ORIGINAL, later acquisition, later content, higher number."""
    return (inst.original, inst.acquired, inst.content, -1 if inst.number is None else inst.number)


def _show(stamp: str) -> str:
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}" if stamp else "unknown"


def _why_below(loser: Instance, winner: Instance, view: str) -> str:
    other = f"{winner.sop_uid} ({winner.path.name}"
    if loser.original != winner.original:
        return f"DERIVED {view}: the ORIGINAL {other}) is used"
    if loser.acquired != winner.acquired:
        return (
            f"retake: {view} acquired {_show(loser.acquired)}, earlier than {other}, acquired "
            f"{_show(winner.acquired)}), which is used"
        )
    if loser.content != winner.content:
        return (
            f"retake: {view} content {_show(loser.content)}, earlier than {other}, content "
            f"{_show(winner.content)}), which is used"
        )
    return f"retake: {view} InstanceNumber {loser.number}, lower than {other}, {winner.number}), which is used"


def choose(cands: Sequence[Instance], view: str, policy: Policy) -> ViewChoice:
    """The one image of `view` a breast uses, from its candidates (already deduplicated and not excluded)."""
    out = ViewChoice()
    if not cands:
        return out
    preferred = [c for c in cands if c.synthesized == (policy.prefer == "synthesized")]
    others = [c for c in cands if c.synthesized != (policy.prefer == "synthesized")]
    pool, rest = (preferred, others) if preferred else (others, [])
    if not preferred:
        out.fallback = True
        kind = pool[0].kind
        missing = "acquired" if policy.prefer == "acquired" else "synthesized"
        out.notes.append(f"{view}: {kind} used (the study has no {missing} 2D {view})")
    ranked = sorted(pool, key=rank, reverse=True)
    tied = [c for c in ranked if rank(c) == rank(ranked[0])]
    if len(tied) > 1:
        files = ", ".join(sorted(str(c.path) for c in tied))
        out.problem = (
            f"{len(tied)} {view} images equally valid (same Image Type, acquisition and content time, "
            f"InstanceNumber): {files}"
        )
        return out
    win = out.used = ranked[0]
    for c in ranked[1:]:
        out.not_used.append(NotUsed(str(c.path), c.sop_uid, _why_below(c, win, view), c.study, c.laterality))
    if len(ranked) > 1:
        out.notes.append(f"{view}: {win.sop_uid} used, the latest of {len(ranked)} {win.kind} {view} images")
    for c in rest:
        image_type = "\\".join(c.image_type) or "missing"
        reason = (
            f"{c.kind} {view} (Image Type {image_type}): the {win.kind} {view} "
            f"{win.sop_uid} is used (prefer {policy.prefer}; --prefer "
            f"{'acquired' if policy.prefer == 'synthesized' else 'synthesized'} reads this one)"
        )
        out.not_used.append(NotUsed(str(c.path), c.sop_uid, reason, c.study, c.laterality))
    return out


def describe_not_used(items: Sequence[NotUsed], limit: int = 3) -> str:
    """A short list of what was left out, for a one-line breast rejection."""
    shown = "; ".join(f"{Path(n.path).name}: {n.reason}" for n in items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return shown + more
