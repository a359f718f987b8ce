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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import XprError

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


def build_heatmap(source: Dataset, maps: np.ndarray, device: DeviceIdentity, study_key: Sequence[str]) -> Dataset:
    """A FRACTIONAL Segmentation of `source` with one segment per stage (`maps` [stages, rows, cols])."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    rows, cols = int(source.Rows), int(source.Columns)
    if maps.ndim != 3 or maps.shape[1:] != (rows, cols):
        raise DicomOutError(
            f"heatmap {tuple(maps.shape)} does not match the source image {rows}x{cols} ({source.SOPInstanceUID})"
        )
    algo = hd.AlgorithmIdentificationSequence(
        name=device.model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=f"xpr {device.version}"
    )
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
        instance_number=1 + int(getattr(source, "InstanceNumber", 0) or 0),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=device.model_name[:64],
        software_versions=f"xpr {device.version}",
        device_serial_number=(device.digest or "none")[:64],
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
    from pydicom.sr.codedict import codes

    from .heatmap import COUNT_COLOURS

    rows, cols = int(source.Rows), int(source.Columns)
    if maps.ndim != 3 or maps.shape[1:] != (rows, cols):
        raise DicomOutError(
            f"heatmap {tuple(maps.shape)} does not match the source image {rows}x{cols} ({source.SOPInstanceUID})"
        )
    algo = hd.AlgorithmIdentificationSequence(
        name=device.model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=f"xpr {device.version}"
    )
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
        instance_number=1 + int(getattr(source, "InstanceNumber", 0) or 0),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=device.model_name[:64],
        software_versions=f"xpr {device.version}",
        device_serial_number=(device.digest or "none")[:64],
        content_label="XPRTOPWIN",
        content_description="per stage, the windows its pruned blocks kept most often",
        omit_empty_frames=False,
        series_description=SEG_BINARY_SERIES_DESCRIPTION,
    )
    seg.PatientOrientation = source.get("PatientOrientation") or ""
    return add_pixel_measures(seg, source)


def study_objects(
    breasts: Sequence[BreastDicom], device: DeviceIdentity, *, sr: str = "tid1500", seg: str = "binary"
) -> list[Dataset]:
    """The SR (`sr`: tid1500), then the heatmap Segmentation(s) of each source image that has a
    heatmap (`seg`: binary | fractional | both)."""
    if sr not in SR_KINDS:
        raise DicomOutError(f"--sr {sr!r}: choose one of {', '.join(SR_KINDS)}")
    if seg not in SEG_KINDS:
        raise DicomOutError(f"--seg {seg!r}: choose one of {', '.join(SEG_KINDS)}")
    key = _study_key(breasts)
    objs = [build_sr(breasts, device)]
    for b in sorted(breasts, key=lambda b: b.laterality):
        for view in ("cc", "mlo"):
            if view in b.heatmaps:
                if seg in ("binary", "both"):
                    objs.append(build_heatmap_binary(b.sources[view], b.heatmaps[view], device, key))
                if seg in ("fractional", "both"):
                    objs.append(add_pixel_measures(build_heatmap(b.sources[view], b.heatmaps[view], device, key),
                                                   b.sources[view]))  # fmt: skip
    return objs


def object_name(ds: Dataset, tag: str = "") -> str:
    kind = {"SR": "sr", "SEG": "seg"}.get(str(ds.Modality), "obj")
    return f"{kind}_{ds.SOPInstanceUID}{'_' + tag if tag else ''}.dcm"


def write_objects(out_dir: str | Path, objs: Sequence[Dataset], tag: str = "") -> list[Path]:
    """Each object to OUT/<StudyInstanceUID>/<sr|seg>_<SOPInstanceUID>_<tag>.dcm, atomically.

    `tag` names the input (`io.input_tag`): the same study in two input folders gives two sets of files."""
    from .io import write_buffer

    paths = []
    for ds in objs:
        dest = Path(out_dir) / str(ds.StudyInstanceUID) / object_name(ds, tag)
        write_buffer(dest, lambda f, ds=ds: ds.save_as(f, enforce_file_format=True))  # OutputError names dest
        paths.append(dest)
    return paths


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


def dciodvfy_errors(path: str | Path, timeout: float = 60.0) -> list[str] | None:
    """The `Error` lines of `dciodvfy` (Debian dicom3tools) on one object; None when it is not installed."""
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
