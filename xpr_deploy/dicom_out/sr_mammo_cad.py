"""The Mammography CAD SR (SOP class 1.2.840.10008.5.1.4.1.1.88.50, root template TID 4000): the
object IHE's Mammography Image profile names for CAD results, read by mammography workstations.

highdicom has no class for it: the content tree is built from highdicom's content items, the
document with highdicom's generic SR machinery (`_SR`, with this SOP class). The tree:

    CONTAINER (111036 "Mammography CAD Report")                                  TID 4000
      HAS CONCEPT MOD  language (en-US)                                          TID 1204
      CONTAINS CONTAINER (111028 "Image Library")
        CONTAINS IMAGE per mammogram read, with its laterality, view,            TID 4020
                 patient orientation and pixel spacing (HAS ACQ CONTEXT)
      CONTAINS CODE (111017 "CAD Processing and Findings Summary")               TID 4001
               = all algorithms succeeded, with / without findings
        INFERRED FROM CONTAINER (111034 "Individual Impression/Recommendation")  TID 4003, per breast
          HAS CONCEPT MOD  Rendering Intent: Presentation Required when the breast is positive at
                           the operating point, Presentation Optional when negative (how CAD marks
                           above / below the operating point are told apart)
          CONTAINS TEXT (111033 "Impression Description"): "left breast: P(malignant) 0.812 >=
                        threshold 0.412 (operating point sens=0.90): malignant"   TID 4002
          CONTAINS CODE (111059 "Single Image Finding") = (111099 "Selected region"), per image
                        with a region (CC, MLO)                                   TID 4006
            HAS CONCEPT MOD  Rendering Intent (as above)
            HAS PROPERTIES   TEXT Algorithm Name / Version / Parameters (the operating point, its
                             threshold, the bundle's SHA-256)                     TID 4019
            HAS PROPERTIES   NUM (111047 "Probability of cancer"), percent 0-100
            HAS PROPERTIES   TEXT (111058 "Selected Region Description")
            HAS PROPERTIES   SCOORD (111010 "Center") POINT and SCOORD (111041 "Outline") closed
                             POLYLINE, each SELECTED FROM its IMAGE               TID 4021
      CONTAINS CODE (111064 "Summary of Detections") = Succeeded
        INFERRED FROM CONTAINER (111063 "Successful Detections")                TID 4015
          CONTAINS CODE (111022 "Detection Performed") = (111099 "Selected region")  TID 4017
            HAS PROPERTIES  TEXT Algorithm Name / Version / Parameters            TID 4019
            INFERRED FROM   by reference, each IMAGE of the Image Library
      CONTAINS CODE (111065 "Summary of Analyses") = Succeeded
        INFERRED FROM CONTAINER (111062 "Successful Analyses")                  TID 4016
          CONTAINS CODE (111004 "Analysis Performed") = (111233 "Individual Impression/Recommendation
                        Analysis", CID 6043: the per-breast P(malignant))         TID 4018
            HAS PROPERTIES  TEXT Algorithm Name / Version / Parameters            TID 4019
            INFERRED FROM   by reference, each IMAGE of the Image Library

The region is the one the TID 1500 SR draws (`regions.py`): the deepest stage's most-kept windows.
A breast without a region (a model exported without its kept-window outputs) cannot be a CAD
finding (TID 4003 needs one): such a study gets no Mammography CAD SR, and one line says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    MANUFACTURER,
    SR_SERIES_DESCRIPTION,
    BreastDicom,
    DeviceIdentity,
    DicomOutError,
    _breast_name,
    _study_key,
    _uid,
    breast_regions,
)

if TYPE_CHECKING:
    from pydicom import Dataset

MAMMO_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
MAMMO_CAD_SERIES_NUMBER = 9904
MAMMO_CAD_SERIES_DESCRIPTION = SR_SERIES_DESCRIPTION.replace("AI result", "Mammography CAD result")
_VIEWS = {"cc": ("399162004", "cranio-caudal"), "mlo": ("399368009", "medio-lateral oblique")}
_CONTENT_SEQUENCE = 0x0040A730
_SCT_VALUE = re.compile(r"[0-9]{6,16}")
_MEANING = re.compile(r"[ -~]{1,64}")
_DIRECTION = re.compile(r"[APRLHF]{1,3}")
_SIDES = {"L": ("7771000", "Left"), "R": ("24028007", "Right")}


def _dcm(value: str, meaning: str) -> Any:
    import highdicom as hd

    return hd.sr.CodedConcept(value, "DCM", meaning)


def _rel(name: str) -> Any:
    import highdicom as hd

    return getattr(hd.sr.RelationshipTypeValues, name)


def _with(item: Any, children: Sequence[Any]) -> Any:
    """`item` with `children` as its content sequence."""
    import highdicom as hd

    if children:
        item.ContentSequence = hd.sr.ContentSequence(list(children))
    return item


def _algorithm_items(device: DeviceIdentity, relationship: str) -> list[Any]:
    """TID 4019 "Algorithm Identification": name, version, and as parameters the operating point,
    its threshold and the bundle digest (three TEXT siblings under `relationship`)."""
    import highdicom as hd

    p = device.point
    params = [f"operating point {p.name}", f"threshold {p.threshold:.6f}"]
    if device.digest:
        params.append(f"bundle sha256 {device.digest}")
    rel = _rel(relationship)
    items = [
        hd.sr.TextContentItem(_dcm("111001", "Algorithm Name"), device.model_name[:64], relationship_type=rel),
        hd.sr.TextContentItem(_dcm("111003", "Algorithm Version"), f"xpr {device.version}"[:64], relationship_type=rel),
    ]
    items += [hd.sr.TextContentItem(_dcm("111002", "Algorithm Parameters"), v, relationship_type=rel) for v in params]
    return items


def _image_ref(source: Dataset, relationship: str) -> Any:
    """An IMAGE content item referencing `source` (TID 4020 entries and SELECTED FROM targets have no
    concept name; highdicom needs one while building: `_unnamed_images` removes it)."""
    import highdicom as hd

    return hd.sr.ImageContentItem(
        name=_dcm("111028", "Image Library"),
        referenced_sop_class_uid=str(source.SOPClassUID),
        referenced_sop_instance_uid=str(source.SOPInstanceUID),
        relationship_type=_rel(relationship),
    )


def _view_code(source: Dataset, view: str) -> Any:
    """The image's view (CID 4014): its own View Code Sequence when that is a well-formed SNOMED code
    (e.g. exaggerated CC), else the view the selection read it as. Header text is hostile input."""
    import highdicom as hd

    seq = source.get("ViewCodeSequence")
    c = seq[0] if seq else None
    if c is not None and str(c.get("CodingSchemeDesignator", "")) in ("SCT", "SRT"):
        value, meaning = str(c.get("CodeValue", "")), str(c.get("CodeMeaning", ""))
        if _SCT_VALUE.fullmatch(value) and _MEANING.fullmatch(meaning):
            return hd.sr.CodedConcept(value, "SCT", meaning)
    value, meaning = _VIEWS[view]
    return hd.sr.CodedConcept(value, "SCT", meaning)


def _orientation(source: Dataset) -> list[str]:
    """Patient Orientation (row, column) when it is two well-formed direction codes, else []."""
    values = [str(v) for v in (source.get("PatientOrientation") or [])]
    return values if len(values) == 2 and all(_DIRECTION.fullmatch(v) for v in values) else []


def _spacing(source: Dataset) -> list[float]:
    """(row, column) spacing in mm at the detector (Imager Pixel Spacing, else Pixel Spacing), or []."""
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            values = [float(v) for v in (source.get(kw) or [])]
        except (TypeError, ValueError):
            continue
        if len(values) == 2 and all(math.isfinite(v) and 0 < v < 100 for v in values):
            return values
    return []


def _library_entry(source: Dataset, laterality: str, view: str) -> Any:
    """TID 4020 "CAD Image Library Entry": the IMAGE with its laterality, view, orientation, spacing."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    acq = _rel("HAS_ACQ_CONTEXT")
    side = hd.sr.CodedConcept(_SIDES[laterality][0], "SCT", _SIDES[laterality][1])
    children: list[Any] = [
        hd.sr.CodeContentItem(_dcm("111027", "Image Laterality"), side, relationship_type=acq),
        hd.sr.CodeContentItem(_dcm("111031", "Image View"), _view_code(source, view), relationship_type=acq),
    ]
    orientation = _orientation(source)
    if orientation:
        children += [
            hd.sr.TextContentItem(_dcm("111044", "Patient Orientation Row"), orientation[0], relationship_type=acq),
            hd.sr.TextContentItem(_dcm("111043", "Patient Orientation Column"), orientation[1], relationship_type=acq),
        ]
    spacing = _spacing(source)
    if spacing:
        for (value, meaning), v in zip((("111066", "Vertical Pixel Spacing"), ("111026", "Horizontal Pixel Spacing")),
                                       spacing, strict=True):  # fmt: skip
            children.append(hd.sr.NumContentItem(_dcm(value, meaning), float(v), codes.UCUM.Millimeter,
                                                 relationship_type=acq))  # fmt: skip
    return _with(_image_ref(source, "CONTAINS"), children)


def _intent(b: BreastDicom, device: DeviceIdentity) -> Any:
    """Rendering Intent (CID 6034): a breast positive at the operating point must be shown."""
    import highdicom as hd

    positive = b.decision == device.class_names[1]
    value = (
        _dcm("111150", "Presentation Required: Rendering device is expected to present")
        if positive
        else _dcm("111151", "Presentation Optional: Rendering device may present")
    )
    return hd.sr.CodeContentItem(_dcm("111056", "Rendering Intent"), value, relationship_type=_rel("HAS_CONCEPT_MOD"))


def _selected_region() -> Any:
    return _dcm("111099", "Selected region")


def _single_image_finding(b: BreastDicom, device: DeviceIdentity, view: str, region: Any) -> Any:
    """TID 4006 "Mammography CAD Single Image Finding": the region on one image, with P(malignant)."""
    import highdicom as hd
    import numpy as np

    props = _rel("HAS_PROPERTIES")
    source = b.sources[view]
    cx, cy = region.center
    shapes = (
        ("111010", "Center", hd.sr.GraphicTypeValues.POINT, np.asarray([[cx, cy]], dtype=np.float32)),
        ("111041", "Outline", hd.sr.GraphicTypeValues.POLYLINE, region.polyline()),
    )
    geometry = []
    for value, meaning, gtype, data in shapes:
        scoord = hd.sr.ScoordContentItem(
            name=_dcm(value, meaning), graphic_type=gtype, graphic_data=data, relationship_type=props
        )
        geometry.append(_with(scoord, [_image_ref(source, "SELECTED_FROM")]))
    children = [
        _intent(b, device),
        *_algorithm_items(device, "HAS_PROPERTIES"),
        hd.sr.NumContentItem(_dcm("111047", "Probability of cancer"), round(100.0 * float(b.prob), 6),
                             hd.sr.CodedConcept("%", "UCUM", "Percent"), relationship_type=props),
        hd.sr.TextContentItem(
            _dcm("111058", "Selected Region Description"),
            f"{_breast_name(b)} {view.upper()}: where the model looked (its last stage's most-kept windows)",
            relationship_type=props,
        ),
        *geometry,
    ]  # fmt: skip
    finding = hd.sr.CodeContentItem(_dcm("111059", "Single Image Finding"), _selected_region(),
                                    relationship_type=_rel("CONTAINS"))  # fmt: skip
    return _with(finding, children)


def impression_text(b: BreastDicom, device: DeviceIdentity) -> str:
    """The breast's impression in one line (TID 4002 "Impression Description")."""
    p = device.point
    sign = ">=" if b.prob >= p.threshold else "<"
    return (f"{_breast_name(b)}: P(malignant) {b.prob:.4f} {sign} threshold {p.threshold:.4f} "
            f"(operating point {p.name}): {b.decision}")[:1024]  # fmt: skip


def _individual_impression(b: BreastDicom, device: DeviceIdentity, regions: dict[str, Any]) -> Any:
    """TID 4003 "Mammography CAD Individual Impression/Recommendation" of one breast."""
    import highdicom as hd

    container = hd.sr.ContainerContentItem(_dcm("111034", "Individual Impression/Recommendation"),
                                           relationship_type=_rel("INFERRED_FROM"))  # fmt: skip
    children = [
        _intent(b, device),
        hd.sr.TextContentItem(_dcm("111033", "Impression Description"), impression_text(b, device),
                              relationship_type=_rel("CONTAINS")),
        *[_single_image_finding(b, device, view, region) for view, region in regions.items()],
    ]  # fmt: skip
    return _with(container, children)


def _summary(
    device: DeviceIdentity, code: str, meaning: str, succeeded: tuple[str, str], performed: tuple[str, str], what: Any
) -> Any:
    """Summary of Detections / of Analyses = Succeeded, inferred from the one algorithm that succeeded
    (TID 4015/4017, TID 4016/4018): what it performed and its identification (TID 4019); the images
    it read are added by reference once the document is built."""
    import highdicom as hd

    done = _with(
        hd.sr.CodeContentItem(_dcm(*performed), what, relationship_type=_rel("CONTAINS")),
        _algorithm_items(device, "HAS_PROPERTIES"),
    )
    container = hd.sr.ContainerContentItem(_dcm(*succeeded), relationship_type=_rel("INFERRED_FROM"))
    summary = hd.sr.CodeContentItem(
        _dcm(code, meaning), _dcm("111222", "Succeeded"), relationship_type=_rel("CONTAINS")
    )
    return _with(summary, [_with(container, [done])])


def _by_reference(relationship: str, position: Sequence[int]) -> Any:
    """A by-reference relationship to the content item at `position` (PS3.3 C.17.3.2.5)."""
    from pydicom import Dataset as Ds

    item = Ds()
    item.RelationshipType = relationship
    item.ReferencedContentItemIdentifier = [int(v) for v in position]
    return item


def build_mammo_cad_sr(breasts: Sequence[BreastDicom], device: DeviceIdentity) -> Dataset:
    """The study's Mammography CAD SR (TID 4000, tree in the module docstring). A breast without a
    region is a DicomOutError: a CAD finding needs one."""
    import highdicom as hd
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence as Seq

    if not breasts:
        raise DicomOutError("no breast to report")
    studies = {str(ds.StudyInstanceUID) for b in breasts for ds in b.sources.values()}
    if len(studies) != 1:
        raise DicomOutError(f"one SR per study: the breasts come from {len(studies)} studies")
    ordered = sorted(breasts, key=lambda b: b.laterality)
    per_breast = [(b, breast_regions(b)) for b in ordered]
    missing = [_breast_name(b) for b, regions in per_breast if not regions]
    if missing:
        raise DicomOutError(
            f"no Mammography CAD SR: no region for the {', the '.join(missing)} (a CAD finding needs the model's "
            "kept windows: export the bundle with --with-selection)"
        )
    images = [(b, v) for b in ordered for v in ("cc", "mlo") if v in b.sources]
    library = _with(
        hd.sr.ContainerContentItem(_dcm("111028", "Image Library"), relationship_type=_rel("CONTAINS")),
        [_library_entry(b.sources[v], b.laterality, v) for b, v in images],
    )
    with_findings = _dcm("111242", "All algorithms succeeded; with findings")
    overall = _with(
        hd.sr.CodeContentItem(_dcm("111017", "CAD Processing and Findings Summary"), with_findings,
                              relationship_type=_rel("CONTAINS")),
        [_individual_impression(b, device, regions) for b, regions in per_breast],
    )  # fmt: skip
    detections = _summary(
        device,
        "111064",
        "Summary of Detections",
        ("111063", "Successful Detections"),
        ("111022", "Detection Performed"),
        _selected_region(),
    )
    analyses = _summary(
        device,
        "111065",
        "Summary of Analyses",
        ("111062", "Successful Analyses"),
        ("111004", "Analysis Performed"),
        _dcm("111233", "Individual Impression/Recommendation Analysis"),
    )
    language = hd.sr.LanguageOfContentItemAndDescendants(
        hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
    )
    root = hd.sr.ContainerContentItem(_dcm("111036", "Mammography CAD Report"), template_id="4000")
    root.ContentSequence = Seq([*language, library, overall, detections, analyses])

    key = _study_key(ordered)
    p = device.point
    from highdicom.sr.sop import _SR  # highdicom's generic SR document (no Mammography CAD SR class)

    sr = _SR(
        evidence=[b.sources[v] for b, v in images],
        content=root,
        series_instance_uid=_uid("mammo-cad-series", *key, device.digest or "", p.name),
        series_number=MAMMO_CAD_SERIES_NUMBER,
        sop_instance_uid=_uid("mammo-cad", *key, device.digest or "", p.name),
        sop_class_uid=MAMMO_CAD_SR_STORAGE,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=MAMMO_CAD_SERIES_DESCRIPTION,
    )
    # by-reference items and nameless IMAGE items are added to the built document (highdicom's
    # content classes take neither): the detection and the analysis are INFERRED FROM each image of
    # the library; the root's children are 1 language, 2 image library (its images 1.2.k), 3 overall
    # impression, 4 summary of detections, 5 summary of analyses
    for summary in (3, 4):
        performed = sr.ContentSequence[summary].ContentSequence[0].ContentSequence[0]
        refs = [_by_reference("INFERRED FROM", [1, 2, k + 1]) for k in range(len(images))]
        performed[_CONTENT_SEQUENCE] = DataElement(_CONTENT_SEQUENCE, "SQ", Seq([*performed.ContentSequence, *refs]))
    _unnamed_images(sr)
    return sr


def _unnamed_images(item: Any) -> None:
    """Remove the concept name of every IMAGE item under `item` (TID 4020 entries and SELECTED FROM
    targets have none)."""
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "IMAGE" and "ConceptNameCodeSequence" in child:
            del child.ConceptNameCodeSequence
        _unnamed_images(child)


@dataclass
class CadBreast:
    """One breast as a Mammography CAD SR says it (`read_mammo_cad`)."""

    prob: float  # P(malignant) in [0, 1] (the SR holds percent)
    positive: bool  # Rendering Intent "Presentation Required": positive at the operating point
    impression: str
    outlines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # SOP Instance UID -> points
    centers: dict[str, tuple[float, float]] = field(default_factory=dict)


def _concept(item: Any) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].CodeValue) if seq else ""


def _children(item: Any, code: str) -> list[Any]:
    return [c for c in item.get("ContentSequence", []) if _concept(c) == code]


def read_mammo_cad(path: str | Path) -> tuple[str, dict[str, CadBreast]]:
    """(StudyInstanceUID, {laterality: CadBreast}) read back from a Mammography CAD SR with pydicom:
    the laterality of each finding's image from the Image Library, P(malignant), the rendering intent
    and each region's outline and center. A file that is not one is a DicomOutError."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if str(ds.get("SOPClassUID", "")) != MAMMO_CAD_SR_STORAGE or _concept(ds) != "111036":
        raise DicomOutError(f"{path}: not a Mammography CAD SR")
    side_of: dict[str, str] = {}
    for library in _children(ds, "111028"):
        for image in library.get("ContentSequence", []):
            uid = str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for lat in _children(image, "111027"):
                side_of[uid] = {"7771000": "L", "24028007": "R"}.get(str(lat.ConceptCodeSequence[0].CodeValue), "?")
    out: dict[str, CadBreast] = {}
    for overall in _children(ds, "111017"):
        for impression in _children(overall, "111034"):
            intent = _children(impression, "111056")[0].ConceptCodeSequence[0].CodeValue
            text = str(_children(impression, "111033")[0].TextValue)
            breast: CadBreast | None = None
            for finding in _children(impression, "111059"):
                prob = float(_children(finding, "111047")[0].MeasuredValueSequence[0].NumericValue) / 100.0
                for code in ("111041", "111010"):
                    for sc in _children(finding, code):
                        uid = str(sc.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                        pts = [float(v) for v in sc.GraphicData]
                        pairs = [(pts[i], pts[i + 1]) for i in range(0, len(pts), 2)]
                        if breast is None:
                            breast = out.setdefault(side_of.get(uid, "?"), CadBreast(prob, intent == "111150", text))
                        if code == "111041":
                            breast.outlines[uid] = pairs
                        else:
                            breast.centers[uid] = pairs[0]
    return str(ds.StudyInstanceUID), out
