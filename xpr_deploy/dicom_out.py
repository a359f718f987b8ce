"""DICOM results a PACS stores and a viewer shows: one TID 1500 Comprehensive SR per study and a
Segmentation per mammogram (the window-selection heatmap: BINARY by default, which OHIF overlays,
and/or FRACTIONAL, `--seg`), all written with highdicom.

SR (`highdicom.sr.ComprehensiveSR` + `MeasurementReport`): the observer is the device (xpr, the
model name, the bundle's manifest SHA-256 as serial number and in the device UID); per breast one
TID 1410 measurement group per image (CC, MLO) with the region the model looked at as a closed
POLYLINE on that image (`regions.py`; one TID 1501 group when there are no heatmaps), each with the
finding site (left / right breast), P(malignant) as "Probability of cancer" (DCM 111047), the
decision at the operating point as a qualitative evaluation, the operating point's threshold as a
measurement and its name in the algorithm parameters. Same Study Instance UID as the input, its own
series, "NOT FOR CLINICAL USE" in the series description; patient and study attributes come from the
source (highdicom copies the patient and general study modules), nothing else.

Heatmaps: a BINARY Segmentation per source image, one segment per Swin stage (the stage's most-kept
windows, `build_heatmap_binary`), and/or a FRACTIONAL (PROBABILITY) one, one segment per Swin stage,
value = the fraction of the stage's pruned blocks that kept the 7x7 window covering the pixel (0
outside the breast crop), on the source's own pixel grid (mapped back through the preprocessing
geometry: flip, crop, resize). Viewers (OHIF, 3D Slicer, Weasis) overlay a Segmentation on its
referenced image and let each segment be toggled; a Secondary Capture is only shown beside it.

UIDs are derived (2.25 UIDs from a SHA-256, `derived_uid`) from the source SOP Instance UIDs,
the model digest and the operating point: new (never a source UID), unique per object, and the
same when the same model reruns on the same study, so a rerun replaces nothing and a PACS never
holds a result twice.

Source headers are hostile input. The writers get a checked copy (`clean_source`): its Study, Series,
SOP Instance and SOP Class UIDs must be valid UIDs (else that study gets no DICOM results, one line
why); its patient and study attributes are only those listed in `PATIENT_STUDY`, each checked for
its VR: absent, empty or invalid Type 2 values are written empty (the standard allows it), the
invalid ones named in one warning line per study. File and folder names come from `io.uid_name`
and every path from `io.child_path`, so no header value chooses where a result is written.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import XprError
from .io import OutputError, child_path, is_uid, uid_name, write_error

if TYPE_CHECKING:
    from pydicom import Dataset

    from .config import ModelConfig
    from .data.dicom import Geometry
    from .train.operating_points import OperatingPoint

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
    from .data.header import printable

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


def stage_heatmaps(
    selection: Mapping[tuple[str, int, int], Any], cfg: ModelConfig, geos: Mapping[str, Geometry]
) -> dict[str, np.ndarray]:
    """view -> float32 [stages, rows, cols] on the stored pixel grid: per stage, the fraction of the
    stage's blocks that kept the window covering the pixel; 0 outside the model's crop."""
    from .heatmap import count_maps, to_input_pixels, to_stored

    maps = count_maps(selection, cfg)
    out: dict[str, np.ndarray] = {}
    for view, per_stage in maps.items():
        geo = geos[view]
        frames = []
        for stage in sorted(per_stage):
            px = to_input_pixels(per_stage[stage], cfg, stage)
            stored = to_stored(px, geo, fill=0).astype(np.float32)
            frames.append(stored / float(cfg.depths[stage - 1]))
        out[view] = np.clip(np.stack(frames), 0.0, 1.0)
    return out


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


def _algorithm(device: DeviceIdentity) -> Any:
    import highdicom as hd

    p = device.point
    params = [f"operating point {p.name}", f"threshold {p.threshold:.6f}"]
    if device.digest:
        params.append(f"bundle sha256 {device.digest}")
    return hd.sr.AlgorithmIdentification(name=device.model_name[:64], version=f"xpr {device.version}"[:64],
                                         parameters=params)  # fmt: skip


def _study_key(breasts: Sequence[BreastDicom]) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for b in breasts for ds in b.sources.values())


def _breast_name(b: BreastDicom) -> str:
    return f"{'left' if b.laterality == 'L' else 'right'} breast"


def _findings(b: BreastDicom, device: DeviceIdentity, region: Any = None, view: str = "") -> dict[str, Any]:
    """What every measurement group of one breast says: site, P(malignant), threshold, decision.
    With a `region` (on the `view` image) P(malignant) is also INFERRED FROM it (TID 300): OHIF's
    tracking (cornerstone's SR adapters) takes a measurement's outline from its first NUM."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    inferred = None
    if region is not None:
        inferred = [
            hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=region.polyline(),
                source_image=hd.sr.SourceImageForRegion.from_source_image(b.sources[view]),
            )
        ]  # fmt: skip

    p = device.point
    positive = b.decision == device.class_names[1]
    decision = (
        _code("XPRPOS", f"{device.class_names[1]} (positive at the operating point)")
        if positive
        else _code("XPRNEG", f"{device.class_names[0]} (negative at the operating point)")
    )
    return {
        "finding_type": _code("XPRMAL", "Breast malignancy assessment"),
        "finding_sites": [hd.sr.FindingSite(_site(b.laterality))],
        "algorithm_id": _algorithm(device),
        "measurements": [
            hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(b.prob), unit=codes.UCUM.NoUnits,
                              referenced_coordinates=inferred),
            hd.sr.Measurement(
                name=_code("XPRTHR", f"Decision threshold ({p.name})"[:64]), value=float(p.threshold),
                unit=codes.UCUM.NoUnits,
            ),
        ],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(
                name=_code("XPRDEC", f"Decision at operating point {p.name}"[:64]), value=decision
            )
        ],
    }  # fmt: skip


def breast_regions(b: BreastDicom) -> dict[str, Any]:
    """view -> `regions.Region` (where the model looked) for each of the breast's images with a heatmap."""
    from .regions import attention_region

    out: dict[str, Any] = {}
    for view in ("cc", "mlo"):
        if view in b.heatmaps and view in b.sources:
            region = attention_region(b.heatmaps[view])
            if region is not None:
                out[view] = region
    return out


def breast_groups(b: BreastDicom, device: DeviceIdentity, key: Sequence[str]) -> list[Any]:
    """The breast's measurement groups: one TID 1410 planar-ROI group per image with a region (a
    closed POLYLINE on the CC / on the MLO, `regions.py`), each with its own Tracking Identifier
    ("left breast CC") and Tracking UID, so a viewer (OHIF) draws the finding where the model
    looked and lists P(malignant) with it; without any region (no heatmaps) one TID 1501 group
    referencing the breast's images, as before."""
    import highdicom as hd

    regions = breast_regions(b)
    if not regions:
        return [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("tracking", *key, b.laterality, device.digest or ""), identifier=_breast_name(b)
                ),
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(b.sources[v])
                    for v in ("cc", "mlo")
                    if v in b.sources
                ],
                **_findings(b, device),
            )
        ]
    groups = []
    for view, region in regions.items():
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_uid("tracking", *key, b.laterality, view, device.digest or ""),
                    identifier=f"{_breast_name(b)} {view.upper()}",
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=region.polyline(),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(b.sources[view]),
                ),
                **_findings(b, device),
            )
        )
    return groups


def build_sr(breasts: Sequence[BreastDicom], device: DeviceIdentity) -> Dataset:
    """The study's Comprehensive SR (TID 1500): per breast one measurement group per image with a
    region (`breast_groups`)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not breasts:
        raise DicomOutError("no breast to report")
    studies = {str(ds.StudyInstanceUID) for b in breasts for ds in b.sources.values()}
    if len(studies) != 1:
        raise DicomOutError(f"one SR per study: the breasts come from {len(studies)} studies")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device.uid,
            name=f"xpr {device.version}"[:64],
            manufacturer_name=MANUFACTURER,
            model_name=device.model_name[:64],
            serial_number=(device.digest or "none")[:64],
        ),
    )
    p = device.point
    key = _study_key(breasts)
    groups = []
    for b in sorted(breasts, key=lambda b: b.laterality):
        groups += breast_groups(b, device, key)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = [b.sources[v] for b in sorted(breasts, key=lambda b: b.laterality) for v in ("cc", "mlo")]
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid("sr-series", *key, device.digest or "", p.name),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", *key, device.digest or "", p.name),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SR_SERIES_DESCRIPTION,
    )
    return sr


def _heatmap_grid(source: Dataset, maps: np.ndarray) -> tuple[int, int]:
    """(rows, cols) of `source`, which `maps` [stages, rows, cols] must be on."""
    rows, cols = int(source.Rows), int(source.Columns)
    if maps.ndim != 3 or maps.shape[1:] != (rows, cols):
        raise DicomOutError(
            f"heatmap {tuple(maps.shape)} does not match the source image {rows}x{cols} ({source.SOPInstanceUID})"
        )
    return rows, cols


def _seg_algorithm(device: DeviceIdentity) -> Any:
    """The segments' algorithm identification: the model as an AI algorithm, xpr's version."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=device.model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=f"xpr {device.version}"
    )


def _seg_device(source: Dataset, device: DeviceIdentity) -> dict[str, Any]:
    """The Segmentation arguments every heatmap kind shares: numbered after its source, made by the model."""
    return {
        "instance_number": 1 + int(getattr(source, "InstanceNumber", 0) or 0),
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": device.model_name[:64],
        "software_versions": f"xpr {device.version}",
        "device_serial_number": (device.digest or "none")[:64],
    }


def build_heatmap(source: Dataset, maps: np.ndarray, device: DeviceIdentity, study_key: Sequence[str]) -> Dataset:
    """A FRACTIONAL Segmentation of `source` with one segment per stage (`maps` [stages, rows, cols])."""
    import highdicom as hd

    _heatmap_grid(source, maps)
    algo = _seg_algorithm(device)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"stage {i + 1} window selection",
            segmented_property_category=_code("XPRATT", "Model attention"),
            segmented_property_type=_code("XPRWIN", "Kept-window fraction"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i in range(maps.shape[0])
    ]
    pixels = np.moveaxis(maps.astype(np.float32), 0, -1)[None]  # [1 frame, rows, cols, segments]
    sop = str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=segments,
        series_instance_uid=_uid("seg-series", *study_key, device.digest or ""),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=_uid("seg", sop, device.digest or ""),
        **_seg_device(source, device),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_label="XPRWINDOWS",
        content_description="fraction of pruned blocks keeping each window, per stage",
        omit_empty_frames=False,
        series_description=SEG_SERIES_DESCRIPTION,
    )
    # image-aligned with the source: the same orientation (General Image needs it without a frame of reference)
    seg.PatientOrientation = source.get("PatientOrientation") or ""
    return seg


#: `--seg`: which heatmap Segmentations to write per mammogram
SEG_KINDS = ("binary", "fractional", "both")
#: `--sr`: which result SRs to write per study (the Mammography CAD SR, TID 4000, is not written yet)
SR_KINDS = ("tid1500",)


def add_pixel_measures(seg: Dataset, source: Dataset) -> Dataset:
    """Give a Segmentation of a projection image the Pixel Measures its shared functional group
    lacks (highdicom writes it empty without a frame of reference; OHIF 3.13 destructures
    `SharedFunctionalGroupsSequence[0].PixelMeasuresSequence` and blanks the page without it): the
    source's Pixel Spacing, else its Imager Pixel Spacing (mammograms), else 1 \\ 1, and as Slice
    Thickness (readers such as highdicom's require it) the depth a projection integrates: the
    source's Slice Thickness, else its Body Part Thickness (compressed breast), else 1 mm."""
    from pydicom import Dataset as Ds
    from pydicom.sequence import Sequence as Seq

    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1, 1]
    pm = Ds()
    pm.PixelSpacing = [float(v) for v in spacing][:2]
    thickness = source.get("SliceThickness") or source.get("BodyPartThickness") or 1
    pm.SliceThickness = float(thickness)
    if "SharedFunctionalGroupsSequence" not in seg or not seg.SharedFunctionalGroupsSequence:
        seg.SharedFunctionalGroupsSequence = Seq([Ds()])
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = Seq([pm])
    if "ImageOrientationPatient" not in source:
        # OHIF 3.13 matches a Segmentation to its image by plane orientation and takes an image without
        # one as row +x, column +y; the same stated here: the image grid's own axes, nothing more
        po = Ds()
        po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = Seq([po])
    return seg


def build_heatmap_binary(
    source: Dataset, maps: np.ndarray, device: DeviceIdentity, study_key: Sequence[str]
) -> Dataset:
    """A BINARY Segmentation of `source`, one segment per stage: the pixels whose windows that stage's
    pruned blocks kept most often on this image (its highest kept fraction). Viewers that draw only
    binary segments (OHIF 3.13 refuses fractional values other than 0 and the maximum) overlay it;
    the last stage's segment is where the SR's region comes from (`regions.py`)."""
    import highdicom as hd

    from .heatmap import COUNT_COLOURS

    rows, cols = _heatmap_grid(source, maps)
    algo = _seg_algorithm(device)
    masks = []
    for stage in range(maps.shape[0]):
        top = float(maps[stage].max())
        masks.append(maps[stage] >= top - 1e-6 if top > 0 else np.zeros((rows, cols), dtype=bool))
    colours = [COUNT_COLOURS[1 + (i % (len(COUNT_COLOURS) - 1))] for i in range(maps.shape[0])]
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"stage {i + 1} most-kept windows",
            segmented_property_category=_code("XPRATT", "Model attention"),
            segmented_property_type=_code("XPRTOP", "Most-kept windows"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            display_color=hd.color.CIELabColor.from_string(colours[i]),
        )
        for i in range(maps.shape[0])
    ]
    pixels = np.moveaxis(np.stack(masks), 0, -1)[None].astype(np.uint8)  # [1 frame, rows, cols, segments]
    sop = str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=_uid("seg-binary-series", *study_key, device.digest or ""),
        series_number=SEG_BINARY_SERIES_NUMBER,
        sop_instance_uid=_uid("seg-binary", sop, device.digest or ""),
        **_seg_device(source, device),
        content_label="XPRTOPWIN",
        content_description="per stage, the windows its pruned blocks kept most often",
        omit_empty_frames=False,
        series_description=SEG_BINARY_SERIES_DESCRIPTION,
    )
    seg.PatientOrientation = source.get("PatientOrientation") or ""
    return add_pixel_measures(seg, source)


@dataclass
class StudyResults:
    """One study's result objects (SR first) and the warning lines about its source headers."""

    study: str  # the Study Instance UID
    objects: list[Dataset]
    warnings: list[str] = field(default_factory=list)


def study_results(
    breasts: Sequence[BreastDicom], device: DeviceIdentity, *, sr: str = "tid1500", seg: str = "binary"
) -> StudyResults:
    """The SR (`sr`: tid1500), then the heatmap Segmentation(s) of each source image that has a
    heatmap (`seg`: binary | fractional | both), built from checked copies of the source headers
    (`clean_source`). Values left empty are named in one warning line; what highdicom or pydicom
    would warn about is caught here and named there too, never printed."""
    from .data.header import printable

    if sr not in SR_KINDS:
        raise DicomOutError(f"--sr {sr!r}: choose one of {', '.join(SR_KINDS)}")
    if seg not in SEG_KINDS:
        raise DicomOutError(f"--seg {seg!r}: choose one of {', '.join(SEG_KINDS)}")
    if not breasts:
        raise DicomOutError("no breast to report")
    study = _text(next(iter(breasts[0].sources.values())).get("StudyInstanceUID"))
    problems: list[str] = []
    clean = []
    for b in sorted(breasts, key=lambda b: b.laterality):
        sources = {}
        for view, ds in b.sources.items():
            sources[view], found = clean_source(ds)
            problems += [p for p in found if p not in problems]
        clean.append(replace(b, sources=sources))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=_PN_ADVICE)
        key = _study_key(clean)
        objs = [build_sr(clean, device)]
        for b in clean:
            for view in ("cc", "mlo"):
                if view not in b.heatmaps:
                    continue
                source, maps = b.sources[view], b.heatmaps[view]
                if seg in ("binary", "both"):
                    objs.append(build_heatmap_binary(source, maps, device, key))
                if seg in ("fractional", "both"):
                    objs.append(add_pixel_measures(build_heatmap(source, maps, device, key), source))
    for w in caught:
        line = printable(f"{w.category.__name__}: {str(w.message).splitlines()[0] if str(w.message) else ''}", 160)
        if line not in problems:
            problems.append(line)
    notes = [f"{printable(study, 70)}: DICOM results written with empty or left-out values: " + "; ".join(problems)]
    return StudyResults(study, objs, notes if problems else [])


def study_objects(
    breasts: Sequence[BreastDicom], device: DeviceIdentity, *, sr: str = "tid1500", seg: str = "binary"
) -> list[Dataset]:
    """The study's result objects (`study_results` without its warning lines)."""
    return study_results(breasts, device, sr=sr, seg=seg).objects


def object_name(ds: Dataset, tag: str = "") -> str:
    """`<sr|seg>_<SOPInstanceUID>[_<tag>].dcm`: the UID as it is when valid, else a hash (`io.uid_name`)."""
    kind = {"SR": "sr", "SEG": "seg"}.get(str(ds.get("Modality", "")), "obj")
    if tag and not _TAG_RE.fullmatch(tag):
        tag = uid_name(tag)
    return f"{kind}_{uid_name(_text(ds.get('SOPInstanceUID')))}{'_' + tag if tag else ''}.dcm"


def object_path(out_dir: str | Path, ds: Dataset, tag: str = "") -> Path:
    """OUT/<StudyInstanceUID>/<object_name>, proven inside OUT (`io.child_path`)."""
    return child_path(out_dir, uid_name(_text(ds.get("StudyInstanceUID"))), object_name(ds, tag))


def write_objects(out_dir: str | Path, objs: Sequence[Dataset], tag: str = "") -> list[Path]:
    """Each object to OUT/<StudyInstanceUID>/<sr|seg>_<SOPInstanceUID>_<tag>.dcm, atomically.

    `tag` names the input (`io.input_tag`): the same study in two input folders gives two sets of files."""
    from .io import write_buffer

    paths = []
    for ds in objs:
        dest = object_path(out_dir, ds, tag)
        write_buffer(dest, lambda f, ds=ds: ds.save_as(f, enforce_file_format=True))  # OutputError names dest
        paths.append(dest)
    return paths


@dataclass
class WrittenResults:
    """What `write_study_results` did: files written, warning lines, and one line per study without results."""

    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def write_study_results(
    out_dir: str | Path,
    results: Mapping[tuple[str, str], Sequence[BreastDicom]],
    device: DeviceIdentity,
    *,
    sr: str = "tid1500",
    seg: str = "binary",
) -> WrittenResults:
    """Per (input tag, study): build and write the study's objects; a study whose objects cannot be
    built or written is one line in `failures` and the other studies still get theirs.

    An output folder that cannot be created is an OutputError (no study could get results)."""
    from .data.header import one_line, printable

    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(root, exc) from None
    if not root.is_dir():
        raise OutputError(f"{root}: not a folder", root, "not a folder")
    done = WrittenResults()
    for tag, study in sorted(results):
        try:
            built = study_results(results[tag, study], device, sr=sr, seg=seg)
            done.paths += write_objects(root, built.objects, tag)
            done.warnings += built.warnings  # only for results that exist
        except XprError as exc:
            done.failures.append(f"{printable(study, 70)}: no DICOM results: {printable(str(exc), 300)}")
        except Exception as exc:  # highdicom and pydicom raise ValueError, AttributeError, ... on odd headers
            why = f"{type(exc).__name__}: {one_line(exc)}"
            done.failures.append(f"{printable(study, 70)}: no DICOM results: {why}")
    return done


def read_source(path: str | Path) -> Dataset:
    """A source header for references (no pixel data), read as the pipeline reads it: every value
    converted and checked once, so a hostile value is a one-line DicomError, not a traceback."""
    from .data.dicom import open_dicom

    return open_dicom(path, header_only=True)


def sr_probabilities(path: str | Path) -> tuple[str, dict[str, float]]:
    """(StudyInstanceUID, {laterality: P(malignant)}) read back from an SR with `highdicom.sr.srread`
    (per-breast TID 1501 groups or per-image TID 1410 region groups: all of a breast's say the same)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sr = hd.sr.srread(str(path))
    content: Any = sr.content  # a MeasurementReport
    out: dict[str, float] = {}
    for g in [*content.get_image_measurement_groups(), *content.get_planar_roi_measurement_groups()]:
        site = g.finding_sites[0].value.value
        lat = {"80248007": "L", "73056007": "R"}.get(str(site), "?")
        m = g.get_measurements(name=codes.DCM.ProbabilityOfCancer)
        if m:
            out[lat] = float(m[0].value)
    return str(sr.StudyInstanceUID), out


def dciodvfy_errors(path: str | Path, timeout: float = 60.0, iod: str | None = None) -> list[str] | None:
    """The `Error` lines of `dciodvfy` (Debian dicom3tools) on one object; None when it is not installed.

    Also an error when dciodvfy exits non-zero without an Error line, and when it does not name the
    IOD it checked against (`iod`, e.g. "ComprehensiveSR", "Segmentation"; else any): an object it
    did not recognise was not verified at all."""
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    if r.returncode != 0 and not errors:
        errors.append(f"Error - dciodvfy exit status {r.returncode}")
    named = [ln.strip() for ln in lines if re.fullmatch(r"[A-Z][A-Za-z0-9]+", ln.strip())]
    if (iod is None and not named) or (iod is not None and iod not in named):
        errors.append(f"Error - not recognised as {iod or 'a known IOD'} (dciodvfy named {named or 'none'})")
    return errors
